"""Audio input: any file, bytes or array -> 16 kHz mono float32, and Whisper log-mel features.

Decoding uses soundfile (wav/flac/ogg) and falls back to PyAV (mp3, m4a, webm, ...). Every way
audio can be unusable (missing, empty, truncated, not audio, NaN/inf, zero length) raises one
error type, AudioError, with a message a user can act on.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from .errors import AudioError

SAMPLE_RATE = 16000  # Hz: everything downstream assumes this
HOP_LENGTH = 160  # samples per mel frame: 10 ms, 100 frames/s
N_MELS = 80  # Whisper-base/small use 80 mel bins
CHUNK_SECONDS = 30  # Whisper's window; one model input holds at most this much audio
MAX_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE
CLEARLY_LONGER = 8  # a 2-D array's samples axis is at least this many times longer than its channels axis

# What `load_audio` accepts: a path, raw file bytes, a file object, or (array, sample_rate).
AudioInput = str | os.PathLike | bytes | io.IOBase | np.ndarray | tuple


def load_audio(source: AudioInput, sample_rate: int | None = None) -> np.ndarray:
    """Decode `source` to a 16 kHz mono float32 array of shape (n_samples,).

    `source` is a path, bytes of an encoded file, a binary file object, or a numpy array. A bare
    array must be 16 kHz unless `sample_rate` says otherwise; `(array, sample_rate)` also works.
    Multi-channel input, (n, channels) or (channels, n) (the samples axis must be ≥ 8× the other),
    is averaged to mono. An explicit sample rate must be > 0 (AudioError otherwise).
    """
    if isinstance(source, tuple) and len(source) == 2 and isinstance(source[0], np.ndarray):
        source, sample_rate = source
        if sample_rate is None:
            raise AudioError("(array, sample_rate): the sample rate is None; give it in Hz")
    if sample_rate is not None:  # an explicit rate must be a real one: 0 is not "the default"
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, (int, float, np.integer, np.floating))
            or not np.isfinite(sample_rate)
            or sample_rate <= 0
        ):
            raise AudioError(f"sample rate must be a positive number of Hz, not {sample_rate!r}")
    if isinstance(source, np.ndarray):
        audio, sr = source, sample_rate or SAMPLE_RATE
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise AudioError(f"{path}: no such file")
        if path.is_dir():
            raise AudioError(f"{path}: is a directory, not an audio file")
        if not path.is_file():  # /dev/zero, a FIFO, a socket: reading it could block or never end
            raise AudioError(f"{path}: not a regular file")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: file is empty")
        audio, sr = _decode(str(path), name=str(path))
        try:
            return _to_model_rate(np.asarray(audio), sr)
        except AudioError as e:  # too short, NaN, ...: say which file
            raise AudioError(f"{path}: {e}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("audio data is empty")
        audio, sr = _decode(io.BytesIO(bytes(source)), name="audio data")
    elif hasattr(source, "read") and hasattr(source, "seek") and _seekable(source):
        # decoded where it lies (e.g. an upload spooled to disk), not copied into memory first
        start = source.tell()
        size = source.seek(0, io.SEEK_END) - start
        source.seek(start)
        if size <= 0:
            raise AudioError("audio data is empty")
        audio, sr = _decode(source, name=str(getattr(source, "name", "audio data")))
    elif hasattr(source, "read"):
        data = source.read()
        return load_audio(bytes(data), sample_rate)
    else:
        raise AudioError(f"cannot read audio from a {type(source).__name__}")
    return _to_model_rate(np.asarray(audio), sr)


def _seekable(f) -> bool:
    try:
        return bool(f.seekable()) if hasattr(f, "seekable") else True
    except Exception:
        return False


def _decode(src, name: str) -> tuple[np.ndarray, int]:
    """Decode with soundfile, falling back to PyAV; returns (audio (n,) or (n, ch), sample_rate)."""
    import soundfile as sf

    try:
        if hasattr(src, "seek"):
            start = src.tell()
        audio, sr = sf.read(src, dtype="float32", always_2d=False)
        return audio, sr
    except Exception:  # not a format libsndfile knows, or truncated: try FFmpeg
        pass
    try:
        import av

        if hasattr(src, "seek"):
            src.seek(start)
        with av.open(src, mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise AudioError(f"{name}: contains no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):  # flush
                chunks.append(out.to_ndarray().reshape(-1))
        if not chunks:
            raise AudioError(f"{name}: no audio could be decoded (empty or truncated file)")
        return np.concatenate(chunks), SAMPLE_RATE
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{name}: not a readable audio file ({type(e).__name__})") from None


def _to_model_rate(audio: np.ndarray, sr: int) -> np.ndarray:
    """Validate, down-mix and resample to (n,) float32 at 16 kHz."""
    if audio.dtype.kind not in "fiu":
        raise AudioError(f"audio array has dtype {audio.dtype}, expected numbers")
    if audio.dtype.kind in "iu":  # PCM integers -> [-1, 1]
        audio = audio.astype(np.float32) / float(np.iinfo(audio.dtype).max)
    audio = audio.astype(np.float32, copy=False)
    if audio.ndim == 2:  # (n, channels) as soundfile gives, or (channels, n): the samples axis is the far longer one
        a, b = audio.shape
        if a >= CLEARLY_LONGER * b:
            audio = audio.mean(axis=1)
        elif b >= CLEARLY_LONGER * a:
            audio = audio.mean(axis=0)
        else:
            raise AudioError(
                f"audio array of shape {audio.shape} is ambiguous: give (samples, channels) or "
                f"(channels, samples) with at least {CLEARLY_LONGER}× more samples than channels"
            )
    if audio.ndim != 1:
        raise AudioError(f"audio must be 1-D or (samples, channels), got shape {audio.shape}")
    if audio.size == 0:
        raise AudioError("audio has zero length")
    if not np.isfinite(audio).all():
        raise AudioError("audio contains NaN or infinite samples")
    if not sr or sr <= 0:
        raise AudioError(f"invalid sample rate {sr}")
    if sr != SAMPLE_RATE:
        import soxr

        audio = soxr.resample(audio, sr, SAMPLE_RATE).astype(np.float32)
    if audio.size < HOP_LENGTH * 2:
        raise AudioError(f"audio is too short ({audio.size / SAMPLE_RATE * 1000:.0f} ms)")
    return np.ascontiguousarray(audio)


_FEATURE_EXTRACTORS: dict[int, object] = {}


def log_mel(audio: np.ndarray, n_mels: int = N_MELS, pad_to_30s: bool = False) -> np.ndarray:
    """Whisper log-mel spectrogram of a 16 kHz signal: (n_mels, frames), 100 frames per second.

    Uses faster-whisper's feature extractor (numpy, same filters as Whisper). Unpadded, the
    frame count is even and equals ceil(n_samples / 160) rounded up to even, because the Whisper
    encoder's stride-2 convolution halves it; `pad_to_30s` gives exactly 3000 frames.
    """
    from faster_whisper.feature_extractor import FeatureExtractor

    if n_mels not in _FEATURE_EXTRACTORS:
        _FEATURE_EXTRACTORS[n_mels] = FeatureExtractor(feature_size=n_mels)
    fe = _FEATURE_EXTRACTORS[n_mels]
    audio = audio[:MAX_SAMPLES]
    if pad_to_30s:
        audio = np.pad(audio, (0, MAX_SAMPLES - audio.size))
    mel = fe(audio, padding=0)  # (n_mels, n_samples // 160)
    frames = mel.shape[1]
    if pad_to_30s:
        return mel[:, :3000].astype(np.float32)
    target = min(3000, frames + (frames % 2))
    if target > frames:
        mel = np.pad(mel, ((0, 0), (0, target - frames)), constant_values=mel.min())
    return np.ascontiguousarray(mel[:, :target].astype(np.float32))


def duration(audio: np.ndarray) -> float:
    """Seconds in a 16 kHz signal."""
    return audio.shape[-1] / SAMPLE_RATE
