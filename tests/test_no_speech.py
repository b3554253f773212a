"""The no-speech guard without the VAD (vad=False / --no-vad): silence, noise and music-like input give
no text from the shipped model's CTC evidence, and real speech keeps its transcript."""

from __future__ import annotations

import numpy as np
import pytest

import diffasr
import diffasr.pipeline.transcribe as T
from diffasr.pipeline.transcribe import is_speech

SR = 16000


@pytest.fixture(scope="module")
def small():
    return diffasr.load("small")


def _seconds(s: float) -> np.ndarray:
    return np.arange(int(s * SR)) / SR


def _music(seconds: float) -> np.ndarray:
    """A C-major chord, a stepping melody and percussive noise clicks twice a second."""
    t = _seconds(seconds)
    rng = np.random.default_rng(1)
    chord = sum(0.08 * np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0))
    notes = np.resize(np.repeat([440, 494, 523, 587, 659, 587, 523, 494], SR), t.size)
    melody = 0.1 * np.sin(2 * np.pi * np.cumsum(notes) / SR)
    clicks = (np.sin(2 * np.pi * 2 * t) > 0.95) * rng.standard_normal(t.size) * 0.3
    return (chord + melody + clicks).astype(np.float32)


NON_SPEECH = {
    "60 s of silence": lambda: np.zeros(60 * SR, np.float32),
    "10 s of white noise": lambda: (0.05 * np.random.default_rng(0).standard_normal(10 * SR)).astype(np.float32),
    "10 s of loud white noise": lambda: (0.3 * np.random.default_rng(2).standard_normal(10 * SR)).astype(np.float32),
    "10 s of mains hum": lambda: (0.01 * np.sin(2 * np.pi * 50 * _seconds(10))).astype(np.float32),
    "30 s of a music-like mix": lambda: _music(30),
}


@pytest.mark.parametrize("name", list(NON_SPEECH))
def test_no_vad_non_speech_gives_no_text(small, name, monkeypatch):
    audio = NON_SPEECH[name]()
    r = small.transcribe(audio, vad=False)
    assert r.text == "" and r.segments == [] and r.words == [], (name, r.text)
    # the guard is what empties it: without it the decoder makes words out of this input
    monkeypatch.setattr(T, "is_speech", lambda evidence: True)
    assert small.transcribe(audio, vad=False).text != ""


def test_no_vad_real_speech_keeps_its_transcript(small, en_clip, monkeypatch):
    guarded = small.transcribe(en_clip, vad=False, language="en")
    monkeypatch.setattr(T, "is_speech", lambda evidence: True)
    unguarded = small.transcribe(en_clip, vad=False, language="en")
    assert guarded.text == unguarded.text and "country" in guarded.text.split(), guarded.text


def test_cli_no_vad_silence_prints_nothing(tmp_path, capsys):
    import soundfile as sf

    from diffasr.cli import main as cli

    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(20 * SR, np.float32), SR)
    assert cli(["transcribe", "--no-vad", str(path)]) == 0
    assert capsys.readouterr().out.strip() == ""


def test_verdicts():
    assert not is_speech({"rate": 1.3, "confidence": 0.22, "seconds": 30, "rms": 0.0})  # digital silence
    assert not is_speech({"rate": 5.0, "confidence": 0.9, "seconds": 30, "rms": 1e-5})
    assert is_speech({"rate": 2.8, "confidence": 0.2, "seconds": 11})  # fast enough alone
    assert is_speech({"rate": 1.0, "confidence": 0.7, "seconds": 30})  # sparse but confident
    assert not is_speech({"rate": 0.7, "confidence": 0.7, "seconds": 30})  # too sparse (noise reaches 0.56 at 0.4)
    assert is_speech({"rate": 1.5, "confidence": 0.38, "seconds": 5})  # slow, unsure Chinese
    assert not is_speech({"rate": 1.6, "confidence": 0.28, "seconds": 30})  # the music-like mix
    assert not is_speech({"rate": 0.1, "confidence": 0.9, "seconds": 10})  # a pure tone: one confident token
    assert is_speech({"rate": 0.0, "confidence": 0.0, "seconds": 0.4, "rms": 0.006})  # too short to judge
