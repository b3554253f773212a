"""Per-stage times for one ~10 s clip at batch 1 and 8 (a script, not a test).

    python benchmarks/stage_times.py [--model DIR] [--clip FILE --language LANG] [--steps 8] [--threads N]

Without --clip it takes the real_dev clip closest to 10 s. `diffasr bench` runs this and more.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from diffasr import load  # noqa: E402
from diffasr.apps.bench import default_clips, stage_table, stage_times  # noqa: E402
from diffasr.apps.evaluate import set_threads  # noqa: E402
from diffasr.audio import SAMPLE_RATE, load_audio  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-small)")
    p.add_argument("--clip", default=None, help="audio file (default: the real_dev clip closest to 10 s)")
    p.add_argument("--language", default=None, help="language of --clip (default: auto)")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    if args.clip:
        clip, lang = Path(args.clip), args.language
    else:
        clips = default_clips()
        clip, lang = min(clips, key=lambda c: abs(load_audio(c[0]).size / SAMPLE_RATE - 10))
    model = load(args.model)
    if args.threads:
        set_threads(model, args.threads)
    stages = [stage_times(model, clip, lang, b, args.steps, args.repeats) for b in (1, 8)]
    print(f"{clip.name} ({load_audio(clip).size / SAMPLE_RATE:.1f} s), {args.steps} steps")
    print(stage_table(stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
