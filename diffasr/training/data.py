"""Training data: the frozen-encoder feature cache, examples, length-bucketed batches, padding.

Manifests are read by diffasr/pipeline/manifest.py (shared with `diffasr eval`).

Features are computed once per (audio content, encoder settings) and stored as fp16 .npy files under
`<cache>/<encoder key>/<sha1[:2]>/<sha1>.npy`; every later epoch and run reuses them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..decoding.canvas import clean_canvas, round_up
from ..errors import DataError
from ..models.encoder import FRAMES_PER_SECOND
from ..models.projector import conv_out_len
from ..pipeline.manifest import Utterance, read_manifest


class FeatureCache:
    """fp16 encoder features on disk, keyed by audio content hash and encoder settings."""

    def __init__(self, root: str | Path, encoder):
        self.encoder = encoder
        self.dir = Path(root) / encoder.cache_key
        self.dir.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def key(audio_path: Path) -> str:
        return hashlib.sha1(Path(audio_path).read_bytes()).hexdigest()

    def path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.npy"

    def get(self, audio_path: Path) -> np.ndarray:
        """(frames, d) float16 features of a file, computing and storing them on a miss."""
        p = self.path(self.key(audio_path))
        if p.is_file():
            return np.load(p)
        feats = self.encoder.encode([load_audio(audio_path)])[0].astype(np.float16)
        p.parent.mkdir(exist_ok=True)
        tmp = p.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, p)
        return feats

    def build(self, utts: list[Utterance], desc: str = "features") -> list[np.ndarray]:
        from tqdm import tqdm

        out = []
        for u in tqdm(utts, desc=desc, unit="utt", mininterval=2.0):
            out.append(self.get(u.audio))
        return out


@dataclass
class Example:
    feats: np.ndarray  # (frames, d) float16
    ids: list[int]  # transcript token ids (no EOS)
    lang: str


def bucket_batches(lengths: list[int], max_frames: int, max_batch: int, rng: np.random.Generator) -> list[list[int]]:
    """Group indices of similar length: sort by length with jitter, cut batches whose padded size
    (batch × longest) stays under `max_frames`, then shuffle the batch order."""
    order = np.argsort(np.asarray(lengths) + rng.uniform(0, 0.15 * max(lengths), len(lengths)))
    batches, cur, longest = [], [], 0
    for i in order:
        l = lengths[i]
        if cur and (max(longest, l) * (len(cur) + 1) > max_frames or len(cur) >= max_batch):
            batches.append(cur)
            cur, longest = [], 0
        cur.append(int(i))
        longest = max(longest, l)
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def build_examples(
    model, manifests: list, cache_dir: Path, max_seconds: float, limit: int | None = None, desc: str = "features"
) -> list[Example]:
    """Manifest rows -> Examples with cached features; drops what cannot be trained on (too long for
    the canvas, or fewer audio tokens than CTC needs)."""
    utts = [u for m in manifests for u in read_manifest(m)]
    utts = [u for u in utts if not u.duration or u.duration <= max_seconds]
    if limit:
        utts = utts[:limit]
    cache = FeatureCache(cache_dir, model.encoder)
    feats = cache.build(utts, desc=desc)
    tok, strides = model.tokenizer, model.config.projector["strides"]
    out, dropped = [], 0
    for u, f in zip(utts, feats):
        ids = tok.encode(u.text)
        n_tok = conv_out_len(f.shape[0], strides)
        repeats = sum(a == b for a, b in zip(ids, ids[1:]))
        if not ids or len(ids) + 1 > model.config.canvas_length or len(ids) + repeats > n_tok:
            dropped += 1
            continue
        out.append(Example(f, ids, u.lang))
    if not out:
        raise DataError(f"no usable examples in {', '.join(map(str, manifests))}")
    print(
        f"{desc}: {len(out)} examples ({dropped} dropped), {sum(e.feats.shape[0] for e in out) / FRAMES_PER_SECOND / 3600:.2f} h"
    )
    return out


def collate(examples: list[Example], tok, canvas_extra: int, lang_drop: float, rng: np.random.Generator):
    """Pad a batch. Returns feats (B, T, d) f32, feat_lens (B,), canvas x0 (B, L), token lists, languages."""
    B, T = len(examples), max(e.feats.shape[0] for e in examples)
    feats = torch.zeros(B, T, examples[0].feats.shape[1])
    for i, e in enumerate(examples):
        feats[i, : e.feats.shape[0]] = torch.from_numpy(e.feats.astype(np.float32))
    lens = torch.tensor([e.feats.shape[0] for e in examples])
    longest = max(len(e.ids) for e in examples) + 1
    L = round_up(longest + canvas_extra)
    x0 = clean_canvas([e.ids for e in examples], L, tok.eos, tok.pad)
    langs = [None if rng.random() < lang_drop else e.lang for e in examples]
    return feats, lens, x0, [e.ids for e in examples], langs


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-style masking on encoder features: 2 time masks (≤ 5% each) and 2 channel masks."""
    B, T, D = feats.shape
    feats = feats.clone()
    for i in range(B):
        n = int(lens[i])
        for _ in range(2):
            w = int(torch.randint(0, max(1, n // 20) + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, n - w), (1,), generator=gen))
            feats[i, s : s + w] = 0
            c = int(torch.randint(0, D // 16 + 1, (1,), generator=gen))
            cs = int(torch.randint(0, D - c, (1,), generator=gen))
            feats[i, :, cs : cs + c] = 0
    return feats
