"""The samplers: turn a canvas (B, L) into a transcript by repeated denoiser passes, and score
candidate canvases in one pass.

`refine` (methods `diffusion` and `ctc-refine`): each step predicts every position, commits a
growing quota of the most confident predictions plus anything above `threshold`, and re-randomises
the rest (diffusers' BlockRefinementScheduler in uniform mode); a committed token is revised only
when the denoiser is very sure (`edit_threshold`), and each step is self-conditioned on the
previous step's logits. Commits are sticky because a non-sticky sampler re-conditions on its own
errors (repeated words, misplaced end, more steps worse). From a CTC-seeded canvas, uncommitted
positions fall back to the seed instead of noise.

`edit` (method `ctc-edit`): keep the CTC seed, replace a token only when the denoiser is at least
`edit_threshold` sure of another.

`verify` (methods `diffusion-verify` and `ctc-verify`, on a decoder that also runs causally):
self-speculative decoding. Each step the denoiser drafts every position past a verified prefix;
one causal pass of the same decoder over the draft (and, seeded, over the CTC seed realigned after
the prefix) checks it left to right; the agreeing run plus the causal pass's own token at the first
disagreement join the prefix. The rest is re-randomised (from noise) or reset to the realigned seed,
as the refine sampler does with uncommitted positions. A prefix that reaches end-of-text is exactly
the causal decoder's greedy transcript. When `steps` run out first, the causal pass writes the rest
one token at a time (`_greedy_tail`), so the text is still that greedy transcript; only the cost
changes (one cheap one-position pass per remaining token).
A draft from noise is sure of the coming words but not of their positions, so it writes a word
twice where it spans two positions ("with with with at at"); where a draft token repeats the one
before it, the position's second choice is drafted instead.

The samplers see only a `step_fn(canvas, sc_logits) -> logits (B, L, V)`; they know nothing about
audio or models (`step_fn` below builds one from a model's `denoise`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from .steps import KEPT, REJECTED, RENOISED, RESEEDED

StepFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


def step_fn(model, state, allowed: torch.Tensor | None) -> StepFn:
    """The samplers' view of a model: canvas (B, L) [+ self-conditioning logits] -> logits (B, L, V)
    over the prompt `state` (model.prefill), tokens outside each row's script (`allowed` (B, V), or
    None) ruled out."""

    def fn(canvas, sc):
        logits = model.denoise(state, canvas, sc)
        return logits if allowed is None else logits.masked_fill(~allowed[:, None, :], -1e4)

    return fn


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # (B, L) final canvas
    confidence: torch.Tensor  # (B, L) probability of each final token at the last step
    steps_run: int
    tail: list[int] | None = None  # verify: per row, the tokens the causal pass wrote one by one after the last step


@torch.no_grad()
def refine(
    step_fn: StepFn,
    init: torch.Tensor,
    vocab_size: int,
    options,
    generator: torch.Generator,
    seeded: bool,
    row_generators: list[torch.Generator] | None = None,
    recorder=None,
) -> SampleOutput:
    """Denoise `init` (B, L) in `options.steps` steps. `seeded`: `init` is a CTC transcript (positions
    not yet committed return to it), else noise (they are re-drawn, per row from `row_generators`
    when given, so a row's result does not depend on which other rows share its batch).
    recorder (steps.StepRecorder or None): gets the starting canvas and each step's."""
    from diffusers import BlockRefinementScheduler

    n = options.steps
    sched = BlockRefinementScheduler(threshold=options.threshold, editing_threshold=options.edit_threshold)
    sched.set_timesteps(n, block_length=init.shape[1])
    canvas, sc, prev_pred, logits = init, None, None, None
    kept = torch.zeros_like(init, dtype=torch.bool)  # committed positions: every step's transfer_index so far
    steps_run = 0
    rows = torch.arange(init.shape[0])
    unkept = RESEEDED if seeded else RENOISED
    if recorder is not None:
        recorder.record(rows, init, torch.full_like(init, unkept), torch.zeros(init.shape))
    for t in range(n):  # ascending step index: BlockRefinement's own `timesteps` run backwards (docs pitfall)
        logits = step_fn(canvas, sc if options.self_condition else None)
        steps_run += 1
        out = sched.step(logits, t, canvas, mask_token_id=None, temperature=options.temperature, generator=generator)
        canvas, sc, kept = out.prev_sample, logits, kept | out.transfer_index
        if seeded:
            # A CTC-seeded canvas is a noisy estimate, not noise: like the committed-predictions-plus-noise
            # states the decoder is trained to correct.
            canvas = torch.where(kept, canvas, init)
        elif row_generators is not None:
            noise = torch.stack([torch.randint(0, vocab_size, canvas.shape[1:], generator=g) for g in row_generators])
            canvas = torch.where(kept, canvas, noise.to(canvas.device))
        if recorder is not None:
            p = logits.float().softmax(-1).gather(-1, canvas[..., None])[..., 0]
            recorder.record(rows, canvas, torch.where(kept, KEPT, unkept), p)
        pred = logits.argmax(-1)
        if options.early_stop and bool(kept.all()) and prev_pred is not None and torch.equal(pred, prev_pred):
            break
        prev_pred = pred
    conf = logits.softmax(-1).gather(-1, canvas[..., None])[..., 0]  # every position is committed by the last step
    return SampleOutput(tokens=canvas, confidence=conf, steps_run=steps_run)


@torch.no_grad()
def edit(step_fn: StepFn, init: torch.Tensor, options, recorder=None) -> SampleOutput:
    """Refine a seeded canvas (B, L) by confident edits only: each step, a position takes the
    decoder's prediction when its probability is ≥ `edit_threshold`, and keeps its current token
    otherwise. A decoder weaker than its seed cannot make the seed worse by much, and one that is
    sure of a correction gets to make it; stops early when a step changes nothing. recorder: as refine's."""
    canvas, sc, probs = init, None, None
    steps_run = 0
    if recorder is not None:
        recorder.record(torch.arange(init.shape[0]), init, torch.full_like(init, KEPT), torch.zeros(init.shape))
    for _ in range(options.steps):
        logits = step_fn(canvas, sc if options.self_condition else None)
        steps_run += 1
        probs = logits.float().softmax(-1)
        conf, pred = probs.max(-1)
        new = torch.where(conf >= options.edit_threshold, pred, canvas)
        sc = logits
        changed = not torch.equal(new, canvas)
        if recorder is not None:
            p = probs.gather(-1, new[..., None])[..., 0]
            recorder.record(torch.arange(new.shape[0]), new, torch.where(new == canvas, KEPT, REJECTED), p)
        canvas = new
        if options.early_stop and not changed:
            break
    conf = probs.gather(-1, canvas[..., None])[..., 0]
    return SampleOutput(tokens=canvas, confidence=conf, steps_run=steps_run)


def realign(prefix: list[int], seed: list[int]) -> list[int]:
    """The part of `seed` that follows `prefix`: seed[j:] for the j whose seed[:j] is closest to the
    prefix in edit distance (the whole prefix aligned, the seed's end free); among equally close
    ones, the j nearest len(prefix) (a corrected token replaced a seed token rather than joined it).
    Shared tokens alone mislead: a prefix that shares none (its first words re-cased) would restart
    the seed, and one common token (" the") can match one far ahead."""
    m = len(seed)
    if not prefix or not m:
        return seed
    s = np.asarray(seed)
    cols = np.arange(m + 1)
    d = cols.copy()  # d[j]: distance of the prefix so far to seed[:j]
    for i, tok in enumerate(prefix, 1):
        diag = d[:-1] + (s != tok)
        cand = np.concatenate([[i], np.minimum(diag, d[1:] + 1)])
        d = np.minimum.accumulate(cand - cols) + cols  # insertions: d[j] ≤ d[j - 1] + 1
    best = np.flatnonzero(d == d.min())
    j = int(best[np.argmin(np.abs(best - len(prefix)) * 2 - (best > len(prefix)))])
    return seed[j:]


RowFn = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]
_GROW_AT, _GROW_BY = 4, 8  # verify: a canvas grows by 8 once a prefix is within 4 of its end


def _draft(probs: torch.Tensor, canvas: torch.Tensor, fixed: torch.Tensor, s: int, eot: int) -> torch.Tensor:
    """Draft tokens (N, L - s) for positions s.. of `canvas` (N, L) from the denoiser's probabilities
    there (N, L - s, V): a verified (`fixed` (N, L)) position keeps its token, any other takes the
    argmax, or the second choice where the argmax repeats the token just before it (end-of-text
    may repeat: it pads the canvas)."""
    top2 = probs.topk(2, -1).indices.tolist()
    keep = fixed[:, s:].tolist()
    tokens = canvas.tolist()
    rows = []
    for b, row in enumerate(top2):
        p = tokens[b][s - 1] if s else None
        out = []
        for i, (first, second) in enumerate(row):
            tok = tokens[b][s + i] if keep[b][i] else second if first == p and first != eot else first
            out.append(tok)
            p = tok
        rows.append(out)
    return torch.tensor(rows, dtype=torch.long)


@torch.no_grad()
def verify(
    denoise_fn: RowFn,
    causal_fn: RowFn,
    init: torch.Tensor,
    vocab_size: int,
    eot: int,
    options,
    seeds: list[list[int]] | None = None,
    row_generators: list[torch.Generator] | None = None,
    max_len: int | None = None,
    recorder=None,
) -> SampleOutput:
    """Self-speculative decoding of `init` (B, L): noise, or (`seeds` given, each row's CTC tokens)
    the seeds, end-of-text, padding. denoise_fn(canvas (N, L), rows (N,), s) -> logits (N, L - s, V)
    of canvas positions s.., the bidirectional pass for batch rows `rows`; causal_fn, the same
    signature: position i's logits given the canvas tokens before i. No row needs logits inside its
    verified prefix, so s is the shortest prefix of the step (the output layer is a third of a pass).
    Stops when every row's prefix has reached end-of-text. Confidence: the causal probability of a
    verified token, the denoiser's of an unverified one. The canvas length is an estimate (from the
    CTC transcript, short where CTC is poor): when a prefix comes within `_GROW_AT` positions of
    the end without end-of-text, every row gets `_GROW_BY` more (noise, or end-of-text), up to
    `max_len` (None: never). The tokens returned are (B, L') with L' ≥ L. recorder (steps.StepRecorder
    or None): gets the starting canvas, then per step each live row's checked candidate (verified
    prefix kept, the draft past it rejected; confidence: causal in the prefix, the denoiser's past it)."""
    B, L = init.shape
    if recorder is not None:
        unkept = RENOISED if seeds is None else RESEEDED
        recorder.record(range(B), init, torch.full_like(init, unkept), torch.zeros(init.shape))
    pos = torch.arange(L)
    canvas, final = init.clone(), init.clone()
    conf = torch.zeros(B, L)
    n = [0] * B  # verified tokens per row
    done = [False] * B  # the row's end-of-text is verified
    steps_run = 0
    for _ in range(options.steps):
        live = [b for b in range(B) if not done[b]]
        if not live:
            break
        steps_run += 1
        rows, s = torch.tensor(live), min(n[b] for b in live)
        current = canvas[rows]
        probs = denoise_fn(current, rows, s).float().softmax(-1)  # positions s..
        fixed = pos[None] < torch.tensor([n[b] for b in live])[:, None]
        draft = current.clone()
        draft[:, s:] = _draft(probs, current, fixed, s, eot)
        cands = [draft] if seeds is None else [draft, current]
        X = torch.cat(cands)
        causal = causal_fn(X, rows.repeat(len(cands)), s).float()
        if s == 0:
            causal[:, 0, eot] = -torch.inf  # as Whisper: never an empty transcript
        cprobs = causal.softmax(-1)
        ar = cprobs.argmax(-1)
        agree = (X[:, s:] == ar) | fixed[:, s:].repeat(len(cands), 1)
        first = torch.where(agree, L, pos[None, s:]).min(-1).values.view(len(cands), len(live))
        for j, b in enumerate(live):
            c = int(first[:, j].argmax())
            k, r, n0 = int(first[c, j]), c * len(live) + j, n[b]
            row = X[r].clone()
            if k < L:
                row[k] = ar[r, k - s]
            nb = min(k + 1, L)
            ends = (row[:nb] == eot).nonzero()
            if len(ends):
                nb = int(ends[0]) + 1
                row[nb:] = eot
                done[b] = True
            n[b] = nb
            if recorder is not None:
                shown = conf[b].clone()
                shown[n0:nb] = cprobs[r, pos[n0:nb] - s, row[n0:nb]]
                shown[nb:] = probs[j, pos[nb:] - s, row[nb:]]
                recorder.record([b], row[None], torch.where(pos < nb, KEPT, REJECTED)[None], shown[None])
            final[b] = row
            if done[b]:
                canvas[b] = row
            elif seeds is not None:
                rest = realign(row[:nb].tolist(), seeds[b])
                canvas[b] = torch.tensor((row[:nb].tolist() + rest + [eot] * L)[:L])
                final[b] = canvas[b]
            else:
                noise = torch.randint(0, vocab_size, (L,), generator=row_generators[b])
                canvas[b] = torch.where(pos < nb, row, noise)
                # The draft past a correction was written for the wrong token; the causal predictions
                # there at least follow the verified text (they are the output only if no step is left).
                final[b, nb:] = ar[r, nb - s :]
            conf[b, n0:nb] = cprobs[r, pos[n0:nb] - s, row[n0:nb]]  # earlier prefix positions: unchanged
            src = probs[j] if seeds is not None else cprobs[r]
            conf[b, nb:] = src[pos[nb:] - s, final[b, nb:]]
        if max_len and L < max_len and any(not done[b] and n[b] >= L - _GROW_AT for b in live):
            extra = min(_GROW_BY, max_len - L)
            pad = torch.full((B, extra), eot)
            more = pad.clone()
            if seeds is None:
                for b in range(B):
                    if not done[b]:
                        more[b] = torch.randint(0, vocab_size, (extra,), generator=row_generators[b])
            canvas, final = torch.cat([canvas, more], 1), torch.cat([final, pad], 1)
            conf = torch.cat([conf, torch.zeros(B, extra)], 1)
            L += extra
            pos = torch.arange(L)
        done = [d or n[b] >= L for b, d in enumerate(done)]  # a full canvas that cannot grow is finished
    tail = [0] * B
    if not all(done):
        final, conf, tail = _greedy_tail(causal_fn, final, conf, n, done, eot, max_len or L)
        if recorder is not None:  # one more row: what the causal pass wrote token by token
            rows = [b for b in range(B) if tail[b]]
            recorder.record(rows, final[rows], torch.full_like(final[rows], KEPT), conf[rows])
    return SampleOutput(tokens=final, confidence=conf, steps_run=steps_run, tail=tail)


def _greedy_tail(causal_fn: RowFn, final, conf, n: list[int], done: list[bool], eot: int, max_len: int):
    """When the steps run out, the causal pass writes each unfinished row's rest one token at a time
    (greedy, over the verified prefix's cached keys/values: a one-position pass per token, what
    Whisper pays for every token), up to end-of-text or `max_len` tokens: the transcript is always
    the verifier's greedy one, never the unverified draft or seed. Returns the (B, L') tokens and
    confidences, L' ≥ L, and per row how many tokens were written so."""
    rows, confs, tail = [], [], []
    for b in range(final.shape[0]):
        seq, cs = final[b, : n[b]].tolist(), conf[b, : n[b]].tolist()
        if done[b]:
            seq, cs = final[b].tolist(), conf[b].tolist()
        while not done[b] and len(seq) < max_len and (not seq or seq[-1] != eot):
            x = torch.tensor([seq + [eot]])  # the last token is a placeholder: position len(seq) reads those before it
            logits = causal_fn(x, torch.tensor([b]), len(seq)).float()[0, -1]
            if not seq:
                logits[eot] = -torch.inf  # as Whisper: never an empty transcript
            p = logits.softmax(-1)
            seq.append(int(p.argmax()))
            cs.append(float(p.max()))
        tail.append(0 if done[b] else len(seq) - n[b])
        rows.append(seq)
        confs.append(cs)
    width = max(final.shape[1], max(len(r) for r in rows) + 1)
    tokens = torch.tensor([r + [eot] * (width - len(r)) for r in rows], dtype=final.dtype)
    return tokens, torch.tensor([c + [0.0] * (width - len(c)) for c in confs]), tail


@torch.no_grad()
def canvas_scores(step_fn: StepFn, canvases: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder pass over candidate canvases (N, L) (each a transcript, EOS, padding): each one's
    log-likelihood (N,), the sum of log p(canvas token | canvas) over its first `lengths` (N,)
    positions, and every position's probability of its own token (N, L). The rescore method ranks
    CTC's n-best by it: the decoder, trained to restore transcripts from corrupted canvases, gives
    its own tokens lower probability where they look wrong given the audio and the other tokens."""
    logp = step_fn(canvases, None).float().log_softmax(-1).gather(-1, canvases[..., None])[..., 0]
    valid = torch.arange(canvases.shape[1], device=canvases.device)[None] < lengths[:, None]
    return (logp * valid).sum(-1), logp.exp()
