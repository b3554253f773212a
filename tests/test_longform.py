"""Long-form audio: VAD chunks, segments, word timing, no-speech handling, writers, language id.

The tiny model is random, so nothing here looks at its text: timing structure comes from the VAD
(real model) and the aligner (checked against a brute-force oracle), language id from Whisper.
"""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
import soundfile as sf
from conftest import DATA, manifest_rows, real_clip

from diffasr.audio import SAMPLE_RATE, load_audio
from diffasr.decoding.align import ctc_align, words_from_tokens
from diffasr.pipeline import vad
from diffasr.pipeline.transcribe import identify_language, transcribe
from diffasr.pipeline.writers import WRITERS

PAUSE_S = 1.0


@pytest.fixture(scope="session")
def long_file(tmp_path_factory):
    """~85 s (over the 60 s from which a file is streamed): the five LJSpeech clips of tests/data
    (speech to their last 0.1 s), forwards, backwards, forwards, backwards, 1 s of silence between
    clips. Returns (path, clip end times from the manifest)."""
    rows = [r for r in manifest_rows() if "LJ00" in r["audio"]]
    assert len(rows) == 5
    parts, ends, t = [], [], 0.0
    for i, r in enumerate((rows + rows[::-1]) * 2):
        if i:
            parts.append(np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32))
            t += PAUSE_S
        a = load_audio(DATA / r["audio"])
        assert abs(a.size / SAMPLE_RATE - r["duration_s"]) < 0.01
        parts.append(a)
        t += r["duration_s"]
        ends.append(t)
    path = tmp_path_factory.mktemp("long") / "long.flac"
    sf.write(path, np.concatenate(parts), SAMPLE_RATE)
    return path, ends


@pytest.fixture(scope="session")
def long_result(tiny_model, long_file):
    return transcribe(tiny_model, str(long_file[0]), language="en", steps=2, batch_size=8)


def _srt_cues(text: str) -> list[tuple[float, float]]:
    def sec(ts):
        h, m, s = ts.replace(",", ".").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)

    return [(sec(a), sec(b)) for a, b in re.findall(r"(\S+) --> (\S+)", text)]


def test_long_file_srt_cues_follow_clip_ends(long_result, long_file):
    _, ends = long_file
    cues = _srt_cues(WRITERS["srt"](long_result))
    assert len(cues) == len(ends)  # one cue per clip: every 1 s pause splits
    flat = [t for cue in cues for t in cue]
    assert flat == sorted(flat)  # monotonic: start ≤ end ≤ next start
    for (_, end), clip_end in zip(cues, ends):
        assert abs(end - clip_end) <= 0.5
    assert abs(long_result.duration - ends[-1]) < 0.01
    assert all(s.end - s.start <= 30.0 for s in long_result.segments)


def test_word_times_monotonic_and_inside_segments(long_result):
    words, segs = long_result.words, long_result.segments
    assert words
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    for a, b in zip(words, words[1:]):
        assert a.end <= b.start + 1e-6
    for w in words:
        assert w.start <= w.end
        assert any(s.start <= w.start and w.end <= s.end for s in segs)
        assert 0.0 <= w.confidence <= 1.0 and w.text


def test_silence_and_noise_give_nothing(tiny_model):
    rng = np.random.default_rng(0)
    silence = np.zeros(10 * SAMPLE_RATE, dtype=np.float32)
    noise = rng.uniform(-0.5, 0.5, 35 * SAMPLE_RATE).astype(np.float32)  # > 30 s: the chunked path
    quiet_noise = rng.normal(0, 0.05, 8 * SAMPLE_RATE).astype(np.float32)
    for r in transcribe(tiny_model, [silence, noise, quiet_noise]):
        assert r.text == "" and r.segments == [] and r.words == [] and r.tokens == []
        assert WRITERS["srt"](r) == ""


def test_streamed_file_matches_in_memory(tiny_model, long_file, monkeypatch):
    path, ends = long_file
    audio = load_audio(path)
    chunks = vad.speech_chunks(audio)
    streamed, n = vad.scan_file(path, block_seconds=7.0)  # blocks cut through speech
    assert streamed == chunks and n == audio.size
    for c, a in zip(chunks, vad.read_chunks(path, chunks, block_seconds=7.0)):
        assert np.array_equal(a, audio[c.start : c.end])
    import diffasr.pipeline.transcribe as T

    monkeypatch.setattr(T, "STREAM_SECONDS", 60.0)
    r = transcribe(tiny_model, str(path), language="en", method="ctc-greedy")
    assert abs(r.duration - ends[-1]) < 0.01
    spans = {(round(c.start_s, 3), round(c.end_s, 3)) for c in chunks}
    assert r.segments and all((s.start, s.end) in spans for s in r.segments)


def test_cli_format_all_writes_every_format(tiny_model_dir, tmp_path):
    from diffasr.cli import main

    clip = real_clip("en", "coqui_LJ001-0002.wav")
    assert (
        main(
            [
                "transcribe",
                str(clip),
                "--model",
                str(tiny_model_dir),
                "--format",
                "all",
                "--output-dir",
                str(tmp_path),
                "--language",
                "auto",
                "--steps",
                "2",
            ]
        )
        == 0
    )
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == [f"coqui_LJ001-0002.{ext}" for ext in ("json", "srt", "txt", "vtt")]
    data = json.loads((tmp_path / "coqui_LJ001-0002.json").read_text())
    assert data["language"] == "en" and 0 < data["language_probability"] <= 1
    assert {"segments", "words", "confidences", "text"} <= set(data)
    assert (tmp_path / "coqui_LJ001-0002.vtt").read_text().startswith("WEBVTT")
    cues = _srt_cues((tmp_path / "coqui_LJ001-0002.srt").read_text())
    assert len(cues) == 1 and 0 <= cues[0][0] < cues[0][1] <= 1.9


@pytest.mark.parametrize("lang", ["en", "de"])
def test_whisper_language_id(tiny_model, lang):
    ranked = identify_language(tiny_model, load_audio(real_clip(lang)))
    assert ranked[0][0] == lang
    assert {l for l, _ in ranked} == set(tiny_model.config.languages)
    assert abs(sum(p for _, p in ranked) - 1) < 1e-4


# ---------------------------------------------------------------- aligner


def _brute_force_spans(log_probs, targets, blank):
    """Best CTC path by enumeration (tiny T only): first/last frame of each target."""
    best, best_path = -np.inf, None
    for path in itertools.product(range(log_probs.shape[1]), repeat=log_probs.shape[0]):
        collapsed = [k for k, _ in itertools.groupby(path) if k != blank]
        if collapsed == list(targets):
            score = sum(log_probs[t, k] for t, k in enumerate(path))
            if score > best:
                best, best_path = score, path
    spans, k, prev = [], -1, blank
    for t, s in enumerate(best_path):
        if s != blank and (s != prev or t == 0):
            k += 1
            spans.append([t, t])
        elif s != blank:
            spans[k][1] = t
        prev = s
    return spans


def test_ctc_align_known_path():
    # frames: blank, a, a, blank, b, blank, b, blank  ->  a at 1..2, b at 4, b at 6
    path = [0, 1, 1, 0, 2, 0, 2, 0]
    lp = np.full((len(path), 3), np.log(0.05))
    lp[np.arange(len(path)), path] = np.log(0.9)
    assert ctc_align(lp, [1, 2, 2], blank=0).tolist() == [[1, 2], [4, 4], [6, 6]]
    assert ctc_align(lp[:2], [1, 2, 2], blank=0) is None  # too few frames for 3 tokens + a repeat
    assert ctc_align(lp, [], blank=0).shape == (0, 2)


def test_ctc_align_matches_brute_force():
    rng = np.random.default_rng(0)
    for targets in ([1, 2], [2, 2], [1], [2, 1, 2]):
        x = rng.normal(size=(6, 3))
        lp = x - np.log(np.exp(x).sum(1, keepdims=True))
        assert ctc_align(lp, targets, blank=0).tolist() == _brute_force_spans(lp, targets, 0)


def test_words_from_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    ids = tok.encode("the house 中国")
    pieces = tok.token_strings(ids)
    times = [(0.1 * i, 0.1 * i + 0.1) for i in range(len(ids))]
    words = words_from_tokens(tok, ids, pieces, times, [0.5] * len(ids))
    assert [w.text for w in words] == ["the", "house", "中", "国"]
    assert all(a.end <= b.start + 1e-9 for a, b in zip(words, words[1:]))
    assert words[0].start == 0.0 and words[-1].end == pytest.approx(times[-1][1])
