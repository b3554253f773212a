"""The `base` preset's pieces: the CTranslate2 weight reader, the torch Whisper decoder (AR parity
with faster-whisper on real clips), the denoiser's trained-part checkpoint, and decoding from noise
and from the CTC seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import manifest_rows, real_clip, shared_real_dev

from diffasr.audio import load_audio
from diffasr.encoder import whisper_base_dir
from diffasr.errors import ModelError
from diffasr.whisper_decoder import WhisperDecoder, WhisperTokens, greedy, read_ct2


@pytest.fixture(scope="module")
def whisper_dir():
    return whisper_base_dir()


@pytest.fixture(scope="module")
def decoder(whisper_dir):
    return WhisperDecoder.from_ct2(whisper_dir)


@pytest.fixture(scope="module")
def fw(whisper_dir):
    from faster_whisper import WhisperModel

    return WhisperModel(str(whisper_dir), device="cpu", compute_type="float32", cpu_threads=2)


def test_reader_reads_the_whole_decoder(whisper_dir):
    w = read_ct2(whisper_dir / "model.bin", prefix="decoder/")
    assert w["decoder/embeddings/weight"].shape == (51865, 512)
    assert w["decoder/embeddings/weight"].dtype == np.float16
    assert w["decoder/position_encodings/encodings"].shape == (448, 512)
    assert w["decoder/layer_5/self_attention/linear_0/weight"].shape == (1536, 512)
    assert w["decoder/layer_5/attention/linear_1/weight"].shape == (1024, 512)  # fused cross k, v
    assert np.array_equal(w["decoder/projection/weight"], w["decoder/embeddings/weight"])  # alias: tied head
    assert not any(k.startswith("encoder/") for k in w)


def test_reader_rejects_a_file_that_is_not_ct2(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"\x07\x00\x00\x00garbage")
    with pytest.raises(ModelError, match="not a readable CTranslate2"):
        read_ct2(bad)
    (tmp_path / "short.bin").write_bytes(b"\x06\x00")
    with pytest.raises(ModelError):
        read_ct2(tmp_path / "short.bin")


def fw_mel(fw, audio: np.ndarray) -> np.ndarray:
    """faster-whisper's encoder input for a clip ≤ 30 s: its log-mel without the extra frame its
    padding adds, zero-padded (in log-mel space) to 3000 frames: (1, 80, 3000)."""
    mel = fw.feature_extractor(audio)[:, :-1][:, :3000]
    return np.ascontiguousarray(np.pad(mel, ((0, 0), (0, 3000 - mel.shape[1])))[None].astype(np.float32))


def _fw_greedy_and_ours(fw, decoder, tokens, path, lang):
    import ctranslate2

    audio = load_audio(str(path))
    segments, _ = fw.transcribe(  # no_speech_threshold=None: compare the decoding, not fw's no-speech skip
        audio,
        language=lang,
        beam_size=1,
        temperature=0.0,
        vad_filter=False,
        without_timestamps=True,
        no_speech_threshold=None,
    )
    ref = " ".join(s.text.strip() for s in segments).strip()
    mel = fw_mel(fw, audio)
    feats = np.asarray(fw.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))[0]
    ours = tokens.decode(greedy(decoder, tokens, torch.from_numpy(feats)[None], lang))
    return ref, ours


def test_ar_greedy_matches_faster_whisper_on_a_real_clip(fw, decoder, whisper_dir):
    ref, ours = _fw_greedy_and_ours(fw, decoder, WhisperTokens(whisper_dir), real_clip("en", "jfk.flac"), "en")
    assert "country" in ref.lower()
    assert ours == ref


@pytest.mark.slow
def test_ar_greedy_matches_faster_whisper_on_real_dev(fw, decoder, whisper_dir):
    tokens, real_dev = WhisperTokens(whisper_dir), shared_real_dev()
    rows = manifest_rows(real_dev)
    same = sum(
        ours == ref
        for ref, ours in (_fw_greedy_and_ours(fw, decoder, tokens, real_dev / r["audio"], r["lang"]) for r in rows)
    )
    assert same >= 0.95 * len(rows), f"{same}/{len(rows)} identical"


# ---------------------------------------------------------------------- the denoiser's trained part


@pytest.fixture(scope="module")
def denoiser():
    from diffasr.whisper_denoiser import DenoiserConfig, WhisperDenoiser

    torch.manual_seed(0)
    den = WhisperDenoiser(DenoiserConfig(rank=4))
    with torch.no_grad():  # peft starts LoRA B at zero; give the adapters a value to round-trip
        for name, p in den.decoder.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    den.vocab = {
        "en": torch.tensor(
            sorted({*den.tokens.encode("ask not what your country can do for you", "en"), den.tokens.eot})
        )
    }
    return den.eval()


def test_trained_part_is_small_and_round_trips(denoiser, tmp_path):
    from diffasr.whisper_denoiser import DenoiserConfig, WhisperDenoiser

    state = denoiser.trained_state_dict()
    assert state and all("lora_" in k or "norm" in k for k in state)
    assert denoiser.n_trained() < 2_000_000
    path = denoiser.save_trained(tmp_path)
    assert path.stat().st_size < 5_000_000
    fresh = WhisperDenoiser(DenoiserConfig(rank=4))
    fresh.load_trained(path)
    fresh.load_vocab(tmp_path / "vocab.safetensors")
    assert torch.equal(fresh.vocab["en"], denoiser.vocab["en"])
    feats = [torch.randn(50, 512)]
    kv, fm = denoiser.memory(feats)
    canvas = denoiser.vocab["en"][:6][None]
    a = denoiser.denoise(denoiser.prompts(["en"]), canvas, kv, fm)
    b = fresh.eval().denoise(fresh.prompts(["en"]), canvas, *fresh.memory(feats))
    assert torch.allclose(a, b, atol=1e-2)  # fp16 storage of the trained tensors


def test_loading_weights_of_another_shape_is_a_model_error(denoiser, tmp_path):
    from diffasr.whisper_denoiser import DenoiserConfig, WhisperDenoiser

    path = denoiser.save_trained(tmp_path)
    with pytest.raises(ModelError, match="shape"):
        WhisperDenoiser(DenoiserConfig(rank=8)).load_trained(path)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError):
        denoiser.load_trained(tmp_path / "broken.safetensors")


def test_canvas_mask_keeps_the_prompt_causal():
    from diffasr.whisper_denoiser import canvas_mask

    m = canvas_mask(4, 3)
    assert m[:4, :4].equal(torch.ones(4, 4, dtype=torch.bool).tril()) and not m[:4, 4:].any()
    assert m[4:].all()
    assert canvas_mask(4, 3, causal=True).equal(torch.ones(7, 7, dtype=torch.bool).tril())


def test_denoise_batch_from_noise_and_from_seed(denoiser):
    """Mechanics on an untrained adapter: ids stay in the language's vocabulary, the seed is used,
    the same seed gives the same output, and a row does not depend on its batch-mates."""
    from diffasr.decoding import DecodeOptions
    from diffasr.decoding.whisper import denoise_batch

    feats = [torch.randn(80, 512), torch.randn(60, 512)]
    seed = denoiser.tokens.encode("ask not what your country can do for you", "en")
    vocab = set(denoiser.vocab["en"].tolist())
    for method in ("diffusion", "ctc-refine", "ctc-edit"):
        opts = DecodeOptions(method=method, steps=2)
        two = denoise_batch(denoiser, feats, ["en", "en"], [seed, seed[:3]], opts)
        one = denoise_batch(denoiser, feats[:1], ["en"], [seed], opts)
        assert two[0][0] == one[0][0]
        for ids, conf, steps in two:
            assert set(ids) <= vocab and len(ids) == len(conf) and 1 <= steps <= 2
            assert all(0.0 <= c <= 1.0 for c in conf)


def test_shipped_base_loads_by_preset_name_and_transcribes_a_real_clip(en_clip):
    """The shipped preview: `diffasr.load("base")` with its default decoding (the n-gram beam's
    8-best scored by the Whisper denoiser) on jfk.flac, against the reference words."""
    import jiwer

    import diffasr

    model = diffasr.load("base")
    assert model.config.preset == "base" and model.denoiser.n_trained() == 1_002_496
    r = model.transcribe(str(en_clip), language="en")
    ref = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
    assert jiwer.wer(ref, r.text.lower()) < 0.25, r.text
    assert r.words and all(0 <= w.start <= w.end <= r.duration + 0.01 for w in r.words)
    assert all(0.0 <= w.confidence <= 1.0 for w in r.words)
