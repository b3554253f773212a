"""Spoken numbers, dates, times and amounts for the synthetic corpus (Hindi).

The sentence files drop every line with a digit (a TTS engine reads "1947" its own way, which no label
can match), so a model trained on them alone never hears "उन्नीस सौ सैंतालीस" or "सुबह आठ बजे" -- and
news speech is full of them. Here the label is the words themselves, spelled as the real Hindi
transcripts spell them (हजार, पांच: counted in `real_train/hi`), so the engine reads exactly the label.
"""

from __future__ import annotations

from .text import word_stretch

# 0-99: Hindi has a separate word for each (no regular tens + ones composition).
_HI_0_99 = (
    "शून्य एक दो तीन चार पांच छह सात आठ नौ "
    "दस ग्यारह बारह तेरह चौदह पंद्रह सोलह सत्रह अठारह उन्नीस "
    "बीस इक्कीस बाईस तेईस चौबीस पच्चीस छब्बीस सत्ताईस अट्ठाईस उनतीस "
    "तीस इकतीस बत्तीस तैंतीस चौंतीस पैंतीस छत्तीस सैंतीस अड़तीस उनतालीस "
    "चालीस इकतालीस बयालीस तैंतालीस चवालीस पैंतालीस छियालीस सैंतालीस अड़तालीस उनचास "
    "पचास इक्यावन बावन तिरपन चौवन पचपन छप्पन सत्तावन अट्ठावन उनसठ "
    "साठ इकसठ बासठ तिरसठ चौंसठ पैंसठ छियासठ सड़सठ अड़सठ उनहत्तर "
    "सत्तर इकहत्तर बहत्तर तिहत्तर चौहत्तर पचहत्तर छिहत्तर सतहत्तर अठहत्तर उन्यासी "
    "अस्सी इक्यासी बयासी तिरासी चौरासी पचासी छियासी सत्तासी अट्ठासी नवासी "
    "नब्बे इक्यानबे बानबे तिरानबे चौरानबे पचानबे छियानबे सत्तानबे अट्ठानबे निन्यानबे"
).split()
assert len(_HI_0_99) == 100

# Indian grouping: crore (10^7), lakh (10^5), thousand, hundred.
_HI_SCALES = ((10**7, "करोड़"), (10**5, "लाख"), (1000, "हजार"), (100, "सौ"))
_HI_MONTHS = "जनवरी फरवरी मार्च अप्रैल मई जून जुलाई अगस्त सितंबर अक्टूबर नवंबर दिसंबर".split()
_HI_COUNTED = (
    "लोग",
    "लोगों को",
    "रुपये",
    "करोड़ रुपये",
    "लाख रुपये",
    "प्रतिशत",
    "किलोमीटर",
    "साल",
    "दिन",
    "घंटे",
    "मरीज",
    "गांव",
    "जिलों में",
    "सीटों पर",
    "मामले",
    "छात्र",
    "मीटर",
    "टन",
)
_HI_TIME_OF_DAY = ("सुबह", "दोपहर", "शाम", "रात")


def hindi_number(n: int) -> str:
    """`n` (0 <= n < 10^9) as Hindi speakers say it: 1234567 -> "बारह लाख चौंतीस हजार पांच सौ सड़सठ"."""
    if not 0 <= n < 10**9:
        raise ValueError(f"hindi_number: {n} outside [0, 10^9)")
    if n < 100:
        return _HI_0_99[n]
    words = []
    for scale, name in _HI_SCALES:
        q, n = divmod(n, scale)
        if q:
            words += [hindi_number(q), name]
    if n:
        words.append(_HI_0_99[n])
    return " ".join(words)


def hindi_year(y: int) -> str:
    """A year as read aloud: 1947 -> "उन्नीस सौ सैंतालीस", 2024 -> "दो हजार चौबीस"."""
    if 1100 <= y < 2000:
        hi, lo = divmod(y, 100)
        return f"{_HI_0_99[hi]} सौ" + (f" {_HI_0_99[lo]}" if lo else "")
    return hindi_number(y)


def _amount(rng) -> int:
    """A count with a news-like spread: mostly small, sometimes thousands, lakhs or crores."""
    u = rng.random()
    if u < 0.45:
        return int(rng.integers(1, 100))
    if u < 0.7:
        return int(rng.integers(100, 1000))
    if u < 0.9:
        return int(rng.integers(1000, 10**5))
    return int(rng.integers(10**5, 10**8))


def hindi_number_phrase(rng) -> str:
    """One spoken date, year, time, amount or count, e.g. "पंद्रह अगस्त उन्नीस सौ सैंतालीस को"."""
    u = rng.random()
    if u < 0.2:
        day, month = int(rng.integers(1, 32)), _HI_MONTHS[int(rng.integers(12))]
        year = f" {hindi_year(int(rng.integers(1900, 2031)))}" if rng.random() < 0.4 else ""
        return f"{hindi_number(day)} {month}{year} को"
    if u < 0.35:
        return f"{hindi_year(int(rng.integers(1900, 2031)))} में"
    if u < 0.5:
        part = _HI_TIME_OF_DAY[int(rng.integers(len(_HI_TIME_OF_DAY)))]
        hour = hindi_number(int(rng.integers(1, 13)))
        return (
            f"{part} {hour} बजे"
            if rng.random() < 0.7
            else f"{part} {hour} बजकर {hindi_number(int(rng.integers(5, 56)))} मिनट पर"
        )
    noun = _HI_COUNTED[int(rng.integers(len(_HI_COUNTED)))]
    return f"{hindi_number(_amount(rng))} {noun}"


def number_utterance(lang: str, sentences: list[str], rng) -> str:
    """A spoken-number phrase, alone or joined to a 2-8 word stretch of a training sentence.

    Only Hindi so far (its references write numbers as words, and its sentence file has none).
    """
    if lang != "hi":
        raise ValueError(f"number utterances exist for hi only, not {lang!r}")
    phrase = hindi_number_phrase(rng)
    if rng.random() < 0.25:
        return phrase
    ctx = word_stretch(sentences[int(rng.integers(len(sentences)))], rng, 2, 8)
    return f"{phrase} {ctx}" if rng.random() < 0.5 else f"{ctx} {phrase}"
