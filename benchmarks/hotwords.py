"""Hotwords on real clips with rare names: recognised where said, inserted where not, WER elsewhere.

The set (../shared/data): the real clips whose references hold a rare name (NAMED below: 3 from
real_dev, 6 from real_train, which diffasr-base saw in training), and every other real_dev clip in
English, German, Spanish and French (no name of the list is said in them). Each clip is decoded by
the model's default method twice: without hotwords, and with all of HOTWORDS (one glossary for all
clips, as a user would give it). A name counts as recognised when its letters appear in the
hypothesis's letters (case, spaces and punctuation ignored: "Fire fox" is Firefox), and as inserted
when a name not in the reference does.

    python benchmarks/hotwords.py --model base --out docs/results/hotwords_base.json
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import diffasr
from diffasr.metrics import error_rate

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HOTWORDS = ["Quilter", "Gutenberg", "Netherlands", "Overwatch", "Custer", "Josh", "Firefox", "Wentworth", "Auenland"]
NAMED = {  # clip -> the names of HOTWORDS its reference holds
    "real_dev/en/picovoice_leopard_test.wav": ["Quilter"],
    "real_dev/en/coqui_LJ001-0007.wav": ["Gutenberg"],
    "real_dev/en/coqui_LJ001-0003.wav": ["Netherlands"],
    "real_train/en/mfa_multilingual_ipa_2.ogg": ["Overwatch"],
    "real_train/en/mfa_multilingual_ipa_5.ogg": ["Custer"],
    "real_train/en/mfa_multilingual_ipa_us_2.ogg": ["Josh"],
    "real_train/en/mfa_common_voice_en_22058266.ogg": ["Firefox"],
    "real_train/es/mfa_13697_11991_000000.ogg": ["Wentworth"],
    "real_train/de/thorsten_2b0d202fa8b3.ogg": ["Auenland"],
}
LANGS = ("en", "de", "es", "fr")


def letters(text: str) -> str:
    return re.sub(r"[\W\d_]+", "", text.lower())


def clips() -> list[dict]:
    rows = []
    for split in ("real_dev", "real_train"):
        for line in (SHARED / split / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            key = f"{split}/{r['audio']}"
            if r["lang"] in LANGS and (key in NAMED or split == "real_dev"):
                rows.append({**r, "key": key, "path": str(SHARED / key), "names": NAMED.get(key, [])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="base")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--boost", type=float, default=None, help="hotword_boost (default: DecodeOptions')")
    a = p.parse_args()
    model = diffasr.load(a.model)
    extra = {} if a.boost is None else {"hotword_boost": a.boost}
    rows, t0 = clips(), time.time()
    for r in rows:
        r["plain"] = model.transcribe(r["path"], language=r["lang"]).text
        r["hot"] = model.transcribe(r["path"], language=r["lang"], hotwords=HOTWORDS, **extra).text
        print(f"{r['key']}\n  ref  {r['text']}\n  off  {r['plain']}\n  on   {r['hot']}", flush=True)
    said = [(r, n) for r in rows for n in r["names"]]
    unnamed = [r for r in rows if not r["names"]]
    summary = {"model": a.model, "method": model.config.decode_defaults.get("method"), "hotwords": HOTWORDS}
    for cond in ("plain", "hot"):
        found = sum(letters(n) in letters(r[cond]) for r, n in said)
        inserted = sum(
            any(letters(h) in letters(r[cond]) and letters(h) not in letters(r["text"]) for h in HOTWORDS) for r in rows
        )
        wer = {}
        for lang in LANGS:
            group = [r for r in unnamed if r["lang"] == lang]
            if group:
                wer[lang] = round(error_rate([r["text"] for r in group], [r[cond] for r in group], lang)[0], 4)
        n_words = {lang: sum(len(r["text"].split()) for r in unnamed if r["lang"] == lang) for lang in wer}
        pooled = sum(wer[lang] * n_words[lang] for lang in wer) / max(1, sum(n_words.values()))
        summary[cond] = {
            "recognised": f"{found}/{len(said)}",
            "clips_with_insertion": f"{inserted}/{len(rows)}",
            "wer_unnamed": wer,
            "wer_unnamed_pooled": round(pooled, 4),
        }
    summary["clips"] = [{k: r[k] for k in ("key", "lang", "text", "names", "plain", "hot")} for r in rows]
    summary["seconds"] = round(time.time() - t0, 1)
    print(json.dumps({k: v for k, v in summary.items() if k != "clips"}, indent=1))
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(summary, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
