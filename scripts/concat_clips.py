"""Long training clips made by joining short ones of the same voice: sentence-level synthetic speech
is mostly 2-6 s (8 words), while real speech arrives in 10-25 s stretches; the denoiser's canvas
then holds 30-60 tokens, a length it has rarely been trained on.

    python scripts/concat_clips.py --manifest data/corpus/base_en_fast/manifest.jsonl \
        --out data/corpus/base_en_long --n 400 --min-s 10 --max-s 26 --seed 0

Clips of one manifest with the same engine and speaker (the voice's first word) are joined in a
random order with 0.15-0.6 s of silence between them, until the next one would pass --max-s;
a join shorter than --min-s is dropped (`--any-voice`: any clips of the manifest and language).
Transcripts are joined with a space (Chinese: with nothing, as it is written). `--split test
--disjoint` makes a long-clip test set of a held-out corpus. Each clip is written atomically, the
manifest at the end; a second run with the same arguments skips written clips.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from diffasr.audio import SAMPLE_RATE as SR
from diffasr.audio import load_audio
from diffasr.text import word_separator


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--min-s", type=float, default=10.0)
    ap.add_argument("--max-s", type=float, default=26.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", default="train", help="join the clips of this split (test: a long-clip test set)")
    ap.add_argument("--disjoint", action="store_true", help="use each clip at most once (a test set)")
    ap.add_argument("--any-voice", action="store_true", help="join clips of different voices too")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for m in args.manifest:
        base = Path(m).resolve().parent
        for line in open(m, encoding="utf-8"):
            r = json.loads(line)
            if r.get("split", "train") != args.split or not r.get("duration_s"):
                continue
            r["path"] = base / r["audio"]
            voice = None if args.any_voice else (r.get("engine"), (r.get("voice") or "").split(" ")[0])
            groups[(m, voice, r["lang"])].append(r)
    keys = sorted(groups, key=str)
    out = Path(args.out)
    (out / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in tqdm(range(args.n), desc="joins", mininterval=5):
        keys = [k for k in keys if groups[k]]
        if not keys:
            break
        key = rng.choices(keys, [len(groups[k]) for k in keys])[0]
        pool = groups[key][:]
        rng.shuffle(pool)
        parts, total = [], 0.0
        for r in pool:
            gap = rng.uniform(0.15, 0.6)
            if total + r["duration_s"] + gap > args.max_s:
                break
            parts.append((r, gap))
            total += r["duration_s"] + gap
        if args.disjoint:
            used = {id(r) for r, _ in parts}
            groups[key] = [r for r in groups[key] if id(r) not in used]
        if total < args.min_s or len(parts) < 2:
            continue
        name = f"long_{i:06d}.flac"
        dest = out / "audio" / name
        if not dest.is_file():
            chunks = []
            for r, gap in parts:
                chunks += [load_audio(r["path"]), np.zeros(int(gap * SR), np.float32)]
            tmp = dest.with_suffix(".tmp.flac")
            sf.write(str(tmp), np.concatenate(chunks[:-1]), SR)
            os.replace(tmp, dest)
        rows.append(
            {
                "id": name[:-5],
                "audio": f"audio/{name}",
                "text": word_separator(key[2]).join(r["text"].strip() for r, _ in parts),
                "lang": key[2],
                "engine": parts[0][0].get("engine"),
                "voice": parts[0][0].get("voice"),
                "joined": [r["id"] for r, _ in parts],
                "duration_s": round(sf.info(str(dest)).duration, 3),
                "sample_rate": SR,
                "split": args.split,
            }
        )
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out / "manifest.jsonl")
    print(f"{len(rows)} clips, {sum(r['duration_s'] for r in rows) / 3600:.2f} h -> {out / 'manifest.jsonl'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
