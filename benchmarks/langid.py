"""Language identification accuracy per language on a manifest (default ../shared/data/real_dev).

    python benchmarks/langid.py                          # the model's languages: all of diffasr's
    python benchmarks/langid.py --model CKPT             # a checkpoint's languages

diffasr.pipeline.transcribe.identify_language: CTranslate2 Whisper's detect_language on the first 30 s
zero-padded to ≥ 10 s, restricted to the model's languages. (Padding to 30 s and the model's own
`<|lang|>` prompts were measured and removed: docs/experiments.md.)
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MANIFEST = REPO.parent / "shared" / "data" / "real_dev" / "manifest.jsonl"


class _WhisperOnly:
    """Just enough of a model for identify_language when no checkpoint is given."""

    def __init__(self):
        from diffasr.models.encoder import CT2WhisperEncoder
        from diffasr.text import LANGUAGES

        self.encoder = CT2WhisperEncoder()
        self.config = argparse.Namespace(languages=list(LANGUAGES))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    ap.add_argument("--model", default=None, help="diffasr checkpoint (its languages)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args(argv)

    from diffasr.audio import load_audio
    from diffasr.pipeline.transcribe import identify_language

    rows = [json.loads(l) for l in args.manifest.read_text().splitlines() if l.strip()]
    if args.model:
        import diffasr

        model = diffasr.load(args.model)
    else:
        model = _WhisperOnly()
    methods = ["whisper"]
    stats = {m: defaultdict(lambda: [0, 0, 0.0]) for m in methods}  # lang -> [correct, n, seconds]
    confusions = {m: defaultdict(int) for m in methods}
    for r in rows:
        audio = load_audio(args.manifest.parent / r["audio"])
        for m in methods:
            t0 = time.perf_counter()
            guess = identify_language(model, audio)[0][0]
            s = stats[m][r["lang"]]
            s[0] += guess == r["lang"]
            s[1] += 1
            s[2] += time.perf_counter() - t0
            if guess != r["lang"]:
                confusions[m][f"{r['lang']}->{guess}"] += 1

    print(f"{'method':8} {'lang':5} {'n':>3} {'acc':>6} {'ms/clip':>8}")
    out = {}
    for m in methods:
        for lang in sorted(stats[m]):
            c, n, sec = stats[m][lang]
            print(f"{m:8} {lang:5} {n:3d} {c / n:6.1%} {1000 * sec / n:8.0f}")
        c = sum(v[0] for v in stats[m].values())
        n = sum(v[1] for v in stats[m].values())
        macro = sum(v[0] / v[1] for v in stats[m].values()) / len(stats[m])
        print(f"{m:8} {'all':5} {n:3d} {c / n:6.1%}   (macro {macro:.1%}) errors: {dict(confusions[m]) or 'none'}")
        out[m] = {
            "per_language": {l: {"correct": v[0], "n": v[1]} for l, v in stats[m].items()},
            "accuracy": c / n,
            "macro_accuracy": macro,
            "errors": dict(confusions[m]),
        }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
