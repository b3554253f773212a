"""What a model is made of, before any weights: the presets and ModelConfig, the schema of config.json.

`DIMS` are the from-scratch backbone sizes, `PRESETS` the parts of each preset (encoder, projector,
backbone, canvas length), `ModelConfig` everything needed to rebuild a model (DiffusionASR in
diffasr/model.py builds it and reads and writes the checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..text import LANGUAGES
from .encoder import EncoderSpec

FORMAT_VERSION = 1
CTC_SOURCES = ("projector", "prompt")  # where a model's CTC head reads (ModelConfig.ctc_from)

# Backbone sizes. `small` is sized for a 2-core CPU (see docs/diffusiongemma.md §4 timings);
# `tiny` exists for tests; `gemma-26b` loads google/diffusiongemma-26B-A4B-it and trains LoRA.
DIMS = {
    "small": dict(
        hidden=256,
        layers=6,
        heads=4,
        kv_heads=2,
        head_dim=64,
        intermediate=1024,
        experts=1,
        top_k=1,
        moe_intermediate=16,
        sliding_window=1024,
    ),
    "tiny": dict(
        hidden=64,
        layers=2,
        heads=2,
        kv_heads=1,
        head_dim=32,
        intermediate=128,
        experts=1,
        top_k=1,
        moe_intermediate=16,
        sliding_window=1024,
    ),
}
PRESETS = {
    "small": dict(
        encoder=EncoderSpec(),
        projector=dict(hidden=512, strides=(2, 2, 1)),
        backbone=dict(source="scratch", dims=DIMS["small"]),
        canvas_length=192,
    ),
    "tiny": dict(
        encoder=EncoderSpec(),
        projector=dict(hidden=64, strides=(2, 2, 1)),
        backbone=dict(source="scratch", dims=DIMS["tiny"]),
        canvas_length=64,
    ),
    "gemma-26b": dict(
        encoder=EncoderSpec(backend="hf", name="openai/whisper-small", dim=768, pad_to_30s=True),
        projector=dict(hidden=1280, strides=(2, 2, 2)),
        backbone=dict(
            source="pretrained",
            name="google/diffusiongemma-26B-A4B-it",
            lora=dict(r=32, alpha=64, dropout=0.05, targets=["q_proj", "k_proj", "v_proj", "o_proj"]),
        ),  # 39.4 M trained (recipe.py)
        canvas_length=192,
        # Gemma 4 special ids (reference config): begin/placeholder/end of audio.
        gemma_ids=dict(pad=0, eos=1, bos=2, boa=256000, audio=258881, eoa=258883, vocab_size=262144),
    ),
}


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored as config.json."""

    preset: str
    encoder: dict
    projector: dict  # hidden, strides
    backbone: dict  # source: scratch (dims) | pretrained (name, lora); resolved DiffusionGemma config in `lm_config`
    canvas_length: int  # largest canvas the decoder was trained for
    tokenizer: dict  # kind, files, text_form, vocab_size (and ids for gemma)
    tokens: dict  # pad (= CTC blank), eos, bos, sep, audio, vocab_size
    languages: list = field(default_factory=lambda: list(LANGUAGES))
    lm_config: dict | None = None  # DiffusionGemmaConfig.to_dict() for scratch backbones
    training: dict = field(default_factory=dict)  # provenance: data hours, steps, wall time, recipe
    decode_defaults: dict = field(default_factory=dict)  # DecodeOptions fields this model is best used with
    # Where the CTC head reads: "projector" (published: lm_head over the projector's audio tokens) or
    # "prompt" (lm_head over the prompt encoder's states at the audio slots: six causal layers deeper,
    # language-aware, and free at inference because the prefill runs anyway).
    ctc_from: str = "projector"
    # The n-grams in lm/ (order, pruning, text they were counted on), written by scripts/build_lm.py.
    ngram: dict | None = None
    format_version: int = FORMAT_VERSION

    @property
    def encoder_spec(self) -> EncoderSpec:
        return EncoderSpec(**{k: v for k, v in self.encoder.items() if k in EncoderSpec.__dataclass_fields__})
