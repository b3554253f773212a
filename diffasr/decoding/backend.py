"""The decoder backend: what turns a batch's `Front` (audio tokens, CTC logits) into hypotheses for
the methods that run a denoiser (everything but ctc-greedy and ctc-beam, which the CTC head runs
alone: decode.py).

A model holds a frozen encoder, a projector with its CTC head, and one backend:

    DiffusionGemmaBackend (here)   the small preset: the model's own DiffusionGemma backbone
                                   denoises a canvas of its tokenizer's ids
    WhisperBackend (whisper.py)    the base preset: Whisper-base's decoder, adapted, denoises a
                                   canvas in the row language's Whisper vocabulary

Callers never ask which one a model has: they read `reads` (what each method reads on it, the
options.READS-like table that `resolve` checks against), `needs_window` and `decode`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import torch

from .canvas import canvas_length, clean_canvas, random_canvas, written
from .options import READS, DecodeOptions
from .rescore import rescore
from .sampler import edit, refine, step_fn
from .steps import StepRecorder, small_strings
from .types import Front, Hypothesis


class Backend(Protocol):
    reads: dict  # method -> the DecodeOptions fields it reads besides method and language

    def needs_window(self, options: DecodeOptions, languages: list) -> list[bool]:
        """Per row: whether decoding it reads the encoder's padded 30-s window (`model.encode_window`)."""

    def decode(
        self,
        model,
        feats: list,
        front: Front,
        languages: list,
        options: DecodeOptions,
        ctc_rows: list,
        times: dict,
        windows: list | None = None,
    ) -> list[Hypothesis]:
        """One batch's hypotheses by a method in `reads` other than ctc-greedy/ctc-beam. ctc_rows: per
        row, the CTC beam's n-best [(CTC token ids, score)] for rescore, else the CTC transcript (ids);
        windows: per row, the encoder's padded window where `needs_window` says so, else None. Sets
        times' prefill, denoise and steps_run."""

    def one_step(
        self, model, feats: list, front: Front, ctc_rows: list, languages: list, options: DecodeOptions
    ) -> tuple[Callable[[], torch.Tensor], int]:
        """(one denoiser pass over a random canvas of the batch, its canvas length): what bench times."""


class DiffusionGemmaBackend:
    """The small preset's denoiser: the model's DiffusionGemma backbone over its own tokenizer's ids
    (model.prefill, model.denoise). Rows are grouped by canvas length and each row draws its noise
    from its own generator seeded with options.seed, so a clip's transcript does not depend on its
    batch-mates."""

    reads = READS

    def needs_window(self, options: DecodeOptions, languages: list) -> list[bool]:
        return [False] * len(languages)

    def decode(self, model, feats, front, languages, options, ctc_rows, times, windows=None) -> list[Hypothesis]:
        audio_tokens, n_audio, _, prefilled, allowed = front
        if options.method == "rescore":
            t0 = time.perf_counter()
            rows = rescore(model, audio_tokens, n_audio, ctc_rows, languages, allowed, options, prefilled)
            # one decoder pass; "denoise" includes the CTC beam search, "prefill" is the CTC head's, reused
            times.update(prefill=0.0, denoise=time.perf_counter() - t0, steps_run=1)
            hyps = [Hypothesis(*rows[i], steps_run=1) for i in range(len(ctc_rows))]
            if options.return_steps:  # one pass: one step, the winning candidate
                eos = model.tokenizer.eos
                for h in hyps:
                    rec = StepRecorder(1)
                    n = len(h.tokens) + 1
                    rec.record(
                        [0],
                        torch.tensor([h.tokens + [eos]]),
                        torch.zeros(1, n, dtype=torch.long),
                        torch.tensor([h.confidences + [1.0]]),
                    )
                    h.steps = small_strings(rec, 0, model.tokenizer)
            return hyps
        return self._sampled(model, front, ctc_rows, languages, options, times)

    def one_step(self, model, feats, front, ctc_rows, languages, options):
        state = front.prefilled or model.prefill(front.audio_tokens, front.n_audio, languages)
        L = max(canvas_length(len(ids), options, model.config.canvas_length) for ids in ctc_rows)
        gen = torch.Generator().manual_seed(0)
        canvas = torch.randint(0, model.tokenizer.vocab_size, (len(ctc_rows), L), generator=gen).to(model.device)
        sc = model.denoise(state, canvas)
        return (lambda: model.denoise(state, canvas, sc)), L

    @staticmethod
    def _sampled(model, front: Front, ctc_ids: list, languages: list, options: DecodeOptions, times: dict):
        """diffusion, ctc-refine and ctc-edit."""
        audio_tokens, n_audio, _, prefilled, allowed = front
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
