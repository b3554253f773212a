"""Live transcription in the library: model.stream() feed/close invariants, on real speech.

Text is asserted with the shipped model on jfk.flac (against its own batch transcript); mechanics
that do not depend on the text (limits, errors, cutting) use the tiny random model.
"""

from __future__ import annotations

import numpy as np
import pytest

from diffasr.audio import SAMPLE_RATE, load_audio
from diffasr.errors import AudioError, ConfigError
from diffasr.metrics import error_rate
from diffasr.pipeline.stream import StreamSession, play


def _feed(session, audio, chunk):
    events = []
    for i in range(0, audio.size, chunk):
        events += session.feed(audio[i : i + chunk])
    return events + session.close()


def _finals(events):
    return [(e.id, e.text, e.start, e.end, [tuple(w.values()) for w in e.words]) for e in events if e.type == "final"]


def _check_order(events):
    """Ids start at 0 and rise by one per final; no event of an utterance after its final."""
    closed = -1
    for e in events:
        assert e.id > closed, f"event for utterance {e.id} after its final"
        if e.type == "final":
            assert e.id == closed + 1
            closed = e.id
            assert all(e.start <= w["start"] <= w["end"] <= e.end and 0 <= w["confidence"] <= 1 for w in e.words)
            assert [w["start"] for w in e.words] == sorted(w["start"] for w in e.words)


@pytest.fixture(scope="module")
def speech(en_clip):
    """jfk.flac, 1 s of silence, then its first 5 s: a stream with a pause in the middle."""
    a = load_audio(en_clip)
    return np.concatenate([a, np.zeros(SAMPLE_RATE, np.float32), a[: 5 * SAMPLE_RATE]])


@pytest.fixture(scope="module")
def streamed(shipped_model, speech):
    """Events of the speech fed in 100-ms chunks."""
    return _feed(shipped_model.stream(), speech, 1600)


FIRST_PHRASE = "and so my fellow americans"  # jfk.flac up to its first pause (0.32-2.16 s as batch aligns it)


def test_partials_then_finals_close_to_batch(shipped_model, speech, streamed):
    """Finals close to the batch transcript and the reference, by word error rate, not exact words:
    words near a decision boundary change with the CPU's float kernels. The first final reads
    "and so my fell americans" on some CPUs: not a cut (its audio, 0.32-2.24 s here with pad_s each
    side, holds "fellow" at 1.28-1.60 s) but the encoder's kernels moving the CTC beam and rescore
    between "fell" and "fellow" (here "fellow" wins by 4.8 nats on the phrase alone)."""
    _check_order(streamed)
    finals = [e for e in streamed if e.type == "final"]
    assert any(e.type == "partial" for e in streamed) and len(finals) >= 2
    assert all(e.language == "en" for e in finals)  # identified once, kept
    batch = shipped_model.transcribe(speech).text
    wer, _ = error_rate([batch], [" ".join(e.text for e in finals)], "en")
    assert wer <= 0.3, (batch, [e.text for e in finals])
    first, _ = error_rate([FIRST_PHRASE], [finals[0].text], "en")
    assert first <= 0.4, finals[0].text  # at most two of its five words off
    assert finals[0].start <= 0.5 and finals[0].end >= 2.0, (finals[0].start, finals[0].end)  # the phrase, not cut
    assert "country" in " ".join(e.text for e in finals)  # said twice, each time 0.99 sure
    # partials come at most once per 0.5 s of audio, and each final within ~1 s of audio after speech ends
    partial_ends = [e.end for e in streamed if e.type == "partial"]
    assert all(b - a >= 0.5 - 1e-6 for a, b in zip(partial_ends, partial_ends[1:]) if b > a)


def test_finals_do_not_depend_on_chunk_size(shipped_model, speech, streamed):
    # partials change nothing a final depends on; spacing them 30 s apart keeps this test cheap
    whole = _feed(shipped_model.stream(partial_every_s=30), speech, speech.size)
    odd = _feed(shipped_model.stream(partial_every_s=30, speculate=False), speech, 7777)  # decoded at the pause's end
    assert _finals(whole) == _finals(odd) == _finals(streamed)


def test_final_latency_on_the_audio_clock(shipped_model, en_clip):
    """Fed as fast as it decodes, a final comes out within pause_s + one 20-ms chunk of audio."""
    a = np.concatenate([load_audio(en_clip)[: 3 * SAMPLE_RATE], np.zeros(2 * SAMPLE_RATE, np.float32)])
    s = shipped_model.stream(language="en", pause_s=0.5)
    finals = [(e, lat) for e, lat in play(s, a, realtime=False) if e.type == "final"]
    assert finals and all(0.5 <= lat <= 0.5 + 0.02 + 0.033 for _, lat in finals), finals


def test_other_sample_rate(shipped_model, en_clip):
    import soxr

    a = load_audio(en_clip)[: 3 * SAMPLE_RATE]
    a44 = soxr.resample(np.concatenate([a, np.zeros(SAMPLE_RATE, np.float32)]), SAMPLE_RATE, 44100).astype(np.float32)
    s = shipped_model.stream(language="en")
    events = []
    for i in range(0, a44.size, 4410):
        events += s.feed((a44[i : i + 4410], 44100))
    events += s.close()
    finals = [e.text for e in events if e.type == "final"]
    assert finals and "fellow americans" in " ".join(finals)


def test_silence_and_closing(tiny_model):
    s = tiny_model.stream(language="en")
    assert s.feed(np.zeros(3 * SAMPLE_RATE, np.float32)) == [] and s.close() == []
    assert s.close() == []  # closing twice is harmless
    with pytest.raises(ConfigError, match="closed"):
        s.feed(np.zeros(160, np.float32))


def test_bad_input(tiny_model):
    with pytest.raises(ConfigError, match="language"):
        tiny_model.stream(language="xx")
    with pytest.raises(ConfigError, match="pause_s"):
        tiny_model.stream(pause_s=0.0)
    s = tiny_model.stream()
    with pytest.raises(AudioError, match="NaN"):
        s.feed(np.full(160, np.nan, np.float32))
    with pytest.raises(AudioError, match="1-D"):
        s.feed(np.zeros((2, 2, 2), np.float32))
    with pytest.raises(AudioError, match="sample rate"):
        s.feed((np.zeros(160, np.float32), 100))
    s.feed((np.zeros(441, np.float32), 44100))
    with pytest.raises(AudioError, match="changed"):
        s.feed((np.zeros(480, np.float32), 48000))
    # integer PCM is scaled, stereo mixed down
    assert s.feed((np.zeros((441, 2), np.int16), 44100)) == []


def test_long_speech_is_cut(tiny_model):
    """Speech without a pause longer than max_utterance_s is closed in pieces no longer than that."""
    from conftest import real_clip

    a = load_audio(real_clip("en", "coqui_LJ001-0001.wav"))  # 9.7 s of reading, no long pause
    s = StreamSession(tiny_model, "en", max_utterance_s=3.0, pause_s=2.0)
    events, held = [], 0
    for i in range(0, a.size, 3200):
        events += s.feed(a[i : i + 3200])
        held = max(held, s.buf.size)
    events += s.close()
    _check_order(events)
    assert s.stats["finals"] >= 3
    assert held <= 3.5 * SAMPLE_RATE  # the buffer holds the open utterance and its context, not the stream


def test_listen_cli_file(en_clip, capsys):
    from diffasr.cli import main

    assert main(["listen", "--file", str(en_clip), "--timestamps", "--language", "en"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) >= 2 and lines[0].startswith("[") and "fellow americans" in lines[0]
    assert "country" in " ".join(lines)


def test_listen_cli_without_microphone(monkeypatch, capsys):
    import sys

    from diffasr.cli import main

    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if the package were not installed
    monkeypatch.setattr("diffasr.load", lambda *a, **k: _FakeModel())
    assert main(["listen"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "microphone" in err[0] and "--file" in err[0]


class _FakeModel:
    """Just enough model for `listen` to reach the microphone."""

    def stream(self, **kwargs):
        return None
