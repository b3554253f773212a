"""Hotwords and a prompt (decoding/hotwords.py): the context graph's scores, the CTC beam's boost,
validation, and real clips through the API, the CLI and the server."""

from __future__ import annotations

import pytest
import torch
from conftest import close_call_log_probs, real_clip, shared_real_dev
from test_serve import post, serving

from diffasr.decoding import DecodeOptions
from diffasr.decoding.ctc import ctc_prefix_beam
from diffasr.decoding.hotwords import MAX_HOTWORDS, ContextGraph, VerifierBias, previous_text, whisper_hotwords
from diffasr.errors import ConfigError
from diffasr.metrics import error_rate

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


def test_verifier_bias_follows_the_canvas():
    """The causal logits at position p get the boost on exactly the tokens that extend a hotword
    match given the canvas before p: a startable hotword's first token anywhere, its next one after
    it; a hotword with an unstartable first token (8) only once the canvas holds that token."""
    bias = VerifierBias([[5, 6, 7], [8, 9]], starts={5}, boost=1.5)
    fn = bias.wrap(lambda canvas, rows, s: torch.zeros(canvas.shape[0], canvas.shape[1] - s, 10))
    out = fn(torch.tensor([[1, 5, 6, 2], [5, 6, 7, 8]]), torch.arange(2), 1)  # positions 1..3
    assert out.shape == (2, 3, 10)
    boosted = [[sorted(torch.nonzero(out[r, j]).flatten().tolist()) for j in range(3)] for r in range(2)]
    assert boosted[0] == [[5], [5, 6], [5, 7]]  # after "1": a start; after "1 5": 6 (or a new start) ...
    assert boosted[1] == [[5, 6], [5, 7], [5]]  # after "5 6 7" the hotword is done: only a new start
    assert out[0, 1, 6] == 1.5
    after_8 = fn(torch.tensor([[8, 1]]), torch.arange(1), 1)
    assert sorted(torch.nonzero(after_8[0, 0]).flatten().tolist()) == [5, 9]


def test_hotword_tokens_join_the_canvas(shipped_base):
    """A name whose Whisper tokens the English canvas lacks (" Guten" of Gutenberg) gets them; the
    vocabulary stays sorted, and the one-letter start of "Auenland" is not startable."""
    den = shipped_base.backend.denoiser
    base = den.vocab["en"]
    guten = den.tokens.encode("Gutenberg", "en")
    assert not set(guten) <= set(base.tolist())
    vocab, bias = whisper_hotwords(base, den.tokens, ("Gutenberg", "Auenland"), 3.0, "en")
    assert set(guten) <= set(vocab.tolist()) and bool((vocab[1:] > vocab[:-1]).all())
    auen = den.tokens.encode("Auenland", "en")
    a_index = int(torch.searchsorted(vocab, torch.tensor(auen[0])))
    assert a_index in bias.roots and len(bias.roots) == 1
    assert whisper_hotwords(base, den.tokens, (), 3.0, "en") == (base, None)


def test_gutenberg_with_the_hotword(shipped_base):
    """The default writes "Guttenberg" for this LJSpeech clip; with the hotword the name is spelled as
    given and the rest of the sentence stays (bounded, not exact: words near a tie may differ by CPU)."""
    clip = shared_real_dev() / "en" / "coqui_LJ001-0007.wav"  # "... the Gutenberg or forty-two line Bible ..."
    plain = shipped_base.transcribe(clip, language="en").text
    hot = shipped_base.transcribe(clip, language="en", hotwords=["Gutenberg", "Auenland"]).text
    assert "Gutenberg" not in plain and "Gutenberg" in hot
    assert error_rate([plain], [hot.replace("Gutenberg", "Guttenberg")], "en")[0] <= 0.15


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
    prev = previous_text(tokens, "Platforms one and three.", "en")
    assert prev[0] == tokens.tok.token_to_id("<|startofprev|>")
    assert tokens.decode(prev[1:]).strip() == "Platforms one and three."
    assert previous_text(tokens, None, "en") == [] == previous_text(tokens, "  ", "en")
    with pytest.raises(ConfigError, match="Whisper tokens"):
        previous_text(tokens, "z " * 199, "en")
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
