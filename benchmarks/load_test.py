"""Load test for `diffasr serve`: N concurrent clients posting real_dev clips over loopback.

    python benchmarks/load_test.py --model runs/small           # batching on (8) vs off (1), 8 clients
    python benchmarks/load_test.py --tiny                        # tiny random model: mechanics, not speed
    python benchmarks/load_test.py --url http://127.0.0.1:8000   # a server already running: one run

Each run starts `diffasr serve` as a subprocess on a free loopback port, warms it up, then lets
--clients threads post clips round-robin until --requests are sent or --max-seconds pass. Reports
throughput (requests/s, audio seconds/s), p50/p95 latency, errors, the server's RSS before/after
and the mean batch size from /metrics; then the pooled throughput ratio of the
first max-batch value to the second.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFASR_SHARED", REPO.parent / "shared"))
REAL_DEV = SHARED / "data" / "real_dev"


def load_clips(limit_s: float) -> list[tuple[str, bytes, float]]:
    """(name, file bytes, duration) of every real_dev clip up to `limit_s` seconds, in a fixed shuffled order."""
    rows = [json.loads(line) for line in (REAL_DEV / "manifest.jsonl").read_text().splitlines() if line.strip()]
    clips = [
        (r["audio"], (REAL_DEV / r["audio"]).read_bytes(), r["duration_s"]) for r in rows if r["duration_s"] <= limit_s
    ]
    random.Random(0).shuffle(clips)
    return clips


def tiny_checkpoint(directory: Path) -> Path:
    """The randomly initialised `tiny` model of tests/conftest.py (same seed, same tokenizer recipe)."""
    import torch

    from diffasr.model import DiffusionASR
    from diffasr.models.tokenizer import BPETokenizer

    lines = []
    for lang in ("en", "de", "zh"):
        lines += (SHARED / "data" / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:800]
    torch.manual_seed(0)
    model = DiffusionASR.from_preset("tiny", tokenizer=BPETokenizer.train(lines, vocab_size=600, limit_alphabet=300))
    return model.save(directory / "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, max_batch: int, max_wait_ms: float, log_path: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "diffasr",
        "serve",
        "--model",
        model,
        "--port",
        str(port),
        "--max-batch",
        str(max_batch),
        "--max-wait-ms",
        str(max_wait_ms),
    ]
    proc = subprocess.Popen(cmd, stdout=open(log_path, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.25)
    proc.kill()
    sys.exit(f"server did not start within 180 s; see {log_path}")


def rss_mb(pid: int | None) -> float | None:
    return psutil.Process(pid).memory_info().rss / 2**20 if pid else None


def load(url: str, clips, clients: int, requests: int, max_seconds: float, steps: int, pid: int | None) -> dict:
    """Warm up, then `clients` threads post clips until `requests` are sent or `max_seconds` pass."""
    endpoint = url + "/v1/audio/transcriptions"
    for name, data, _ in clips[:2]:  # first requests pay for lazy initialisation
        httpx.post(endpoint, files={"file": (name, data)}, data={"steps": steps}, timeout=300).raise_for_status()
    before = rss_mb(pid)
    metrics0 = httpx.get(url + "/metrics").json()
    counter, lock = itertools.count(), threading.Lock()
    latencies, errors, audio_s = [], [], [0.0]
    deadline = time.monotonic() + max_seconds

    def client():
        with httpx.Client(timeout=300) as http:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if i >= requests:
                    return
                name, data, seconds = clips[i % len(clips)]
                t0 = time.perf_counter()
                try:
                    r = http.post(endpoint, files={"file": (Path(name).name, data)}, data={"steps": steps})
                    ok = r.status_code == 200
                except httpx.HTTPError as e:
                    ok, r = False, e
                with lock:
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                        audio_s[0] += seconds
                    else:
                        errors.append(f"{name}: {getattr(r, 'status_code', r)}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    metrics = httpx.get(url + "/metrics").json()
    batches = metrics["batches_run"] - metrics0["batches_run"]
    items = metrics["items_decoded"] - metrics0["items_decoded"]
    lat = np.array(latencies) if latencies else np.zeros(1)
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_examples": errors[:3],
        "wall_s": round(wall, 2),
        "req_per_s": round(len(latencies) / wall, 3),
        "audio_s_per_s": round(audio_s[0] / wall, 2),
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p95_s": round(float(np.percentile(lat, 95)), 3),
        "mean_batch": round(items / batches, 2) if batches else None,
        "rss_before_mb": before and round(before, 1),
        "rss_after_mb": rss_mb(pid) and round(rss_mb(pid), 1),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="checkpoint directory or model name for the server")
    p.add_argument("--tiny", action="store_true", help="build and serve the tiny random model of the tests")
    p.add_argument("--url", default=None, help="use this running loopback server instead of starting one")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--requests", type=int, default=96, help="requests per run (default 96)")
    p.add_argument("--max-seconds", type=float, default=120, help="wall-time bound per run (default 120)")
    p.add_argument(
        "--max-batch",
        default="8,1,1,8",
        help="server --max-batch per run; runs with the same "
        "value are pooled (default 8,1,1,8: batching on vs off, alternated)",
    )
    p.add_argument("--max-wait-ms", type=float, default=30, help="server --max-wait-ms (default 30)")
    p.add_argument("--steps", type=int, default=8, help="denoising steps per request (default 8)")
    p.add_argument("--max-clip-s", type=float, default=30, help="only clips up to this long (default 30)")
    args = p.parse_args(argv)

    clips = load_clips(args.max_clip_s)
    print(
        f"{len(clips)} clips, {sum(c[2] for c in clips):.0f} s of audio; {args.clients} clients, "
        f"≤ {args.requests} requests or {args.max_seconds:g} s per run"
    )
    if args.url:
        if urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("--url must be a loopback address: this script only loads servers on this machine")
        print(
            json.dumps(
                load(args.url.rstrip("/"), clips, args.clients, args.requests, args.max_seconds, args.steps, None)
            )
        )
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        model = str(tiny_checkpoint(Path(tmp))) if args.tiny else args.model
        results: dict[int, list[dict]] = {}
        for k, b in enumerate(int(x) for x in args.max_batch.split(",")):
            log_path = Path(tmp) / f"server-{k}.log"
            proc, url = start_server(model, b, args.max_wait_ms, log_path)
            try:
                result = load(url, clips, args.clients, args.requests, args.max_seconds, args.steps, proc.pid)
            finally:
                proc.terminate()  # SIGTERM: graceful shutdown
                proc.wait(30)
            results.setdefault(b, []).append(result)
            print(f"max_batch={b}: {json.dumps(result)}")
            last = next((line for line in reversed(log_path.read_text().splitlines()) if "batch size=" in line), "-")
            print(f"  last batch log line: {last}")
    # Runs of the same max_batch are pooled (e.g. 8,1,1,8 evens out load from other processes).
    pooled = {
        b: sum(r["requests"] - r["errors"] for r in rs) / sum(r["wall_s"] for r in rs) for b, rs in results.items()
    }
    if len(pooled) >= 2:
        (a, ta), (b, tb) = list(pooled.items())[:2]
        print(f"throughput: max_batch={a} {ta:.2f} req/s, max_batch={b} {tb:.2f} req/s, ratio {ta / tb:.2f}x")
    return 1 if any(r["errors"] for rs in results.values() for r in rs) else 0


if __name__ == "__main__":
    sys.exit(main())
