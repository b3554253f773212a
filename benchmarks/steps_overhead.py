"""What `return_steps` costs: the default decoded with it off and on, interleaved clip by clip in one
process so that load from anything else falls on both alike.

Off, the sampler gets no StepRecorder (decoding/whisper.py: `rec = None`): nothing is recorded or
kept. On, every step's canvas, states and confidences are copied out. The figure is the median ratio
on/off per clip and the total seconds of each; the texts must be the same.

    python benchmarks/steps_overhead.py --clips 12 --repeats 3 --out docs/results/steps_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import diffasr  # noqa: E402
from diffasr.audio import load_audio  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real_dev"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="base")
    p.add_argument("--clips", type=int, default=12, help="real_dev English clips, longest first")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    rows = [json.loads(line) for line in (SHARED / "manifest.jsonl").read_text().splitlines()]
    rows = sorted((r for r in rows if r["lang"] == "en"), key=lambda r: -r["duration_s"])[: a.clips]
    model = diffasr.load(a.model)
    audio = [load_audio(SHARED / r["audio"]) for r in rows]
    model.transcribe(audio[0], language="en")  # warm-up
    out = []
    for r, x in zip(rows, audio):
        t = {False: [], True: []}
        text = {}
        for _ in range(a.repeats):
            for on in (False, True):
                t0 = time.perf_counter()
                res = model.transcribe(x, language="en", return_steps=on)
                t[on].append(time.perf_counter() - t0)
                text[on] = res.text
        assert text[False] == text[True], (r["audio"], text)
        out.append({"clip": r["audio"], "off_s": statistics.median(t[False]), "on_s": statistics.median(t[True])})
        print(f"{r['audio']}: off {out[-1]['off_s']:.3f} s, on {out[-1]['on_s']:.3f} s", flush=True)
    ratio = statistics.median(o["on_s"] / o["off_s"] for o in out)
    summary = {
        "model": a.model,
        "clips": len(out),
        "repeats": a.repeats,
        "off_total_s": round(sum(o["off_s"] for o in out), 3),
        "on_total_s": round(sum(o["on_s"] for o in out), 3),
        "median_on_over_off": round(ratio, 3),
        "per_clip": out,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "per_clip"}))
    if a.out:
        a.out.write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()
