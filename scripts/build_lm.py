"""Train the per-language token n-grams a checkpoint's CTC beam search fuses (diffasr/decoding/ngram.py).

Text: the training split of ../shared/data/text/<lang>.txt (the held-out test sentences never enter),
minus every sentence that is, or contains, a transcript of the --exclude manifests (real_dev by default), plus short utterances drawn
the way the `short` corpus draws them (numbers, digit strings, fragments), tokenized with the
checkpoint's own tokenizer. Writes <model>/lm/<lang>.npz.

    python scripts/build_lm.py diffasr/assets/diffasr-small --order 4 --min-count 2

Domain adaptation: `--text en=notes.txt` (one sentence per line) adds that text to English's n-gram,
written into a copy of the model so the shipped one stays as it is:

    cp -r diffasr/assets/diffasr-small my-model
    python scripts/build_lm.py my-model --langs en --text en=notes.txt
    diffasr transcribe meeting.wav --model my-model --language en
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from diffasr.decoding.ngram import NgramLM
from diffasr.errors import DiffasrError
from diffasr.model import DiffusionASR
from diffasr.models.tokenizer import save_json
from diffasr.pipeline.manifest import read_manifest
from diffasr.text import spoken_form
from diffasr.training.corpus.text import LANGS, load_sentences, short_utterance, without_transcripts

REAL_DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_dev" / "manifest.jsonl"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path, help="checkpoint directory (its tokenizer; the n-grams go to <model>/lm)")
    p.add_argument("--order", type=int, default=4)
    p.add_argument("--min-count", type=int, default=2, help="drop highest-order n-grams seen fewer times")
    p.add_argument("--langs", default=",".join(LANGS))
    p.add_argument("--short", type=int, default=3000, help="short utterances added per language")
    p.add_argument("--exclude", nargs="*", default=[str(REAL_DEV)], help="manifests whose sentences must not be used")
    p.add_argument(
        "--text",
        action="append",
        default=[],
        metavar="LANG=FILE",
        help="extra sentences for LANG's n-gram, one per line (repeatable)",
    )
    p.add_argument("--out", type=Path, help="default: <model>/lm")
    a = p.parse_args()
    extra: dict[str, list[str]] = {}
    for item in a.text:
        lang, _, path = item.partition("=")
        if lang not in LANGS or not path:
            p.error(f"--text {item!r}: expected LANG=FILE with LANG one of {','.join(LANGS)}")
        try:
            extra.setdefault(lang, []).extend(
                l.strip() for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()
            )
        except (OSError, UnicodeDecodeError) as e:
            p.error(f"--text {item!r}: cannot read {path} ({e})")
    tok = DiffusionASR.load(a.model).tokenizer
    exclude = {spoken_form(u.text) for m in a.exclude for u in read_manifest(m)}
    out = a.out or a.model / "lm"
    for lang in a.langs.split(","):
        t0 = time.time()
        sents = [s for s, _ in without_transcripts(load_sentences(lang, "train"), exclude)]
        rng = np.random.default_rng(0)
        shorts = [short_utterance(lang, sents, rng) for _ in range(a.short)]
        sents += extra.get(lang, [])
        lm = NgramLM.train((tok.encode(s) for s in sents + shorts), tok.vocab_size, tok.eos, a.order, a.min_count)
        lm.save(out / f"{lang}.npz")
        size = (out / f"{lang}.npz").stat().st_size
        print(
            f"{lang}: {len(sents)} sentences + {len(shorts)} short, {lm.sizes[0]} contexts, {lm.sizes[1]} n-grams, "
            f"{size / 1e6:.1f} MB, {time.time() - t0:.0f} s",
            flush=True,
        )
    if out == a.model / "lm":  # the checkpoint describes its n-grams
        cfg = json.loads((a.model / "config.json").read_text())
        cfg["ngram"] = dict(
            kind="interpolated Kneser-Ney over token ids",
            order=a.order,
            min_count=a.min_count,
            languages=sorted(p.stem for p in out.glob("*.npz")),
            files="lm/<lang>.npz",
            text="train split of shared/data/text/<lang>.txt minus the --exclude manifests, "
            f"plus {a.short} short utterances per language"
            + "".join(f"; {lang}: plus {len(v)} lines of --text" for lang, v in extra.items()),
            command="python scripts/build_lm.py " + " ".join(sys.argv[1:]),
        )
        save_json(a.model / "config.json", cfg)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DiffasrError as e:
        sys.exit(f"build_lm: error: {e}")
