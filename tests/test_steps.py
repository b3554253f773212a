"""The canvas step by step (`return_steps`, decoding/steps.py) on real clips: for the shipped base
(its default ctc-verify) and small (diffusion from noise), through the API, the CLI and the server."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import real_clip
from test_serve import post, serving

from diffasr.decoding.steps import END, STATUS, kept_text
from diffasr.errors import ConfigError

CLIP = real_clip("en", "coqui_LJ001-0002.wav")  # 1.9 s: "in being comparatively modern."


def _check_steps(r) -> None:
    assert r.steps and [s["step"] for s in r.steps] == list(range(len(r.steps)))
    for s in r.steps:
        assert len(s["tokens"]) == len(s["status"]) == len(s["confidence"]) > 0
        assert set(s["status"]) <= set(STATUS) and all(0.0 <= c <= 1.0 for c in s["confidence"])
    assert "kept" not in r.steps[0]["status"] or r.method in ("ctc-edit", "rescore")  # step 0: the starting canvas
    last = r.steps[-1]
    assert " ".join("".join(kept_text(last, END)).split()) == " ".join(r.text.split())


def test_base_default_steps(shipped_base):
    plain = shipped_base.transcribe(CLIP, language="en")
    r = shipped_base.transcribe(CLIP, language="en", return_steps=True)
    assert plain.steps is None and "steps" not in plain.to_dict()
    assert (r.text, r.tokens, r.confidences) == (plain.text, plain.tokens, plain.confidences)
    assert r.text.lower().startswith("in being comparatively")
    _check_steps(r)
    assert r.steps[0]["status"] == ["reseeded"] * len(r.steps[0]["tokens"])  # ctc-verify starts from the CTC seed
    assert all(s == "kept" for s in r.steps[-1]["status"]) and r.steps[-1]["tokens"][-1] == END


@pytest.mark.parametrize("method", ["diffusion", "ctc-edit", "rescore"])
def test_small_steps(shipped_model, method):
    plain = shipped_model.transcribe(CLIP, language="en", method=method)
    r = shipped_model.transcribe(CLIP, language="en", method=method, return_steps=True)
    assert (r.text, r.tokens) == (plain.text, plain.tokens) and plain.steps is None
    _check_steps(r)
    if method == "diffusion":  # from noise: nothing kept at step 0, every position re-drawn
        assert set(r.steps[0]["status"]) == {"renoised"} and len(r.steps) == r.steps_run + 1


def test_steps_need_a_canvas_method(shipped_model):
    with pytest.raises(ConfigError, match="does not read return_steps"):
        shipped_model.transcribe(CLIP, language="en", method="ctc-greedy", return_steps=True)


def test_cli_show_steps(tmp_path, capsys):
    from diffasr.cli import main

    args = ["transcribe", str(CLIP), "--model", "small", "--language", "en", "--method", "diffusion"]
    assert main(args + ["--show-steps", "--output-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "step  0: {" in err and "step  1:" in err
    steps = json.loads((tmp_path / f"{CLIP.stem}.steps.json").read_text())
    assert steps and steps[-1]["step"] == len(steps) - 1
    text = (tmp_path / f"{CLIP.stem}.txt").read_text().strip()
    assert " ".join("".join(kept_text(steps[-1], END)).split()) == text


def test_server_canvas_steps(shipped_model):
    from diffasr.serving.serve import create_app

    with serving(create_app(shipped_model)) as (url, _):
        plain = post(url, CLIP, response_format="verbose_json", language="en", method="diffusion").json()
        body = post(
            url, CLIP, response_format="verbose_json", language="en", method="diffusion", return_steps="true"
        ).json()
        bad = post(url, CLIP, response_format="verbose_json", return_steps="maybe")
    assert "canvas_steps" not in plain and body["text"] == plain["text"]
    assert len(body["canvas_steps"]) == body["steps"] + 1  # the starting canvas, then one per step
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "return_steps"


def test_stream_finals_carry_steps(shipped_model):
    from diffasr.audio import load_audio

    session = shipped_model.stream(language="en", return_steps=True)
    audio = load_audio(CLIP)
    events = session.feed(audio) + session.feed(np.zeros(16000, np.float32)) + session.close()
    finals = [e for e in events if e.type == "final"]
    assert finals and all(e.steps for e in finals)
    assert "steps" in finals[0].to_dict() and all("steps" not in e.to_dict() for e in events if e.type == "partial")
    last = finals[-1].steps[-1]
    assert " ".join("".join(kept_text(last, END)).split()) == " ".join(finals[-1].text.split())
