"""DiffusionASR = frozen Whisper encoder + projector (+ CTC head) + a decoder backend + tokenizer.

The backend (decoding/backend.py) is the DiffusionGemma backbone the model holds (`small`) or, for a
`base` checkpoint (`load_base`), Whisper-base's adapted decoder (decoding/whisper.py).

Also the checkpoint format. A checkpoint is a directory that describes itself:
  config.json        every dimension, the preset, token ids, canvas length, encoder and tokenizer
  model.safetensors  trained weights: projector + backbone (from-scratch presets) or
                     projector + LoRA (frozen-backbone presets); no pickle anywhere
  tokenizer.json     (or the Gemma tokenizer files)
  lm/<lang>.npz      optional token n-grams for the CTC beam search (decoding/ngram.py; `ngram` in config.json)
The model holds no sampling loop (decoding/) and no file or batching logic (pipeline/transcribe.py); decoding
reads it through `project`, `ctc`, `prefill` (-> PromptState) and `denoise(state, canvas)`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .decoding.backend import Backend, DiffusionGemmaBackend
from .decoding.ngram import NgramModels
from .decoding.options import RELEASED, VERIFIERS
from .decoding.whisper import WhisperBackend
from .errors import ModelError
from .models.backbone import Backbone, make_config
from .models.config import CTC_SOURCES, FORMAT_VERSION, PRESETS, ModelConfig
from .models.encoder import WhisperEncoder, build_encoder
from .models.projector import Projector
from .models.tokenizer import GemmaTokenizer, Tokenizer, load_tokenizer, save_json


class PromptState(NamedTuple):
    """What `prefill` leaves for the denoiser: the backbone's KV cache over the prompt, the prompt
    mask (B, P) and the prompt encoder's last hidden states (B, P, h)."""

    cache: object
    mask: torch.Tensor
    hidden: torch.Tensor | None

    def rows(self, rows: torch.Tensor) -> PromptState:
        """The state of `rows` (B',) of this batch (repeats allowed), on a copy of the cache."""
        cache = copy.deepcopy(self.cache)
        cache.reorder_cache(rows)
        return PromptState(cache, self.mask[rows], None if self.hidden is None else self.hidden[rows])


def token_ids(tok: Tokenizer) -> dict:
    return dict(pad=tok.pad, eos=tok.eos, bos=tok.bos, sep=tok.sep, audio=tok.audio, vocab_size=tok.vocab_size)


class DiffusionASR(nn.Module):
    """The recogniser. Trainable parts are `projector` and `backbone`; the encoder is frozen and
    lives outside autograd (CTranslate2 or a no-grad transformers module)."""

    def __init__(self, config: ModelConfig, tokenizer: Tokenizer, gemma=None, encoder: WhisperEncoder | None = None):
        super().__init__()
        from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion

        self.config, self.tokenizer = config, tokenizer
        if config.ctc_from not in CTC_SOURCES:
            raise ModelError(f"ctc_from must be one of {', '.join(CTC_SOURCES)}, not {config.ctc_from!r}")
        if gemma is None:
            if config.lm_config is None:
                raise ModelError("config has no backbone config (lm_config)")
            gemma = DiffusionGemmaForBlockDiffusion(DiffusionGemmaConfig(**copy.deepcopy(config.lm_config)))
        self.backbone = Backbone(gemma)
        h = self.backbone.hidden_size
        self.projector = Projector(config.encoder["dim"], config.projector["hidden"], h, config.projector["strides"])
        self._encoder = encoder
        self.ngrams = NgramModels(None)  # per-language n-grams for CTC beam search; load() finds lm/
        # what runs the denoising methods: the backbone above, unless a base checkpoint sets another
        self.backend: Backend = DiffusionGemmaBackend()

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_preset(cls, preset: str, tokenizer: Tokenizer | None = None, gemma=None, **overrides) -> DiffusionASR:
        """A fresh (untrained) model. `small`/`tiny` need a tokenizer (train one with
        BPETokenizer.train); `gemma-26b` loads the frozen backbone + tokenizer (local dir or Hub)
        unless `gemma`/`tokenizer` are given (tests pass a tiny random backbone of the same structure)."""
        if preset not in PRESETS:
            raise ModelError(f"unknown preset {preset!r} (choose from {', '.join(PRESETS)})")
        p = copy.deepcopy(PRESETS[preset])
        for k, v in overrides.items():
            p[k] = v
        bb = p["backbone"]
        if bb["source"] == "pretrained" and gemma is None:
            from transformers import DiffusionGemmaForBlockDiffusion

            try:
                gemma = DiffusionGemmaForBlockDiffusion.from_pretrained(bb["name"], dtype=torch.bfloat16)
            except Exception as e:
                raise ModelError(f"cannot load backbone {bb['name']!r}: {e}") from None
        if tokenizer is None:
            if bb["source"] != "pretrained":
                raise ModelError(f"preset {preset!r} needs a tokenizer (BPETokenizer.train on the corpus text)")
            tokenizer = GemmaTokenizer.from_pretrained(bb["name"], p["gemma_ids"])
        if gemma is None:
            dims = dict(bb["dims"])
            gemma = _scratch_gemma(dims, p["canvas_length"], token_ids(tokenizer))
        cfg = ModelConfig(
            preset=preset,
            encoder=dataclasses.asdict(p["encoder"]),
            projector=dict(p["projector"]),
            backbone=bb,
            canvas_length=p["canvas_length"],
            tokenizer={"kind": tokenizer.kind},
            tokens=token_ids(tokenizer),
            lm_config=gemma.config.to_dict() if bb["source"] == "scratch" else None,
        )
        cfg.projector["strides"] = list(cfg.projector["strides"])
        model = cls(cfg, tokenizer, gemma=gemma)
        if bb.get("lora"):
            model.add_lora(bb["lora"])
        return model

    def add_lora(self, lora: dict) -> None:
        """Freeze the backbone and add LoRA to the decoder's attention projections, shared with the
        encoder (the two are one weight-tied stack, so they get one adapter, not two)."""
        from peft import LoraConfig, inject_adapter_in_model

        lm = self.backbone.lm
        for p in lm.parameters():
            p.requires_grad_(False)
        targets = "|".join(lora["targets"])
        cfg = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=lora.get("dropout", 0.0),
            target_modules=rf".*model\.decoder\.layers\.\d+\.self_attn\.({targets})",
        )
        inject_adapter_in_model(cfg, lm)
        enc_layers = lm.model.encoder.language_model.layers
        for enc, dec in zip(enc_layers, lm.model.decoder.layers):
            for name in lora["targets"]:
                if hasattr(dec.self_attn, name):
                    setattr(enc.self_attn, name, getattr(dec.self_attn, name))

    # ------------------------------------------------------------------ stages

    @property
    def encoder(self) -> WhisperEncoder:
        """The frozen encoder, built on first use (or the one assigned, e.g. with other threads)."""
        if self._encoder is None:
            self._encoder = build_encoder(self.config.encoder_spec, device=str(self.device))
        return self._encoder

    @encoder.setter
    def encoder(self, encoder: WhisperEncoder) -> None:
        self._encoder = encoder

    @property
    def device(self) -> torch.device:
        return next(self.projector.parameters()).device

    def encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Frozen encoder: 16 kHz arrays -> list of (frames_i, d) float32."""
        return self.encoder.encode(audios)

    def encode_window(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Frozen encoder over Whisper's 30-s padded window: list of (1500, d) float32 (the base
        preset's `whisper` and `ensemble` verifiers read these; the CT2 encoder only)."""
        if not hasattr(self.encoder, "encode_window"):
            raise ModelError("the whisper and ensemble verifiers need the CTranslate2 Whisper-base encoder")
        return self.encoder.encode_window(audios)

    def project(self, feats: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features (list of (T_i, d)) -> audio tokens (B, T', h) and valid lengths (B,)."""
        lens = torch.tensor([f.shape[0] for f in feats], device=self.device)
        x = torch.zeros(len(feats), int(lens.max()), self.config.encoder["dim"], device=self.device)
        for i, f in enumerate(feats):
            x[i, : f.shape[0]] = torch.as_tensor(np.asarray(f, dtype=np.float32), device=self.device)
        return self.projector(x, lens)

    def prompt(self, n_audio: torch.Tensor, languages: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt ids (B, P) and mask (B, P) for n_audio[i] audio slots each."""
        rows = [self.tokenizer.prompt_ids(int(n), lang) for n, lang in zip(n_audio.tolist(), languages)]
        P = max(len(r) for r in rows)
        ids = torch.full((len(rows), P), self.tokenizer.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), P), dtype=torch.bool)
        for i, r in enumerate(rows):
            ids[i, P - len(r) :] = torch.tensor(r)
            mask[i, P - len(r) :] = True
        return ids.to(self.device), mask.to(self.device)

    def prefill(self, audio_tokens: torch.Tensor, n_audio: torch.Tensor, languages: list) -> PromptState:
        """Prompt with audio (B, T', h) of lengths n_audio (B,) and each row's language (None: not
        given) -> PromptState (KV cache, prompt mask (B, P), encoder hidden (B, P, h))."""
        ids, mask = self.prompt(n_audio, languages)
        valid = torch.arange(audio_tokens.shape[1], device=self.device)[None] < n_audio[:, None]
        emb = self.backbone.embed_prompt(ids, self.tokenizer.audio, audio_tokens, valid)
        cache, hidden = self.backbone.prefill(emb, mask)
        return PromptState(cache, mask, hidden)

    def denoise(self, state: PromptState, canvas: torch.Tensor, sc_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Denoiser logits (B, L, V), softcapped fp32, for a canvas (B, L) of token ids after the
        prompt `state`, optionally self-conditioned on the previous step's logits (B, L, V)."""
        return self.backbone.denoise(state.cache, state.mask, canvas, sc_logits)

    def ctc_logits(self, audio_tokens: torch.Tensor) -> torch.Tensor:
        """Per-audio-token vocabulary logits (B, T', V) through the tied lm_head (blank = pad id)."""
        return self.backbone.token_logits(audio_tokens)

    def prompt_ctc_logits(self, hidden: torch.Tensor, n_audio: torch.Tensor) -> torch.Tensor:
        """Vocabulary logits (B, T', V) of the prompt encoder's (normed) states at the audio slots.

        hidden (B, P, h) from `prefill`. Every prompt layout ends `audio × n_i, sep` and is left-padded,
        so row i's audio sits at P-1-n_i .. P-2; positions past n_i are clamped (CTC masks them).
        """
        B, P, h = hidden.shape
        T = int(n_audio.max())
        idx = ((P - 1 - n_audio)[:, None] + torch.arange(T, device=hidden.device)[None]).clamp(max=P - 1)
        states = hidden.gather(1, idx[..., None].expand(B, T, h))
        return self.backbone.head(states)

    def ctc(self, audio_tokens: torch.Tensor, n_audio: torch.Tensor, languages: list):
        """CTC logits (B, T', V) from where this model's head reads, and the prefill
        (cache, mask, hidden) when computing them needed it (`ctc_from="prompt"`), else None."""
        if self.config.ctc_from == "prompt":
            pre = self.prefill(audio_tokens, n_audio, languages)
            return self.prompt_ctc_logits(pre[2], n_audio), pre
        return self.ctc_logits(audio_tokens), None

    # ------------------------------------------------------------------ checkpoints

    def save(self, directory: str | Path, dtype: torch.dtype | None = None, training: dict | None = None) -> Path:
        """Write a self-describing checkpoint directory (atomic per file)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cfg = dataclasses.asdict(self.config)
        cfg["tokenizer"] = self.tokenizer.save(d)
        if training is not None:
            cfg["training"] = training
        tensors = self.trainable_state_dict()
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        tmp = d / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"format": "pt"})
        tmp.replace(d / "model.safetensors")
        if self.ngrams.directory is not None and self.ngrams.languages() and self.ngrams.directory != d / "lm":
            shutil.copytree(self.ngrams.directory, d / "lm", dirs_exist_ok=True)
        elif not (d / "lm").is_dir():
            cfg["ngram"] = None  # the files it describes did not come along
        save_json(d / "config.json", cfg)
        return d

    def trainable_state_dict(self) -> dict:
        """projector.* plus either every backbone tensor (scratch; tied tensors stored once) or LoRA only."""
        sd = {f"projector.{k}": v.detach() for k, v in self.projector.state_dict().items()}
        lm_sd = self.backbone.lm.state_dict()
        if self.config.backbone["source"] == "pretrained":
            lm_sd = {k: v for k, v in lm_sd.items() if "lora_" in k and ".encoder." not in k}
        seen = {}
        for k, v in lm_sd.items():
            key = (v.data_ptr(), tuple(v.shape))
            if key in seen:  # tied: store once under its first name
                continue
            seen[key] = k
            sd[f"lm.{k}"] = v.detach()
        return sd

    @classmethod
    def load(
        cls, directory: str | Path, device: str = "cpu", gemma=None, dtype: torch.dtype = torch.float32
    ) -> DiffusionASR:
        """A checkpoint directory -> the model in eval mode. Anything wrong with the directory (missing
        or unreadable files, bad JSON, missing fields, tensors of the wrong shape) is one ModelError."""
        from safetensors import SafetensorError

        d = Path(directory)
        try:
            return cls._load(d, device, gemma, dtype)
        except ModelError:
            raise
        except (OSError, ValueError, TypeError, KeyError, AttributeError, RuntimeError, SafetensorError) as e:
            detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
            if isinstance(e, FileNotFoundError) and e.filename:
                detail = f"missing {Path(e.filename).name}"
            elif isinstance(e, RuntimeError) and "size mismatch" in str(e):
                detail = next(l.strip() for l in str(e).splitlines() if "size mismatch" in l)
            raise ModelError(f"{d}: not a valid diffasr checkpoint ({type(e).__name__}: {detail[:300]})") from None

    @classmethod
    def _load(cls, d: Path, device: str, gemma, dtype: torch.dtype) -> DiffusionASR:
        from safetensors.torch import load_file

        if not (d / "config.json").is_file():
            raise ModelError(f"{d}: not a diffasr checkpoint (no config.json)")
        text = (d / "config.json").read_text(encoding="utf-8")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelError(
                f"{d}: config.json is {'empty' if not text.strip() else f'not valid JSON ({e})'}"
            ) from None
        if not isinstance(raw, dict):
            raise ModelError(f"{d}: config.json must hold a JSON object, not {type(raw).__name__}")
        if not isinstance(raw.get("format_version", 0), int) or raw.get("format_version", 0) > FORMAT_VERSION:
            raise ModelError(f"{d}: checkpoint format {raw['format_version']!r} is not one this diffasr reads")
        required = [
            f.name
            for f in dataclasses.fields(ModelConfig)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [k for k in required if k not in raw]
        if missing:
            raise ModelError(f"{d}: config.json lacks {', '.join(missing)}")
        for key in ("encoder", "projector", "backbone", "tokenizer", "tokens"):
            if not isinstance(raw[key], dict):
                raise ModelError(f"{d}: config.json field {key!r} must be an object, not {type(raw[key]).__name__}")
        cfg = ModelConfig(**{k: v for k, v in raw.items() if k in ModelConfig.__dataclass_fields__})
        if not (d / "model.safetensors").is_file():
            raise ModelError(f"{d}: checkpoint lacks model.safetensors")
        tok = load_tokenizer(d, cfg.tokenizer)
        if cfg.backbone["source"] == "pretrained" and gemma is None:
            from transformers import DiffusionGemmaForBlockDiffusion

            try:
                gemma = DiffusionGemmaForBlockDiffusion.from_pretrained(cfg.backbone["name"], dtype=torch.bfloat16)
            except Exception as e:
                raise ModelError(f"cannot load backbone {cfg.backbone['name']!r}: {e}") from None
        model = cls(cfg, tok, gemma=gemma)
        if cfg.backbone.get("lora"):
            model.add_lora(cfg.backbone["lora"])
            for p in model.parameters():  # LoRA is created in the (bf16) backbone's dtype: load it exactly
                if p.requires_grad:
                    p.data = p.data.float()
        tensors = load_file(str(d / "model.safetensors"))
        proj = {k[len("projector.") :]: v for k, v in tensors.items() if k.startswith("projector.")}
        model.projector.load_state_dict(proj)
        lm_sd = {k[len("lm.") :]: v for k, v in tensors.items() if k.startswith("lm.")}
        missing, unexpected = model.backbone.lm.load_state_dict(lm_sd, strict=False)
        if unexpected:
            raise ModelError(f"{d}: checkpoint has tensors the model lacks: {unexpected[:3]}")
        if cfg.backbone["source"] == "scratch":
            # Tied tensors are stored once; everything else must be present.
            lm_params = dict(model.backbone.lm.named_parameters())
            really_missing = [k for k in missing if k in lm_params and not _is_tied(model.backbone.lm, k, lm_sd)]
            if really_missing:
                raise ModelError(f"{d}: checkpoint lacks tensors: {really_missing[:3]}")
        model.ngrams = NgramModels(d / "lm")
        model.to(device=device, dtype=dtype)
        return model.eval()


def _scratch_gemma(dims: dict, canvas_length: int, tokens: dict):
    from transformers import DiffusionGemmaForBlockDiffusion

    return DiffusionGemmaForBlockDiffusion(make_config(dims, canvas_length, tokens))


def _is_tied(lm, name: str, loaded: dict) -> bool:
    """True if parameter `name` shares storage with a parameter that was loaded."""
    params = dict(lm.named_parameters(remove_duplicate=False))
    ptr = params[name].data_ptr()
    return any(k in params and params[k].data_ptr() == ptr for k in loaded)


def load_base(directory: str | Path, device: str = "cpu") -> DiffusionASR:
    """A `base` checkpoint: the CTC model it names (`ctc_model`: a shipped name or a directory)
    plus Whisper-base's decoder with the trained denoiser part (denoiser.safetensors, vocab)."""
    from .models.whisper_denoiser import VOCAB_FILE, WEIGHTS_FILE, DenoiserConfig, WhisperDenoiser

    d = Path(directory)
    try:
        raw = json.loads((d / "config.json").read_text())
        ctc_name, settings = raw["ctc_model"], raw["denoiser"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{d}: not a readable base checkpoint config ({e})") from None
    assets = Path(__file__).parent / "assets"
    ctc_dir = d / ctc_name if (d / ctc_name / "config.json").is_file() else assets / ctc_name
    model = DiffusionASR.load(ctc_dir, device=device)
    den = WhisperDenoiser(DenoiserConfig.from_dict(settings))
    den.load_trained(d / WEIGHTS_FILE)
    den.load_vocab(d / VOCAB_FILE)
    if den.config.tokenizer == "as-shipped":
        # Whisper's released decoder (the `whisper` verifier) writes " the", " tiene", …: tokens the
        # file as shipped cannot make, so vocabularies made with it lack them.
        den.vocab = {
            lang: torch.unique(torch.cat([v, torch.tensor(den.tokens.merged_forms(v.tolist()), dtype=v.dtype)]))
            for lang, v in den.vocab.items()
        }
    if "zh" in den.vocab:
        # Whisper writes traditional characters as often as simplified ones; a vocabulary made from
        # simplified text forces the released verifier onto a wrong simplified one (坏 for 換).
        # Every Han token is allowed, and Chinese transcripts are written simplified (decoding.whisper).
        han = torch.tensor(den.tokens.han_tokens(), dtype=den.vocab["zh"].dtype)
        den.vocab["zh"] = torch.unique(torch.cat([den.vocab["zh"], han]))
    by_language = raw.get("verifier_by_language", {})
    if not isinstance(by_language, dict) or any(v not in VERIFIERS[1:] for v in by_language.values()):
        raise ModelError(
            f"{d}: verifier_by_language must map languages to one of {', '.join(VERIFIERS[1:])}, not {by_language!r}"
        )
    den.verifier_by_language = dict(by_language)
    trained = raw.get("languages", list(by_language))
    den = den.merge_adapters().to(device).eval()
    model.backend = WhisperBackend(den)
    if set(RELEASED) & set(by_language.values()):
        den.released()  # built now (~0.5 s), not inside the first transcription that needs it
    model.config = dataclasses.replace(
        model.config,
        preset="base",
        decode_defaults=raw.get("decode_defaults", {}),
        training=raw.get("training", {}),
        # the languages it was trained on (`languages`, else those it has a verifier choice for), not
        # every language its vocabulary file covers
        languages=[lang for lang in model.config.languages if lang in den.vocab and lang in trained],
    )
    return model
