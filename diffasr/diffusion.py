"""Uniform discrete diffusion: corruption for training, and the sampler for inference.

Training corrupts a clean canvas x0 (B, L) by replacing each position with a uniformly random
token with probability rate(t), t drawn per example from a noise schedule.

The sampler starts from uniformly random tokens (or a CTC-seeded canvas) and, each step, predicts
every position, keeps the confident predictions and re-randomises the rest. By default commits are
*sticky* (diffusers' BlockRefinementScheduler in uniform mode: a growing quota of the most confident
positions, plus anything above a threshold; committed tokens can still be edited when the model is
very sure), and each step is self-conditioned on the previous step's logits. The prototype showed
why: a non-sticky sampler re-conditions on its own errors (repeated words, misplaced end, more
steps worse). EntropyBoundScheduler (the DiffusionGemma default) is available as `sampler="entropy"`.

The sampler sees only a `step_fn(canvas, sc_logits) -> logits`; it knows nothing about audio or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

# ---------------------------------------------------------------- corruption (training; language scoring)


def corrupt(x0: torch.Tensor, rate: torch.Tensor, vocab_size: int, generator=None) -> torch.Tensor:
    """Uniform corruption: x0 (B, L) long, rate (B,) -> xt (B, L), each position replaced w.p. rate."""
    flip = torch.rand(x0.shape, generator=generator, device=x0.device) < rate[:, None]
    noise = torch.randint(0, vocab_size, x0.shape, generator=generator, device=x0.device)
    return torch.where(flip, noise, x0)


# ---------------------------------------------------------------- inference options


SAMPLERS = ("refine", "entropy", "edit", "rescore")
SEEDED_SAMPLERS = ("edit", "rescore")  # they start from the CTC transcript (init="ctc")


@dataclass(frozen=True)
class DecodeOptions:
    """How to turn audio tokens into text. Validated here, once, for the API, CLI and server."""

    decoder: str = "diffusion"  # "diffusion" | "ctc" (greedy CTC on the model's CTC head, see ModelConfig.ctc_from)
    steps: int = 8  # denoising steps; cost is set by this, not by transcript length
    sampler: str = "refine"  # "refine": sticky confidence commits | "entropy": EntropyBound (not sticky)
    #                          | "edit" (init="ctc" only): keep the seed, replace only confident tokens
    #                          | "rescore" (init="ctc" only): the decoder picks among CTC's n-best in one step
    init: str = "noise"  # "noise": uniform random canvas | "ctc": start from the CTC transcript and refine it
    temperature: float = 0.0  # 0: commit argmax tokens; > 0 samples (refine) / t_max (entropy)
    threshold: float = 0.9  # refine: commit any position whose confidence exceeds this early
    edit_threshold: float | None = 0.95  # refine: revise a committed token when this sure of another;
    #                                      edit: replace a seed token when this sure of another
    remask: float = 0.0  # edit: seed tokens whose CTC probability is below this start as noise and take
    #                      the decoder's prediction whatever its confidence (Mask-CTC); 0: off
    self_condition: bool = True  # feed each step the previous step's logits
    canvas: int | None = None  # canvas length; None: estimated from the CTC length (+ margin)
    length_margin: float = 0.25  # estimated canvas = ceil(n_ctc * (1 + margin)) + 4, rounded up to 8
    early_stop: bool = True  # stop once every position is committed and predictions are stable
    nbest: int = 8  # rescore: CTC prefix-beam hypotheses the decoder scores
    rescore_weight: float = 2.0  # rescore: pick max of CTC log-score + weight · decoder log-likelihood
    beam: int = 16  # CTC prefix beam width (rescore sampler; decoder="ctc" with an n-gram), at least nbest
    lm_weight: float = 0.0  # CTC beam search (rescore sampler; decoder="ctc" turns from greedy into beam
    #                         search): weight of the language's n-gram (the model's lm/ folder); 0: none
    length_bonus: float = 0.0  # with an n-gram: added per token, offsetting what the n-gram charges for each
    seed: int = 0  # same seed, same input -> same output
    language: str | None = None  # None: auto
    restrict_script: bool = True  # a known language's output uses only its script's tokens

    def __post_init__(self):
        checks = [
            (self.decoder in ("diffusion", "ctc"), f"decoder must be 'diffusion' or 'ctc', not {self.decoder!r}"),
            (isinstance(self.steps, int) and 1 <= self.steps <= 64, f"steps must be an integer in 1..64, not {self.steps!r}"),
            (self.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}"),
            (self.init in ("noise", "ctc"), f"init must be 'noise' or 'ctc', not {self.init!r}"),
            (self.sampler not in SEEDED_SAMPLERS or self.init == "ctc",
             f"sampler {self.sampler!r} needs a seeded canvas (init='ctc')"),
            (isinstance(self.nbest, int) and 1 <= self.nbest <= 32, f"nbest must be an integer in 1..32, not {self.nbest!r}"),
            (0.0 <= self.rescore_weight <= 10.0, f"rescore_weight must be in [0, 10], not {self.rescore_weight}"),
            (isinstance(self.beam, int) and 1 <= self.beam <= 256, f"beam must be an integer in 1..256, not {self.beam!r}"),
            (0.0 <= self.lm_weight <= 5.0, f"lm_weight must be in [0, 5], not {self.lm_weight}"),
            (0.0 <= self.length_bonus <= 20.0, f"length_bonus must be in [0, 20], not {self.length_bonus}"),
            (self.sampler != "edit" or (self.edit_threshold is not None and 0 < self.edit_threshold <= 1),
             f"sampler 'edit' needs edit_threshold in (0, 1], not {self.edit_threshold}"),
            (0.0 <= self.remask < 1.0, f"remask must be in [0, 1), not {self.remask}"),
            (self.remask == 0 or self.sampler == "edit", "remask needs the edit sampler"),
            (0.0 <= self.temperature <= 2.0, f"temperature must be in [0, 2], not {self.temperature}"),
            (0.0 < self.threshold <= 1.0, f"threshold must be in (0, 1], not {self.threshold}"),
            (self.canvas is None or 8 <= self.canvas <= 512, f"canvas must be in 8..512, not {self.canvas}"),
            (0.0 <= self.length_margin <= 2.0, f"length_margin must be in [0, 2], not {self.length_margin}"),
        ]
        for ok, msg in checks:
            if not ok:
                from .errors import ConfigError

                raise ConfigError(msg)


def with_defaults(defaults: dict, given: dict) -> dict:
    """A model's `decode_defaults` overridden by the caller's fields. Asking for a noise start
    without naming a sampler drops a default `edit` or `rescore` sampler, which need a CTC seed, and
    a default `remask`, which belongs to it."""
    merged = {**defaults, **given}
    if given.get("init") == "noise" and "sampler" not in given and merged.get("sampler") in SEEDED_SAMPLERS:
        del merged["sampler"]
    if merged.get("sampler", "refine") != "edit" and "remask" not in given:
        merged.pop("remask", None)
    return merged


def round_up(n: int, multiple: int = 8) -> int:
    """The smallest multiple of `multiple` ≥ n: canvas lengths come in steps of 8, so batches of
    similar clips share shapes."""
    return -(-n // multiple) * multiple


def canvas_length(n_ctc: int, options: DecodeOptions, max_len: int) -> int:
    """Canvas size from a CTC token count: room for the transcript, EOS and a margin, multiple of 8."""
    if options.canvas is not None:
        return min(options.canvas, max_len)
    n = math.ceil(n_ctc * (1 + options.length_margin)) + 4
    return int(min(max_len, max(8, round_up(n))))


# ---------------------------------------------------------------- the sampler


@dataclass
class SampleOutput:
    tokens: torch.Tensor  # (B, L) final canvas
    confidence: torch.Tensor  # (B, L) probability of each final token at the last step
    steps_run: int


StepFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


@torch.no_grad()
def sample(step_fn: StepFn, init: torch.Tensor, vocab_size: int, options: DecodeOptions, generator: torch.Generator,
           row_generators: list[torch.Generator] | None = None, free: torch.Tensor | None = None) -> SampleOutput:
    """Denoise `init` (B, L) in `options.steps` steps; `step_fn(canvas, sc) -> logits (B, L, V)`.

    The loop is the same for both schedulers: predict, let the scheduler commit / re-randomise,
    feed the (temperature-scaled) logits back as self-conditioning. With `row_generators` (one per
    row), re-randomised positions are drawn per row, so a row's result does not depend on which
    other rows share its batch. `free` (B, L) marks positions the edit sampler fills unconditionally.
    """
    from diffusers import BlockRefinementScheduler, EntropyBoundScheduler

    if options.sampler == "edit":
        return edit(step_fn, init, options, free)
    n = options.steps
    if options.sampler == "refine":
        sched = BlockRefinementScheduler(threshold=options.threshold, editing_threshold=options.edit_threshold)
        sched.set_timesteps(n, block_length=init.shape[1])
    else:
        t_max = options.temperature or 0.8
        sched = EntropyBoundScheduler(entropy_bound=0.1, t_max=t_max, t_min=min(0.4, t_max))
        sched.set_timesteps(n)
    canvas, sc, prev_pred = init, None, None
    logits = None
    steps_run = 0
    for t in range(n):  # ascending step index: BlockRefinement's own `timesteps` run backwards (docs pitfall)
        logits = step_fn(canvas, sc if options.self_condition else None)
        steps_run += 1
        if options.sampler == "refine":
            out = sched.step(logits, t, canvas, mask_token_id=None, temperature=options.temperature, generator=generator)
            canvas, sc, kept = out.prev_sample, logits, sched._committed
            done = bool(kept.all())
        else:
            out = sched.step(logits, t, canvas, generator=generator)
            canvas, sc, kept = out.prev_sample, out.pred_logits, out.accepted_index
            done = False
        if options.init == "ctc":
            # A CTC-seeded canvas is a noisy estimate, not noise: positions not (yet) committed fall back
            # to the seed instead of being re-randomised, like the committed-predictions-plus-noise states
            # the decoder is trained to correct.
            canvas = torch.where(kept, canvas, init)
        elif row_generators is not None:
            noise = torch.stack([torch.randint(0, vocab_size, canvas.shape[1:], generator=g) for g in row_generators])
            canvas = torch.where(kept, canvas, noise.to(canvas.device))
        pred = logits.argmax(-1)
        if options.early_stop and done and prev_pred is not None and torch.equal(pred, prev_pred):
            break
        prev_pred = pred
    probs = logits.softmax(-1)
    if options.sampler == "refine":
        final = canvas  # every position committed by the last step (quota reaches L)
    else:
        final = logits.argmax(-1)  # EntropyBound commits nothing for good: take the last argmax
    conf = probs.gather(-1, final[..., None])[..., 0]
    return SampleOutput(tokens=final, confidence=conf, steps_run=steps_run)


@torch.no_grad()
def edit(step_fn: StepFn, init: torch.Tensor, options: DecodeOptions, free: torch.Tensor | None = None) -> SampleOutput:
    """Refine a seeded canvas (B, L) by confident edits only: each step, a position takes the
    decoder's prediction when its probability is ≥ `edit_threshold`, and keeps its current token
    otherwise. A decoder weaker than its seed cannot make the seed worse by much, and one that is
    sure of a correction gets to make it; stops early when a step changes nothing. Positions in
    `free` (B, L) (seed tokens CTC was unsure of, started as noise) always take the prediction."""
    canvas, sc, probs = init, None, None
    steps_run = 0
    for _ in range(options.steps):
        logits = step_fn(canvas, sc if options.self_condition else None)
        steps_run += 1
        probs = logits.float().softmax(-1)
        conf, pred = probs.max(-1)
        take = conf >= options.edit_threshold
        if free is not None:
            take = take | free
        new = torch.where(take, pred, canvas)
        sc = logits
        changed = not torch.equal(new, canvas)
        canvas = new
        if options.early_stop and not changed:
            break
    conf = probs.gather(-1, canvas[..., None])[..., 0]
    return SampleOutput(tokens=canvas, confidence=conf, steps_run=steps_run)


@torch.no_grad()
def canvas_scores(step_fn: StepFn, canvases: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One decoder pass over candidate canvases (N, L) (each a transcript, EOS, padding): each one's
    log-likelihood (N,), the sum of log p(canvas token | canvas) over its first `lengths` (N,)
    positions, and every position's probability of its own token (N, L). The rescore sampler ranks
    CTC's n-best by it: the decoder, trained to restore transcripts from corrupted canvases, gives
    its own tokens lower probability where they look wrong given the audio and the other tokens."""
    logp = step_fn(canvases, None).float().log_softmax(-1).gather(-1, canvases[..., None])[..., 0]
    valid = torch.arange(canvases.shape[1], device=canvases.device)[None] < lengths[:, None]
    return (logp * valid).sum(-1), logp.exp()


def clean_canvas(rows: list[list[int]], length: int, eos: int, pad: int) -> torch.Tensor:
    """Canvas (B, length) holding each row's tokens, then EOS, then padding (cut at `length`):
    the training target x0, and the CTC-seeded start of the sampler."""
    canvas = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, ids in enumerate(rows):
        row = (list(ids) + [eos])[:length]
        canvas[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return canvas


def random_canvas(batch: int, length: int, vocab_size: int, generator) -> torch.Tensor:
    """Uniformly random tokens (B, L): the diffusion prior the decoder starts from. `generator` is one
    torch.Generator, or a list with one per row (rows then independent of their batch-mates)."""
    if isinstance(generator, list):
        return torch.stack([torch.randint(0, vocab_size, (length,), generator=g) for g in generator])
    return torch.randint(0, vocab_size, (batch, length), generator=generator)
