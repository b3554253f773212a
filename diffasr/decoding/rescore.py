"""The `rescore` method for the small preset: CTC's n-best, each scored by one denoiser pass."""

from __future__ import annotations

import torch

from .canvas import canvas_length, clean_canvas
from .sampler import canvas_scores, step_fn


def rescore(
    model, audio_tokens, n_audio, beams: list, languages: list, allowed, options, prefilled=None, chunk: int = 16
) -> dict[int, tuple[list[int], list[float]]]:
    """Per row, the candidate of `beams` (row -> [(token ids, beam score)], from the CTC prefix beam
    search) with the best beam score + rescore_weight × denoiser log-likelihood (`canvas_scores`,
    audio prompt, script mask `allowed` (B, V) or None). Candidates of all rows share batches of
    ≤ `chunk` canvases (each holds (L, V) float32 logits, 3.7 MB at L=192 and 5,000 tokens, and a
    prompt-cache copy: with 64, a batch of 8 × 30 s peaked at 2.21 GB RSS, with 16 at 1.31 GB, same
    text, same time); each reads its row's prompt state, taken from `prefilled` (the prefill the
    prompt CTC head ran) when given. Returns {row: (token ids, probability per token)}."""
    tok = model.tokenizer
    cands = [(i, ids[: model.config.canvas_length - 1], score) for i, beam in enumerate(beams) for ids, score in beam]
    L = canvas_length(max(len(c[1]) for c in cands), options, model.config.canvas_length)
    best: dict[int, tuple[float, list[int], list[float]]] = {}
    for b in range(0, len(cands), chunk):
        part = cands[b : b + chunk]
        rows = torch.tensor([c[0] for c in part], device=model.device)
        if prefilled is not None:
            state = prefilled.rows(rows)  # row i's prompt state, once per candidate of row i
        else:
            state = model.prefill(audio_tokens[rows], n_audio[rows], [languages[c[0]] for c in part])
        score_fn = step_fn(model, state, None if allowed is None else allowed[rows])
        canvas = clean_canvas([c[1] for c in part], L, tok.eos, tok.pad).to(model.device)
        lengths = torch.tensor([min(len(c[1]) + 1, L) for c in part], device=model.device)  # tokens + EOS
        dec, probs = canvas_scores(score_fn, canvas, lengths)
        for (i, ids, ctc_score), d, p in zip(part, dec.tolist(), probs.tolist()):
            total = ctc_score + options.rescore_weight * d
            if i not in best or total > best[i][0]:
                best[i] = (total, ids, p[: len(ids)])
    return {i: (ids, conf) for i, (_, ids, conf) in best.items()}
