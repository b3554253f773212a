"""Word timing: CTC forced alignment of a transcript over audio tokens, and tokens -> words.

`ctc_align` is the Viterbi of CTC (Graves et al., 2006) restricted to one label sequence: states
are the targets interleaved with blanks (blank, y1, blank, y2, ..., blank); from a state the path
may stay, advance one, or skip the blank between two different labels. It returns the first and
last frame of each target token. torchaudio's `forced_align` does the same; it is not a
dependency here (it pins its own torch).

`words_from_tokens` merges tokens into words on the Metaspace '▁' that starts a word; a token of
CJK characters becomes one word per character, its span shared evenly (Chinese has no spaces).

`words_of_text` makes the words of a transcript written in other tokens than the CTC head's (the
base preset's cased, punctuated Whisper tokens): each word of the text with the mean confidence of
the tokens that wrote it, timed by the CTC head's aligned words of the same transcript.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..text import is_cjk, spoken_form


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


def _text_words(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the words of `text`: runs between whitespace, and each CJK
    character on its own."""
    spans, start = [], None
    for i, ch in enumerate(text + " "):
        if ch.isspace() or is_cjk(ch):
            if start is not None:
                spans.append((start, i))
                start = None
            if is_cjk(ch):
                spans.append((i, i + 1))
        elif start is None:
            start = i
    return spans


def _spoken_count(word: str) -> int:
    """How many words the CTC head's spoken form of `word` holds ("Well-known," -> 2, "—" -> 0)."""
    spoken = spoken_form(word)
    return sum(len(_text_words(w)) for w in spoken.split())


def words_of_text(
    text: str, spans: list[tuple[int, int]], confidences: list[float], timed: list[Word], duration: float
) -> list[Word]:
    """The words of `text`, each with the mean confidence of the tokens that wrote its characters
    (token k wrote text[spans[k][0]:spans[k][1]]; a token of only part of a character's bytes has an
    empty span where that character starts), and times from `timed`: the CTC alignment's words of the
    same transcript in the CTC head's spoken form (lower case, no punctuation), matched in order: a
    word takes the span of the spoken words it becomes, a word with none (punctuation) a zero-length
    span where the previous ended. When the two disagree on the count, each word's time is
    interpolated by its character position between the first aligned start and the last aligned end
    (0 and `duration` without any)."""
    out: list[Word] = []
    words = _text_words(text)
    counts = [_spoken_count(text[a:b]) for a, b in words]
    if sum(counts) == len(timed):
        times, k = [], 0
        for n in counts:
            if n:
                times.append((timed[k].start, timed[k + n - 1].end))
            else:
                t = times[-1][1] if times else (timed[0].start if timed else 0.0)
                times.append((t, t))
            k += n
    else:
        t0, t1 = (timed[0].start, timed[-1].end) if timed else (0.0, duration)
        n = max(len(text), 1)
        times = [(t0 + (t1 - t0) * a / n, t0 + (t1 - t0) * b / n) for a, b in words]
    for (a, b), (start, end) in zip(words, times):
        mine = [c for (x, y), c in zip(spans, confidences) if (x < b and y > a) or (x == y and a <= x < b)]
        conf = float(np.mean(mine)) if mine else float(np.mean(confidences)) if confidences else 1.0
        out.append(Word(start, end, text[a:b], conf))
    return out
