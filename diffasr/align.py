"""Word timing: CTC forced alignment of a transcript over audio tokens, and tokens -> words.

`ctc_align` is the Viterbi of CTC (Graves et al., 2006) restricted to one label sequence: states
are the targets interleaved with blanks (blank, y1, blank, y2, ..., blank); from a state the path
may stay, advance one, or skip the blank between two different labels. It returns the first and
last frame of each target token. torchaudio's `forced_align` does the same; it is not a
dependency here (it pins its own torch).

`words_from_tokens` merges tokens into words on the Metaspace '▁' that starts a word; a token of
CJK characters becomes one word per character, its span shared evenly (Chinese has no spaces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tokenizer import is_cjk


@dataclass
class Word:
    start: float  # seconds, absolute
    end: float
    text: str
    confidence: float  # mean denoiser confidence of the word's tokens, in [0, 1]


def ctc_align(log_probs: np.ndarray, targets: list[int], blank: int) -> np.ndarray | None:
    """Best CTC path of `targets` through log_probs (T, V): (N, 2) first/last frame per token.

    None when the frames cannot hold the targets (T < N + number of adjacent repeats).
    """
    T, N = log_probs.shape[0], len(targets)
    if N == 0:
        return np.zeros((0, 2), dtype=np.int64)
    repeats = sum(a == b for a, b in zip(targets, targets[1:]))
    if T < N + repeats:
        return None
    ext = np.full(2 * N + 1, blank, dtype=np.int64)
    ext[1::2] = targets
    S = ext.size
    emit = np.asarray(log_probs, dtype=np.float64)[:, ext]  # (T, S)
    can_skip = np.zeros(S, dtype=bool)  # label state s may be entered from s - 2 (over a blank)
    can_skip[3::2] = ext[3::2] != ext[1:-2:2]
    neg = -np.inf
    score = np.full(S, neg)
    score[:2] = emit[0, :2]
    back = np.zeros((T, S), dtype=np.int8)  # 0 stay, 1 from s - 1, 2 from s - 2
    for t in range(1, T):
        prev1 = np.concatenate([[neg], score[:-1]])
        prev2 = np.where(can_skip, np.concatenate([[neg, neg], score[:-2]]), neg)
        cand = np.stack([score, prev1, prev2])
        back[t] = cand.argmax(0)
        score = cand.max(0) + emit[t]
    s = S - 1 if S == 1 or score[S - 1] >= score[S - 2] else S - 2  # end on the last label or the final blank
    states = np.empty(T, dtype=np.int64)
    for t in range(T - 1, -1, -1):
        states[t] = s
        s -= int(back[t, s])
    spans = np.full((N, 2), -1, dtype=np.int64)
    for t, st in enumerate(states.tolist()):
        if st % 2:  # a label state
            k = st // 2
            if spans[k, 0] < 0:
                spans[k, 0] = t
            spans[k, 1] = t
    return spans


def words_from_tokens(
    tokenizer, ids: list[int], pieces: list[str], times: list[tuple[float, float]], confidences: list[float]
) -> list[Word]:
    """Group transcript tokens into words. pieces: token strings ('▁' marks a word start);
    times: (start, end) seconds per token; word text is the tokenizer's decode of its tokens."""
    words: list[Word] = []
    group: list[int] = []  # token indices of the word being built

    def flush():
        if group:
            text = tokenizer.decode([ids[k] for k in group]).strip()
            if text:
                conf = float(np.mean([confidences[k] for k in group]))
                words.append(Word(times[group[0]][0], times[group[-1]][1], text, conf))
            group.clear()

    for k, piece in enumerate(pieces):
        body = piece.replace("▁", "")
        if body and all(is_cjk(ch) for ch in body):  # one word per character
            flush()
            (s, e), n = times[k], len(body)
            for j, ch in enumerate(body):
                words.append(Word(s + (e - s) * j / n, s + (e - s) * (j + 1) / n, ch, float(confidences[k])))
            continue
        if piece.startswith("▁"):
            flush()
        group.append(k)
    flush()
    return words
