"""Hotwords and a prompt (decoding/hotwords.py): the context graph's scores, the CTC beam's boost,
validation, and real clips through the API, the CLI and the server."""

from __future__ import annotations

import pytest
from conftest import close_call_log_probs, real_clip, shared_real_dev
from test_serve import post, serving

from diffasr.decoding import DecodeOptions
from diffasr.decoding.ctc import ctc_prefix_beam
from diffasr.decoding.hotwords import MAX_HOTWORDS, ContextGraph, previous_text
from diffasr.errors import ConfigError

PLATFORMS = real_clip("en", "picovoice_cheetah_test_en.wav")  # "Today only platforms one and three are used."


def test_context_graph_keeps_only_finished_hotwords():
    g = ContextGraph([[5, 6, 7], [6, 8]], boost=2.0)
    s, gain = g.step(0, 5)
    assert (s, gain) != (0, 0.0) and gain == 2.0 and g.unfinished(s) == 2.0
    s, gain = g.step(s, 6)
    assert gain == 2.0 and g.unfinished(s) == 4.0
    s2, gain = g.step(s, 9)  # the match breaks: its credit goes back
    assert (s2, gain) == (0, -4.0)
    s3, gain = g.step(s, 8)  # 5 6 8: the suffix 6 8 is the hotword [6, 8]: done, credit of 2 tokens kept
    assert (s3, gain) == (0, 0.0)
    s4, gain = g.step(s, 7)  # 5 6 7 finished: its credit stays, back to the root
    assert (s4, gain) == (0, 2.0)


def test_beam_boost_turns_a_close_call_into_the_hotword():
    """Acoustics slightly prefer 2 4 over the hotword 2 3; the boost flips it, and the score of the
    hotword path is its acoustic score plus boost × its length."""
    blank = 0
    lp = close_call_log_probs()
    assert ctc_prefix_beam(lp, blank)[0][0] == [2, 4]
    boosted = ctc_prefix_beam(lp, blank, hotwords=ContextGraph([[2, 3]], 1.0))
    assert boosted[0][0] == [2, 3]
    acoustic = dict((tuple(i), s) for i, s in ctc_prefix_beam(lp, blank, beam=64))
    assert boosted[0][1] == pytest.approx(acoustic[(2, 3)] + 2.0)
    unfinished = ctc_prefix_beam(lp, blank, hotwords=ContextGraph([[2, 3, 5]], 1.0))  # never finished: no gain
    assert unfinished[0][0] == [2, 4]


@pytest.mark.parametrize(
    "given, message",
    [
        ({"hotwords": [f"w{i}" for i in range(MAX_HOTWORDS + 1)]}, "at most 16 hotwords"),
        ({"hotwords": ["x" * 33]}, "1..32 characters"),
        ({"hotwords": ["ok", " "]}, "1..32 characters"),
        ({"hotwords": "Nguyen,Kubernetes"}, "a list of words"),
        ({"hotwords": ["a"], "hotword_boost": 50.0}, "hotword_boost"),
        ({"prompt": "x" * 401, "method": "ctc-verify"}, "at most 400 characters"),
    ],
)
def test_bad_hotwords_and_prompts(given, message):
    with pytest.raises(ConfigError, match=message):
        DecodeOptions(**{"method": "ctc-beam", **given})


def test_who_reads_them(shipped_model):
    assert DecodeOptions(method="rescore", hotwords=["Nguyen"]).hotwords == ("Nguyen",)
    with pytest.raises(ConfigError, match="does not read hotwords"):
        shipped_model.transcribe(PLATFORMS, language="en", method="ctc-greedy", hotwords=["Nguyen"])
    with pytest.raises(ConfigError, match="does not read prompt"):
        shipped_model.transcribe(PLATFORMS, language="en", prompt="Platforms.")
    assert shipped_model.transcribe(PLATFORMS, language="en", hotwords=[]).text  # empty: not given


def test_small_recognises_a_hotword_and_leaves_other_clips_alone(shipped_model):
    clip = shared_real_dev() / "en" / "picovoice_leopard_test.wav"  # "Mr. Quilter is the apostle ..."
    assert "quilter" not in shipped_model.transcribe(clip, language="en").text
    assert "quilter" in shipped_model.transcribe(clip, language="en", hotwords=["Quilter", "Nguyen"]).text
    plain = shipped_model.transcribe(PLATFORMS, language="en").text
    assert shipped_model.transcribe(PLATFORMS, language="en", hotwords=["Quilter", "Nguyen"]).text == plain


def test_base_previous_text_slot(shipped_base):
    tokens = shipped_base.backend.denoiser.tokens
    prev = previous_text(tokens, ("Nguyen",), "Platforms one and three.", "en")
    assert prev[0] == tokens.tok.token_to_id("<|startofprev|>")
    assert tokens.decode(prev[1:]).strip() == "Nguyen Platforms one and three."
    assert previous_text(tokens, (), None, "en") == []
    with pytest.raises(ConfigError, match="Whisper tokens"):
        previous_text(tokens, ("word",) * 16, "z " * 199, "en")
    r = shipped_base.transcribe(PLATFORMS, language="en", prompt="Platforms one and three.", hotwords=["Nguyen"])
    assert "platforms one and three" in r.text.lower()
    with pytest.raises(ConfigError, match="released decoder"):
        shipped_base.transcribe(PLATFORMS, language="en", prompt="Platforms.", verifier="adapted")


def test_cli_and_server(shipped_model, capsys):
    from diffasr.cli import main
    from diffasr.serving.serve import create_app

    clip = shared_real_dev() / "en" / "picovoice_leopard_test.wav"
    assert main(["transcribe", str(clip), "--model", "small", "--language", "en", "--hotwords", "Quilter, Nguyen"]) == 0
    assert "quilter" in capsys.readouterr().out
    with serving(create_app(shipped_model)) as (url, _):
        hot = post(url, clip, language="en", hotwords="Quilter,Nguyen")
        prompt = post(url, clip, language="en", prompt="Mr. Quilter.")
        many = post(url, clip, language="en", hotwords=",".join(f"w{i}" for i in range(20)))
    assert hot.status_code == 200 and "quilter" in hot.json()["text"]
    assert prompt.status_code == 400 and prompt.json()["error"]["param"] == "prompt"  # small has no prompt slot
    assert many.status_code == 400 and many.json()["error"]["param"] == "hotwords"
