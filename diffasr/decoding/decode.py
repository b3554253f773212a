"""The method switch: a batch's audio tokens and CTC logits -> one Hypothesis per row.

    ctc-greedy / ctc-beam   the CTC head alone (ctc.py)
    rescore                 CTC beam n-best, one denoiser pass
    diffusion / ctc-refine  the refine sampler from noise / from the CTC transcript (sampler.py)
    ctc-edit                the edit sampler from the CTC transcript
    diffusion-verify / ctc-verify  self-speculative decoding (sampler.verify), on a backend that runs causally

The model supplies `project`, `ctc`, `tokenizer`, `ngrams` and `backend` (backend.py): the methods
that run a denoiser are the backend's, over the CTC rows this module computes; which methods a
backend runs, and what each reads there, is its `reads` table.
"""

from __future__ import annotations

import time

import torch

from ..text import SCRIPTS
from .ctc import ctc_greedy, ctc_nbest
from .hotwords import context_graph
from .options import DecodeOptions, check_reads
from .types import Front, Hypothesis

__all__ = ["Front", "Hypothesis", "allowed_tokens", "decode", "decode_front", "decode_texts", "nbest"]


def allowed_tokens(tok, languages: list, options: DecodeOptions, device) -> torch.Tensor | None:
    """(B, V) bool: the tokens each row may emit given its language (all for rows without one), or
    None when nothing is restricted. Without it, a weak acoustic model spells unclear Spanish with
    Devanagari pieces: every language shares one vocabulary, and the projector CTC head never sees
    the prompt (the prompt head does, but knowing the language is not the same as obeying it)."""
    if not options.restrict_script or not any(lang in SCRIPTS for lang in languages):
        return None
    every = torch.ones(tok.vocab_size, dtype=torch.bool)
    return torch.stack([tok.script_mask(lang) if lang in SCRIPTS else every for lang in languages]).to(device)


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
    windows: per row, the encoder's padded 30-s window where the backend's `needs_window` says so, else None."""
    ctc, n_audio = front.ctc, front.n_audio
    table = model.backend.reads
    check_reads(options, table)
    tok, method = model.tokenizer, options.method
    # the beam seeds the canvas where the backend reads its options for this method and they matter
    beam_seeded = "ngram_weight" in table[method] and (options.ngram_weight > 0 or bool(options.hotwords))
    if method == "rescore":
        ctc_rows = nbest(model, ctc, n_audio, languages, options, options.nbest)
    elif method == "ctc-beam" or (method != "ctc-greedy" and beam_seeded):
        ctc_rows = [beam[0][0] if beam else [] for beam in nbest(model, ctc, n_audio, languages, options, 1)]
    else:  # greedy CTC: the transcript, or the canvas length (and seed) of a sampled method
        ctc_rows = ctc_greedy(ctc, n_audio, blank=tok.pad)
    if method in ("ctc-greedy", "ctc-beam"):
        return [Hypothesis(ids, [1.0] * len(ids)) for ids in ctc_rows]
    return model.backend.decode(model, feats, front, languages, options, ctc_rows, times, windows)
