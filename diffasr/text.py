"""Languages and how they are written: the facts the tokenizers, decoding, scoring and the corpus share.

Which languages the models know, each one's script (for the script masks), which are written
without spaces between words, the "spoken" form the compact BPE is trained on (NFKC, lower case,
no punctuation), and the traditional-to-simplified Chinese converter that scoring and decoding apply.
A leaf: it imports nothing of diffasr, so metrics.py and the model parts can both read it.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

LANGUAGES = ("en", "de", "fr", "es", "hi", "zh")
LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "es": "Spanish", "hi": "Hindi", "zh": "Chinese"}
# The script of each language's letters, as the first word of their Unicode names.
SCRIPTS = {"en": "LATIN", "de": "LATIN", "fr": "LATIN", "es": "LATIN", "hi": "DEVANAGARI", "zh": "CJK"}
UNSPACED = ("zh", "ja")  # written without spaces between words


@lru_cache(maxsize=1)
def t2s():
    """OpenCC's traditional-to-simplified Chinese converter (built once)."""
    from opencc import OpenCC

    return OpenCC("t2s")


def is_cjk(ch: str) -> bool:
    """A CJK ideograph (unified, extension A/B+, compatibility): one Chinese character."""
    o = ord(ch)
    return 0x3400 <= o <= 0x9FFF or 0xF900 <= o <= 0xFAFF or 0x20000 <= o <= 0x2FA1F


_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "´": "'"})


def spoken_form(text: str) -> str:
    """Normalise a transcript to the target form: NFKC, lower case, no punctuation, single spaces.

    Apostrophes inside words stay ("don't", "l'homme"); hyphens and other punctuation become spaces.
    Devanagari combining marks and CJK characters are untouched.
    """
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    out = []
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if ch == "'" and 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
            out.append(ch)
        elif cat[0] in "PS":  # punctuation and symbols are not spoken
            out.append(" ")
        else:
            out.append(ch)
    text = re.sub(r"\s+", " ", "".join(out)).strip()
    # Chinese has no word spaces; drop spaces between CJK characters left by removed punctuation.
    return re.sub(r"(?<=[\u3400-\u9fff])\s+(?=[\u3400-\u9fff])", "", text)


def word_separator(language: str | None) -> str:
    """What joins two words (or two transcripts) in `language`: nothing in unspaced scripts, else a space."""
    return "" if language in UNSPACED else " "
