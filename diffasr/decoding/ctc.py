"""CTC read-outs of a (B, T', V) logit grid: greedy, sampled paths, prefix beam search with n-gram
fusion, n-best lists, token confidences, and the speech evidence the no-speech guard judges.
The blank is the tokenizer's pad id."""

from __future__ import annotations

import math

import numpy as np
import torch


def ctc_runs(best: list[int], blank: int) -> list[tuple[int, int, int]]:
    """(token, first frame, end frame) of each token the CTC path `best` emits: repeats collapsed,
    blanks dropped."""
    runs, prev = [], None
    for f, t in enumerate(best):
        if t != blank:
            if t != prev:
                runs.append((t, f, f + 1))
            else:
                runs[-1] = (t, runs[-1][1], f + 1)
        prev = t
    return runs


def ctc_greedy(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Greedy CTC: argmax per audio token, collapse repeats, drop blanks. logits (B, T, V)."""
    return [[t for t, _, _ in ctc_runs(row[:n], blank)] for row, n in zip(logits.argmax(-1).tolist(), lengths.tolist())]


def ctc_token_confidence(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[float]]:
    """Per token of `ctc_greedy`'s output, the highest probability it had on the frames that emitted it."""
    probs, best = logits.float().softmax(-1).max(-1)
    return [
        [max(p_row[a:b]) for _, a, b in ctc_runs(row[:n], blank)]
        for p_row, row, n in zip(probs.tolist(), best.tolist(), lengths.tolist())
    ]


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats (numpy's ufunc costs ~1 µs a call; the beam makes many)."""
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def ctc_prefix_beam(
    log_probs: np.ndarray,
    blank: int,
    beam: int = 16,
    topk: int = 20,
    prune: float = -12.0,
    ngram=None,
    ngram_weight: float = 0.0,
    length_bonus: float = 0.0,
    hotwords=None,
) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over log-probabilities (T, V): up to `beam` (token ids, score) pairs, best
    first. Per frame only the `topk` likeliest tokens above `prune` extend a prefix. Without `ngram` the
    score is log P(ids | audio). With an n-gram (lm.NgramLM) it is shallow fusion: log P(ids | audio)
    + ngram_weight × log P_ngram(ids, EOS) + length_bonus × len(ids), and the beam is pruned by that score.
    hotwords (hotwords.ContextGraph or None): completed hotword token paths earn its boost, in the
    pruning score and the final one alike."""
    lse, ninf = _logaddexp, -math.inf
    beams = {(): (0.0, ninf)}  # prefix -> (log p ending in blank, log p ending in a token)
    extra = {(): 0.0}  # prefix -> its n-gram, length and hotword terms
    hot = {(): 0}  # prefix -> its hotword graph state (with hotwords)
    for row in log_probs:
        top = np.argpartition(-row, topk)[:topk] if topk < len(row) else range(len(row))
        cand = [(int(c), float(row[c])) for c in top if c != blank and row[c] > prune]
        p_blank = float(row[blank])
        nxt: dict = {}
        for pre, (pb, pnb) in beams.items():
            total, last = lse(pb, pnb), (pre[-1] if pre else None)
            b_, nb = nxt.get(pre, (ninf, ninf))
            nxt[pre] = (lse(b_, total + p_blank), nb)
            ctx = ngram.context(pre) if ngram is not None else None
            for c, p in cand:
                ext = pre + (c,)
                if ext not in extra:
                    extra[ext] = (
                        extra[pre] + length_bonus + (ngram_weight * ngram.logprob(ctx, c) if ngram is not None else 0.0)
                    )
                    if hotwords is not None:
                        hot[ext], gain = hotwords.step(hot[pre], c)
                        extra[ext] += gain
                b_, nb = nxt.get(ext, (ninf, ninf))
                # a repeated token is a new token only after a blank; without one it extends `pre`
                nxt[ext] = (b_, lse(nb, (pb if c == last else total) + p))
                if c == last:
                    b_, nb = nxt[pre]
                    nxt[pre] = (b_, lse(nb, pnb + p))
        beams = dict(sorted(nxt.items(), key=lambda kv: -(lse(*kv[1]) + extra[kv[0]]))[:beam])
        extra = {pre: extra[pre] for pre in beams}
        if hotwords is not None:
            hot = {pre: hot[pre] for pre in beams}
    lm_end = (
        (lambda pre: ngram_weight * ngram.logprob(ngram.context(pre), ngram.eos))
        if ngram is not None
        else (lambda pre: 0.0)
    )

    def end(pre):
        return lm_end(pre) - (hotwords.unfinished(hot[pre]) if hotwords is not None else 0.0)

    return sorted(((list(p), lse(*v) + extra[p] + end(p)) for p, v in beams.items()), key=lambda x: -x[1])


def ctc_nbest(
    ctc: torch.Tensor, n_audio: torch.Tensor, blank: int, ngrams: list, options, k: int, hotwords=None
) -> list[list[tuple[list[int], float]]]:
    """Per row, CTC prefix beam search's `k` best (token ids, score) over logits (B, T', V), fused with
    the row's n-gram (`ngrams[i]`, None for none) when options.ngram_weight > 0, hotword paths boosted
    by `hotwords` (hotwords.ContextGraph, or None)."""
    log_probs = ctc.float().log_softmax(-1).cpu().numpy()
    out = []
    for i, n in enumerate(n_audio.tolist()):
        ngram = ngrams[i] if options.ngram_weight > 0 else None
        fuse = (
            dict(ngram=ngram, ngram_weight=options.ngram_weight, length_bonus=options.length_bonus)
            if ngram is not None
            else {}
        )
        out.append(ctc_prefix_beam(log_probs[i, :n], blank, beam=max(options.beam, k), hotwords=hotwords, **fuse)[:k])
    return out


def speech_evidence(ctc: torch.Tensor, lengths: torch.Tensor, durations: list[float], blank: int) -> list[dict]:
    """Per row of CTC logits (B, T', V): `rate`, greedy CTC tokens per second of audio (durations in
    seconds), and `confidence`, the mean top probability over frames whose top token is not blank."""
    probs = ctc.float().softmax(-1)
    top, arg = probs.max(-1)
    out = []
    for i, (n, d) in enumerate(zip(lengths.tolist(), durations)):
        emitted = arg[i, :n] != blank
        runs = ctc_runs(arg[i, :n].tolist(), blank)
        conf = float(top[i, :n][emitted].mean()) if bool(emitted.any()) else 0.0
        out.append({"rate": round(len(runs) / max(d, 1e-3), 3), "confidence": round(conf, 4), "seconds": round(d, 3)})
    return out
