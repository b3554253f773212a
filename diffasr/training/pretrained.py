"""The published recipe's code path: a frozen pretrained backbone with LoRA, trained on Hugging Face corpora.

`configs/gemma-26b.toml` reproduces diffusion-gemma-asr-small: frozen whisper-small encoder, 8x
projector, frozen DiffusionGemma-26B-A4B with one LoRA shared by its encoder and decoder passes,
the three losses, FLEURS (six languages) + LibriSpeech + VoxPopuli streamed through `datasets`.
train.py calls three things here when the preset's backbone is pretrained:

- `build_model(cfg)`: backbone + tokenizer from `[model] backbone` (Hub id or local directory),
  the encoder from `[model] encoder`, LoRA from `[model] lora`, gradient checkpointing; the frozen
  backbone in `[model] dtype` (bf16 on GPUs), the trained parts in fp32.
- `load_model(directory, cfg)`: an adapter-only checkpoint (projector + LoRA) onto a fresh backbone.
- `hf_examples(model, sources, ...)`: `[[data.hf]]` sources -> Examples with cached encoder features.

A source is a table: corpus ("fleurs" | "librispeech" | "voxpopuli" | "common_voice"), lang, split,
optional `path` (a local `save_to_disk` directory with the corpus's columns, instead of the Hub),
`max_hours` (stop streaming after this much audio), `lowercase` (LibriSpeech is upper case).
Audio is streamed row by row, never downloaded whole; each clip's features are stored once in the
feature cache (fp16, keyed by the audio bytes' hash) with an index per source, so a second run, or
the other processes of a multi-GPU run, read no audio at all.

`full_size_config()` is DiffusionGemma-26B-A4B's architecture (25.25 B parameters), for counting
on the meta device and for the speed benchmark with random weights.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, DataError, ModelError

# google/diffusiongemma-26B-A4B-it's text config (docs: anchors §3; 25.25 B parameters with these).
FULL_26B = dict(
    hidden_size=2816,
    intermediate_size=2112,
    num_hidden_layers=30,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=256,
    global_head_dim=512,
    num_global_key_value_heads=2,
    sliding_window=1024,
    num_experts=128,
    top_k_experts=8,
    moe_intermediate_size=704,
    vocab_size=262144,
)
# Gemma 4 special tokens, looked up by name in whatever tokenizer the backbone ships (the Hub ids of
# the preset are then checked, not assumed): pad, eos, bos, begin-of-audio, audio slot, end-of-audio.
GEMMA_TOKENS = dict(pad="<pad>", eos="<eos>", bos="<bos>", boa="<|audio>", audio="<|audio|>", eoa="<audio|>")
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}

# Published training mix (Hub ids; need network + `datasets`): name -> (hub id, config per lang, text column)
HF_DATASETS = {
    "librispeech": ("openslr/librispeech_asr", {"en": "clean"}, "text"),
    "fleurs": (
        "google/fleurs",
        {"en": "en_us", "de": "de_de", "fr": "fr_fr", "es": "es_419", "hi": "hi_in", "zh": "cmn_hans_cn"},
        "transcription",
    ),
    "voxpopuli": ("facebook/voxpopuli", {"en": "en", "de": "de", "fr": "fr", "es": "es"}, "normalized_text"),
    "common_voice": (
        "mozilla-foundation/common_voice_17_0",
        {"en": "en", "de": "de", "fr": "fr", "es": "es", "hi": "hi", "zh": "zh-CN"},
        "sentence",
    ),
}


def is_pretrained(cfg: dict) -> bool:
    from ..models.config import PRESETS

    return cfg.preset in PRESETS and PRESETS[cfg.preset]["backbone"]["source"] == "pretrained"


def full_size_config(canvas_length: int = 256, **overrides):
    """DiffusionGemmaConfig of the 26B-A4B (real dimensions, tiny vision tower); overrides replace text fields."""
    from transformers import DiffusionGemmaConfig

    from ..models.backbone import TINY_VISION

    text = {**FULL_26B, "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2, **overrides}
    return DiffusionGemmaConfig(
        text_config=text, vision_config=dict(TINY_VISION), canvas_length=canvas_length, image_token_id=258881
    )


def gemma_ids(hf_tokenizer, vocab_size: int) -> dict:
    """Special-token ids by name (GEMMA_TOKENS) plus the backbone's vocabulary size."""
    ids = {}
    for key, token in GEMMA_TOKENS.items():
        i = hf_tokenizer.convert_tokens_to_ids(token)
        if i is None or i == hf_tokenizer.unk_token_id:
            raise ModelError(f"backbone tokenizer has no {token!r} token (needed for {key})")
        ids[key] = int(i)
    return ids | {"vocab_size": int(vocab_size)}


def _model_spec(cfg: dict) -> tuple[dict, dict, dict]:
    """(preset dict, backbone dict, encoder dict) with the config's [model] overrides applied."""
    from ..models.config import PRESETS

    m, p = cfg.model, copy.deepcopy(PRESETS[cfg.preset])

    def resolve(name: str) -> str:  # a local directory (relative to the repo, as data paths are) or a Hub id
        local = cfg.path(name)
        return str(local) if name.startswith((".", "/")) or local.is_dir() else name

    bb = dict(p["backbone"], name=resolve(m.backbone) if m.backbone else p["backbone"]["name"])
    if m.lora:
        bb["lora"] = dict(bb["lora"], **m.lora)
    enc = dataclasses.asdict(p["encoder"])
    if m.encoder:
        enc["name"] = resolve(m.encoder)
    return p, bb, enc


def _finish(model, cfg: dict):
    """Trained parts in fp32 (AdamW on bf16 weights loses small updates); checkpointing if asked."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if cfg.model.gradient_checkpointing:
        # Non-reentrant: the decoder's inputs (canvas ids through a frozen embedding) need no grad,
        # and reentrant checkpointing would then drop the LoRA gradients inside the layers.
        model.backbone.lm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def _load_backbone(name: str, dtype: torch.dtype):
    from transformers import AutoTokenizer, DiffusionGemmaForBlockDiffusion

    try:
        lm = DiffusionGemmaForBlockDiffusion.from_pretrained(name, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise ModelError(f"cannot load backbone {name!r}: {e}") from None
    return lm, tok


def build_model(cfg: dict):
    """A fresh model for a pretrained-backbone preset: frozen backbone + LoRA + untrained projector."""
    from ..model import DiffusionASR
    from ..models.encoder import EncoderSpec
    from ..models.tokenizer import GemmaTokenizer

    p, bb, enc = _model_spec(cfg)
    lm, hf_tok = _load_backbone(bb["name"], DTYPES[cfg.model.dtype])
    tok = GemmaTokenizer(hf_tok, gemma_ids(hf_tok, lm.config.text_config.vocab_size))
    model = DiffusionASR.from_preset(cfg.preset, tokenizer=tok, gemma=lm, backbone=bb, encoder=EncoderSpec(**enc))
    return _finish(model, cfg)


def load_model(directory: str | Path, cfg: dict):
    """`--resume`: the config's model rebuilt (frozen backbone loaded afresh) with the trained tensors
    of an adapter-only checkpoint copied in, in fp32 (DiffusionASR.load would cast them to the
    backbone's dtype and back)."""
    from safetensors.torch import load_file

    model = build_model(cfg)
    tensors = load_file(str(Path(directory) / "model.safetensors"))
    params = dict(model.named_parameters(remove_duplicate=False))  # shared LoRA under decoder names too
    names = {
        k: ("projector." + k[len("projector.") :]) if k.startswith("projector.") else "backbone.lm." + k[len("lm.") :]
        for k in tensors
    }
    missing = [
        n
        for n, q in params.items()
        if q.requires_grad and n not in names.values() and not n.startswith("backbone.lm.model.encoder.")
    ]  # the encoder's LoRA is the decoder's
    unknown = [k for k, n in names.items() if n not in params or not params[n].requires_grad]
    if missing or unknown:
        raise ModelError(
            f"{directory}: checkpoint does not match the config's model "
            f"(missing {missing[:2]}, unexpected {unknown[:2]})"
        )
    with torch.no_grad():
        for k, n in names.items():
            params[n].copy_(tensors[k])
    return model


def count_parameters(cfg: dict) -> dict:
    """Trainable / total parameters of the config's model at DiffusionGemma-26B-A4B's real size,
    built on the meta device (no memory, no download): {trainable, projector, lora, total}."""
    from transformers import DiffusionGemmaForBlockDiffusion

    from ..model import DiffusionASR
    from ..models.encoder import EncoderSpec

    p, bb, enc = _model_spec(cfg)

    class _Ids:  # the preset's Gemma ids are all the model needs from a tokenizer to be built
        kind = "gemma"
        pad, eos, bos, sep, audio = (p["gemma_ids"][k] for k in ("pad", "eos", "bos", "eoa", "audio"))
        vocab_size = p["gemma_ids"]["vocab_size"]

    with torch.device("meta"):
        lm = DiffusionGemmaForBlockDiffusion(full_size_config())
        model = DiffusionASR.from_preset(
            cfg.preset, tokenizer=_Ids(), gemma=lm, backbone=bb, encoder=EncoderSpec(**enc)
        )
    trainable = {n: q.numel() for n, q in model.named_parameters() if q.requires_grad}
    proj = sum(v for k, v in trainable.items() if k.startswith("projector."))
    return {
        "trainable": sum(trainable.values()),
        "projector": proj,
        "lora": sum(trainable.values()) - proj,
        "total": sum(q.numel() for q in model.parameters()),
    }


# ---------------------------------------------------------------------------- data


def _rows(source: dict, streaming: bool):
    """(dataset rows iterable, text column) for one [[data.hf]] source."""
    import datasets

    corpus = source.get("corpus")
    if corpus not in HF_DATASETS:
        raise ConfigError(f"data.hf: corpus must be one of {', '.join(HF_DATASETS)}, not {corpus!r}")
    hub, configs, col = HF_DATASETS[corpus]
    lang = source.get("lang")
    if lang not in configs:
        raise ConfigError(f"data.hf: {corpus} has no {lang!r} subset (has {', '.join(configs)})")
    try:
        if source.get("path"):
            ds = datasets.load_from_disk(source["path"])
            if isinstance(ds, datasets.DatasetDict):
                ds = ds[source.get("split", "train")]
            ds = ds.to_iterable_dataset() if streaming else ds
        else:
            ds = datasets.load_dataset(hub, configs[lang], split=source.get("split", "train"), streaming=streaming)
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as e:
        raise DataError(f"data.hf: cannot open {corpus}/{lang} ({source.get('path') or hub}): {e}") from None
    if col not in ds.column_names or "audio" not in ds.column_names:
        raise DataError(f"data.hf: {corpus}/{lang} lacks the {col!r} or 'audio' column (has {ds.column_names})")
    return ds.cast_column("audio", datasets.Audio(decode=False)), col


def hf_examples(
    model,
    sources: list[dict],
    cache_dir: Path,
    max_seconds: float,
    streaming: bool = True,
    encode_batch: int = 8,
    desc: str = "hf features",
) -> list:
    """Sources -> Examples (features (frames, d) fp16 on disk, token ids, language).

    The first time, each source is streamed until its `max_hours` and every clip of at most
    `max_seconds` with a transcript is encoded into the cache; an index of (feature key, text) per
    source is written last (atomically). Later calls, and the other processes of a multi-GPU run,
    read the index and stream nothing. Rows the model cannot train on (transcript too long for the
    canvas, or for CTC over the clip's audio tokens) are skipped here, per tokenizer."""
    from ..models.encoder import FRAMES_PER_SECOND
    from ..models.projector import conv_out_len
    from .data import Example, FeatureCache

    cache = FeatureCache(cache_dir, model.encoder)
    tok, strides, L = model.tokenizer, model.config.projector["strides"], model.config.canvas_length
    out, skipped = [], 0
    for src in sources:
        spec = json.dumps({**src, "max_seconds": max_seconds}, sort_keys=True)
        index = cache.dir / "index" / f"{hashlib.sha1(spec.encode()).hexdigest()[:16]}.jsonl"
        if index.is_file():
            rows = [json.loads(line) for line in index.read_text(encoding="utf-8").splitlines() if line]
        else:
            rows = _stream_source(model, cache, src, max_seconds, streaming, encode_batch, desc)
            index.parent.mkdir(exist_ok=True)
            tmp = index.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
            os.replace(tmp, index)
        for r in rows:
            ids = tok.encode(r["text"])
            feats = CachedFeatures(cache.path(r["key"]))
            repeats = sum(x == y for x, y in zip(ids, ids[1:]))
            if not ids or len(ids) + 1 > L or len(ids) + repeats > conv_out_len(feats.shape[0], strides):
                skipped += 1
                continue
            out.append(Example(feats, ids, src["lang"]))
    if not out:
        raise DataError(f"data.hf: no usable clips in {len(sources)} source(s)")
    hours = sum(e.feats.shape[0] for e in out) / FRAMES_PER_SECOND / 3600
    print(f"{desc}: {len(out)} examples ({skipped} skipped: too long for the canvas or for CTC), {hours:.2f} h")
    return out


def _stream_source(
    model, cache, src: dict, max_seconds: float, streaming: bool, encode_batch: int, desc: str
) -> list[dict]:
    """Stream one source, encode what is not cached yet (in batches), return [{key, text}]."""
    from tqdm import tqdm

    from ..audio import SAMPLE_RATE, load_audio

    ds, col = _rows(src, streaming)
    budget = float(src.get("max_hours", 0)) * 3600 or float("inf")
    seconds, rows, pending = 0.0, [], []

    def flush():
        for i in range(0, len(pending), encode_batch):  # batched: the HF encoder pads every clip to 30 s anyway
            chunk = pending[i : i + encode_batch]
            for (k, _), f in zip(chunk, model.encode([a for _, a in chunk])):
                _store(cache.path(k), f)
        pending.clear()

    for row in tqdm(ds, desc=f"{desc} {src['corpus']}/{src['lang']}", unit="utt", mininterval=5):
        if seconds >= budget:
            break
        text = (row[col] or "").strip()
        text = text.lower() if src.get("lowercase") else text
        a = row["audio"]
        data = a.get("bytes") or (Path(a["path"]).read_bytes() if a.get("path") else b"")
        try:
            audio = load_audio(data)
        except Exception:  # an undecodable clip is left out, not fatal
            continue
        if not text or audio.size > max_seconds * SAMPLE_RATE:
            continue
        key = hashlib.sha1(data).hexdigest()
        seconds += audio.size / SAMPLE_RATE
        rows.append({"key": key, "text": text})
        if not cache.path(key).is_file():
            pending.append((key, audio))
            if len(pending) >= 4 * encode_batch:
                flush()
    flush()
    return rows


class CachedFeatures:
    """Encoder features (frames, d) that stay on disk until used: hundreds of hours of whisper-small
    features (~0.28 GB per hour in fp16) would not fit in each training process's memory. Offers
    what training and evaluation use of an array: `.shape`, `.astype`, `np.asarray`."""

    def __init__(self, path: Path):
        self.path = path
        with open(path, "rb") as f:  # the .npy header only
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            self.shape, _, self.dtype = read(f)

    def load(self) -> np.ndarray:
        return np.load(self.path)

    def astype(self, dtype) -> np.ndarray:
        return self.load().astype(dtype)

    def __array__(self, dtype=None, copy=None):
        a = self.load()
        return a if dtype is None else a.astype(dtype)


def _store(path: Path, feats: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, feats.astype(np.float16))
    os.replace(tmp, path)  # atomic: processes sharing the cache never read half a file


if __name__ == "__main__":  # python -m diffasr.training.pretrained count configs/gemma-26b.toml
    import sys

    from .config import load_config

    if len(sys.argv) != 3 or sys.argv[1] != "count":
        sys.exit("usage: python -m diffasr.training.pretrained count CONFIG.toml")
    n = count_parameters(load_config(sys.argv[2]))
    print(json.dumps(n | {"trainable_share_%": round(100 * n["trainable"] / n["total"], 3)}))
