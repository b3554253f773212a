"""Files per hour of `diffasr batch` with 1 and 2 actors on this machine (a speed script, not a test).

    python benchmarks/batch_throughput.py --manifest ../shared/data/real_dev/manifest.jsonl \
        --actors 1,2 --copies 3 --out docs/results/batch_throughput.json

Each run starts its own local Ray, transcribes every clip of the manifest with the shipped model
(language from the manifest) into a fresh Parquet file and reports:
  files_per_hour_total   files / wall time including Ray start and model loading in each actor;
  files_per_hour_after_ray_start   the same without Ray's start (model loading still counted);
  files_per_hour_pool_busy         files / (actor seconds spent transcribing / actors): the rate of
                                   a warm pool, what a long job approaches;
  audio_hours_per_hour_total       audio transcribed per wall hour.
The 1-minute load average before and after each run is recorded: on a shared machine it says how
much of the CPU the runs actually had.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def one_run(manifest: Path, actors: int, batch_size: int, model: str | None, threads: int) -> dict:
    import pyarrow.parquet as pq

    from diffasr.apps.batch import run_batch

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "out.parquet"
        load0 = os.getloadavg()[0]
        t0 = time.time()
        s = run_batch(
            str(manifest), out, model=model, actors=actors, batch_size=batch_size, threads=threads, progress=False
        )
        wall = time.time() - t0
        rows = pq.read_table(out).to_pylist()
    audio = sum(r["duration"] or 0 for r in rows)
    busy = sum(dict(r["timings"] or []).get("file", 0.0) for r in rows)  # actor seconds spent on files
    return {
        "actors": actors,
        "threads_per_actor": threads,
        "batch_size": batch_size,
        "files": len(rows),
        "failed": s["failed"],
        "audio_s": round(audio, 1),
        "wall_s": round(wall, 1),
        "ray_start_s": s["ray_start_s"],
        "first_result_s": s["first_result_s"],
        "actor_busy_s": round(busy, 1),
        "files_per_hour_total": round(3600 * len(rows) / wall),
        "files_per_hour_after_ray_start": round(3600 * len(rows) / (wall - s["ray_start_s"])),
        "files_per_hour_pool_busy": round(3600 * len(rows) * actors / busy) if busy else None,
        "audio_hours_per_hour_total": round(audio / wall, 2),
        "load_avg_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def repeated_manifest(manifest: Path, copies: int, folder: Path) -> Path:
    """A manifest of `copies` hard links of every clip (distinct paths, so none is skipped as done)."""
    from diffasr.pipeline.manifest import read_manifest

    lines = []
    for u in read_manifest(manifest):
        for i in range(copies):
            link = folder / f"{i}_{u.audio.parent.name}_{u.audio.name}"
            try:
                os.link(u.audio, link)
            except OSError:  # another filesystem: copy
                shutil.copyfile(u.audio, link)
            lines.append(json.dumps({"audio": link.name, "lang": u.lang}))
    out = folder / "manifest.jsonl"
    out.write_text("\n".join(lines) + "\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--manifest", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/real_dev/manifest.jsonl"
    )
    p.add_argument("--actors", default="1,2")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--model", default=None)
    p.add_argument("--cpus", type=int, default=os.cpu_count(), help="torch threads split over the actors")
    p.add_argument("--copies", type=int, default=1, help="transcribe each clip this many times (longer job)")
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    tmp = tempfile.TemporaryDirectory()
    if a.copies > 1:
        a.manifest = repeated_manifest(a.manifest, a.copies, Path(tmp.name))
    res = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
        "command": "python " + " ".join(sys.argv),
        "model": a.model or "diffasr-small",
        "runs": [],
    }
    for n in [int(x) for x in a.actors.split(",")]:
        r = one_run(a.manifest, n, a.batch_size, a.model, max(1, a.cpus // n))
        print(json.dumps(r), flush=True)
        res["runs"].append(r)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
