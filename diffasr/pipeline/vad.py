"""Voice activity: Silero VAD (the ONNX model shipped inside faster-whisper) -> speech chunks ≤ 30 s.

Three steps, each a small function:
  speech probabilities  `SileroVAD` scores 32-ms windows; it is streaming (state and context carry
                        across calls), so a long file can be scored block by block.
  speech regions        `speech_regions` turns probabilities into (start, end) spans with hysteresis;
                        a region needs ≥ 64 ms of consecutive speech (white noise trips single windows).
  chunks                `chunk_regions` merges neighbouring regions across short pauses into chunks of
                        ≤ 30 s, always cuts at pauses ≥ `split_pause_s` (so sentences become their own
                        segments) and pads each chunk with a little context.

Long files never sit in memory whole: `scan_file` streams the decode once for the probabilities
(one float per 32 ms), and `read_chunks` streams it again, cutting each chunk's samples out of a
buffer of at most one block plus one chunk. No overlap between blocks is needed because the VAD
state carries across them and a chunk that straddles two blocks is assembled from the buffer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..audio import MAX_SAMPLES, SAMPLE_RATE
from ..errors import AudioError

WINDOW = 512  # samples per VAD decision (32 ms at 16 kHz)
CONTEXT = 64  # samples of the previous window that the v6 model sees with each window
BLOCK_SECONDS = 300.0  # streamed decode block: 5 minutes = 19 MB of float32


@dataclass(frozen=True)
class VadOptions:
    threshold: float = 0.5  # a window with speech probability ≥ this starts (or extends) speech
    neg_threshold: float = 0.35  # speech ends once the probability stays below this ...
    min_silence_s: float = 0.1  # ... for this long
    min_speech_s: float = 0.064  # a region needs this much consecutive speech ≥ threshold
    split_pause_s: float = 0.8  # a pause this long always ends a chunk
    max_chunk_s: float = 30.0  # the encoder's window
    pad_s: float = 0.2  # context kept each side of a chunk (halved pauses when neighbours are closer)


@dataclass(frozen=True)
class Chunk:
    """A span of the input in samples: [start, end)."""

    start: int
    end: int

    @property
    def start_s(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.end / SAMPLE_RATE


class SileroVAD:
    """Speech probability per 32-ms window; call with consecutive blocks, then once with `final=True`.

    Equivalent to faster-whisper's `SileroVADModel` on the whole signal, but streaming: the LSTM
    state (h, c), the 64-sample context and a partial window carry over between calls.
    """

    def __init__(self):
        from faster_whisper.vad import get_vad_model

        self.session = get_vad_model().session
        self.h = np.zeros((1, 1, 128), dtype=np.float32)
        self.c = np.zeros((1, 1, 128), dtype=np.float32)
        self.context = np.zeros(CONTEXT, dtype=np.float32)
        self.rest = np.zeros(0, dtype=np.float32)

    def __call__(self, audio: np.ndarray, final: bool = False) -> np.ndarray:
        x = np.concatenate([self.rest, np.asarray(audio, dtype=np.float32)])
        if final:  # zero-pad the last partial window
            x = np.pad(x, (0, -x.size % WINDOW))
        n = x.size - x.size % WINDOW
        self.rest = x[n:]
        if n == 0:
            return np.zeros(0, dtype=np.float32)
        windows = x[:n].reshape(-1, WINDOW)
        context = np.concatenate([self.context[None], windows[:-1, -CONTEXT:]])
        self.context = windows[-1, -CONTEXT:].copy()
        batch = np.concatenate([context, windows], axis=1)
        out = []
        for i in range(0, len(batch), 10000):  # the model's own batch limit in faster-whisper
            p, self.h, self.c = self.session.run(None, {"input": batch[i : i + 10000], "h": self.h, "c": self.c})
            out.append(np.asarray(p).reshape(-1))
        return np.concatenate(out)


def speech_probs(audio: np.ndarray) -> np.ndarray:
    """Speech probability of each 32-ms window of an in-memory 16 kHz signal."""
    return SileroVAD()(audio, final=True)


def speech_regions(probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions()) -> list[tuple[int, int]]:
    """(start, end) sample spans of speech, unpadded, from per-window probabilities (hysteresis)."""
    min_silence = max(1, round(opts.min_silence_s * SAMPLE_RATE / WINDOW))
    min_run = max(1, math.ceil(opts.min_speech_s * SAMPLE_RATE / WINDOW - 1e-9))
    regions, start, below, run, best = [], None, 0, 0, 0
    for i, p in enumerate(probs.tolist()):
        if start is None:
            if p >= opts.threshold:
                start, below, run, best = i, 0, 1, 1
            continue
        run = run + 1 if p >= opts.threshold else 0
        best = max(best, run)
        if p >= opts.neg_threshold:
            below = 0
            continue
        below += 1
        if below >= min_silence:
            if best >= min_run:
                regions.append((start, i - below + 1))
            start = None
    if start is not None and best >= min_run:
        regions.append((start, len(probs) - below))
    return [(s * WINDOW, min(e * WINDOW, n_samples)) for s, e in regions if s * WINDOW < n_samples]


def chunk_regions(
    regions: list[tuple[int, int]], probs: np.ndarray, n_samples: int, opts: VadOptions = VadOptions()
) -> list[Chunk]:
    """Merge speech regions into padded chunks of ≤ max_chunk_s, cutting at every long pause."""
    pad = int(opts.pad_s * SAMPLE_RATE)
    max_len = int(opts.max_chunk_s * SAMPLE_RATE) - 2 * pad  # room for the padding
    split = int(opts.split_pause_s * SAMPLE_RATE)
    pieces = []
    for s, e in regions:  # a region longer than a chunk: cut at the least speech-like window
        while e - s > max_len:
            lo, hi = (s + max_len // 2) // WINDOW, (s + max_len) // WINDOW
            cut = (lo + int(np.argmin(probs[lo:hi]))) * WINDOW if hi > lo else s + max_len
            pieces.append((s, cut))
            s = cut
        pieces.append((s, e))
    merged: list[list[int]] = []
    for s, e in pieces:
        if merged and s - merged[-1][1] < split and e - merged[-1][0] <= max_len:
            merged[-1][1] = e
        else:
            merged.append([s, e])
    chunks = []
    for i, (s, e) in enumerate(merged):
        lo = 0 if i == 0 else (merged[i - 1][1] + s) // 2
        hi = n_samples if i == len(merged) - 1 else (e + merged[i + 1][0]) // 2
        chunks.append(Chunk(max(lo, s - pad), min(hi, e + pad)))
    return chunks


def speech_chunks(audio: np.ndarray, opts: VadOptions = VadOptions()) -> list[Chunk]:
    """Speech chunks of an in-memory 16 kHz signal (empty for silence or noise)."""
    probs = speech_probs(audio)
    return chunk_regions(speech_regions(probs, audio.size, opts), probs, audio.size, opts)


def fixed_chunks(n_samples: int) -> list[Chunk]:
    """Consecutive ≤ 30 s windows, no VAD (the `--no-vad` path)."""
    return [Chunk(i, min(i + MAX_SAMPLES, n_samples)) for i in range(0, max(1, n_samples), MAX_SAMPLES)]


# ---------------------------------------------------------------- streaming long files


def file_duration(path: str | os.PathLike) -> float | None:
    """Duration in seconds from the file header, without decoding; None when unknown."""
    try:
        import soundfile as sf

        return float(sf.info(str(path)).duration)
    except Exception:
        pass
    try:
        import av

        with av.open(str(path), metadata_errors="ignore") as c:
            if c.streams.audio and c.duration:
                return c.duration / 1_000_000  # av.time_base
    except Exception:
        pass
    return None


def iter_audio_chunks(path: str | os.PathLike, block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Decode a file block by block: 16 kHz mono float32 arrays of ~block_seconds each.

    soundfile (wav/flac/ogg) reads blocks and soxr resamples them as one stream (no seams);
    anything else goes through PyAV, whose resampler is streaming too.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        f = sf.SoundFile(str(path))
    except Exception:
        f = None
    if f is not None:
        with f:
            import soxr

            stream = (
                None
                if f.samplerate == SAMPLE_RATE
                else soxr.ResampleStream(f.samplerate, SAMPLE_RATE, 1, dtype="float32")
            )
            for block in f.blocks(blocksize=max(1, int(block_seconds * f.samplerate)), dtype="float32", always_2d=True):
                yield _checked(
                    block.mean(axis=1) if stream is None else stream.resample_chunk(block.mean(axis=1)), path
                )
            if stream is not None:
                yield _checked(stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True), path)
        return
    yield from _iter_av(path, int(block_seconds * SAMPLE_RATE))


def _iter_av(path: Path, block: int) -> Iterator[np.ndarray]:
    import av

    try:
        container = av.open(str(path), metadata_errors="ignore")
    except Exception as e:
        raise AudioError(f"{path}: not a readable audio file ({type(e).__name__})") from None
    with container:
        if not container.streams.audio:
            raise AudioError(f"{path}: contains no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        pending, size = [], 0

        def frames():
            for frame in container.decode(container.streams.audio[0]):
                yield from resampler.resample(frame)
            yield from resampler.resample(None)  # flush

        try:
            for out in frames():
                pending.append(out.to_ndarray().reshape(-1))
                size += pending[-1].size
                if size >= block:
                    yield _checked(np.concatenate(pending), path)
                    pending, size = [], 0
        except AudioError:
            raise
        except Exception as e:
            raise AudioError(f"{path}: decoding failed ({type(e).__name__})") from None
        if pending:
            yield _checked(np.concatenate(pending), path)


def _checked(block: np.ndarray, path) -> np.ndarray:
    if not np.isfinite(block).all():
        raise AudioError(f"{path}: audio contains NaN or infinite samples")
    return np.ascontiguousarray(block, dtype=np.float32)


def scan_file(
    path, opts: VadOptions = VadOptions(), block_seconds: float = BLOCK_SECONDS, use_vad: bool = True
) -> tuple[list[Chunk], int]:
    """First pass over a long file: (speech chunks, total samples), holding only the probabilities."""
    vad = SileroVAD() if use_vad else None
    probs, n = [], 0
    for block in iter_audio_chunks(path, block_seconds):
        n += block.size
        if vad is not None:
            probs.append(vad(block))
    if n == 0:
        raise AudioError(f"{path}: no audio could be decoded (empty or truncated file)")
    if vad is None:
        return fixed_chunks(n), n
    probs.append(vad(np.zeros(0, dtype=np.float32), final=True))
    p = np.concatenate(probs)
    return chunk_regions(speech_regions(p, n, opts), p, n, opts), n


def read_chunks(path, chunks: Iterable[Chunk], block_seconds: float = BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Second pass: the samples of each chunk (sorted, non-overlapping), streaming the decode again."""
    blocks = iter_audio_chunks(path, block_seconds)
    buf, buf_start = np.zeros(0, dtype=np.float32), 0  # buf holds samples [buf_start, buf_start + buf.size)
    for c in chunks:
        while buf_start + buf.size < c.end:
            block = next(blocks, None)
            if block is None:
                break
            buf = np.concatenate([buf, block])
        yield buf[c.start - buf_start : c.end - buf_start].copy()
        buf, buf_start = buf[c.end - buf_start :], c.end  # chunks never look back
