"""Acoustic augmentation for synthetic speech (numpy/scipy only).

TTS output is unnaturally clean; these cheap effects move it towards real recordings: background noise,
room reverb, telephone / low-quality band limits, a lossy 8-bit codec and level changes. Every function
takes and returns a 1-D float32 mono signal of shape (n,) at 16 kHz (reverb keeps n: its tail is cut),
and draws its parameters only from the `np.random.Generator` it is given, so a corpus is reproducible.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

SR = 16000
P_ANY = 0.7  # probability that a clip gets any augmentation: ~30% stays clean


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)) + 1e-12))


def colored_noise(n: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise of shape (n,): "white" (flat), "pink" (1/f power) or "brown" (1/f^2 power)."""
    white = rng.standard_normal(n)
    if color != "white":
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1] if n > 1 else 1.0  # avoid division by zero at DC
        spec /= np.sqrt(f) if color == "pink" else f
        white = np.fft.irfft(spec, n)
    return (white / (_rms(white))).astype(np.float32)


def add_noise(
    x: np.ndarray, rng: np.random.Generator, snr_db: float | None = None, color: str | None = None
) -> np.ndarray:
    """Add white/pink/brown noise at an SNR of 5-30 dB (relative to the signal RMS). Shape (n,)->(n,)."""
    snr_db = rng.uniform(5.0, 30.0) if snr_db is None else snr_db
    color = color or str(rng.choice(["white", "pink", "brown"]))
    noise = colored_noise(len(x), color, rng) * (_rms(x) / 10 ** (snr_db / 20))
    return (x + noise).astype(np.float32)


def reverb(x: np.ndarray, rng: np.random.Generator, rt60: float | None = None, wet: float | None = None) -> np.ndarray:
    """Synthetic room: convolve with exponentially decaying noise (RT60 0.1-0.6 s), mix wet/dry.

    The impulse response is Gaussian noise times exp(-6.91 t / RT60) (-60 dB at RT60), with a unit
    direct-path tap at t=0 so speech stays anchored. Shape (n,)->(n,) (reverb tail truncated).
    """
    rt60 = rng.uniform(0.1, 0.6) if rt60 is None else rt60
    wet = rng.uniform(0.2, 0.8) if wet is None else wet
    t = np.arange(int(rt60 * SR)) / SR
    ir = rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60)
    ir[0] = 0.0
    ir /= np.sqrt(np.sum(ir**2)) + 1e-12  # unit-energy tail: wet part has roughly the dry level
    y = signal.fftconvolve(x, ir)[: len(x)]
    return ((1 - wet) * x + wet * y).astype(np.float32)


def band_limit(x: np.ndarray, rng: np.random.Generator, mode: str | None = None) -> np.ndarray:
    """Telephone band (300-3400 Hz) or a random low-pass at 3-7 kHz (4th-order Butterworth). (n,)->(n,)."""
    mode = mode or str(rng.choice(["telephone", "lowpass"]))
    if mode == "telephone":
        sos = signal.butter(4, [300, 3400], btype="bandpass", fs=SR, output="sos")
    else:
        sos = signal.butter(4, rng.uniform(3000, 7000), btype="lowpass", fs=SR, output="sos")
    return signal.sosfilt(sos, x).astype(np.float32)


def mulaw(x: np.ndarray, rng: np.random.Generator | None = None, bits: int = 8) -> np.ndarray:
    """Mu-law companding + 8-bit quantisation (G.711-like, a cheap lossy codec). (n,)->(n,).

    The signal is peak-normalised first so quantisation noise is relative to speech, then restored.
    """
    peak = float(np.max(np.abs(x))) + 1e-9
    mu = 2**bits - 1
    y = np.sign(x / peak) * np.log1p(mu * np.abs(x / peak)) / np.log1p(mu)
    y = np.round((y + 1) / 2 * mu) / mu * 2 - 1
    return (np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu * peak).astype(np.float32)


def random_gain(x: np.ndarray, rng: np.random.Generator, db_range: float = 10.0) -> np.ndarray:
    """Scale by a random gain in +-db_range dB (a recording-level change). (n,)->(n,)."""
    return (x * 10 ** (rng.uniform(-db_range, db_range) / 20)).astype(np.float32)


def normalize_loudness(x: np.ndarray, target_dbfs: float = -23.0) -> np.ndarray:
    """Scale so the RMS level is `target_dbfs` dBFS (no scaling for silence). (n,)->(n,) float32."""
    r = _rms(x)
    if r < 1e-6:
        return x.astype(np.float32)
    return (x * (10 ** (target_dbfs / 20) / r)).astype(np.float32)


def peak_limit(x: np.ndarray, ceiling: float = 0.98) -> np.ndarray:
    """Clip-safe limiting: scale down so |x| <= ceiling (a plain gain, so no distortion). (n,)->(n,)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak > ceiling:
        x = x * (ceiling / peak)
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def trim_silence(x: np.ndarray, sr: int = SR, margin_s: float = 0.1) -> np.ndarray:
    """Cut leading/trailing frames 45 dB below the loudest 10 ms frame, keeping a 100 ms margin.

    x: float32 (n,) -> float32 (m,), m <= n. TTS engines pad unevenly; a light trim keeps clip lengths honest.
    """
    hop = sr // 100
    n = len(x) // hop
    if n < 3:
        return x
    db = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    on = np.flatnonzero(db > max(db.max() - 45.0, -70.0))
    if not len(on):
        return x
    m = int(margin_s * sr)
    return x[max(0, on[0] * hop - m) : min(len(x), (on[-1] + 1) * hop + m)]


def augment_described(x: np.ndarray, rng: np.random.Generator, p_any: float = P_ANY) -> tuple[np.ndarray, str]:
    """`augment` that also returns a description of the effects, e.g. "reverb0.31+noise-pink18".

    x: float32 (n,) at 16 kHz -> (float32 (n,), str); "clean" when nothing but levelling was applied.
    The order is physical: room, then band limit and codec of the channel, then noise at the receiver,
    then the recording level.
    """
    x = np.asarray(x, dtype=np.float32)
    applied: list[str] = []
    do: dict[str, bool] = {}
    if len(x) and rng.random() < p_any:
        # Independent coin flips; if all come up tails fall back to noise so "augmented" means something.
        do = {
            k: bool(rng.random() < p)
            for k, p in (("reverb", 0.4), ("band", 0.3), ("codec", 0.2), ("noise", 0.6), ("gain", 0.4))
        }
        if not any(do.values()):
            do["noise"] = True
        if do["reverb"]:
            rt60 = rng.uniform(0.1, 0.6)
            x = reverb(x, rng, rt60=rt60)
            applied.append(f"reverb{rt60:.2f}")
        if do["band"]:
            mode = str(rng.choice(["telephone", "lowpass"]))
            x = band_limit(x, rng, mode=mode)
            applied.append(mode)
        if do["codec"]:
            x = mulaw(x, rng)
            applied.append("mulaw")
        if do["noise"]:
            snr, color = rng.uniform(5.0, 30.0), str(rng.choice(["white", "pink", "brown"]))
            x = add_noise(x, rng, snr_db=snr, color=color)
            applied.append(f"noise-{color}{snr:.0f}")
    # Loudness target jittered +-3 dB so the model does not learn one fixed level; a random gain has to
    # come after this normalisation (before it, normalisation would undo it).
    x = normalize_loudness(x, -23.0 + rng.uniform(-3.0, 3.0))
    if do.get("gain"):
        x = random_gain(x, rng, db_range=8.0)
        applied.append("gain")
    return peak_limit(x), "+".join(applied) or "clean"


def augment(x: np.ndarray, rng: np.random.Generator, p_any: float = P_ANY) -> np.ndarray:
    """Apply a random subset of noise/reverb/band-limit/codec/gain (with probability `p_any`), then
    loudness normalisation (-23 +-3 dBFS) and peak limiting. x: float32 (n,) at 16 kHz -> float32 (n,)."""
    return augment_described(x, rng, p_any)[0]
