"""The server's bounds (serving/limits.py): upload and queue caps, timeouts, oversized headers, Host check.

Fast variants with small limits run by default; the 64 × 25 MB flood against a `diffasr serve`
subprocess is marked slow.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from test_serve import TRANSCRIPTIONS, serving

from diffasr.audio import load_audio
from diffasr.serving.limits import LOOPBACK_HOSTS, Limits, default_hosts, host_name, parse_hosts
from diffasr.serving.serve import create_app

REPO = Path(__file__).resolve().parents[1]


def _wav_of_size(clip, n_bytes: int, speech_s: float | None = None) -> bytes:
    """A 16-kHz 16-bit WAV of exactly about `n_bytes`: `clip` tiled (only its first `speech_s`
    seconds, then faint noise, when given)."""
    speech = load_audio(clip)
    n = (n_bytes - 44) // 2
    audio = np.resize(speech, n)
    if speech_s is not None:
        cut = int(speech_s * 16000)
        audio[cut:] = 1e-3 * np.random.default_rng(0).standard_normal(n - cut)
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@contextlib.contextmanager
def _serving(model, limits: Limits, **app_kwargs):
    """serving() with `limits` applied to the app and to the protocol alike; yields the base URL."""
    with serving(create_app(model, limits=limits, **app_kwargs), limits) as (url, _):
        yield url


SLOW_HEAD = (
    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000\r\n\r\n"
    b'--x\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'
)


def _raw(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_all(sock: socket.socket, limit_s: float) -> bytes:
    """Everything the server sends until it closes the connection (or `limit_s` passes)."""
    sock.settimeout(limit_s)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return out


def test_flood_is_refused_with_retry_after_and_health_answers(tiny_model, en_clip):
    limits = Limits(max_uploads=2, max_queue=2, retry_after_s=3)
    data = _wav_of_size(en_clip, 1 << 18)  # the maximum size: 8 s of audio
    with _serving(tiny_model, limits, max_upload_mb=0.25, max_batch=2, max_wait_ms=10) as url:
        stop, health = threading.Event(), []

        def poll():
            while not stop.is_set():
                t0 = time.monotonic()
                r = httpx.get(url + "/health", timeout=10)
                health.append((r.status_code, time.monotonic() - t0))
                time.sleep(0.1)

        poller = threading.Thread(target=poll)
        poller.start()
        try:
            with ThreadPoolExecutor(12) as pool:
                rs = list(
                    pool.map(
                        lambda _: httpx.post(
                            url + TRANSCRIPTIONS, files={"file": ("a.wav", data)}, data={"steps": "2"}, timeout=120
                        ),
                        range(12),
                    )
                )
        finally:
            stop.set()
            poller.join()
        codes = [r.status_code for r in rs]
        assert set(codes) <= {200, 429, 503}, codes
        assert codes.count(200) >= 1 and sum(c in (429, 503) for c in codes) >= 1, codes
        for r in rs:
            if r.status_code != 200:
                assert r.headers["retry-after"] == "3" and r.json()["error"]["type"] == "server_busy"
        assert health and all(code == 200 and seconds < 5 for code, seconds in health), health
        metrics = httpx.get(url + "/metrics").json()
        assert metrics["receiving"] == 0 and metrics["working"] == 0  # every slot was given back
        assert metrics["refused_busy"] == sum(c in (429, 503) for c in codes)
        assert (
            httpx.post(
                url + TRANSCRIPTIONS, files={"file": ("a.wav", data)}, data={"steps": "2"}, timeout=120
            ).status_code
            == 200
        )  # and it still serves


def test_slow_body_is_cut_off(tiny_model):
    with _serving(tiny_model, Limits(body_timeout_s=1.5)) as url:
        sock = _raw(url)
        sock.sendall(SLOW_HEAD)  # then the file, one byte at a time
        t0 = time.monotonic()
        answer = b""
        for _ in range(20):  # one byte every 0.3 s: far slower than the body timeout allows
            try:
                sock.sendall(b"a")
            except OSError:
                break
            sock.settimeout(0.3)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            answer += chunk
            if not chunk or b"}" in answer:
                break
        answer += _read_all(sock, 3)
        elapsed = time.monotonic() - t0
        sock.close()
        assert answer.startswith(b"HTTP/1.1 408 ") and b"body_timeout" in answer, answer[:300]
        assert elapsed < 5
        assert httpx.get(url + "/health").status_code == 200


def test_slow_headers_are_cut_off(tiny_model):
    with _serving(tiny_model, Limits(header_timeout_s=1.0)) as url:
        sock = _raw(url)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # the head never ends
        t0 = time.monotonic()
        answer = _read_all(sock, 5)
        assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < 4, answer[:200]
        silent = _raw(url)  # a connection that never sends anything is closed too
        assert _read_all(silent, 5) == b"" and time.monotonic() - t0 < 8


def test_oversized_headers_get_431(tiny_model):
    with _serving(tiny_model, Limits(max_header_kb=16)) as url:
        r = httpx.get(url + "/health", headers={"x-big": "a" * (1 << 20)}, timeout=30)
        assert r.status_code == 431 and r.json()["error"]["code"] == "headers_too_large"
        assert httpx.get(url + "/health", headers={"x-fine": "a" * 8000}).status_code == 200


def test_request_timeout_is_503_and_the_job_is_dropped(tiny_model, en_clip):
    # The batcher waits 20 s for company; the request may take 1 s.
    with _serving(tiny_model, Limits(request_timeout_s=1.0, retry_after_s=7), max_batch=8, max_wait_ms=20_000) as url:
        r = httpx.post(url + TRANSCRIPTIONS, files={"file": ("a.flac", en_clip.read_bytes())}, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "7", r.text
        assert r.json()["error"]["code"] == "request_timeout"
        deadline = time.monotonic() + 10
        while (m := httpx.get(url + "/metrics").json())["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert m["working"] == 0 and m["batches_run"] == 0  # nobody waits for it, so it is not decoded


def test_host_allow_list(tiny_model):
    with _serving(tiny_model, Limits(allowed_hosts=LOOPBACK_HOSTS)) as url:
        port = url.rsplit(":", 1)[1]
        assert httpx.get(url + "/health").status_code == 200
        assert httpx.get(url + "/health", headers={"host": f"localhost:{port}"}).status_code == 200
        r = httpx.get(url + "/health", headers={"host": f"attacker.example:{port}"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host"
        assert httpx.get(url + "/health", headers={"host": ""}).status_code == 400


def test_host_helpers():
    assert default_hosts("127.0.0.1") == LOOPBACK_HOSTS and default_hosts("::1") == LOOPBACK_HOSTS
    assert default_hosts("0.0.0.0") is None and default_hosts("192.168.1.5") is None
    assert parse_hosts("*", "127.0.0.1") is None
    assert parse_hosts("Example.com, localhost", "127.0.0.1") == ("example.com", "localhost")
    assert parse_hosts(None, "localhost") == LOOPBACK_HOSTS
    assert host_name(b"[::1]:8000") == "::1" and host_name(b"Example.COM:80") == "example.com"
    assert host_name(b"localhost") == "localhost"


def test_serve_flags_are_documented():
    from diffasr.cli import build_parser

    help_text = build_parser(only="serve")._subparsers._group_actions[0].choices["serve"].format_help()
    readme = (REPO / "README.md").read_text()
    for flag in (
        "--max-uploads",
        "--max-queue",
        "--body-timeout-s",
        "--request-timeout-s",
        "--header-timeout-s",
        "--max-header-kb",
        "--allowed-hosts",
        "--max-connections",
    ):
        assert flag in help_text and flag in readme, flag


# ---------------------------------------------------------------------- the full-size flood (slow)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEALTH_PROBE = """
import json, sys, time, httpx
url, out = sys.argv[1], open(sys.argv[2], "w")
while True:
    t0 = time.monotonic()
    try:
        code = httpx.get(url + "/health", timeout=30).status_code
    except httpx.HTTPError as e:
        code = repr(e)
    out.write(json.dumps([code, time.monotonic() - t0]) + "\\n")
    out.flush()
    time.sleep(0.2)
"""


@pytest.mark.slow
def test_flood_of_64_maximum_size_uploads(tiny_model_dir, en_clip, tmp_path):
    """64 simultaneous 25-MB uploads (the default --max-upload-mb) against `diffasr serve` with its
    default limits: no 5xx but 503, the excess 429/503, RSS < 2 GB and back within 10 % of idle,
    /health answering throughout (probed from its own process, so that the 64 client threads here
    do not slow the probe), and a one-byte-per-second client cut off by the body timeout.

    Idle is measured after a warm-up batch of --max-batch concurrent requests: the model's work
    buffers for its largest batch stay allocated (measured and reported separately)."""
    psutil = pytest.importorskip("psutil")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    body_timeout = 30
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "diffasr",
            "serve",
            "--model",
            str(tiny_model_dir),
            "--port",
            str(port),
            "--max-duration-s",
            "900",
            "--body-timeout-s",
            str(body_timeout),
        ],
        stdout=open(tmp_path / "server.log", "w"),
        stderr=subprocess.STDOUT,
        env=env,
    )
    probe = None
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-2000:]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        data = _wav_of_size(en_clip, 25 * (1 << 20) - 70_000, speech_s=22)  # 25 MB with the form around it

        def post(_):
            return httpx.post(url + TRANSCRIPTIONS, files={"file": ("a.wav", data)}, data={"steps": "2"}, timeout=600)

        server = psutil.Process(proc.pid)
        assert post(0).status_code == 200
        time.sleep(1)
        idle_one = server.memory_info().rss
        with ThreadPoolExecutor(8) as pool:  # one full batch (--max-batch 8)
            assert [r.status_code for r in pool.map(post, range(8))] == [200] * 8
        time.sleep(1)
        idle = server.memory_info().rss
        health_log = tmp_path / "health.jsonl"
        probe = subprocess.Popen([sys.executable, "-c", HEALTH_PROBE, url, str(health_log)])
        stop, peak = threading.Event(), [idle]

        def watch():
            while not stop.is_set():
                peak.append(server.memory_info().rss)
                time.sleep(0.1)

        def slow_client():
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(SLOW_HEAD)
            t0 = time.monotonic()
            try:
                while time.monotonic() - t0 < 3 * body_timeout:
                    sock.sendall(b"a")
                    time.sleep(1.0)
            except OSError:  # the server closed it
                pass
            return time.monotonic() - t0

        watcher = threading.Thread(target=watch)
        watcher.start()
        with ThreadPoolExecutor(65) as pool:
            slow = pool.submit(slow_client)
            rs = list(pool.map(post, range(64)))
            slow_seconds = slow.result()
        time.sleep(3)
        settled = server.memory_info().rss
        stop.set()
        watcher.join()
        probe.terminate()
        health = [json.loads(line) for line in health_log.read_text().splitlines() if line.strip()]
        codes = [r.status_code for r in rs]
        summary = {c: codes.count(c) for c in sorted(set(codes))}
        print(
            f"\nflood: {summary}; RSS after 1 request {idle_one / 2**20:.0f} MB, after a batch of 8 (idle) "
            f"{idle / 2**20:.0f} MB, peak {max(peak) / 2**20:.0f} MB, after {settled / 2**20:.0f} MB; slow client "
            f"cut off after {slow_seconds:.1f} s; /health worst {max(s for _, s in health):.2f} s over {len(health)} probes"
        )
        assert set(codes) <= {200, 429, 503} and summary.get(200, 0) >= 1 and summary.get(200) < 64, summary
        assert all(r.headers.get("retry-after") for r in rs if r.status_code != 200)
        assert max(peak) < 2 * 2**30
        assert settled < idle * 1.10
        assert slow_seconds < body_timeout + 10
        assert health and all(code == 200 and s < 5 for code, s in health), [
            h for h in health if h[0] != 200 or h[1] >= 5
        ][:5]
    finally:
        if probe is not None:
            probe.kill()
        proc.terminate()
        proc.wait(30)


def _ws_handshake(url: str, host: str) -> str:
    """The status line a WebSocket upgrade to /v1/stream gets when it claims `host`."""
    import socket

    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(
            (
                f"GET /v1/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        return s.recv(4096).decode(errors="replace").split("\r\n", 1)[0]


def test_host_allow_list_covers_the_stream_websocket(tiny_model):
    with _serving(tiny_model, Limits(allowed_hosts=LOOPBACK_HOSTS)) as url:
        port = url.rsplit(":", 1)[1]
        assert " 403 " in _ws_handshake(url, f"attacker.example:{port}") + " "
        assert " 101 " in _ws_handshake(url, f"localhost:{port}") + " "


def test_uvicorn_is_the_pinned_release():
    """limits.py subclasses uvicorn's internal H11Protocol, which can change in any release: the
    installed uvicorn must be the one pyproject pins (and these tests ran against)."""
    import importlib.metadata
    import re
    import tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [re.fullmatch(r"uvicorn==(\S+)", d).group(1) for d in deps if d.startswith("uvicorn")]
    assert importlib.metadata.version("uvicorn") == pin
