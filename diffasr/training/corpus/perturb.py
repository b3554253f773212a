"""Cheap extra variety for a synthesised corpus: K perturbed copies of every clip.

Neural TTS is the slow part of the corpus (~3x real time); perturbing its output is ~100x cheaper.
Each copy gets a speed factor (resampling: tempo and pitch move together, so the copy sounds like a
different speaker), then a fresh draw of room/channel/noise augmentation. Deterministic by seed,
resumable (existing ids are skipped), parallel.

    diffasr corpus perturb --manifest data/corpus/train/manifest.jsonl --copies 2 --out data/corpus/perturbed
"""

from __future__ import annotations

import json
import os
import zlib
from multiprocessing import Pool
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from .augment import augment_described

SR = 16000


def perturb_clip(args) -> dict | None:
    """Make one perturbed copy; returns its manifest row (audio path relative to `out`)."""
    import soundfile as sf
    import soxr

    row, src_dir, out, copy, seed, speed_range = args
    new_id = f"{row['id']}_p{copy}"
    dest = Path(out) / "audio" / row["lang"] / f"{new_id}.flac"
    rng = np.random.default_rng([seed, zlib.crc32(row["id"].encode()), copy])
    speed = float(rng.uniform(*speed_range))
    try:
        x, sr = sf.read(Path(src_dir) / row["audio"], dtype="float32")
    except Exception:
        return None
    # Reading the clip as if it were recorded at sr*speed and resampling to sr plays it `speed`x faster.
    x = soxr.resample(x, sr * speed, SR).astype(np.float32)
    x, desc = augment_described(x, rng)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp.flac")
    sf.write(tmp, x, SR, subtype="PCM_16")
    os.replace(tmp, dest)
    return {
        **{k: v for k, v in row.items() if k not in ("audio", "id", "augment", "duration_s")},
        "id": new_id,
        "audio": str(dest.relative_to(out)),
        "voice": f"{row.get('voice', '')} speed{speed:.2f}".strip(),
        "augment": desc,
        "duration_s": round(len(x) / SR, 3),
        "source_id": row["id"],
    }


def _source_rows(src: Path) -> list[dict]:
    """The manifest's rows, each with an id (a row without one, as in real_train, is named by its
    audio file's stem)."""
    rows = []
    for n, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            missing = [k for k in ("audio", "text", "lang") if not isinstance(row.get(k), str)]
        except (ValueError, AttributeError):
            raise DataError(f"{src}:{n}: not a JSON object") from None
        if missing:
            raise DataError(f"{src}:{n}: row lacks {', '.join(missing)}")
        rows.append({**row, "id": str(row.get("id") or Path(row["audio"]).stem)})
    ids = [r["id"] for r in rows]
    if len(set(ids)) < len(ids):
        raise DataError(f"{src}: clip ids are not unique (two audio files with one name?)")
    return rows


def add_arguments(sub) -> None:
    p = sub.add_parser(
        "perturb",
        help="add speed-perturbed, re-augmented copies of a corpus",
        description="Add K speed-perturbed, re-augmented copies of every clip of a corpus.",
    )
    p.add_argument("--manifest", required=True, help="source manifest.jsonl")
    p.add_argument("--out", required=True, help="output directory (resumable)")
    p.add_argument("--copies", type=int, default=2)
    p.add_argument("--speed", default="0.88,1.12", help="speed factor range (default 0.88,1.12)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)


def run(args) -> int:
    from tqdm import tqdm

    src = Path(args.manifest)
    if not src.is_file():
        raise DataError(f"{src}: manifest not found")
    if args.copies < 1:
        raise ConfigError("--copies must be ≥ 1")
    try:
        lo, hi = (float(v) for v in args.speed.split(","))
    except ValueError:
        raise ConfigError(f"--speed must be 'low,high', not {args.speed!r}") from None
    rows = _source_rows(src)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    done = (
        {json.loads(l)["id"] for l in manifest.read_text().splitlines() if l.strip()} if manifest.is_file() else set()
    )
    jobs = [
        (r, src.parent, out, c, args.seed, (lo, hi))
        for r in rows
        for c in range(args.copies)
        if f"{r['id']}_p{c}" not in done
    ]
    made = 0
    with open(manifest, "a", encoding="utf-8") as f, Pool(max(1, args.workers)) as pool:
        for row in tqdm(pool.imap(perturb_clip, jobs, chunksize=8), total=len(jobs), unit="clip", mininterval=2):
            if row is not None:  # the line is appended only once its audio is in place
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()
                made += 1
    print(f"perturb: {made} new clips in {out} ({len(done)} already there)")
    return 0
