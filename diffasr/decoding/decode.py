"""The method switch: a batch's audio tokens and CTC logits -> one Hypothesis per row.

    ctc-greedy / ctc-beam   the CTC head alone (ctc.py)
    rescore                 CTC beam n-best, one denoiser pass (rescore.py; whisper.py for base)
    diffusion / ctc-refine  the refine sampler from noise / from the CTC transcript (sampler.py)
    ctc-edit                the edit sampler from the CTC transcript
    diffusion-verify / ctc-verify  self-speculative decoding, base only (sampler.verify, via whisper.py)

The model supplies `prefill` (prompt state), `denoise(state, canvas, sc)`, `tokenizer`, `ngrams`
and `config`; a model with a Whisper `denoiser` (the base preset) runs the denoising methods in
its own index space (whisper.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from ..tokenizer import SCRIPTS
from .canvas import canvas_length, clean_canvas, random_canvas, written
from .ctc import ctc_greedy, ctc_nbest
from .hotwords import context_graph
from .options import DecodeOptions, check_reads
from .rescore import rescore
from .sampler import edit, refine, step_fn
from .steps import StepRecorder, small_strings


@dataclass
class Hypothesis:
    tokens: list[int]  # the model's tokenizer ids
    confidences: list[float]  # one per token, in [0, 1]
    steps_run: int = 0
    text: str | None = None  # set when the method writes text itself (base: Whisper's detokenised output)
    char_confidences: np.ndarray | None = None  # with `text`: per character
    steps: list[dict] | None = None  # options.return_steps: each step's canvas (steps.py)


def allowed_tokens(tok, languages: list, options: DecodeOptions, device) -> torch.Tensor | None:
    """(B, V) bool: the tokens each row may emit given its language (all for rows without one), or
    None when nothing is restricted. Without it, a weak acoustic model spells unclear Spanish with
    Devanagari pieces: every language shares one vocabulary, and the projector CTC head never sees
    the prompt (the prompt head does, but knowing the language is not the same as obeying it)."""
    if not options.restrict_script or not any(lang in SCRIPTS for lang in languages):
        return None
    every = torch.ones(tok.vocab_size, dtype=torch.bool)
    return torch.stack([tok.script_mask(lang) if lang in SCRIPTS else every for lang in languages]).to(device)


class Front(NamedTuple):
    """What every method starts from: audio tokens (B, T', h) with lengths n_audio (B,), CTC logits
    (B, T', V) script-masked, the prompt state the CTC head computed (or None), and the tokens each
    row may emit (B, V) (or None)."""

    audio_tokens: torch.Tensor
    n_audio: torch.Tensor
    ctc: torch.Tensor
    prefilled: object
    allowed: torch.Tensor | None


def decode_front(model, feats: list, languages: list, options: DecodeOptions, times: dict | None = None) -> Front:
    """Frozen-encoder features (list of (F_i, d)) -> projector, CTC head, script mask (`Front`)."""
    t0 = time.perf_counter()
    audio_tokens, n_audio = model.project(feats)
    ctc, prefilled = model.ctc(audio_tokens, n_audio, languages)
    allowed = allowed_tokens(model.tokenizer, languages, options, ctc.device)
    if allowed is not None:  # a known language rules out the other scripts' tokens, in CTC and decoder alike
        ctc = ctc.masked_fill(~allowed[:, None, :], -1e4)
    if times is not None:
        times["projector_ctc"] = time.perf_counter() - t0
    return Front(audio_tokens, n_audio, ctc, prefilled, allowed)


def decode_texts(model, feats: list, languages: list, options: DecodeOptions) -> list[str]:
    """Transcripts of a batch of encoder features, decoded by `options.method` (no word times, no
    speech guard): what training's dev evaluation reads."""
    hyps = decode(model, feats, decode_front(model, feats, languages, options), languages, options, {})
    return [model.tokenizer.decode(h.tokens) if h.text is None else h.text for h in hyps]


def is_base(model) -> bool:
    """Whether `model` denoises with a Whisper decoder (the base preset)."""
    return getattr(model, "denoiser", None) is not None


def nbest(model, ctc, n_audio, languages: list, options: DecodeOptions, k: int) -> list:
    """Per row, the CTC beam's `k` best (token ids, score), with the row language's n-gram when
    options.ngram_weight > 0 and the model has one, and options.hotwords' paths boosted."""
    ngrams = [model.ngrams.get(lang) if options.ngram_weight > 0 else None for lang in languages]
    graph = context_graph(model.tokenizer, options.hotwords, options.hotword_boost)
    return ctc_nbest(ctc, n_audio, model.tokenizer.pad, ngrams, options, k, hotwords=graph)


@torch.no_grad()
def decode(
    model, feats: list, front: Front, languages: list, options: DecodeOptions, times: dict, windows=None
) -> list[Hypothesis]:
    """Decode one batch by `options.method`. feats: encoder features (list of (F_i, d)); front: what
    `decode_front` made of them (audio tokens, CTC logits script-masked, prompt state, allowed tokens);
    windows (base): per row, the encoder's padded 30-s window where its verifier reads one, else None."""
    audio_tokens, n_audio, ctc, prefilled, allowed = front
    base = is_base(model)
    check_reads(options, beam_seeded=base)
    tok, method = model.tokenizer, options.method
    if method == "rescore":
        ctc_rows = nbest(model, ctc, n_audio, languages, options, options.nbest)
    elif method == "ctc-beam" or (
        base and method != "ctc-greedy" and (options.ngram_weight > 0 or bool(options.hotwords))
    ):
        ctc_rows = [beam[0][0] if beam else [] for beam in nbest(model, ctc, n_audio, languages, options, 1)]
    else:  # greedy CTC: the transcript, or the canvas length (and seed) of a sampled method
        ctc_rows = ctc_greedy(ctc, n_audio, blank=tok.pad)
    if method in ("ctc-greedy", "ctc-beam"):
        return [Hypothesis(ids, [1.0] * len(ids)) for ids in ctc_rows]
    if base:
        from .whisper import decode as whisper_decode

        return whisper_decode(model.denoiser, tok, feats, languages, options, ctc_rows, times, windows)
    if method == "rescore":
        t0 = time.perf_counter()
        rows = rescore(model, audio_tokens, n_audio, ctc_rows, languages, allowed, options, prefilled)
        # one decoder pass; "denoise" includes the CTC beam search, "prefill" is the CTC head's, reused
        times.update(prefill=0.0, denoise=time.perf_counter() - t0, steps_run=1)
        hyps = [Hypothesis(*rows[i], steps_run=1) for i in range(len(ctc_rows))]
        if options.return_steps:  # one pass: one step, the winning candidate
            for h in hyps:
                rec = StepRecorder(1)
                rec.record([0], torch.tensor([h.tokens + [tok.eos]]), torch.zeros(1, len(h.tokens) + 1, dtype=torch.long), torch.tensor([h.confidences + [1.0]]))
                h.steps = small_strings(rec, 0, tok)
        return hyps
    return _sampled(model, audio_tokens, n_audio, ctc_rows, prefilled, languages, allowed, options, times)


def _sampled(
    model,
    audio_tokens,
    n_audio,
    ctc_ids: list,
    prefilled,
    languages: list,
    allowed,
    options: DecodeOptions,
    times: dict,
) -> list[Hypothesis]:
    """diffusion, ctc-refine and ctc-edit on the small preset. Rows are grouped by canvas length and
    each row draws its noise from its own generator seeded with options.seed, so a clip's transcript
    does not depend on its batch-mates."""
    tok = model.tokenizer
    lengths = [canvas_length(len(ids), options, model.config.canvas_length) for ids in ctc_ids]
    times["prefill"] = times["denoise"] = 0.0
    out: dict[int, Hypothesis] = {}
    for L in sorted(set(lengths)):
        rows = [i for i, n in enumerate(lengths) if n == L]
        t0 = time.perf_counter()
        if prefilled is not None and len(rows) == len(ctc_ids):  # the CTC head's prefill serves every row
            state = prefilled
        else:
            state = model.prefill(audio_tokens[rows], n_audio[rows], [languages[i] for i in rows])
        times["prefill"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        fn = step_fn(model, state, None if allowed is None else allowed[rows])
        gens = [torch.Generator().manual_seed(options.seed) for _ in rows]
        rec = StepRecorder(len(rows)) if options.return_steps else None
        if options.method == "diffusion":
            init = random_canvas(len(rows), L, tok.vocab_size, gens)
        else:  # the CTC transcript, EOS, then padding
            init = clean_canvas([ctc_ids[i] for i in rows], L, tok.eos, tok.pad)
        if options.method == "ctc-edit":
            res = edit(fn, init.to(model.device), options, recorder=rec)
        else:
            res = refine(
                fn,
                init.to(model.device),
                tok.vocab_size,
                options,
                torch.Generator(model.device).manual_seed(options.seed),
                seeded=options.method == "ctc-refine",
                row_generators=gens,
                recorder=rec,
            )
        times["denoise"] += time.perf_counter() - t0
        for j, i in enumerate(rows):
            ids, conf = written(*_until_eos(res.tokens[j].tolist(), res.confidence[j].tolist(), tok), options)
            out[i] = Hypothesis(ids, conf, res.steps_run, steps=None if rec is None else small_strings(rec, j, tok))
    times["steps_run"] = max(h.steps_run for h in out.values())
    return [out[i] for i in range(len(ctc_ids))]


def _until_eos(ids: list[int], conf: list[float], tok) -> tuple[list[int], list[float]]:
    """Tokens before the first EOS, without pads/specials (the canvas ends in EOS then padding)."""
    keep_ids, keep_conf = [], []
    for i, c in zip(ids, conf):
        if i == tok.eos:
            break
        if i in (tok.pad, tok.bos, tok.sep, tok.audio):
            continue
        keep_ids.append(i)
        keep_conf.append(c)
    return keep_ids, keep_conf
