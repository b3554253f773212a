"""Simulated recognition errors, for teaching the decoder to correct a CTC transcript from text alone.

On real voices the model's CTC head spells what it hears: "americics" for "americans", "couny" for
"country", "preduceded", "in graveed", "mod" for "modern". The audio corpus has a few thousand
sentences per language; `../shared/data/text` has tens of thousands. Text-only training pairs
(misspelled seed, sentence) let the decoder learn from all of them which words exist and how they
are spelled, so that the edit sampler has something to correct *with*.

`misspell(text, lang, rate, rng)` applies, to each word with probability `rate`, one error of the
kinds seen on real_dev: a dropped or phonetically swapped letter, a clipped ending, a repeated
syllable, two words run together, a word split or dropped. Chinese has no word spaces: each
character is swapped for a homophone (pypinyin, same toneless syllable), dropped or repeated.
"""

from __future__ import annotations

import random
from collections import defaultdict

from ...errors import DataError
from ...text import is_cjk

# Letters a listener (or a CTC head) confuses: vowels among themselves, voiced/voiceless pairs. An
# accented letter may lose its accent, but no plain letter gains one another language's accent.
_GROUPS = ["aeiouy", "bp", "dt", "gkcq", "fvw", "mn", "sz", "lr"]
_SIMILAR: dict[str, str] = defaultdict(str)
for _g in _GROUPS:
    for _c in _g:
        _SIMILAR[_c] += "".join(x for x in _g if x != _c and x not in _SIMILAR[_c])
_SIMILAR.update(
    {
        "ä": "ae",
        "ö": "oe",
        "ü": "ui",
        "ß": "s",
        "é": "e",
        "è": "e",
        "ê": "e",
        "à": "a",
        "á": "a",
        "í": "i",
        "ó": "o",
        "ú": "u",
        "ñ": "n",
        "ç": "cs",
    }
)


WORD_OPS = ("drop_letter", "swap_letter", "clip_end", "repeat_tail", "merge", "split", "drop_word")
_WORD_P = (0.25, 0.30, 0.15, 0.10, 0.10, 0.05, 0.05)


def _word_error(word: str, op: str, rng: random.Random) -> str:
    n = len(word)
    if n < 2 and op not in ("drop_word", "merge"):
        return word
    if op == "drop_letter":
        i = rng.randrange(n)
        return word[:i] + word[i + 1 :]
    if op == "swap_letter":
        spots = [i for i, c in enumerate(word) if _SIMILAR.get(c)]
        if not spots:
            i = rng.randrange(n)
            return word[:i] + word[i + 1 :]
        i = rng.choice(spots)
        return word[:i] + rng.choice(_SIMILAR[word[i]]) + word[i + 1 :]
    if op == "clip_end":
        return word[: max(1, n - rng.randint(1, max(1, n // 2)))]
    if op == "repeat_tail":
        k = rng.randint(2, min(3, n))
        return word + word[-k:]
    if op == "split":
        i = rng.randint(1, n - 1)
        return word[:i] + " " + word[i:]
    return word  # merge / drop_word act on the word list


def _misspell_words(text: str, rate: float, rng: random.Random) -> str:
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if rng.random() < rate:
            op = rng.choices(WORD_OPS, _WORD_P)[0]
            if op == "drop_word" and len(words) > 2:
                i += 1
                continue
            if op == "merge" and i + 1 < len(words):
                out.append(w + words[i + 1])
                i += 2
                continue
            w = _word_error(w, op, rng)
        out.append(w)
        i += 1
    return " ".join(out)


class _Homophones:
    """Characters of a corpus grouped by toneless pinyin syllable (built lazily, once)."""

    def __init__(self):
        self.by_syllable: dict[str, list[str]] | None = None
        self.syllable: dict[str, str] = {}

    def build(self, sentences) -> None:
        try:
            from pypinyin import Style, pinyin
        except ImportError:
            raise DataError("simulated Chinese errors need pypinyin: pip install 'diffasr[train]'") from None

        groups: dict[str, set] = defaultdict(set)
        self.syllable = {}
        for ch in {c for s in sentences for c in s if is_cjk(c)}:
            syl = pinyin(ch, style=Style.NORMAL, heteronym=False)[0][0]
            self.syllable[ch] = syl
            groups[syl].add(ch)
        self.by_syllable = {k: sorted(v) for k, v in groups.items()}

    def swap(self, ch: str, rng: random.Random) -> str:
        if self.by_syllable is None:  # first use: the Chinese sentences' train split
            from .text import load_sentences

            self.build(load_sentences("zh", "train"))
        group = self.by_syllable.get(self.syllable.get(ch, ""), [])
        others = [c for c in group if c != ch]
        return rng.choice(others) if others else ch


HOMOPHONES = _Homophones()


def _misspell_chars(text: str, rate: float, rng: random.Random) -> str:
    out = []
    for ch in text:
        if is_cjk(ch) and rng.random() < rate:
            r = rng.random()
            if r < 0.6:
                out.append(HOMOPHONES.swap(ch, rng))
            elif r < 0.85:
                continue  # dropped
            else:
                out.append(ch + ch)
        else:
            out.append(ch)
    return "".join(out)


def misspell(text: str, lang: str | None, rate: float, rng: random.Random) -> str:
    """`text` (spoken form) with about `rate` of its words (zh: characters) mis-recognised.
    `lang` None: Chinese if the text holds a CJK character."""
    if lang == "zh" or (lang is None and any(is_cjk(ch) for ch in text)):
        return _misspell_chars(text, rate, rng)
    return _misspell_words(text, rate, rng)


class TextCorrections:
    """Batches of (misspelled seed, sentence) token pairs from the sentence files' train split.

    Sentences that are the transcript of any clip in `exclude` (real_dev, test sets) are removed, so
    no evaluation transcript is ever seen as text. Languages are drawn uniformly: the ones with few
    audio hours get the same share of spelling practice.
    """

    def __init__(self, tokenizer, langs: list[str], max_rate: float, exclude: set[str], max_tokens: int):
        from .text import load_sentences, without_transcripts

        self.tok, self.langs, self.max_rate, self.max_tokens = tokenizer, list(langs), max_rate, max_tokens
        self.sentences = {
            lang: [f for _, f in without_transcripts(load_sentences(lang, "train"), exclude) if f]
            for lang in self.langs
        }
        if "zh" in self.sentences:
            HOMOPHONES.build(self.sentences["zh"])

    def batch(self, size: int, rng: random.Random) -> tuple[list[list[int]], list[list[int]], list[str]]:
        """(seed ids, true ids, languages), each a list of `size` rows (ids cut to `max_tokens`)."""
        seeds, truths, langs = [], [], []
        for _ in range(size):
            lang = rng.choice(self.langs)
            s = rng.choice(self.sentences[lang])
            bad = misspell(s, lang, rng.uniform(0.0, self.max_rate), rng)
            seeds.append(self.tok.encode(bad)[: self.max_tokens])
            truths.append(self.tok.encode(s)[: self.max_tokens])
            langs.append(lang)
        return seeds, truths, langs
