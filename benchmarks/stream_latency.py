"""Live transcription on real_dev played at real-time pace: accuracy of the finals, latency, CPU.

    python benchmarks/stream_latency.py                         # all of ../shared/data/real_dev
    python benchmarks/stream_latency.py --limit 5 --no-plot     # a quick look

Each clip is streamed through its own `model.stream()` session (language identified by the
session, as the batch run identifies it per file) in 20-ms pieces on the wall clock, followed by
`--tail` seconds of silence (the speaker stops talking), then closed. Reported:
  - WER (CER for zh) of the finals, joined per clip, against the batch transcript of the same file
    (`model.transcribe(path)`, default decoding) and both against the reference text;
  - latency of each final: wall time it came out minus wall time its end-of-speech sample (the
    session's VAD) became available; median and 95th percentile;
  - CPU seconds (this process, all threads) per second of audio streamed, silence tail included.
Writes docs/results/stream_latency.{json,md} and a latency histogram PNG unless told otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MANIFEST = REPO.parent / "shared" / "data" / "real_dev" / "manifest.jsonl"
OUT = REPO / "docs" / "results"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--limit", type=int, default=0, help="first N clips only (0: all)")
    ap.add_argument("--tail", type=float, default=1.5, help="seconds of silence after each clip (default 1.5)")
    ap.add_argument("--pause", type=float, default=0.5, help="session pause_s (default 0.5)")
    ap.add_argument(
        "--language-given",
        action="store_true",
        help="give each clip's language to batch and stream alike (a stream that has identified it already)",
    )
    ap.add_argument("--no-speculate", action="store_true", help="decode finals only once the pause is complete")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--out", default=str(OUT / "stream_latency"), help="output stem (.json, .md, .png)")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)

    import torch

    import diffasr
    from diffasr.audio import SAMPLE_RATE, load_audio
    from diffasr.metrics import error_rate
    from diffasr.pipeline.stream import play

    torch.set_num_threads(args.threads)
    rows = [json.loads(line) for line in args.manifest.read_text().splitlines() if line.strip()]
    rows = rows[: args.limit] if args.limit else rows
    model = diffasr.load()
    warm = load_audio(args.manifest.parent / rows[0]["audio"])
    model.transcribe(warm)  # first calls pay for lazy initialisation: keep it out of the figures
    play(model.stream(), np.concatenate([warm, np.zeros(SAMPLE_RATE, np.float32)]), realtime=False)

    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    clips, latencies, cpu, audio_s, wall = [], [], 0.0, 0.0, 0.0
    for i, row in enumerate(rows):
        path = args.manifest.parent / row["audio"]
        audio = load_audio(path)
        language = row["lang"] if args.language_given else None
        batch = model.transcribe(path, language=language)
        fed = np.concatenate([audio, np.zeros(int(args.tail * SAMPLE_RATE), np.float32)])
        session = model.stream(language=language, pause_s=args.pause, speculate=not args.no_speculate)
        c0, w0 = time.process_time(), time.perf_counter()
        events = play(session, fed, realtime=True)
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        audio_s += fed.size / SAMPLE_RATE
        finals = [(e, lat) for e, lat in events if e.type == "final"]
        latencies += [lat for _, lat in finals]
        sep = "" if session.language == "zh" else " "
        text = sep.join(e.text for e, _ in finals)
        clips.append(
            {
                "audio": row["audio"],
                "lang": row["lang"],
                "duration_s": round(audio.size / SAMPLE_RATE, 3),
                "reference": row["text"],
                "batch": batch.text,
                "batch_language": batch.language,
                "stream": text,
                "stream_language": session.language,
                "finals": [
                    {
                        "text": e.text,
                        "start": round(e.start, 3),
                        "end": round(e.end, 3),
                        "latency_s": round(lat, 3),
                        "decode_s": round(e.decode_s, 3),
                    }
                    for e, lat in finals
                ],
                "partials": sum(e.type == "partial" for e, _ in events),
            }
        )
        print(
            f"[{i + 1}/{len(rows)}] {row['audio']}: {len(finals)} finals, latency "
            f"{', '.join(f'{lat:.2f}' for _, lat in finals)} s | {text[:60]!r} vs batch {batch.text[:60]!r}",
            flush=True,
        )

    summary = {
        "clips": len(clips),
        "audio_s": round(audio_s, 2),
        "tail_s": args.tail,
        "pause_s": args.pause,
        "language": "given" if args.language_given else "identified per stream",
        "speculate": not args.no_speculate,
        "threads": args.threads,
        "cpu_s": round(cpu, 2),
        "cpu_per_audio_s": round(cpu / audio_s, 3),
        "wall_s": round(wall, 2),
        "finals": len(latencies),
        "latency_median_s": round(float(np.median(latencies)), 3) if latencies else None,
        "latency_p95_s": round(float(np.percentile(latencies, 95)), 3) if latencies else None,
        "latency_max_s": round(float(max(latencies)), 3) if latencies else None,
        "cpus": os.cpu_count(),
        "loadavg_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "by_language": {},
    }
    for lang in sorted({c["lang"] for c in clips}):
        cs = [c for c in clips if c["lang"] == lang]
        refs, batch, stream = [c["reference"] for c in cs], [c["batch"] for c in cs], [c["stream"] for c in cs]
        vs_batch, metric = error_rate(batch, stream, lang)
        summary["by_language"][lang] = {
            "clips": len(cs),
            "metric": metric,
            "stream_vs_batch": round(vs_batch, 4),
            "batch_vs_ref": round(error_rate(refs, batch, lang)[0], 4),
            "stream_vs_ref": round(error_rate(refs, stream, lang)[0], 4),
        }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "clips": clips}, indent=1, ensure_ascii=False))
    out.with_suffix(".md").write_text(_markdown(summary))
    print(_markdown(summary))
    if not args.no_plot and latencies:
        _plot(latencies, summary, out.with_suffix(".png"))
    return 0


def _markdown(s: dict) -> str:
    lines = [
        f"Streaming {s['clips']} clips ({s['audio_s']} s incl. {s['tail_s']} s silence after each) at real-time "
        f"pace, language {s['language']}, pause_s {s['pause_s']}, speculative finals {s['speculate']}, {s['threads']} torch threads on {s['cpus']} CPUs "
        f"(1-min load average before/after: {s['loadavg_1min_before_after']}).",
        "",
        f"- finals: {s['finals']}; latency end of speech -> final: median {s['latency_median_s']} s, "
        f"p95 {s['latency_p95_s']} s, max {s['latency_max_s']} s",
        f"- CPU: {s['cpu_per_audio_s']} s per second of audio ({s['cpu_s']} s over {s['audio_s']} s)",
        "",
        "| lang | clips | metric | finals vs batch | batch vs reference | finals vs reference |",
        "|---|---|---|---|---|---|",
    ]
    for lang, r in s["by_language"].items():
        lines.append(
            f"| {lang} | {r['clips']} | {r['metric']} | {r['stream_vs_batch']:.3f} | {r['batch_vs_ref']:.3f} | "
            f"{r['stream_vs_ref']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def _plot(latencies: list[float], s: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.hist(latencies, bins=np.arange(0, max(latencies) + 0.1, 0.1), color="#2f6fde")
    for q, style in ((s["latency_median_s"], "-"), (s["latency_p95_s"], "--")):
        ax.axvline(q, color="k", linestyle=style, linewidth=1)
    ax.set_xlabel("end of speech -> final (s, wall clock)")
    ax.set_ylabel("finals")
    ax.set_title(
        f"diffasr stream on real_dev (language {s['language']}): median {s['latency_median_s']} s, "
        f"p95 {s['latency_p95_s']} s\npause {s['pause_s']} s, 2 shared CPUs, 1-min load "
        f"{s['loadavg_1min_before_after'][0]:g}-{s['loadavg_1min_before_after'][1]:g}",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
