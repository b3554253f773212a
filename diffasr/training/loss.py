"""The training losses: uniform-diffusion CE, autoregressive auxiliary, CTC (projector and prompt
heads), CTC-seeded canvases and text-only correction rows, in one module so DDP sees every parameter
in one call. train.py runs the loop around it.

Losses, per batch:
- diffusion: the canvas x0 = transcript + EOS + pad is corrupted with rate(t), t per example; CE over
  every position, pads down-weighted (`pad_weight`) so the easy padding does not dominate. A share of
  examples (`self_cond_prob`) instead sees one simulated sampler step: a first no-grad pass predicts,
  the most confident predictions are kept (right or wrong), the rest re-randomised, and the second
  pass is self-conditioned on the first pass's logits. That is exactly the state the sticky sampler
  produces at inference, so the decoder learns to correct its own mistakes.
- ar: next-token CE of the transcript through the causal encoder, continuing after the audio prompt.
- ctc: greedy-decodable CTC on lm_head(projector tokens), blank = pad. During `ctc_warmup_steps` the
  other losses are ramped in linearly, so the projector first learns transcript-predictive tokens.
- ctc_prompt: the same CTC on the prompt encoder's states at the audio slots (`ctc_from = "prompt"`
  makes the model decode with this head): six causal layers over the audio tokens, aware of the
  language token, and what trains those states to hold the transcript the decoder then reads.
- ctc-seeded canvases (`ctc_canvas_prob`): some examples start from the model's own greedy CTC
  transcript instead of uniform noise, the state the `ctc-refine` method starts from, so the decoder
  is trained to correct CTC's errors rather than only to denoise random tokens. `seed_targets`:
  "position" scores those rows against the transcript position by position (one missing token
  misaligns everything after it); "aligned" scores each seed position against the transcript token
  it aligns to (edit distance), ignores seed tokens with no counterpart, and puts EOS at the seed's
  end: the length-keeping corrections the `edit` sampler makes; "edit" also asks for the deletion
  (pad) of those unmatched tokens.
- text (`[text]`): text-only correction rows, sentences from the sentence files misspelled the way
  CTC misspells real speech (corpus/misspell.py), decoded after a prompt with no audio.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..decoding.canvas import clean_canvas, round_up
from ..decoding.ctc import ctc_greedy
from ..model import DiffusionASR
from .config import LossConfig


def corrupt(x0: torch.Tensor, rate: torch.Tensor, vocab_size: int, generator=None) -> torch.Tensor:
    """Uniform corruption: x0 (B, L) long, rate (B,) -> xt (B, L), each position replaced w.p. rate."""
    flip = torch.rand(x0.shape, generator=generator, device=x0.device) < rate[:, None]
    noise = torch.randint(0, vocab_size, x0.shape, generator=generator, device=x0.device)
    return torch.where(flip, noise, x0)


class LinearSchedule:
    """Diffusion time t ~ U(0, 1) per example, each position corrupted with probability rate(t) = t
    (the DiffusionGemma SFT convention; `loss.schedule = "linear"`, the only one trained)."""

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def sample_t(self, batch: int, generator=None, device="cpu") -> torch.Tensor:
        return torch.rand(batch, generator=generator, device=device)


SCHEDULES = {"linear": LinearSchedule}


def aligned_targets(
    seeds: list[list[int]], truths: list[list[int]], L: int, eos: int, pad: int, unmatched: int = -100
) -> torch.Tensor:
    """Targets (B, L) for seed canvases: each seed position gets the transcript token it aligns to
    (Levenshtein opcodes; a replace block pairs positions in order), `unmatched` where it has none
    (-100: ignored; pad: deleted, since a pad inside the canvas is dropped from the text), EOS right
    after the seed, pad after that. A seed that fills the canvas has no EOS position."""
    from rapidfuzz.distance import Levenshtein

    out = torch.full((len(seeds), L), unmatched, dtype=torch.long)
    for b, (s, y) in enumerate(zip(seeds, truths)):
        s = s[: L - 1]
        for op in Levenshtein.opcodes(s, y):
            if op.tag in ("equal", "replace"):
                k = min(op.src_end - op.src_start, op.dest_end - op.dest_start)
                out[b, op.src_start : op.src_start + k] = torch.tensor(
                    y[op.dest_start : op.dest_start + k], dtype=torch.long
                )
        out[b, len(s)] = eos
        out[b, len(s) + 1 :] = pad
    return out


class LossModule(nn.Module):
    """forward(batch) -> dict of losses; one module so DDP sees every parameter in one call."""

    def __init__(self, model: DiffusionASR, cfg: LossConfig):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.schedule = SCHEDULES[cfg.schedule]()

    def forward(self, feats, lens, x0, targets, langs, weights: dict, gen: torch.Generator, text=None) -> dict:
        m, tok, c = self.model, self.model.tokenizer, self.cfg
        V = tok.vocab_size
        out = {} if text is None else {"text": self.text_loss(*text, gen)}
        a, n = m.projector(feats, lens)
        # CTC over the projector tokens, through the tied lm_head.
        logp = m.ctc_logits(a).float().log_softmax(-1).transpose(0, 1)
        dev = logp.device
        flat = torch.tensor([t for ids in targets for t in ids], dtype=torch.long, device=dev)
        tl = torch.tensor([len(ids) for ids in targets], device=dev)
        out["ctc"] = F.ctc_loss(logp, flat, n, tl, blank=tok.pad, reduction="mean", zero_infinity=True)
        if weights["diffusion"] == 0 and weights["ar"] == 0 and weights.get("ctc_prompt", 0) == 0:
            return out
        cache, pmask, hidden = m.prefill(a, n, langs)
        if weights.get("ctc_prompt", 0) > 0 or m.config.ctc_from == "prompt":
            plogp = m.prompt_ctc_logits(hidden, n).float().log_softmax(-1).transpose(0, 1)
            out["ctc_prompt"] = F.ctc_loss(plogp, flat, n, tl, blank=tok.pad, reduction="mean", zero_infinity=True)
            if m.config.ctc_from == "prompt":
                logp = plogp  # the CTC-seeded canvases below start from the head the model decodes with
        if weights["diffusion"] == 0 and weights["ar"] == 0:
            return out
        # Noise, seeds and targets are drawn on the CPU from `gen` (the same draws on any device, so a
        # run resumes identically) and moved to the model's device before the decoder sees them.
        B, L = x0.shape
        x0 = x0.cpu()
        target = x0  # what the decoder is scored against (CTC-seeded rows may change it)
        t = self.schedule.sample_t(B, generator=gen)
        xt = corrupt(x0, self.schedule.rate(t), V, generator=gen)
        # Fallback for positions a sampler step does not commit: fresh noise, or for CTC-seeded rows the seed.
        fallback = torch.randint(0, V, (B, L), generator=gen)
        if c.ctc_canvas_prob > 0:
            # CTC-seeded rows: the canvas is the model's own greedy CTC transcript (what `ctc-refine` starts
            # from at inference), a few positions re-randomised; the decoder learns to fix CTC's errors
            # (misspellings, merges, missing words) from the audio and what it knows of the language.
            ctc_rows = torch.rand(B, generator=gen) < c.ctc_canvas_prob
            if ctc_rows.any():
                with torch.no_grad():
                    seed_ids = ctc_greedy(logp.detach().transpose(0, 1), n, tok.pad)
                    seed = clean_canvas(seed_ids, L, tok.eos, tok.pad)
                if c.seed_targets != "position":
                    unmatched = tok.pad if c.seed_targets == "edit" else -100
                    aligned = aligned_targets(seed_ids, targets, L, tok.eos, tok.pad, unmatched)
                    target = torch.where(ctc_rows[:, None], aligned, x0)
                noisy = corrupt(seed, 0.3 * torch.rand(B, generator=gen), V, generator=gen)
                xt = torch.where(ctc_rows[:, None], noisy, xt)
                fallback = torch.where(ctc_rows[:, None], seed, fallback)
        xt, fallback, target, t = xt.to(dev), fallback.to(dev), target.to(dev), t.to(dev)
        sc_rows = (torch.rand(B, generator=gen) < c.self_cond_prob).to(dev)
        sc_logits = None
        if sc_rows.any():
            with torch.no_grad():  # simulated sampler step: keep confident predictions, re-randomise the rest
                first = m.backbone.denoise(cache, pmask, xt)
                conf, pred = first.softmax(-1).max(-1)
                t2 = t * (0.2 + 0.8 * torch.rand(B, generator=gen).to(dev))
                n_keep = ((1 - self.schedule.rate(t2)) * L).round().long()
                rank = conf.argsort(-1, descending=True).argsort(-1)
                keep = rank < n_keep[:, None]
                stepped = torch.where(keep, pred, fallback)
                xt = torch.where(sc_rows[:, None], stepped, xt)
                sc_logits = first
        logits = m.backbone.denoise(cache, pmask, xt, sc_logits, sc_rows if sc_logits is not None else None)
        w = torch.where(target == tok.pad, c.pad_weight, 1.0) * (target != -100)
        ce = F.cross_entropy(logits.reshape(-1, V), target.reshape(-1), reduction="none", ignore_index=-100).view(B, L)
        out["diffusion"] = (ce * w).sum() / w.sum()
        if weights["ar"] > 0:
            # Next-token CE through the causal encoder: the sep position predicts token 1, and each
            # transcript token predicts the next, the last one predicting EOS.
            Tn = max(len(ids) for ids in targets)
            inp = torch.full((B, Tn), tok.pad, dtype=torch.long)
            tgt = torch.full((B, Tn + 1), -100, dtype=torch.long)
            for i, ids in enumerate(targets):
                inp[i, : len(ids)] = torch.tensor(ids)
                tgt[i, : len(ids) + 1] = torch.tensor(ids + [tok.eos])
            first_logits = m.backbone.head(hidden[:, -1:])
            inp, tgt = inp.to(dev), tgt.to(dev)
            rest = m.backbone.continue_causal(cache, pmask, inp)
            ar_logits = torch.cat([first_logits, rest], dim=1)
            out["ar"] = F.cross_entropy(ar_logits.reshape(-1, V), tgt.reshape(-1), ignore_index=-100)
        return out

    def text_loss(
        self, seeds: list[list[int]], truths: list[list[int]], langs: list, gen: torch.Generator
    ) -> torch.Tensor:
        """Text-only correction: the decoder sees a misspelled seed canvas (a few positions also
        re-randomised) after a prompt with no audio, and is scored against the edit-aligned sentence,
        seed tokens with no counterpart to be deleted (pad). Cheap: no audio, a three-token prompt."""
        m, tok = self.model, self.model.tokenizer
        B = len(seeds)
        L = round_up(max(len(s) for s in seeds) + 2)
        dev = m.device
        n = torch.zeros(B, dtype=torch.long, device=dev)
        cache, pmask, _ = m.prefill(torch.zeros(B, 0, m.backbone.hidden_size, device=dev), n, langs)
        seed = clean_canvas(seeds, L, tok.eos, tok.pad)
        target = aligned_targets(seeds, truths, L, tok.eos, tok.pad, unmatched=tok.pad).to(dev)
        xt = corrupt(seed, 0.2 * torch.rand(B, generator=gen), tok.vocab_size, generator=gen)
        logits = m.backbone.denoise(cache, pmask, xt.to(dev))
        after = torch.arange(L)[None] > torch.tensor([len(s) for s in seeds])[:, None]  # padding past the EOS
        w = torch.where(after, self.cfg.pad_weight, 1.0).to(dev)
        ce = F.cross_entropy(logits.reshape(-1, tok.vocab_size), target.reshape(-1), reduction="none").view(B, L)
        return (ce * w).sum() / w.sum()
