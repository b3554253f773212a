"""The `base` preset's pieces: the CTranslate2 weight reader, the torch Whisper decoder (AR parity
with faster-whisper on real clips), the denoiser's trained-part checkpoint, and decoding from noise
and from the CTC seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import greedy_of, manifest_rows, real_clip, shared_real_dev

import diffasr
from diffasr.audio import load_audio
from diffasr.errors import ModelError
from diffasr.models.encoder import whisper_base_dir
from diffasr.models.whisper_decoder import WhisperDecoder, WhisperTokens, greedy, read_ct2


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


def test_decode_drops_a_character_cut_mid_bytes(whisper_dir):
    tokens = WhisperTokens(whisper_dir)
    ids = tokens.encode("广州市房地产中介协会分析", "zh")
    assert tokens.decode(ids) == "广州市房地产中介协会分析"
    assert tokens.decode(ids[:1]) == "" and tokens.decode(ids[:-1]) == "广州市房地产中介协会分"


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
    from diffasr.models.whisper_denoiser import DenoiserConfig, WhisperDenoiser

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
    from diffasr.models.whisper_denoiser import DenoiserConfig, WhisperDenoiser

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


def test_merged_adapters_give_the_same_logits_and_save_the_same_part(denoiser):
    import copy

    den = copy.deepcopy(denoiser)
    kv, fmask = den.memory([torch.randn(30, 512)])
    prompts, canvas = den.prompts(["en"]), den.vocab["en"][torch.tensor([[0, 1, 2, 1, 0, 2]])]
    with torch.no_grad():
        before = den.denoise(prompts, canvas, kv, fmask)
        state = den.trained_state_dict()
        after = den.merge_adapters().denoise(prompts, canvas, kv, fmask)
    assert torch.allclose(before, after, atol=1e-3), (before - after).abs().max()
    assert all(torch.equal(v, den.trained_state_dict()[k]) for k, v in state.items())


def test_loading_weights_of_another_shape_is_a_model_error(denoiser, tmp_path):
    from diffasr.models.whisper_denoiser import DenoiserConfig, WhisperDenoiser

    path = denoiser.save_trained(tmp_path)
    with pytest.raises(ModelError, match="shape"):
        WhisperDenoiser(DenoiserConfig(rank=8)).load_trained(path)
    (tmp_path / "broken.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelError):
        denoiser.load_trained(tmp_path / "broken.safetensors")


def test_canvas_mask_keeps_the_prompt_causal():
    from diffasr.models.whisper_denoiser import canvas_mask

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
    for method in ("diffusion", "ctc-refine", "ctc-edit", "diffusion-verify", "ctc-verify"):
        opts = DecodeOptions(method=method, steps=2)
        two = denoise_batch(denoiser, feats, ["en", "en"], [seed, seed[:3]], opts)
        one = denoise_batch(denoiser, feats[:1], ["en"], [seed], opts)
        assert two[0][0] == one[0][0]
        for ids, conf, steps, tail in two:
            assert set(ids) <= vocab and len(ids) == len(conf) and 1 <= steps <= 2 and tail >= 0
            assert all(0.0 <= c <= 1.0 for c in conf)


def test_rescore_with_no_candidates_is_an_empty_row(denoiser):
    """A row whose CTC beam found nothing (silence) comes back empty, with the others decoded."""
    from diffasr.decoding import DecodeOptions
    from diffasr.decoding.whisper import denoise_batch

    feats = [torch.randn(80, 512), torch.randn(60, 512)]
    seed = denoiser.tokens.encode("ask not", "en")
    rows = denoise_batch(
        denoiser, feats, ["en", "en"], [[], seed], DecodeOptions(method="rescore"), nbest=[[], [(seed, -1.0)]]
    )
    assert rows[0] == ([], [], 1, 0) and rows[0].tail_tokens == 0
    assert rows[1].ids == seed and rows[1].steps_run == 1


def test_realign_takes_the_seed_after_the_prefix():
    from diffasr.decoding.sampler import realign

    assert realign([], [1, 2, 3]) == [1, 2, 3]
    assert realign([1, 2, 9], [1, 2, 3, 4]) == [4]  # 9 replaced the seed's 3
    assert realign([1, 7, 2], [1, 2, 3]) == [3]  # 7 inserted
    assert realign([1, 2], [1, 2]) == []
    assert realign([5, 6], [1, 2, 3, 4]) == [3, 4]  # nothing shared (re-cased words): the seed goes on
    assert realign([10, 11, 3], [1, 2, 3, 4, 5, 6, 3, 7]) == [4, 5, 6, 3, 7]  # the nearer 3, not the later


def _toy_fns(target: list[int], V: int, draft_ok):
    """A causal 'decoder' that knows `target` (it predicts target[i] after a correct prefix, token 0
    after a wrong one) and a drafter right only where draft_ok(i)."""
    t = torch.tensor(target)

    def causal(canvas, rows, s):
        out = torch.full((*canvas.shape, V), -10.0)
        for r in range(canvas.shape[0]):
            for i in range(canvas.shape[1]):
                ok = torch.equal(canvas[r, :i], t[:i])
                out[r, i, int(t[i]) if ok else 0] = 10.0
        return out[:, s:]

    def denoise(canvas, rows, s):
        out = torch.full((*canvas.shape, V), -10.0)
        for i in range(canvas.shape[1]):
            out[:, i, int(t[i]) if draft_ok(i) else (int(t[i]) + 1) % (V - 1)] = 10.0
        return out[:, s:]

    return denoise, causal


def test_verify_commits_the_agreeing_run_and_the_causal_correction():
    """Each step the draft's agreeing run plus the causal pass's own token at the first disagreement
    join the prefix; the result is the causal decoder's greedy transcript once end-of-text is reached."""
    from diffasr.decoding import DecodeOptions
    from diffasr.decoding.sampler import verify

    V, eot = 6, 5
    target = [1, 2, 3, 4, eot, eot, eot, eot]
    denoise, causal = _toy_fns(target, V, lambda i: i % 2 == 0)  # drafts every other token right
    gens = [torch.Generator().manual_seed(0)]
    init = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(1))
    full = verify(denoise, causal, init, V, eot, DecodeOptions(method="diffusion-verify", steps=8), row_generators=gens)
    assert full.tokens[0].tolist() == target and full.steps_run == 3  # 2 tokens, 2 tokens, then the end
    one = verify(denoise, causal, init, V, eot, DecodeOptions(method="diffusion-verify", steps=1), row_generators=gens)
    assert one.tokens[0, :2].tolist() == [1, 2] and one.steps_run == 1
    assert one.tokens[0].tolist() == target and one.tail == [3]  # the rest (3, 4, end): the causal pass, token by token
    assert bool(((full.confidence >= 0) & (full.confidence <= 1)).all())
    # a right seed is verified whole in one step, however wrong the drafts
    denoise, causal = _toy_fns(target, V, lambda i: False)
    seed = torch.tensor([target])
    res = verify(denoise, causal, seed, V, eot, DecodeOptions(method="ctc-verify", steps=8), seeds=[target[:4]])
    assert res.tokens[0].tolist() == target and res.steps_run == 1


def test_verify_grows_a_canvas_too_short_for_the_transcript():
    """A canvas sized from a CTC transcript that is too short still gets the whole causal transcript:
    it grows once a prefix nears its end, up to max_len; without max_len it is cut."""
    from diffasr.decoding import DecodeOptions
    from diffasr.decoding.sampler import verify

    V, eot = 6, 5
    target = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, eot]
    long_target = target + [eot] * 12
    denoise, causal = _toy_fns(long_target, V, lambda i: True)
    gens = [torch.Generator().manual_seed(0)]
    init = torch.randint(0, V, (1, 8), generator=torch.Generator().manual_seed(1))
    opts = DecodeOptions(method="diffusion-verify", steps=8)
    grown = verify(denoise, causal, init, V, eot, opts, row_generators=gens, max_len=24)
    assert grown.tokens.shape[1] == 16 and grown.tokens[0, : len(target)].tolist() == target
    cut = verify(denoise, causal, init, V, eot, opts, row_generators=[torch.Generator().manual_seed(0)])
    assert cut.tokens.shape[1] == 8 and cut.tokens[0].tolist() == target[:8]


def test_when_the_steps_run_out_the_causal_pass_writes_the_rest_token_by_token():
    """A drafter that is always wrong commits one token a step; with 3 steps for an 11-token
    transcript the other 8 (and end-of-text) come from the causal pass one at a time: the text is
    the causal transcript, not the seed or the draft, and the tail says how many it wrote."""
    from diffasr.decoding import DecodeOptions
    from diffasr.decoding.sampler import verify

    V, eot = 6, 5
    target = [1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, eot]
    denoise, causal = _toy_fns(target + [eot] * 20, V, lambda i: False)
    for method, seeds in (("ctc-verify", [[4, 4, 4]]), ("diffusion-verify", None)):
        init = torch.tensor([[4, 4, 4, eot] + [eot] * 12]) if seeds else torch.zeros(1, 16, dtype=torch.long)
        opts = DecodeOptions(method=method, steps=3)
        res = verify(denoise, causal, init, V, eot, opts, seeds=seeds, row_generators=[torch.Generator()], max_len=24)
        assert res.steps_run == 3 and res.tail == [len(target) - 3], method
        assert res.tokens[0, : len(target)].tolist() == target, method
        assert (res.confidence[0, : len(target)] > 0.9).all()
    full = verify(
        denoise,
        causal,
        init,
        V,
        eot,
        DecodeOptions(method="diffusion-verify", steps=24),
        row_generators=[torch.Generator()],
        max_len=24,
    )
    assert full.tail == [0] and full.tokens[0, : len(target)].tolist() == target


def test_a_draft_that_repeats_a_token_takes_the_second_choice_there():
    """Drafted from noise, a word that spans two positions is drafted twice; the second choice is the
    draft there (a verified token counts as the one before), so the whole transcript verifies at once."""
    from diffasr.decoding.sampler import _draft

    eot = 9
    top = [[1, 2], [1, 3], [1, 4], [5, 1], [eot, 1], [eot, 2]]  # (first, second) choice per position
    probs = torch.zeros(1, len(top), 10)
    for i, (a, b) in enumerate(top):
        probs[0, i, a], probs[0, i, b] = 0.6, 0.3
    canvas, free = torch.zeros(1, len(top), dtype=torch.long), torch.zeros(1, len(top), dtype=torch.bool)
    assert _draft(probs, canvas, free, 0, eot).tolist() == [[1, 3, 1, 5, eot, eot]]
    canvas[0, 0], fixed = 1, torch.arange(len(top))[None] < 1  # position 0 verified as 1
    assert _draft(probs[:, 1:], canvas, fixed, 1, eot).tolist() == [[3, 1, 5, eot, eot]]


def test_verified_methods_need_the_base_preset(tiny_model, en_clip):
    from diffasr.errors import ConfigError

    for method in ("diffusion-verify", "ctc-verify"):
        with pytest.raises(ConfigError, match="causally"):
            tiny_model.transcribe(str(en_clip), language="en", method=method)


def _causal_greedy(den, feat) -> str:
    """The adapted decoder's English transcript one token at a time (greedy over the language's
    vocabulary), through `autoregressive` itself rather than verify's cached causal pass."""
    vocab, eot_i = den.vocab["en"], den.eot_index("en")
    kv, fmask = den.memory([feat])
    prompts = den.prompts(["en"])
    with torch.no_grad():
        seq = greedy_of(
            lambda canvas, rows, s: den.autoregressive(prompts, vocab[canvas], kv, fmask, vocab), vocab, eot_i
        )
    return den.tokens.decode(vocab[torch.tensor(seq)].tolist())


def test_shipped_base_verified_decoding_is_the_causal_greedy_transcript(shipped_base, en_clip):
    """Given steps enough, both verified methods write exactly what the trained decoder writes
    autoregressively (greedy, one token at a time, over the language's vocabulary), from noise and
    from the CTC seed alike; with 1 step the causal pass writes what the step left unverified, so the text is the same."""
    model = shipped_base
    feat = model.encode([load_audio(str(en_clip))])[0]
    greedy_text = _causal_greedy(model.backend.denoiser, feat)
    assert "ask not what your country can do for you" in greedy_text.lower(), greedy_text
    for method in ("diffusion-verify", "ctc-verify"):
        r = model.transcribe(
            str(en_clip), language="en", method=method, steps=40, verifier="adapted", word_timestamps=False
        )
        assert r.text == greedy_text and r.steps_run < 40 and r.tail_tokens == 0, (method, r.text, r.steps_run)
    one = model.transcribe(
        str(en_clip), language="en", method="diffusion-verify", steps=1, verifier="adapted", word_timestamps=False
    )
    # at the step cap the causal pass writes the rest one token at a time: the same transcript, and
    # the Transcription says how many tokens that took
    assert one.text == greedy_text and one.steps_run == 1 and one.tail_tokens > 0, (one.text, one.tail_tokens)


def test_the_causal_pass_reads_only_past_the_verified_prefix(shipped_base, en_clip):
    """verify's causal pass keeps the self-attention keys/values of the canvases it read; a canvas
    sharing a row's verified prefix (positions < s - 1) is read from position s on, over those keys and
    values, and its logits there are the full causal pass's."""
    from diffasr.decoding.whisper import _row_fns

    den = shipped_base.backend.denoiser
    vocab = den.vocab["en"]
    kv, fmask = den.memory([shipped_base.encode([load_audio(str(en_clip))])[0]])
    prompts = den.prompts(["en"])
    _, causal = _row_fns(den, vocab, prompts, kv, fmask)
    g = torch.Generator().manual_seed(0)
    X = torch.randint(0, len(vocab), (2, 24), generator=g)
    rows, s = torch.tensor([0, 0]), 11
    causal(X, rows, 0)
    Y = X.clone()
    Y[:, s - 1 :] = torch.randint(0, len(vocab), (2, 24 - s + 1), generator=g)
    fed = []
    hook = den.decoder.register_forward_pre_hook(lambda mod, args: fed.append(args[0].shape[1]))
    try:
        got = causal(Y, rows, s)
    finally:
        hook.remove()
    assert fed == [24 - s]  # inputs P - 1 + s .. P + L - 2, not the prompt and the whole canvas
    two = [(a.expand(2, *a.shape[1:]), b.expand(2, *b.shape[1:])) for a, b in kv]
    full = den.autoregressive(prompts.expand(2, -1), vocab[Y], two, fmask.expand(2, -1, -1, -1), vocab)
    assert got.shape == (2, 24 - s, len(vocab))
    from diffasr.decoding.whisper import suppressed

    never, _ = suppressed(den, vocab)  # the causal pass never writes these (as greedy())
    assert torch.isinf(got[..., never]).all() and torch.allclose(got[..., ~never], full[:, s:][..., ~never], atol=1e-3)


def test_the_shipped_base_reads_the_tokenizer_it_was_trained_on(shipped_base):
    """The shipped base was distilled (recipe stage 8) on the repaired tokenizer: " the" is Whisper's 264."""
    assert shipped_base.backend.denoiser.config.tokenizer == "repaired"
    assert shipped_base.backend.denoiser.tokens.repaired == ["Ġ t"]
    assert shipped_base.backend.denoiser.tokens.encode("the", "en") == [264]


def test_the_shipped_vocabularies_hold_the_tokens_whisper_writes(shipped_base):
    """Built with the repaired tokenizer (stage 8), the stored vocabularies hold " the" (264), " tiene",
    the tokens the released decoder (the whisper verifier) writes, and loading keeps them as stored."""
    from safetensors.torch import load_file

    den = shipped_base.backend.denoiser
    tokens = den.tokens
    stored = load_file(str(Path(diffasr.__file__).parent / "assets" / "diffasr-base" / "vocab.safetensors"))
    for lang in ("en", "es"):
        assert set(stored[lang].tolist()) <= set(den.vocab[lang].tolist())
    assert 264 in stored["en"].tolist() and tokens.tok.token_to_id("Ġtiene") in stored["es"].tolist()


def test_shipped_base_loads_by_preset_name_and_transcribes_a_real_clip(en_clip):
    """`diffasr.load("base")` with its default decoding (ctc-verify: the n-gram beam's best, drafted
    over by the denoiser and verified by it and Whisper-base's released decoder, run causally) on jfk.flac, against the
    reference words."""
    import jiwer

    import diffasr

    model = diffasr.load("base")
    assert model.config.preset == "base" and model.backend.denoiser.n_trained() == 1_002_496
    r = model.transcribe(str(en_clip), language="en")
    ref = "and so my fellow americans ask not what your country can do for you ask what you can do for your country"
    assert jiwer.wer(ref, r.text.lower()) < 0.25, r.text
    assert r.words and all(0 <= w.start <= w.end <= r.duration + 0.01 for w in r.words)
    assert all(0.0 <= w.confidence <= 1.0 for w in r.words)


def test_the_shipped_default_is_base_with_verified_decoding(en_clip, monkeypatch):
    """diffasr.load() with no name and no $DIFFASR_MODEL is diffasr-base, decoding ctc-verify; 10 s of
    silence still gives no text (the no-speech guard reads the CTC head both presets share)."""
    import diffasr

    monkeypatch.delenv("DIFFASR_MODEL", raising=False)
    model = diffasr.load()
    assert model.config.preset == "base" and model.config.decode_defaults["method"] == "ctc-verify"
    assert model.transcribe(np.zeros(160_000, np.float32), language="en", vad=False).text == ""


def test_the_repaired_tokenizer_encodes_as_whisper_was_trained(whisper_dir):
    """The shipped tokenizer.json lost its first merge ("Ġ t"): " the" became " " + "the". Repaired,
    text encodes to Whisper's own ids (264 " the", 1045 " three"); both decode to the same text."""
    import json

    from diffasr.models.whisper_decoder import missing_merges

    raw = json.loads((whisper_dir / "tokenizer.json").read_text(encoding="utf-8"))
    assert missing_merges(raw) == ["Ġ t"]
    fixed, shipped = WhisperTokens(whisper_dir), WhisperTokens(whisper_dir, repair=False)
    assert fixed.encode("the three children to", "en") == [264, 1045, 2227, 281]
    assert shipped.encode("the three children to", "en")[:4] == [220, 3322, 220, 27583]
    for text, lang in (("Die Werbung tut gut.", "de"), ("广州市房地产", "zh"), ("tiene todo", "es")):
        assert fixed.decode(fixed.encode(text, lang)) == shipped.decode(shipped.encode(text, lang)) == text
    assert fixed.encode("广州市房地产", "zh") == shipped.encode("广州市房地产", "zh")  # no t-words: unchanged


def test_a_checkpoint_names_its_tokenizer():
    """New settings repair the tokenizer; settings that name none were trained on it as shipped."""
    from diffasr.models.whisper_denoiser import DenoiserConfig

    assert DenoiserConfig().tokenizer == "repaired"
    assert DenoiserConfig.from_dict({"rank": 16}).tokenizer == "as-shipped"
    assert DenoiserConfig.from_dict({"tokenizer": "repaired"}).tokenizer == "repaired"
    with pytest.raises(ModelError, match="tokenizer"):
        DenoiserConfig.from_dict({"tokenizer": "fixed"})


def test_words_of_text_take_their_own_tokens_confidences_and_the_ctc_times():
    """The base preset's words: each word of the cased, punctuated text with the mean confidence of the
    tokens that wrote it (the two "the"s keep their own), timed by the CTC head's spoken-form words."""
    from diffasr.decoding.align import Word, words_of_text

    text = "The cat sat on the mat."
    pieces = ["The", " cat", " sat", " on", " the", " mat", "."]
    spans, at = [], 0
    for p in pieces:
        spans.append((at, at + len(p)))
        at += len(p)
    conf = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    timed = [Word(float(i), i + 0.5, w, 1.0) for i, w in enumerate("the cat sat on the mat".split())]
    words = words_of_text(text, spans, conf, timed, 6.0)
    assert [w.text for w in words] == ["The", "cat", "sat", "on", "the", "mat."]
    assert [w.confidence for w in words] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.65])
    assert [(w.start, w.end) for w in words] == [(w.start, w.end) for w in timed]
    # a count the CTC words do not match: times by character position, still in order
    odd = words_of_text(text, spans, conf, timed[:4], 6.0)
    assert [w.text for w in odd] == [w.text for w in words]
    assert all(a.end <= b.start + 1e-9 and a.start <= a.end for a, b in zip(odd, odd[1:]))


def test_base_writes_its_own_tokens_and_each_word_its_own_confidence(shipped_base):
    """On a real clip, base's tokens are the transcript's own Whisper tokens (their strings make up
    `text`), one confidence each; every word of `text` is in `words`, in order, with the mean
    confidence of the tokens that wrote it (not one mean repeated)."""
    r = shipped_base.transcribe(str(real_clip("en", "jfk.flac")), language="en")
    assert len(r.tokens) == len(r.confidences) == len(r.token_strings) > 10
    assert "".join(r.token_strings) == r.text and any(c.isupper() for c in r.text)
    assert [w.text for w in r.words] == r.text.split()
    assert len(set(r.confidences)) > 3 and all(0.0 <= c <= 1.0 for c in r.confidences)
    assert len({w.confidence for w in r.words}) > 3
    assert all(a.start <= b.start for a, b in zip(r.words, r.words[1:]))
    ends = np.cumsum([len(t) for t in r.token_strings])
    at = 0
    for w in r.words:
        a = r.text.index(w.text, at)
        at = a + len(w.text)
        mine = [c for c, e, t in zip(r.confidences, ends, r.token_strings) if e - len(t) < at and e > a]
        assert w.confidence == pytest.approx(float(np.mean(mine)), abs=1e-4), w
