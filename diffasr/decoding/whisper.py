"""The `base` preset's backend (`WhisperBackend`): Whisper-base's decoder as the denoiser over a
Whisper-token canvas.

The CTC head (and its n-gram beam) is diffasr-small's, over the same frozen encoder features: it
gives the canvas length, the seed (`ctc-refine`, `ctc-edit`, `ctc-verify`), the n-best (`rescore`)
and word times.
The sampled methods are seeded with the CTC beam's best (greedy CTC when ngram_weight is 0).
The canvas lives in the index space of the row language's vocabulary (`WhisperDenoiser.vocab`):
the sampler draws uniform noise over it and the output layer scores only it.

    rows of one batch ─► CTC text (small) ─► Whisper ids ─► canvas length L (+ seed)
    ─► sampler.refine / edit over step_fn(canvas) = denoiser logits (B, L, |V_lang|) ─► Whisper text
       (sampler.verify: the same, plus a decoder's causal logits over candidate canvases: the
        adapted one's over the same features, Whisper-base's as released over its padded window, or
        the mean of the two's log-probabilities)
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import torch

from ..errors import ConfigError
from ..text import is_cjk, t2s
from .canvas import canvas_length, random_canvas, written
from .hotwords import previous_text, whisper_hotwords
from .options import RELEASED, VERIFIED, WHISPER_READS, DecodeOptions
from .sampler import canvas_scores, edit, refine, verify
from .steps import END, StepRecorder
from .types import Front, Hypothesis

MAX_CANVAS = 224  # Whisper's decoder has 448 positions; prompt + canvas stay well inside


def _to_index(vocab: torch.Tensor, ids: list[int]) -> list[int]:
    """Whisper ids -> indices into the sorted `vocab`; ids outside it are dropped."""
    t = torch.tensor(ids, dtype=torch.long)
    pos = torch.searchsorted(vocab, t).clamp(max=len(vocab) - 1)
    return pos[vocab[pos] == t].tolist()


def _index_canvas(rows: list[list[int]], L: int, eot_index: int) -> torch.Tensor:
    canvas = torch.full((len(rows), L), eot_index, dtype=torch.long)
    for i, r in enumerate(rows):
        r = r[: L - 1]
        canvas[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return canvas


def _step_fn(den, vocab: torch.Tensor, prompts, kv, fmask):
    def step_fn(canvas_idx: torch.Tensor, sc) -> torch.Tensor:  # (B, L) indices -> (B, L, |V|)
        return den.denoise(prompts, vocab[canvas_idx], kv, fmask, vocab)

    return step_fn


def _take(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """t[rows] along the batch; a one-clip batch is broadcast, not copied (its keys/values are MBs)."""
    return t.expand(len(rows), *t.shape[1:]) if t.shape[0] == 1 else t[rows]


class _CausalPrefixes:
    """The causal pass's self-attention keys/values of the canvases it last read, per batch row.

    verify reads each row's candidates causally every step, and a verified prefix never changes: the
    keys/values of prompt + canvas[:s - 1] are those of a candidate the previous step read (the one
    it accepted). Looked up by content, so the sampler needs to know nothing of it."""

    def __init__(self):
        self.seen: dict[int, list[tuple[torch.Tensor, list]]] = {}  # row -> [(canvas (L,), [[k, v]] per layer)]

    def find(self, canvas: torch.Tensor, rows: torch.Tensor, s: int, n_inputs: int) -> list | None:
        """Per layer [k, v] (N, H, n_inputs, D/H) for canvases (N, L) agreeing with a seen one of their
        row on positions < s - 1; None unless every canvas has one."""
        found, same = [], max(s - 1, 0)
        for x, b in zip(canvas, rows.tolist()):
            fits = ((c, kv) for c, kv in self.seen.get(b, []) if kv[0][0].shape[1] >= n_inputs)
            match = next((kv for c, kv in fits if torch.equal(c[:same], x[:same])), None)
            if match is None:
                return None
            found.append(match)
        return [[torch.stack([f[i][j][:, :n_inputs] for f in found]) for j in (0, 1)] for i in range(len(found[0]))]

    def keep(self, canvas: torch.Tensor, rows: torch.Tensor, past: list) -> None:
        self.seen = {}
        for r, b in enumerate(rows.tolist()):
            self.seen.setdefault(b, []).append((canvas[r], [[k[r], v[r]] for k, v in past]))


def suppressed(den, vocab: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks (|V|,) over `vocab`'s indices of what Whisper's greedy decoding (whisper_decoder.greedy,
    as faster-whisper) never writes (the config's suppress ids, special tokens, timestamps) and of what
    it never writes first (suppress_ids_begin, the blank)."""
    t = den.tokens
    never = torch.isin(vocab, torch.tensor(t.suppress, dtype=vocab.dtype)) | (vocab > t.n_text)
    first = torch.isin(vocab, torch.tensor(list(t.suppress_begin) + [220], dtype=vocab.dtype))
    return never.to(vocab.device), first.to(vocab.device)


def _row_fns(den, vocab: torch.Tensor, prompts, kv, fmask, verifier: str = "adapted", window=None, prev=None):
    """verify's view of the decoder: (canvas (N, L) indices, rows (N,) of the batch, first position s)
    -> logits (N, L - s, |V|), bidirectional (denoise) and causal (autoregressive, reading only
    positions s.., over the keys/values of the verified prefix kept from the step before). The causal
    pass is `verifier`'s: "adapted", the adapted decoder over `kv`; "whisper", the released decoder
    over `window` (kv, frame mask of Whisper's padded windows); "ensemble", the mean of the two's
    log-probabilities. prev (N', P') or None: the released decoder's prompts with Whisper's previous
    text (the prompt) before them (hotwords.previous_text), one per batch row."""

    def rows_of(rows, kv, fmask, released=False):
        p = prev if released and prev is not None else prompts
        return p[rows], [(_take(a, rows), _take(b, rows)) for a, b in kv], fmask[rows]

    def denoise(canvas_idx, rows, s):
        p, k, m = rows_of(rows, kv, fmask)
        h = den.denoise(p, vocab[canvas_idx], k, m, hidden=True)
        return den.decoder.logits(h[:, s:], vocab)

    never, first = suppressed(den, vocab)

    def causal_of(released: bool):
        prefixes = _CausalPrefixes()
        dec = den.released() if released else den.decoder
        ckv, cmask = window if released else (kv, fmask)

        def causal(canvas_idx, rows, s):
            p, k, m = rows_of(rows, ckv, cmask, released)
            past = prefixes.find(canvas_idx, rows, s, p.shape[1] - 1 + s) or [[None, None] for _ in dec.layers]
            h = den.autoregressive_from(p, vocab[canvas_idx], k, m, s, past, released)
            prefixes.keep(canvas_idx, rows, past)
            logits = dec.logits(h, vocab).masked_fill(never, -torch.inf)  # as greedy() suppresses
            if s == 0:
                logits[:, 0] = logits[:, 0].masked_fill(first, -torch.inf)
            return logits

        return causal

    if verifier != "ensemble":
        return denoise, causal_of(verifier == "whisper")
    adapted, released = causal_of(False), causal_of(True)

    def ensemble(canvas_idx, rows, s):
        # A product of experts: the adapted decoder heard this kind of audio (and the CTC seeds), the
        # released one keeps Whisper's language; each vetoes what the other alone would write.
        a = adapted(canvas_idx, rows, s).float().log_softmax(-1)
        return (a + released(canvas_idx, rows, s).float().log_softmax(-1)) / 2

    return denoise, ensemble


def _until_eot(idx: list[int], conf: list[float], vocab: torch.Tensor, eot: int) -> tuple[list[int], list[float]]:
    ids, cs = [], []
    for i, c in zip(idx, conf):
        tok = int(vocab[i])
        if tok == eot:
            break
        ids.append(tok)
        cs.append(c)
    return ids, cs


class Decoded(NamedTuple):
    """One row of denoise_batch: Whisper text ids, a confidence per id, the steps run, and the tokens
    the causal pass wrote one by one after the last step (verify's tail; 0 elsewhere)."""

    ids: list[int]
    confidence: list[float]
    steps_run: int
    tail_tokens: int = 0


@torch.no_grad()
def denoise_batch(
    den,
    feats: list,
    languages: list[str],
    seeds: list[list[int]],
    options: DecodeOptions,
    nbest: list[list[tuple[list[int], float]]] | None = None,
    windows: list | None = None,
    steps_out: dict | None = None,
) -> list[Decoded]:
    """Per row, its Decoded (ids, confidences, steps run, verify's tail).

    feats: encoder features (F_i, D); seeds: Whisper ids of each row's CTC transcript (canvas length
    and, for ctc-refine, ctc-edit and ctc-verify, the starting canvas); nbest (rescore): per row, CTC candidates as
    (Whisper ids, beam score); windows: per row, the encoder's padded 30-s window (1500, D), or None
    where the row's verifier does not read it (`needs_window`); steps_out (options.return_steps): filled
    with row -> its steps (steps.py). Rows are grouped by language and
    canvas length; each row draws its noise from its own generator, so its transcript does not depend
    on its batch-mates."""
    eot = den.tokens.eot
    out: dict[int, Decoded] = {}
    if options.method == "rescore":
        return _rescore(den, feats, languages, nbest, options, steps_out)
    lengths = [canvas_length(len(s), options, MAX_CANVAS) for s in seeds]
    for key in sorted(set(zip(languages, lengths))):
        lang, L = key
        rows = [i for i in range(len(feats)) if (languages[i], lengths[i]) == key]
        vocab, bias = whisper_hotwords(den.vocab[lang], den.tokens, options.hotwords, options.hotword_boost, lang)
        eot_index = int(torch.searchsorted(vocab, torch.tensor(eot)))
        kv, fmask = den.memory([feats[i] for i in rows])
        prompts = den.prompts([lang] * len(rows))
        step_fn = _step_fn(den, vocab, prompts, kv, fmask)
        gens = [torch.Generator().manual_seed(options.seed) for _ in rows]
        from_noise = options.method in ("diffusion", "diffusion-verify")
        seed_idx = None if from_noise else [_to_index(vocab, seeds[i])[: L - 1] for i in rows]
        init = random_canvas(len(rows), L, len(vocab), gens) if from_noise else _index_canvas(seed_idx, L, eot_index)
        rec = StepRecorder(len(rows)) if steps_out is not None else None
        if options.method == "ctc-edit":
            res = edit(step_fn, init, options, recorder=rec)
        elif options.method in VERIFIED:
            window, verifier = None, den.verifier(lang, options.verifier)
            prev = previous_text(den.tokens, options.prompt, lang)
            if prev and verifier not in RELEASED:
                raise ConfigError(
                    f"prompt is read by the released decoder: verifier whisper or ensemble, not {verifier}"
                )
            prev = torch.tensor([prev + den.tokens.prompt(lang)] * len(rows)) if prev else None
            if verifier in RELEASED:
                if windows is None or any(windows[i] is None for i in rows):
                    raise ConfigError(f"the {verifier} verifier reads the encoder's padded windows: none were given")
                window = den.memory([windows[i] for i in rows], released=True)
            denoise_fn, causal_fn = _row_fns(den, vocab, prompts, kv, fmask, verifier, window, prev)
            res = verify(
                denoise_fn,
                bias.wrap(causal_fn) if bias else causal_fn,
                init,
                len(vocab),
                eot_index,
                options,
                seeds=seed_idx,
                row_generators=gens,
                max_len=L if options.canvas is not None else MAX_CANVAS,  # a canvas given is not grown
                recorder=rec,
            )
        else:
            res = refine(
                step_fn,
                init,
                len(vocab),
                options,
                torch.Generator().manual_seed(options.seed),
                seeded=options.method == "ctc-refine",
                row_generators=gens,
                recorder=rec,
            )
        for j, i in enumerate(rows):
            if rec is not None:
                steps_out[i] = rec.strings(j, functools.partial(token_string, den, vocab), eot_index)
            ids, conf = written(*_until_eot(res.tokens[j].tolist(), res.confidence[j].tolist(), vocab, eot), options)
            out[i] = Decoded(ids, conf, res.steps_run, res.tail[j] if res.tail else 0)
    return [out[i] for i in range(len(feats))]


def token_string(den, vocab: torch.Tensor, index: int) -> str:
    """The text of canvas index `index` (end-of-text as steps.END)."""
    tok = int(vocab[index])
    return END if tok == den.tokens.eot else den.tokens.tok.decode([tok], skip_special_tokens=False)


def candidate_canvases(den, feat, lang: str, rows: list[list[int]], options: DecodeOptions):
    """Clean canvases of one clip's candidate transcripts (Whisper ids) in `lang`'s index space:
    (vocab, canvas (N, L) indices, lengths (N,) tokens + end-of-text, prompts (N, P), cross-attention
    keys/values and frame mask of `feat` (F, D) repeated N times)."""
    vocab = den.vocab[lang]
    idx = [_to_index(vocab, ids) for ids in rows]
    L = canvas_length(max(len(r) for r in idx), options, MAX_CANVAS)
    canvas = _index_canvas(idx, L, den.eot_index(lang))
    kv, fmask = den.memory([feat] * len(rows))
    lens = torch.tensor([min(len(r) + 1, L) for r in idx])
    return vocab, canvas, lens, den.prompts([lang] * len(rows)), kv, fmask


def _rescore(den, feats, languages, nbest, options: DecodeOptions, steps_out: dict | None = None):
    """The decoder scores each row's CTC candidates in one pass (clean canvases); the best CTC beam
    score + rescore_weight × decoder log-likelihood wins."""
    eot = den.tokens.eot
    out = []
    for i, cands in enumerate(nbest):
        if not cands:
            out.append(Decoded([], [], 1))
            continue
        vocab, canvas, lens, prompts, kv, fmask = candidate_canvases(
            den, feats[i], languages[i], [ids for ids, _ in cands], options
        )
        ll, probs = canvas_scores(_step_fn(den, vocab, prompts, kv, fmask), canvas, lens)
        total = torch.tensor([s for _, s in cands]) + options.rescore_weight * ll
        b = int(total.argmax())
        ids, conf = _until_eot(canvas[b].tolist(), probs[b].tolist(), vocab, eot)
        out.append(Decoded(ids, conf, 1))
        if steps_out is not None:  # one pass: one step, the winning candidate
            rec = StepRecorder(1)
            rec.record([0], canvas[b][None], torch.zeros_like(canvas[b])[None], probs[b][None])
            steps_out[i] = rec.strings(0, functools.partial(token_string, den, vocab), den.eot_index(languages[i]))
    return out


def token_spans(den, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text (stripped) and, per token, the characters of it that the token wrote: a
    token holding only part of a character's bytes writes none (its span is empty, where the
    character will start)."""
    text_so_far, spans = "", []
    for k in range(len(ids)):
        t = den.tokens.tok.decode(ids[: k + 1])
        spans.append((len(text_so_far), len(t)))
        text_so_far = t
    lead, text = len(text_so_far) - len(text_so_far.lstrip()), text_so_far.strip()
    return text, [(min(max(a - lead, 0), len(text)), min(max(b - lead, 0), len(text))) for a, b in spans]


def simplified(text: str) -> str:
    """Chinese text in simplified characters (OpenCC t2s), character for character, so that it stays
    aligned with its per-character confidences."""
    return "".join(t2s().convert(c) if is_cjk(c) else c for c in text)


def needs_window(den, options: DecodeOptions, languages: list) -> list[bool]:
    """Per row: whether its decoding reads the encoder's padded 30-s window (a verified method whose
    verifier for the row's language runs the released decoder: "whisper" or "ensemble")."""
    return [options.method in VERIFIED and den.verifier(lang, options.verifier) in RELEASED for lang in languages]


class WhisperBackend:
    """The decoder backend (decoding.backend.Backend) of the base preset: `denoiser`, a
    WhisperDenoiser, over the CTC head's rows turned into Whisper ids of the row's language."""

    reads = WHISPER_READS

    def __init__(self, denoiser):
        self.denoiser = denoiser

    def needs_window(self, options: DecodeOptions, languages: list) -> list[bool]:
        return needs_window(self.denoiser, options, languages)

    def decode(
        self,
        model,
        feats: list,
        front: Front,
        languages: list,
        options: DecodeOptions,
        ctc_rows: list,
        times: dict,
        windows=None,
    ) -> list[Hypothesis]:
        den, tok = self.denoiser, model.tokenizer
        t0 = time.perf_counter()
        if options.method == "rescore":
            nbest = [
                [(den.tokens.encode(tok.decode(ids), lang), s) for ids, s in b] for b, lang in zip(ctc_rows, languages)
            ]
            seeds = [c[0][0] if c else [] for c in nbest]
        else:
            seeds = [den.tokens.encode(tok.decode(ids), lang) for ids, lang in zip(ctc_rows, languages)]
            nbest = None
        times["ctc_seed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        steps = {} if options.return_steps else None
        rows = denoise_batch(den, feats, languages, seeds, options, nbest, windows, steps)
        times.update(prefill=0.0, denoise=time.perf_counter() - t0, steps_run=max(r.steps_run for r in rows))
        out = []
        for i, ((ids, conf, steps_run, tail), lang) in enumerate(zip(rows, languages)):
            text, spans = token_spans(den, ids)
            if lang == "zh":
                text = simplified(text)
            # the words' times come from the CTC head's alignment of the same text in its own tokens
            out.append(
                Hypothesis(
                    ids,
                    conf,
                    steps_run,
                    text=text,
                    token_strings=[text[a:b] for a, b in spans],
                    spans=spans,
                    align_tokens=tok.encode(text) if text else [],
                    tail_tokens=tail,
                    steps=None if steps is None else steps.get(i, []),
                )
            )
        return out

    def one_step(self, model, feats, front, ctc_rows, languages, options):
        """The Whisper decoder's pass over a canvas of the (first row's) language's vocabulary."""
        den, lang = self.denoiser, languages[0] or "en"
        L = max(canvas_length(len(ids), options, MAX_CANVAS) for ids in ctc_rows)
        vocab = den.vocab[lang]
        canvas = vocab[torch.randint(0, len(vocab), (len(ctc_rows), L), generator=torch.Generator().manual_seed(0))]
        kv, fmask = den.memory(feats)
        prompts = den.prompts([lang] * len(ctc_rows))
        return (lambda: den.denoise(prompts, canvas, kv, fmask, vocab)), L
