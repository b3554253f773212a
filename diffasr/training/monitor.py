"""What training watches: the dev set decoded the shipped way, the decoder's use of the audio, curves.

`evaluate_examples` decodes the dev examples through the public decoding entry point with the
DecodeOptions the model ships with (`eval.decode` over the model's decode_defaults: for diffasr-small,
CTC + n-gram beam, its 8-best rescored by the decoder), so the number printed during training is
the number `diffasr eval` would print on the same clips. One decoding per evaluation keeps it cheap;
the other diagnostic is one decoder pass: its cross-entropy on an all-noise canvas with the right
audio vs another clip's audio (a large gap = the decoder listens).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..decoding import DecodeOptions, resolve
from ..decoding.canvas import clean_canvas, random_canvas
from ..decoding.decode import decode_texts
from ..decoding.ngram import NgramModels
from ..decoding.options import reads
from ..model import DiffusionASR
from ..text import spoken_form
from .config import EvalConfig
from .data import Example


@torch.no_grad()
def decode_examples(
    model: DiffusionASR, examples: list[Example], settings: dict[str, DecodeOptions], batch: int = 16
) -> tuple[list[str], dict[str, list[str]]]:
    """Spoken-form references (N,) and, for each named DecodeOptions in `settings`, the hypotheses
    (N,) of cached-feature examples, decoded exactly as `transcribe` decodes them (each row in its language)."""
    refs, hyps = [], {name: [] for name in settings}
    for b in range(0, len(examples), batch):
        ex = examples[b : b + batch]
        feats, langs = [np.asarray(e.feats) for e in ex], [e.lang for e in ex]
        for name, options in settings.items():
            hyps[name] += decode_texts(model, feats, langs, options)
        refs += [spoken_form(model.tokenizer.decode(e.ids)) for e in ex]
    return refs, hyps


def cer_by_language(refs: list[str], hyps: list[str], langs: list[str]) -> tuple[float, dict]:
    """Corpus CER (%) over the rows with a non-empty reference: overall, and {language: CER}."""
    import jiwer

    def cer(idx):
        pairs = [(refs[i], hyps[i]) for i in idx if refs[i].strip()]
        return 100 * jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]) if pairs else float("nan")

    return cer(range(len(refs))), {
        lang: cer([i for i, l in enumerate(langs) if l == lang]) for lang in sorted(set(langs))
    }


def eval_options(model: DiffusionASR, ev: EvalConfig, seed: int = 123) -> DecodeOptions:
    """The shipped decoding: `eval.decode` over the model's decode_defaults (`eval.steps` unless they set steps)."""
    defaults, given = model.config.decode_defaults, dict(ev.decode)
    method = given.get("method", defaults.get("method", DecodeOptions.method))
    for name, value in (("steps", ev.steps), ("seed", seed)):  # only where the shipped method reads them
        if name in reads(method):
            given.setdefault(name, value)
    return resolve(defaults, given)


@torch.no_grad()
def audio_ce(model: DiffusionASR, examples: list[Example], batch: int = 16, seed: int = 123) -> dict:
    """Mean decoder CE at t = 1 (an all-noise canvas) with each clip's own audio and with the next clip's."""
    tok, g = model.tokenizer, torch.Generator().manual_seed(seed)
    ce, n = {"right": 0.0, "wrong": 0.0}, 0
    for b in range(0, len(examples), batch):
        ex = examples[b : b + batch]
        if len(ex) < 2:
            continue
        feats, lang = [np.asarray(e.feats) for e in ex], [e.lang for e in ex]
        x0 = clean_canvas([e.ids for e in ex], max(len(e.ids) for e in ex) + 1, tok.eos, tok.pad)
        noise = random_canvas(len(ex), x0.shape[1], tok.vocab_size, g)
        for roll, which in ((0, "right"), (1, "wrong")):
            state = model.prefill(*model.project(feats[roll:] + feats[:roll]), lang)
            lg = model.denoise(state, noise.to(model.device))
            ce[which] += F.cross_entropy(lg.reshape(-1, tok.vocab_size), x0.reshape(-1).to(model.device)).item() * len(
                ex
            )
        n += len(ex)
    return {"ce_t1_right": ce["right"] / max(1, n), "ce_t1_wrong": ce["wrong"] / max(1, n)}


@torch.no_grad()
def evaluate_examples(
    model: DiffusionASR, examples: list[Example], ev: EvalConfig, ngrams: Path | None = None, batch: int = 16
) -> dict:
    """`cer` (%) of the shipped decoding overall and per language (`per_lang`), the audio CE gap, and
    three example transcripts. `ngrams`: an lm/ folder the beam fuses for this evaluation only (the
    checkpoints do not carry it)."""
    model.eval()
    own = model.ngrams
    if ngrams is not None:
        model.ngrams = NgramModels(ngrams)
    try:
        refs, hyps = decode_examples(model, examples, {"default": eval_options(model, ev)}, batch)
        res = audio_ce(model, examples, batch)
    finally:
        model.ngrams = own
        model.train()
    overall, per_lang = cer_by_language(refs, hyps["default"], [e.lang for e in examples])
    return res | {
        "cer": overall,
        "per_lang": {lang: {"cer": v} for lang, v in per_lang.items()},
        "examples": [{"ref": r, "hyp": h} for r, h in list(zip(refs, hyps["default"]))[:3]],
    }


def plot_curves(out: Path, history: list[dict]) -> None:
    """`out/curves.png`: training losses and dev CER of the shipped decoding, by step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [h for h in history if h["kind"] == "train"]
    ev = [h for h in history if h["kind"] == "eval"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("diffusion", "ar", "ctc", "ctc_prompt", "text"):
        pts = [(h["step"], h[key]) for h in tr if key in h]
        if pts:
            ax[0].plot(*zip(*pts), label=key)
    ax[0].set(xlabel="step", ylabel="loss", title="training losses", yscale="log")
    ax[0].legend()
    pts = [(h["step"], h["cer"]) for h in ev if "cer" in h]
    if pts:
        ax[1].plot(*zip(*pts), marker="o", label="shipped decoding")
    ax[1].set(xlabel="step", ylabel="CER %", title="dev CER")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png.tmp.png", dpi=90)
    plt.close(fig)
    os.replace(out / "curves.png.tmp.png", out / "curves.png")
