"""Training data: manifests, the frozen-encoder feature cache, HF datasets, and length-bucketed batches.

A manifest is JSON lines in the real_dev format: `audio` (relative to the manifest's folder), `text`,
`lang`, optional `duration_s`, `subset`, `split`. Any local audiofolder can be turned into one.

Features are computed once per (audio content, encoder settings) and stored as fp16 .npy files under
`<cache>/<encoder key>/<sha1[:2]>/<sha1>.npy`; every later epoch and run reuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import load_audio
from ..errors import DataError

# Published training mix (Hub ids; need network + `datasets`): name -> (hub id, config per lang, text column)
HF_DATASETS = {
    "librispeech": ("openslr/librispeech_asr", {"en": "clean"}, "text"),
    "fleurs": ("google/fleurs", {"en": "en_us", "de": "de_de", "fr": "fr_fr", "es": "es_419", "hi": "hi_in", "zh": "cmn_hans_cn"}, "transcription"),
    "voxpopuli": ("facebook/voxpopuli", {"en": "en", "de": "de", "fr": "fr", "es": "es"}, "normalized_text"),
    "common_voice": ("mozilla-foundation/common_voice_17_0", {"en": "en", "de": "de", "fr": "fr", "es": "es", "hi": "hi", "zh": "zh-CN"}, "sentence"),
}


@dataclass
class Utterance:
    audio: Path
    text: str
    lang: str
    duration: float = 0.0
    subset: str | None = None  # reported as its own row by `diffasr eval`


def read_manifest(path: str | Path) -> list[Utterance]:
    """Parse a JSON-lines manifest (training, evaluation and benchmarks all read it here).

    Any problem raises DataError naming the file and line: bad JSON, a missing field, a language
    the models do not support, or an audio file that does not exist.
    """
    from ..tokenizer import LANGUAGES

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read manifest ({e})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(r, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(r).__name__}")
        for key in ("audio", "text", "lang"):
            if not isinstance(r.get(key), str) or (key != "text" and not r[key]):
                raise DataError(f"{where}: missing or non-string {key!r} field")
        if r["lang"] not in LANGUAGES:
            raise DataError(f"{where}: unsupported lang {r['lang']!r} (choose from {', '.join(LANGUAGES)})")
        audio = path.parent / r["audio"]
        if not audio.is_file():
            raise DataError(f"{where}: audio file {audio} not found")
        subset = r.get("subset")
        rows.append(Utterance(audio, r["text"], r["lang"], float(r.get("duration_s") or 0), str(subset) if subset else None))
    if not rows:
        raise DataError(f"{path}: manifest holds no clips")
    return rows


def audiofolder_manifest(folder: str | Path, lang: str, out: str | Path | None = None) -> Path:
    """Turn an audiofolder (audio files + metadata.csv/.jsonl with file_name,transcription|text) into a manifest."""
    import csv

    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    rows = []
    if meta.is_file():
        rows = [json.loads(l) for l in meta.read_text(encoding="utf-8").splitlines() if l.strip()]
    elif (folder / "metadata.csv").is_file():
        with open(folder / "metadata.csv", newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    else:
        raise DataError(f"{folder}: no metadata.jsonl or metadata.csv")
    out = Path(out or folder / "manifest.jsonl")
    lines = []
    for i, r in enumerate(rows, 1):
        text = r.get("transcription") or r.get("text") or r.get("sentence")
        if not r.get("file_name") or text is None:
            raise DataError(f"{folder}: metadata row {i} lacks file_name or transcription/text")
        lines.append(json.dumps({"audio": os.path.relpath(folder / r["file_name"], out.parent), "text": text,
                                 "lang": r.get("lang", lang)}, ensure_ascii=False))
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def hf_utterances(name: str, lang: str, split: str = "train", limit: int | None = None, streaming: bool = True):
    """Yield (audio array 16 kHz, text, lang) from one of HF_DATASETS (needs network access) or from a
    local dataset directory / `audiofolder` path. Audio is decoded by diffasr itself (no torchcodec)."""
    import datasets

    if name in HF_DATASETS:
        hub, configs, col = HF_DATASETS[name]
        if lang not in configs:
            raise DataError(f"{name} has no {lang} subset")
        ds = datasets.load_dataset(hub, configs[lang], split=split, streaming=streaming)
    else:  # local audiofolder
        ds = datasets.load_dataset("audiofolder", data_dir=name, split=split)
        col = next((c for c in ("transcription", "text", "sentence") if c in ds.column_names), None)
        if col is None:
            raise DataError(f"{name}: no transcription/text/sentence column")
    ds = ds.cast_column("audio", datasets.Audio(decode=False))
    for i, ex in enumerate(ds):
        if limit is not None and i >= limit:
            break
        a = ex["audio"]
        src = a.get("bytes") or a.get("path")
        yield load_audio(src), ex[col], lang


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
