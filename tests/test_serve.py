"""The HTTP server on a free loopback port: response formats, the OpenAI client, refusals, batching, shutdown.

The tiny random model's text is meaningless, so only the structure of responses is checked.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import soundfile as sf
import uvicorn

from diffasr.serving.limits import Limits, uvicorn_config
from diffasr.serving.serve import create_app

TRANSCRIPTIONS = "/v1/audio/transcriptions"


@contextlib.contextmanager
def serving(app, limits: Limits | None = None):
    """Run `app` with uvicorn (and the protocol limits of `limits`) in a thread on a free loopback port;
    yields (base URL, uvicorn.Server)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn_config(app, limits or Limits(), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def server(tiny_model):
    """Small limits so that 'too large' and 'too long' are cheap to provoke."""
    with serving(create_app(tiny_model, max_upload_mb=2, max_duration_s=20)) as (url, _):
        yield url


def post(url: str, clip, timeout: float = 60, **fields) -> httpx.Response:
    data = clip.read_bytes() if hasattr(clip, "read_bytes") else clip
    return httpx.post(
        url + TRANSCRIPTIONS,
        files={"file": ("clip.flac", data)},
        data={k: str(v) for k, v in fields.items()},
        timeout=timeout,
    )


def test_json_and_text_formats(server, en_clip):
    r = post(server, en_clip, model="diffasr-tiny")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    text = r.json()["text"]
    assert list(r.json()) == ["text"] and isinstance(text, str)

    r = post(server, en_clip, response_format="text")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert r.text == text + "\n"  # same options, same input, same output

    srt = post(server, en_clip, response_format="srt").text
    cues = re.findall(r"(\d+)\n(\d\d:\d\d:\d\d,\d{3}) --> (\d\d:\d\d:\d\d,\d{3})\n(.+)\n", srt)
    assert [int(c[0]) for c in cues] == list(range(1, len(cues) + 1)) and bool(cues) == bool(text)
    assert all(start <= end and cue_text in text for _, start, end, cue_text in cues)
    vtt = post(server, en_clip, response_format="vtt").text
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(cues)


def test_verbose_json(server, en_clip):
    r = post(server, en_clip, response_format="verbose_json", language="en", steps=3)
    assert r.status_code == 200
    body = r.json()
    assert body["language"] == "en" and body["duration"] == pytest.approx(11.0, abs=0.1)
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))
    assert all(0 <= s["start"] < s["end"] <= body["duration"] + 0.01 for s in body["segments"])
    assert 1 <= body["steps"] <= 3 and body["method"] == "diffusion"
    assert all(0.0 <= t["confidence"] <= 1.0 and isinstance(t["id"], int) for t in body["tokens"])
    assert all(w["start"] <= w["end"] and 0.0 <= w["confidence"] <= 1.0 for w in body["words"])


def test_openai_client(server, en_clip):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server + "/v1", api_key="x", max_retries=0)
    model = client.models.list().data[0].id
    assert model == "diffasr-tiny"
    with open(en_clip, "rb") as f:
        tr = client.audio.transcriptions.create(model=model, file=f)
    assert isinstance(tr.text, str)
    with open(en_clip, "rb") as f:
        text = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="text")
    assert isinstance(text, str) and text.strip() == tr.text
    with open(en_clip, "rb") as f:
        verbose = client.audio.transcriptions.create(
            model=model, file=f, response_format="verbose_json", language="en", extra_body={"steps": 2}
        )
    assert verbose.language == "en" and verbose.duration == pytest.approx(11.0, abs=0.1)
    with open(en_clip, "rb") as f, pytest.raises(openai.BadRequestError) as e:
        client.audio.transcriptions.create(model=model, file=f, language="xx")
    assert e.value.status_code == 400 and e.value.code == "unsupported_language"


def _wav(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples.astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tone(seconds: float) -> bytes:
    return _wav(0.1 * np.sin(2 * np.pi * 220 * np.arange(int(seconds * 16000)) / 16000))


BAD = {  # name -> (file bytes or None for the real clip, form fields, expected status, expected param)
    "empty file": (b"", {}, 400, "file"),
    "random bytes": (np.random.default_rng(0).bytes(20_000), {}, 400, "file"),
    "too large": (np.random.default_rng(1).bytes(3 * 1024 * 1024), {}, 413, "file"),
    "too long": (_tone(25), {}, 400, "file"),
    "response_format=xml": (None, {"response_format": "xml"}, 400, "response_format"),
    "language=xx": (None, {"language": "xx"}, 400, "language"),
    "steps=0": (None, {"steps": 0}, 400, "steps"),
    "steps=abc": (None, {"steps": "abc"}, 400, "steps"),
    "temperature=9": (None, {"temperature": 9}, 400, "temperature"),
    "temperature for ctc-greedy": (None, {"method": "ctc-greedy", "temperature": 0.5}, 400, "temperature"),
    "method=beam": (None, {"method": "beam"}, 400, "method"),
    "steps for ctc-greedy": (None, {"method": "ctc-greedy", "steps": 4}, 400, "steps"),
    "unknown field": (None, {"prompt": "hello"}, 400, "prompt"),
    "unknown model": (None, {"model": "gpt-4o"}, 404, "model"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_4xx_json_error(server, en_clip, case):
    data, fields, status, param = BAD[case]
    r = post(server, en_clip if data is None else data, **fields)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_openai_default_temperature_is_accepted_by_every_method(server, en_clip):
    """OpenAI clients send temperature=0 by default; methods that never sample must not refuse it."""
    r = post(server, en_clip, method="ctc-greedy", temperature=0)
    assert r.status_code == 200, r.text
    assert r.json()["text"] == post(server, en_clip, method="ctc-greedy").json()["text"]


def test_requests_without_a_file_or_form(server):
    for r in [
        httpx.post(server + TRANSCRIPTIONS, data={"model": "diffasr-tiny"}),
        httpx.post(server + TRANSCRIPTIONS, json={"file": "x"}),
        httpx.post(
            server + TRANSCRIPTIONS,
            content=b"--x\r\ngarbage",
            headers={"content-type": "multipart/form-data; boundary=x"},
        ),
        httpx.get(server + "/no/such/route"),
    ]:
        assert 400 <= r.status_code < 500 and "message" in r.json()["error"]


def test_still_serving_after_bad_requests(server, en_clip):
    for data, fields, _, _ in BAD.values():
        post(server, en_clip if data is None else data, **fields)
    assert httpx.get(server + "/health").json()["status"] == "ok"
    assert post(server, en_clip).status_code == 200
    metrics = httpx.get(server + "/metrics").json()
    assert not any(code.startswith("5") for code in metrics["responses"])


def test_models_health_metrics_and_page(server):
    models = httpx.get(server + "/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and "en" in health["languages"]
    metrics = httpx.get(server + "/metrics").json()
    assert {"batches_run", "batch_sizes", "items_decoded", "queue_depth", "responses"} <= set(metrics)
    page = httpx.get(server + "/")
    assert page.status_code == 200 and 'id="transcript"' in page.text


def test_health_reports_the_loaded_models_own_defaults_and_the_page_sends_only_changes(shipped_base, tiny_model):
    """/health gives the model's own default method and steps (base's decode_defaults: ctc-verify, 64
    steps; not DecodeOptions' 8), only the methods its backend runs and only the languages it was
    trained on; the page pre-fills no steps, so a request it sends is decoded as the API's default."""
    with serving(create_app(shipped_base)) as (url, _):
        health = httpx.get(url + "/health").json()
        page = httpx.get(url + "/").text
    defaults = shipped_base.config.decode_defaults
    assert health["default_method"] == defaults["method"] and health["default_steps"] == defaults["steps"] == 64
    assert "diffusion-verify" in health["methods"] and "hi" in health["languages"]  # trained on Hindi in stage 8
    assert health["languages"] == shipped_base.config.languages
    assert 'id="steps"' in page and not re.search(r'id="steps"[^>]*value=', page)
    with serving(create_app(tiny_model)) as (url, _):
        health = httpx.get(url + "/health").json()
    assert "diffusion-verify" not in health["methods"] and "ctc-verify" not in health["steps_methods"]


def test_concurrent_requests_are_batched(tiny_model, en_clip):
    # A long max wait and max_batch=2: the batch closes as soon as the second request arrives.
    with serving(create_app(tiny_model, max_batch=2, max_wait_ms=20_000)) as (url, _):
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(lambda _: post(url, en_clip, response_format="verbose_json"), range(2)))
        assert [r.status_code for r in responses] == [200, 200]
        assert [r.headers["x-diffasr-batch-size"] for r in responses] == ["2", "2"]
        metrics = httpx.get(url + "/metrics").json()
        assert metrics["batches_run"] == 1 and metrics["batch_sizes"] == {"2": 1}


def test_different_options_are_not_batched_together(tiny_model, en_clip):
    with serving(create_app(tiny_model, max_batch=8, max_wait_ms=300)) as (url, _):
        with ThreadPoolExecutor(2) as pool:
            responses = list(pool.map(lambda steps: post(url, en_clip, steps=steps), [2, 3]))
        assert [r.headers["x-diffasr-batch-size"] for r in responses] == ["1", "1"]
        assert httpx.get(url + "/metrics").json()["batch_sizes"] == {"1": 2}


def test_shutdown_finishes_in_flight_requests(tiny_model, en_clip):
    with serving(create_app(tiny_model, max_wait_ms=1500)) as (url, server):
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(post, url, en_clip)
            deadline = time.monotonic() + 10
            while httpx.get(url + "/metrics").json()["queue_depth"] == 0:  # queued, waiting for company
                assert time.monotonic() < deadline
                time.sleep(0.05)
            server.should_exit = True
            assert pending.result().status_code == 200


def test_a_failing_request_does_not_fail_its_batch(tiny_model, en_clip, monkeypatch):
    import diffasr.serving.batcher
    from diffasr.errors import AudioError

    real = diffasr.serving.batcher.transcribe

    def transcribe(model, audios, **kwargs):  # silence stands for audio the pipeline rejects late
        if any(not a.any() for a in audios):
            raise AudioError("nothing to transcribe")
        return real(model, audios, **kwargs)

    monkeypatch.setattr(diffasr.serving.batcher, "transcribe", transcribe)
    silence = _wav(np.zeros(16000))
    with serving(create_app(tiny_model, max_batch=2, max_wait_ms=20_000)) as (url, _):
        with ThreadPoolExecutor(2) as pool:
            good, bad = pool.map(lambda clip: post(url, clip), [en_clip, silence])
    assert good.status_code == 200 and good.headers["x-diffasr-batch-size"] == "1"
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_audio"
