"""Error rates as Whisper's paper scores them, pure functions: `normalize`, `metric_for`, `error_rate`.

English normaliser for en, the basic normaliser otherwise (keeping combining marks for hi, whose
vowel signs are marks; Devanagari digits read as Arabic ones), zh converted to simplified first. en/de/fr/es are scored by WER, zh/hi by
CER with whitespace removed; rates are corpus-level (total edits / total reference units).
"""

from __future__ import annotations

import math
from functools import cache

from .text import t2s

CER_LANGUAGES = ("zh", "hi")  # no word boundaries to trust: score characters, whitespace removed
# Hindi writes numbers in Devanagari digits or Arabic ones (the All India Radio transcripts use
# Arabic, the story references spell numbers out): the two digit forms score as the same character.
_DEVANAGARI_DIGITS = str.maketrans("०१२३४५६७८९", "0123456789")


@cache
def _normalizer(lang: str):
    if lang == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    # The default basic normaliser turns Devanagari vowel signs and viramas (Unicode marks) into spaces.
    return BasicTextNormalizer(preserve_marks=True) if lang == "hi" else BasicTextNormalizer()


def metric_for(lang: str, metric: str = "auto") -> str:
    """'cer' for zh/hi, 'wer' otherwise; `metric` "cer" or "wer" forces one for every language."""
    if metric != "auto":
        return metric
    return "cer" if lang in CER_LANGUAGES else "wer"


def normalize(text: str, lang: str) -> str:
    """The string that is scored: normalised words joined by single spaces, or (zh/hi) characters with
    no whitespace at all. zh is converted to simplified characters first."""
    if lang == "zh":
        text = t2s().convert(text)
    if lang == "hi":
        text = text.translate(_DEVANAGARI_DIGITS)
    text = _normalizer(lang)(text)
    if metric_for(lang) == "cer":
        return "".join(text.split())
    return " ".join(text.split())


def edit_counts(refs: list[str], hyps: list[str], lang: str, metric: str = "auto") -> tuple[int, int]:
    """(edits, reference units) over a corpus, after normalisation. Units are words (WER) or
    characters (CER; for spaced languages the single spaces between words count as characters).
    A reference that normalises to nothing adds its hypothesis as insertions."""
    import jiwer

    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    pairs = [(normalize(r, lang), normalize(h, lang)) for r, h in zip(refs, hyps)]
    cer = metric_for(lang, metric) == "cer"
    units = (lambda s: len(s)) if cer else (lambda s: len(s.split()))
    edits = sum(units(h) for r, h in pairs if not r)
    scored = [(r, h) for r, h in pairs if r]
    if not scored:
        return edits, 0
    r, h = zip(*scored)
    out = (jiwer.process_characters if cer else jiwer.process_words)(list(r), list(h))
    edits += out.substitutions + out.deletions + out.insertions
    return edits, out.substitutions + out.deletions + out.hits


def error_rate(refs: list[str], hyps: list[str], lang: str, metric: str = "auto") -> tuple[float, str]:
    """Corpus-level (rate, 'wer' | 'cer') of raw hypotheses against raw references in `lang`.
    NaN when the references hold no words at all."""
    edits, n = edit_counts(refs, hyps, lang, metric)
    return (edits / n if n else math.nan), metric_for(lang, metric)
