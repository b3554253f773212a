"""The published recipe (configs/gemma-26b.toml) end to end on a CPU, offline.

Tiny random versions of the same structures stand in for the downloads: a DiffusionGemma with a
Gemma-style tokenizer (the Gemma special tokens by name), a 768-d Whisper encoder, and LibriSpeech /
FLEURS / VoxPopuli tables in the `datasets` on-disk format with those corpora's columns (real clips
as audio). The recipe's own config trains for a few steps through `diffasr.training.train.train`, its
adapter-only checkpoint reloads onto a freshly loaded backbone, and a real clip is transcribed.
The text is meaningless (random weights); the checks are on what was trained, saved and restored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, REPO

CLIPS = {  # corpus -> (language, [(tests/data clip, transcript)])
    "librispeech": (
        "en",
        [
            ("en/jfk.flac", "AND SO MY FELLOW AMERICANS ASK NOT WHAT YOUR COUNTRY CAN DO FOR YOU"),
            ("en/picovoice_cheetah_test_en.wav", "TODAY ONLY PLATFORMS ONE AND THREE ARE USED"),
        ],
    ),
    "fleurs": ("de", [("de/picovoice_cheetah_test_de.wav", "die werbung vermittelt einen falschen eindruck")]),
    "voxpopuli": ("fr", [("fr/picovoice_cheetah_test_fr.wav", "les deux autres sont situés au bord de la mer jaune")]),
}


def _tokenizer(d: Path):
    """A small BPE with Gemma 4's special tokens, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<|audio>", "<|audio|>", "<audio|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    lines = []
    for lang in ("en", "de", "fr"):
        lines += (DATA / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:400]
    lines += [t.lower() for _, rows in CLIPS.values() for _, t in rows]
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=400, special_tokens=specials, limit_alphabet=120))
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
        additional_special_tokens=specials[4:],
    )
    hf.save_pretrained(d)
    return hf


def _corpus(d: Path, corpus: str) -> Path:
    """A `save_to_disk` table with the published corpus's columns, audio as encoded bytes."""
    import datasets

    lang, rows = CLIPS[corpus]
    audio = [{"bytes": (DATA / a).read_bytes(), "path": Path(a).name} for a, _ in rows]
    n = len(rows)
    if corpus == "librispeech":
        cols = dict(
            file=[Path(a).name for a, _ in rows],
            text=[t for _, t in rows],
            speaker_id=[1] * n,
            chapter_id=[2] * n,
            id=[f"1-2-{i}" for i in range(n)],
        )
    elif corpus == "fleurs":
        cols = dict(
            id=list(range(n)),
            num_samples=[0] * n,
            path=[Path(a).name for a, _ in rows],
            transcription=[t for _, t in rows],
            raw_transcription=[t.capitalize() + "." for _, t in rows],
            gender=[0] * n,
            lang_id=[0] * n,
            language=["German"] * n,
            lang_group_id=[0] * n,
        )
    else:
        cols = dict(
            audio_id=[str(i) for i in range(n)],
            language=[2] * n,
            raw_text=[t for _, t in rows],
            normalized_text=[t for _, t in rows],
            gender=["female"] * n,
            speaker_id=["s"] * n,
            is_gold_transcript=[True] * n,
            accent=["None"] * n,
        )
    ds = datasets.Dataset.from_dict({"audio": audio, **cols})
    ds = ds.cast_column("audio", datasets.Audio(sampling_rate=16000, decode=False))
    ds.save_to_disk(str(d / corpus))
    return d / corpus


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    from transformers import DiffusionGemmaForBlockDiffusion, WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from diffasr.models.backbone import make_config
    from diffasr.models.config import DIMS
    from diffasr.training.pretrained import gemma_ids
    from diffasr.training.train import load_config, train

    d = tmp_path_factory.mktemp("recipe")
    torch.manual_seed(0)
    hf = _tokenizer(d / "backbone")
    ids = gemma_ids(hf, len(hf))
    lm = DiffusionGemmaForBlockDiffusion(make_config(DIMS["tiny"], 64, ids))
    lm.save_pretrained(d / "backbone")
    # whisper-small's encoder shape where it meets the projector (768-d, 80 mels, 1500 frames), 1 layer
    wcfg = WhisperConfig(
        d_model=768,
        encoder_layers=1,
        encoder_attention_heads=4,
        encoder_ffn_dim=256,
        decoder_layers=1,
        decoder_attention_heads=4,
        decoder_ffn_dim=256,
        vocab_size=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperModel(wcfg).save_pretrained(d / "whisper")
    WhisperFeatureExtractor(feature_size=80).save_pretrained(d / "whisper")

    cfg = load_config(
        REPO / "configs" / "gemma-26b.toml",
        [
            f'out="{d / "run"}"',
            f'data.cache="{d / "features"}"',
            "optim.max_steps=3",
            "optim.warmup_steps=1",
            "optim.bf16=false",
            "loss.ctc_warmup_steps=1",
            "eval.save_every=3",
            "eval.log_every=1",
            "data.max_frames=2000",
            "data.max_batch=2",
            'model.dtype="float32"',
        ],
    )
    hf = [
        dict(src, path=str(_corpus(d, src["corpus"])))
        for src in [s for s in cfg.data.hf if s["corpus"] == "librispeech"][:1]
        + [{"corpus": "fleurs", "lang": "de"}, {"corpus": "voxpopuli", "lang": "fr"}]
    ]
    cfg = cfg.replace(
        model={"backbone": str(d / "backbone"), "encoder": str(d / "whisper")}, data={"hf": hf, "hf_dev": []}
    )
    ckpt = train(cfg)
    return d, cfg, ckpt


def test_recipe_trains_saves_adapter_only_and_reloads(recipe_run, en_clip):
    from safetensors.torch import load_file

    from diffasr.model import DiffusionASR
    from diffasr.training.pretrained import build_model, load_model

    d, cfg, ckpt = recipe_run
    fresh = build_model(cfg)  # the untrained model, as the run started (seeded the same way)
    trainable = {n for n, p in fresh.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert fresh.backbone.lm.is_activation_checkpointing  # the recipe turns it on

    saved = load_file(str(ckpt / "model.safetensors"))
    assert all(k.startswith("projector.") or ("lora_" in k and ".decoder." in k) for k in saved)  # nothing frozen
    assert sum(v.numel() for v in saved.values()) == sum(p.numel() for p in fresh.parameters() if p.requires_grad)
    assert all(v.dtype == torch.float32 for v in saved.values())
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the LoRA was trained

    # Reload onto a freshly loaded backbone (named in config.json): the trained tensors come back,
    # the frozen ones are the backbone's own.
    from transformers import DiffusionGemmaForBlockDiffusion

    model = DiffusionASR.load(ckpt, gemma=DiffusionGemmaForBlockDiffusion.from_pretrained(cfg.model.backbone))
    restored = model.trainable_state_dict()
    assert restored.keys() == saved.keys()
    for k, v in saved.items():
        torch.testing.assert_close(restored[k], v)
    emb = "model.decoder.embed_tokens.weight"
    torch.testing.assert_close(model.backbone.lm.state_dict()[emb], fresh.backbone.lm.state_dict()[emb].float())
    enc, dec = model.backbone.lm.model.encoder.language_model.layers[0], model.backbone.lm.model.decoder.layers[0]
    assert enc.self_attn.q_proj is dec.self_attn.q_proj  # one adapter for both passes, also after reload

    resumed = load_model(ckpt, cfg)  # --resume's path: the same tensors, trained parts in fp32
    r_params = dict(resumed.named_parameters(remove_duplicate=False))
    m_params = dict(model.named_parameters(remove_duplicate=False))
    for n in trainable:
        torch.testing.assert_close(r_params[n], m_params[n])

    r = model.transcribe(str(en_clip), steps=2, language="en")
    assert isinstance(r.text, str) and r.language == "en" and 10.5 < r.duration < 11.5
    assert all(0 <= w.start <= w.end <= r.duration + 0.01 for w in r.words)


def test_recipe_data_reads_the_corpora_columns(recipe_run, monkeypatch):
    import hashlib

    from diffasr.model import DiffusionASR
    from diffasr.training import pretrained as recipe

    d, cfg, ckpt = recipe_run
    feats = list((d / "features").rglob("*.npy"))
    want = {hashlib.sha1((DATA / a).read_bytes()).hexdigest(): a for _, rows in CLIPS.values() for a, _ in rows}
    assert {f.stem for f in feats} == set(want)  # every clip of the three corpora, cached once by its bytes
    assert all(np.load(f).shape[1] == 768 and np.load(f).dtype == np.float16 for f in feats)
    assert len(list((d / "features").rglob("index/*.jsonl"))) == 3  # one per source

    # A second pass (a resumed run, another GPU's process) reads the indexes and streams nothing.
    monkeypatch.setattr(recipe, "_rows", lambda *a: pytest.fail("streamed a source again"))
    model = DiffusionASR.load(
        ckpt, gemma=__import__("transformers").DiffusionGemmaForBlockDiffusion.from_pretrained(cfg.model.backbone)
    )
    ex = recipe.hf_examples(model, list(cfg.data.hf), d / "features", cfg.data.max_seconds)
    # The 3.5-s German clip is cached but not trained on: in this 400-token BPE its transcript is 24
    # tokens, more than its 22 audio tokens at 8x, which CTC cannot align.
    assert sorted(e.lang for e in ex) == ["en", "en", "fr"]
    assert all(
        isinstance(e.feats, recipe.CachedFeatures) and np.asarray(e.feats, np.float32).shape == e.feats.shape
        for e in ex
    )


def test_full_size_parameter_count():
    """configs/gemma-26b.toml at DiffusionGemma-26B-A4B's real size, on the meta device."""
    from diffasr.training.pretrained import count_parameters
    from diffasr.training.train import load_config

    n = count_parameters(load_config(REPO / "configs" / "gemma-26b.toml"))
    assert n["projector"] == 16_393_472 and n["lora"] == 22_978_560  # published: ~42 M in all
    assert 25.2e9 < n["total"] < 25.4e9


def test_recipe_bad_source_is_one_clear_error(tmp_path, recipe_run):
    from diffasr.errors import ConfigError, DataError
    from diffasr.model import DiffusionASR
    from diffasr.training.pretrained import hf_examples

    d, cfg, ckpt = recipe_run
    model = DiffusionASR.load(ckpt)
    with pytest.raises(ConfigError, match="has no 'hi' subset"):
        hf_examples(model, [{"corpus": "voxpopuli", "lang": "hi"}], tmp_path, 30.0)
    with pytest.raises(DataError, match="lacks the 'transcription'"):  # librispeech's table read as fleurs
        hf_examples(model, [{"corpus": "fleurs", "lang": "en", "path": str(d / "librispeech")}], tmp_path, 30.0)


def test_gpu_speed_script_dry_run():
    """benchmarks/gemma26b_speed.py at tiny dims on the CPU: every measurement it makes on a GPU comes out."""
    import importlib.util

    from diffasr.training.pretrained import full_size_config

    assert full_size_config(pad_token_id=0).text_config.hidden_size == 2816  # overrides merge, no clash
    spec = importlib.util.spec_from_file_location("gemma26b_speed", REPO / "benchmarks" / "gemma26b_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    r = bench.run("cpu", tiny=True, batches=(1,), steps=(2, 4), seconds=2.0, canvas=16, train_batch=1, repeats=1)
    inf = r["inference"][0]
    assert "error" not in inf and "error" not in r["train"], (inf, r["train"])
    for k in ("encoder_s", "prefill_s", "step_s", "decode_2_s", "decode_4_s", "x_realtime_2", "x_realtime_4"):
        assert inf[k] > 0, k
    assert inf["audio_tokens"] == 13 and r["train"]["train_step_s"] > 0  # 2 s -> 100 frames -> 13 tokens at 8x
    assert set(r["train"]["losses"]) == {"diffusion", "ar", "ctc"}  # the recipe's three losses
