"""The base preset's verifiers: which decoder checks the drafts of the verified methods. "adapted"
(the denoiser itself, run causally), "whisper" (Whisper-base's decoder as released, over its 30-s
padded window), "ensemble" (the mean of the two's log-probabilities), and "auto", the model's
measured choice per language. Real clips; text and invariants."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import greedy_of, real_clip

from diffasr.audio import load_audio
from diffasr.errors import ModelError
from diffasr.metrics import error_rate
from diffasr.models.encoder import whisper_base_dir
from diffasr.models.whisper_decoder import WhisperDecoder, greedy


@pytest.fixture(scope="module")
def whisper_dir():
    return whisper_base_dir()


GERMAN = "Die Werbung vermittelt einen falschen Eindruck."  # the German clip's reference


def test_the_whisper_verifier_is_whisper_base_as_released_over_its_padded_window(shipped_base, whisper_dir):
    """verifier="whisper" checks the drafts with Whisper-base's decoder as released (sharing the
    embedding and the cross-attention projections), reading the encoder's 30-s padded window: given
    steps enough, ctc-verify writes that decoder's greedy transcript (faster-whisper's gets one
    article wrong), where the adapted verifier hears "Wärbung". Over the unpadded features the
    released decoder cannot tell where the speech ends and repeats the sentence."""
    model, den = shipped_base, shipped_base.backend.denoiser
    released = den.released()
    assert (
        released.embed is den.decoder.embed and released.layers[0].cross_attn.kv is den.decoder.layers[0].cross_attn.kv
    )
    as_released = WhisperDecoder.from_ct2(whisper_dir).state_dict()
    for name in ("layers.0.self_attn.qkv.weight", "layers.5.fc2.weight", "norm.weight"):
        assert torch.equal(released.state_dict()[name], as_released[name]), name
    audio = load_audio(str(real_clip("de", "picovoice_cheetah_test_de.wav")))
    window = model.encode_window([audio])[0]
    assert window.shape == (1500, 512)
    with torch.no_grad():
        padded = greedy(released, den.tokens, torch.as_tensor(window)[None], "de")
        unpadded = greedy(released, den.tokens, torch.as_tensor(model.encode([audio])[0])[None], "de", max_len=40)
    # "ein" or "einen": a near-tie that the CPU's float kernels decide (faster-whisper writes "ein")
    as_greedy = den.tokens.tok.decode(padded).strip()
    assert error_rate([GERMAN], [as_greedy], "de")[0] <= 1 / 6 and "Werbung" in as_greedy, as_greedy
    assert den.tokens.tok.decode(unpadded).count("Eindruck") > 1
    got = {
        v: model.transcribe(audio, language="de", method="ctc-verify", steps=40, verifier=v, word_timestamps=False)
        for v in ("whisper", "adapted")
    }
    assert got["whisper"].text == as_greedy and got["whisper"].steps_run < 40
    assert "Wärbung" in got["adapted"].text


def test_chinese_is_heard_in_either_script_and_written_simplified(shipped_base):
    """The released verifier writes traditional characters as often as simplified ones (廣州市 here):
    the Chinese vocabulary holds every Han token, and the transcript comes out simplified."""
    from diffasr.decoding.whisper import simplified

    den = shipped_base.backend.denoiser
    han = den.tokens.han_tokens()
    assert set(han) <= set(den.vocab["zh"].tolist()) and len(han) > 1000
    assert all("\u4e00" <= c <= "\u9fff" for i in han[:50] for c in den.tokens.tok.decode([i]) if c != "\ufffd")
    assert simplified("廣州市 佛地產 abc") == "广州市 佛地产 abc"
    audio = load_audio(str(real_clip("zh", "wenet_aishell-BAC009S0724W0121.wav")))
    r = shipped_base.transcribe(audio, language="zh", verifier="whisper", word_timestamps=False)
    assert r.text.startswith("广州市") and simplified(r.text) == r.text, r.text


def test_the_verifier_choice_is_validated_and_auto_is_the_models_per_language(shipped_base, tmp_path):
    import json
    import shutil
    from pathlib import Path

    import diffasr
    from diffasr.decoding import resolve
    from diffasr.decoding.options import WHISPER_READS
    from diffasr.decoding.whisper import denoise_batch, needs_window
    from diffasr.errors import ConfigError
    from diffasr.model import load_base

    den = shipped_base.backend.denoiser
    assert [den.verifier(lang) for lang in ("en", "de", "es", "fr", "zh")] == ["ensemble"] * 5  # verifier.md
    assert den.verifier("de", "adapted") == "adapted" and den.verifier("en", "whisper") == "whisper"
    saved, den.verifier_by_language = den.verifier_by_language, {"de": "whisper"}
    try:  # a language the model names no verifier for: adapted
        assert den.verifier("en") == "adapted" and den.verifier("de") == "whisper"
        opts = resolve(shipped_base.config.decode_defaults, {"language": "de"}, WHISPER_READS)
        assert opts.verifier == "auto" and needs_window(den, opts, ["en", "de"]) == [False, True]
    finally:
        den.verifier_by_language = saved
    assert needs_window(den, opts, ["en", "de"]) == [True, True]
    beam = resolve(shipped_base.config.decode_defaults, {"method": "ctc-beam"}, WHISPER_READS)
    assert needs_window(den, beam, ["de"]) == [False]
    for bad in ({"method": "ctc-beam", "verifier": "whisper"}, {"method": "ctc-verify", "verifier": "released"}):
        with pytest.raises(ConfigError, match="verifier"):
            resolve({}, bad, WHISPER_READS)
    feat = np.zeros((100, 512), np.float32)
    with pytest.raises(ConfigError, match="padded windows"):  # the windows are the caller's to give
        denoise_batch(
            den, [feat], ["de"], [[]], resolve({}, {"method": "ctc-verify", "verifier": "whisper"}, WHISPER_READS)
        )
    d = tmp_path / "m"
    shutil.copytree(Path(diffasr.__file__).parent / "assets" / "diffasr-base", d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "verifier_by_language": {"de": "released"}}))
    with pytest.raises(ModelError, match="verifier_by_language"):
        load_base(d)


def test_the_ensemble_verifier_is_the_mean_of_both_decoders_log_probabilities(shipped_base):
    """verifier="ensemble" scores each position with the mean of the adapted decoder's
    log-probabilities (over the unpadded features) and the released decoder's (over the padded
    window): a product of experts. Given steps enough, ctc-verify writes that mean's greedy
    transcript; on the German clip it keeps the released decoder's "Werbung" where the adapted
    decoder alone hears "Wärbung"."""
    from diffasr.decoding.whisper import _row_fns

    model, den = shipped_base, shipped_base.backend.denoiser
    audio = load_audio(str(real_clip("de", "picovoice_cheetah_test_de.wav")))
    vocab, eot_i = den.vocab["de"], den.eot_index("de")
    kv, fmask = den.memory(model.encode([audio]))
    window = den.memory(model.encode_window([audio]), released=True)
    prompts = den.prompts(["de"])
    causal = {v: _row_fns(den, vocab, prompts, kv, fmask, v, window)[1] for v in ("adapted", "whisper", "ensemble")}
    canvas = torch.randint(0, len(vocab), (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        lp = {v: f(canvas, torch.tensor([0]), 0).float().log_softmax(-1) for v, f in causal.items()}
        seq = greedy_of(causal["ensemble"], vocab, eot_i)
    assert lp["ensemble"].shape == (1, 12, len(vocab))
    assert torch.allclose(lp["ensemble"], ((lp["adapted"] + lp["whisper"]) / 2).log_softmax(-1), atol=1e-4)
    assert not torch.allclose(lp["ensemble"], lp["whisper"], atol=1e-2)
    text = den.tokens.decode(vocab[torch.tensor(seq)].tolist()).strip()
    r = model.transcribe(
        audio, language="de", method="ctc-verify", steps=40, verifier="ensemble", word_timestamps=False
    )
    assert r.text == text and r.steps_run < 40, (r.text, text, r.steps_run)
    assert "Die Werbung vermittelt" in r.text


def test_the_verified_path_suppresses_what_greedy_suppresses(shipped_base):
    """Every verifier's causal pass masks what whisper_decoder.greedy (as faster-whisper) never
    writes: the config's suppress ids and special tokens anywhere, suppress_ids_begin and the blank
    first."""
    from diffasr.decoding.whisper import _row_fns, suppressed

    model, den = shipped_base, shipped_base.backend.denoiser
    audio = load_audio(str(real_clip("de", "picovoice_cheetah_test_de.wav")))
    vocab = den.vocab["de"]
    never, first = suppressed(den, vocab)
    assert never.any() and first.any() and not never[den.eot_index("de")]
    assert set(vocab[never].tolist()) == {
        i for i in vocab.tolist() if i in den.tokens.suppress or i > den.tokens.n_text
    }
    kv, fmask = den.memory(model.encode([audio]))
    window = den.memory(model.encode_window([audio]), released=True)
    canvas = torch.randint(0, len(vocab), (1, 8), generator=torch.Generator().manual_seed(0))
    for v in ("adapted", "whisper", "ensemble"):
        causal = _row_fns(den, vocab, den.prompts(["de"]), kv, fmask, v, window)[1]
        with torch.no_grad():
            logits = causal(canvas, torch.tensor([0]), 0)
        assert torch.isneginf(logits[0, :, never]).all() and torch.isneginf(logits[0, 0, first]).all(), v
        assert not torch.isneginf(logits[0, 1:, first & ~never]).any(), v


def test_a_canvas_given_to_a_verified_method_is_not_grown(shipped_base):
    """canvas fixes the verified methods' canvas as it does the others': jfk.flac's 25 tokens do not
    fit 16 positions, and the canvas does not grow to hold them."""
    clip = str(real_clip("en", "jfk.flac"))
    r = shipped_base.transcribe(clip, language="en", method="ctc-verify", canvas=16, word_timestamps=False)
    words = " ".join(w.strip(",.").lower() for w in r.text.split())  # "And so, my ..." on some CPUs
    assert 0 < len(r.tokens) <= 16 and words.startswith("and so my fellow americans"), r.text
