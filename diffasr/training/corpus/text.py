"""Sentence loading for the synthetic corpus and the tokenizer.

The text files (`<lang>.txt`, one sentence per line, see `shared/data/text/SOURCES.md`) are grouped by
source, so `load_sentences` shuffles them with a fixed seed before cutting a held-out test slice. Labels
keep case and ordinary punctuation: the model's tokenizer decides what to strip, and a TTS engine reads
punctuation as prosody.
"""

from __future__ import annotations

import os
import random
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from ...errors import DataError
from ...text import word_separator

LANGS = ("en", "de", "fr", "es", "hi", "zh")
SPLITS = ("train", "test")
REPO_ROOT = Path(__file__).resolve().parents[3]  # parent of the `diffasr` package directory
TEXT_DIR = Path(os.environ.get("DIFFASR_TEXT_DIR") or REPO_ROOT.parent / "shared" / "data" / "text")

# Word/char limits: long sentences make clips > 20 s (dropped anyway) and very short ones carry little.
MIN_WORDS, MAX_WORDS, MAX_CHARS = 2, 30, 180
ZH_MIN_CHARS, ZH_MAX_CHARS = 4, 60

# Any decimal digit in any script (ASCII, Devanagari, full-width ...): TTS engines would read digits in
# an engine-specific way that the label cannot match, so such lines are dropped rather than verbalised.
_DIGIT = re.compile(r"\d")
_URL = re.compile(r"(https?://|www\.|\w\.(com|org|net|html?)\b)", re.I)
# Symbols that are spoken as words (or not at all) depending on engine and language.
_UNSPOKEN = re.compile(r"[%$€£¥₹&@#/\\<>|_{}\[\]^~=*+§©®™°]")
_WS = re.compile(r"\s+")


@lru_cache(maxsize=1)
def _t2s():
    """OpenCC traditional->simplified converter (built once; construction reads dictionaries)."""
    import opencc

    return opencc.OpenCC("t2s")


def normalize_label(text: str, lang: str) -> str | None:
    """Return the cleaned transcript for `text`, or None if the line should not be used.

    NFKC (full-width Latin/punctuation -> ASCII, compatibility forms folded), whitespace collapsed and
    stripped; for zh converted to simplified characters. Lines with digits, URLs or unspoken symbols, or
    outside the length limits, are dropped (None).
    """
    if lang not in LANGS:
        raise DataError(f"unknown language {lang!r}; expected one of {','.join(LANGS)}")
    s = _WS.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    if not s or _DIGIT.search(s) or _URL.search(s) or _UNSPOKEN.search(s):
        return None
    if lang == "zh":
        s = _t2s().convert(s)
        n = len(s.replace(" ", ""))
        if not ZH_MIN_CHARS <= n <= ZH_MAX_CHARS:
            return None
    else:
        if len(s) > MAX_CHARS or not MIN_WORDS <= len(s.split()) <= MAX_WORDS:
            return None
    return s


@lru_cache(maxsize=16)
def _split_lists(lang: str, text_dir: str, n_test: int) -> dict[str, tuple[str, ...]]:
    """Read, normalise, dedupe and shuffle `<lang>.txt` once; return both splits."""
    path = Path(text_dir) / f"{lang}.txt"
    if not path.is_file():
        raise DataError(f"sentence file not found: {path} (set DIFFASR_TEXT_DIR or pass text_dir)")
    seen: set[str] = set()
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            s = normalize_label(line, lang)
            if s is None:
                continue
            key = s.casefold()
            if key not in seen:  # the files are deduped already, but normalisation can merge lines
                seen.add(key)
                out.append(s)
    if len(out) <= n_test:
        raise DataError(f"{path}: only {len(out)} usable sentences, need more than n_test={n_test}")
    random.Random(0).shuffle(out)  # files are grouped by source: shuffle before slicing
    return {"test": tuple(out[:n_test]), "train": tuple(out[n_test:])}


def load_sentences(lang: str, split: str, text_dir: str | os.PathLike | None = None, n_test: int = 300) -> list[str]:
    """Sentences of `lang` for `split` ("train" or "test"), deterministic.

    The first `n_test` sentences after a `random.Random(0)` shuffle are the test split, the rest train,
    so the two never overlap (case-insensitively).
    """
    if lang not in LANGS:
        raise DataError(f"unknown language {lang!r}; expected one of {','.join(LANGS)}")
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected train or test")
    if n_test < 0:
        raise DataError(f"n_test must be >= 0, got {n_test}")
    d = str(Path(text_dir) if text_dir is not None else TEXT_DIR)
    return list(_split_lists(lang, d, int(n_test))[split])


def without_transcripts(sentences, exclude: set[str]) -> list[tuple[str, str]]:
    """(sentence, spoken form) of every sentence whose spoken form neither is one of `exclude` (spoken
    forms of evaluation transcripts) nor contains one longer than 12 characters: evaluation text never
    becomes training text (text rows, n-grams)."""
    from ...text import spoken_form

    long = [x for x in exclude if len(x) > 12]
    pairs = ((s, spoken_form(s)) for s in sentences)
    return [(s, f) for s, f in pairs if f not in exclude and not any(x in f for x in long)]


# ------------------------------------------------------------------ short utterances

# Number words for the languages num2words does not cover; 0-10 is what isolated-digit speech needs.
_DIGITS = {
    "hi": ["शून्य", "एक", "दो", "तीन", "चार", "पांच", "छह", "सात", "आठ", "नौ", "दस"],
    "zh": ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十"],
}


def number_words(n: int, lang: str) -> str:
    """`n` spelled out in `lang` (0 <= n <= 99 for zh, <= 10 for hi, any for the num2words languages)."""
    if lang == "zh":
        d = _DIGITS["zh"]
        if n <= 10:
            return d[n]
        tens, ones = divmod(n, 10)
        return (d[tens] if tens > 1 else "") + "十" + (d[ones] if ones else "")
    if lang == "hi":
        return _DIGITS["hi"][n]
    from num2words import num2words

    return num2words(n, lang=lang)


def short_utterance(lang: str, sentences: list[str], rng) -> str:
    """A 1-4 word utterance: a number, a spoken digit string, or a fragment of a training sentence.

    The sentence corpus has no short speech at all, so a model trained on it alone hallucinates on
    one-word commands and spoken digits; these fill that gap with text the tokenizer already covers.
    """
    u = rng.random()
    hi_max = 10 if lang == "hi" else 99
    if u < 0.30:  # one number, mostly 0-10
        return number_words(int(rng.integers(0, 11)) if rng.random() < 0.7 else int(rng.integers(0, hi_max + 1)), lang)
    if u < 0.45:  # a digit string, read digit by digit ("three one four")
        digits = [number_words(int(d), lang) for d in rng.integers(0, 10, int(rng.integers(2, 5)))]
        return word_separator(lang).join(digits)
    s = sentences[int(rng.integers(len(sentences)))]
    if lang == "zh":  # a run of 2-6 characters, cut at punctuation
        chars = [c for c in s if unicodedata.category(c)[0] in "LN"]
        n = int(rng.integers(2, 7))
        i = int(rng.integers(0, max(1, len(chars) - n + 1)))
        return "".join(chars[i : i + n])
    return word_stretch(s, rng, 1, 4)


def word_stretch(sentence: str, rng, lo: int, hi: int) -> str:
    """lo..hi consecutive words of `sentence` (fewer if it is shorter), punctuation stripped."""
    words = [w.strip(".,;:!?¿¡\"'«»()।") for w in sentence.split()]
    words = [w for w in words if w]
    n = int(rng.integers(lo, hi + 1))
    i = int(rng.integers(0, max(1, len(words) - n + 1)))
    return " ".join(words[i : i + n])
