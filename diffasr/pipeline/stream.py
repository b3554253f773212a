"""Live transcription: audio arrives in pieces, events come out while the person speaks.

    s = model.stream(language=None)          # a StreamSession
    for ev in s.feed(samples): ...           # any chunk size: 16 kHz float32 (n,), or (array, rate)
    for ev in s.close(): ...                 # flushes the utterance still open

Each event is a `StreamEvent`:
  partial  the open utterance decoded so far with greedy CTC (the model's prompt CTC head, one
           prefill, no beam and no diffusion pass): cheap and may still change. At most one per
           `partial_every_s` (0.5 s) of new audio, and at most one per `feed` call, so a caller that
           falls behind real time gets fewer partials instead of a growing backlog.
  final    an utterance closed by the VAD at a pause of `pause_s` (0.5 s) or cut at
           `max_utterance_s`, decoded by the model's default path (`decode_batch`: CTC + n-gram
           beam, n-best rescored by the diffusion decoder) with word times and confidences. A final
           is never revised. Its decode starts once pad_s of the pause has passed (all the audio it
           reads has arrived) and is kept if the pause completes, so in real time the decode runs
           during the rest of the pause instead of after it (`speculate=False` turns this off).

How an utterance is found: Silero VAD (vad.SileroVAD, streaming) scores each 32-ms window; the
same hysteresis as the batch path (vad.speech_regions) opens an utterance at a window with
probability ≥ threshold and closes it once the probability stays below neg_threshold for pause_s.
Windows are processed one at a time whatever the chunking, so the finals depend only on the audio,
never on how it was cut into `feed` calls (partials do depend on it: they are a display aid).

The language is identified once per stream (unless given): on the first `langid_s` seconds of
the first utterance, or on the whole first utterance if it is shorter. Partials before that use
no language (no script restriction).

Memory: the buffer holds the open utterance (≤ max_utterance_s) plus `pad_s` of context.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from ..audio import SAMPLE_RATE
from ..decoding import DecodeOptions, resolve
from ..errors import AudioError, ConfigError
from .vad import WINDOW, SileroVAD, VadOptions


@dataclass
class StreamEvent:
    """One message of a stream. Times are seconds from the start of the stream (16 kHz samples fed)."""

    type: str  # "partial" | "final"
    id: int  # utterance number, from 0; a final closes the partials of the same id
    text: str
    start: float  # speech start of the utterance (VAD, unpadded), s
    end: float  # partial: audio decoded so far; final: speech end (VAD), s
    language: str | None = None
    words: list = field(default_factory=list)  # final: dicts {word, start, end, confidence}, absolute times
    decode_s: float = 0.0  # wall seconds this event's decode took
    steps: list | None = None  # final, with return_steps: each denoising step's canvas (decoding/steps.py)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["steps"] is None:
            del d["steps"]
        d.update(start=round(self.start, 3), end=round(self.end, 3), decode_s=round(self.decode_s, 3))
        if self.type == "partial":
            del d["words"]
        return d


class StreamSession:
    """A live transcription of one audio stream (one speaker, one channel). Not thread-safe: feed it
    from one thread. See the module docstring for the event semantics."""

    def __init__(
        self,
        model,
        language: str | None = None,
        *,
        pause_s: float = 0.5,
        partial_every_s: float = 0.5,
        max_utterance_s: float = 20.0,
        langid_s: float = 6.0,
        pad_s: float = 0.2,
        speculate: bool = True,
        vad_options: VadOptions | None = None,
        **decode_options,
    ):
        if language == "auto":
            language = None
        if language is not None and language not in model.config.languages:
            raise ConfigError(f"language {language!r} not supported (choose from {', '.join(model.config.languages)})")
        for name, v, lo, hi in [
            ("pause_s", pause_s, 0.1, 5.0),
            ("partial_every_s", partial_every_s, 0.1, 30.0),
            ("max_utterance_s", max_utterance_s, 2.0, 29.0),
            ("langid_s", langid_s, 0.5, 30.0),
            ("pad_s", pad_s, 0.0, 1.0),
        ]:
            if not lo <= v <= hi:
                raise ConfigError(f"{name} must be in [{lo:g}, {hi:g}], not {v!r}")
        if pad_s >= pause_s:  # the final's trailing context must have arrived when the pause closes it
            raise ConfigError(f"pad_s ({pad_s}) must be shorter than pause_s ({pause_s})")
        self.model, self.language = model, language
        self.options = resolve(model.config.decode_defaults, {**decode_options, "language": None}, model.backend.reads)
        # partials: greedy CTC, the cheapest text the model offers (one encoder pass + one prefill)
        self.partial_options = DecodeOptions(method="ctc-greedy", restrict_script=self.options.restrict_script)
        self.vad_options = vad_options = vad_options or VadOptions()
        self.pause_w = max(1, round(pause_s * SAMPLE_RATE / WINDOW))  # windows of silence that close an utterance
        self.partial_every = int(partial_every_s * SAMPLE_RATE)
        self.max_utt = int(max_utterance_s * SAMPLE_RATE)
        self.langid_n = int(langid_s * SAMPLE_RATE)
        self.pad = int(pad_s * SAMPLE_RATE)
        self.speculate = speculate
        self.spec_w = -(-self.pad // WINDOW) + 1  # silent windows after which the final's audio has all arrived
        self.min_run = max(1, int(np.ceil(vad_options.min_speech_s * SAMPLE_RATE / WINDOW - 1e-9)))

        self.vad = SileroVAD()
        self._resampler, self._rate = None, None
        self.buf = np.zeros(0, dtype=np.float32)  # samples [buf_start, t)
        self.buf_start = 0
        self.t = 0  # samples (16 kHz) received
        self.win = 0  # VAD windows scored
        self.next_id = 0
        self.closed = False
        self._reset_utterance()
        self.stats = {
            "audio_s": 0.0,
            "partials": 0,
            "finals": 0,
            "partial_s": 0.0,
            "final_s": 0.0,
            "langid_s": 0.0,
            "speculative": 0,
            "speculative_used": 0,
        }

    def _reset_utterance(self) -> None:
        self.utt_start = None  # sample where the open utterance's speech starts
        self.speech_end = 0  # end of its last window at or above neg_threshold
        self.silence = 0  # consecutive windows below neg_threshold
        self.run = self.best = 0  # current / longest run of windows ≥ threshold (a blip needs min_run)
        self.probs: list[float] = []  # per window since utt_start, for cutting over-long utterances
        self.last_partial_at = 0
        self.last_partial = ""
        self.spec = None  # (start, speech end, offset, Transcription, seconds): a final decoded early

    # ------------------------------------------------------------------ input

    def _to_16k(self, samples) -> np.ndarray:
        """(n,) or (n, channels) float/int samples at 16 kHz, or (array, rate) -> 16 kHz float32 (n,)."""
        rate = SAMPLE_RATE
        if isinstance(samples, tuple):
            if len(samples) != 2:
                raise AudioError("feed takes an array or (array, sample_rate)")
            samples, rate = samples
            if not isinstance(rate, (int, np.integer)) or not 8000 <= rate <= 192000:
                raise AudioError(f"sample rate must be an integer in 8000..192000 Hz, not {rate!r}")
        x = np.asarray(samples)
        if x.ndim == 2:
            x = x.mean(axis=1) if x.dtype.kind == "f" else x.astype(np.float64).mean(axis=1)  # mix to mono
        if x.ndim != 1:
            raise AudioError(f"samples must be 1-D (n,) or (n, channels), not shape {x.shape}")
        if x.dtype.kind in "iu":  # integer PCM: full scale -> ±1
            x = x.astype(np.float32) / float(np.iinfo(x.dtype).max + 1)
        elif x.dtype.kind != "f":
            raise AudioError(f"samples must be float or integer PCM, not {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise AudioError("samples contain NaN or infinite values")
        if self._rate is None:
            self._rate = int(rate)
        elif rate != self._rate:
            raise AudioError(f"sample rate changed mid-stream ({self._rate} -> {rate} Hz)")
        if rate == SAMPLE_RATE:
            return x
        if self._resampler is None:  # one streaming resampler: no seams between chunks
            import soxr

            self._resampler = soxr.ResampleStream(rate, SAMPLE_RATE, 1, dtype="float32")
        return self._resampler.resample_chunk(x)

    def feed(self, samples) -> list[StreamEvent]:
        """Add audio; returns the events it caused (finals first, then at most one partial)."""
        if self.closed:
            raise ConfigError("this stream is closed")
        return self._consume(self._to_16k(samples), final=False)

    def close(self) -> list[StreamEvent]:
        """End of audio: flush the resampler and the VAD, close the open utterance with a final."""
        if self.closed:
            return []
        tail = np.zeros(0, dtype=np.float32)
        if self._resampler is not None:
            tail = self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        events = self._consume(tail, final=True)
        if self.utt_start is not None:
            events += self._finalize(min(self.speech_end, self.t))
        self.closed = True
        return events

    # ------------------------------------------------------------------ the window loop

    def _consume(self, x: np.ndarray, final: bool) -> list[StreamEvent]:
        self.buf = np.concatenate([self.buf, x])
        self.t += x.size
        self.stats["audio_s"] = self.t / SAMPLE_RATE
        events = []
        opts = self.vad_options
        for p in self.vad(x, final=final).tolist():
            w_end = (self.win + 1) * WINDOW  # the window's end, in samples (may pass self.t when flushing)
            self.win += 1
            if self.utt_start is None:
                if p >= opts.threshold:
                    self.utt_start, self.speech_end, self.run, self.best = w_end - WINDOW, w_end, 1, 1
                    self.last_partial_at, self.probs = self.utt_start, [p]
                else:
                    self._trim(w_end - self.pad)
                continue
            self.probs.append(p)
            self.run = self.run + 1 if p >= opts.threshold else 0
            self.best = max(self.best, self.run)
            if p >= opts.neg_threshold:
                self.silence, self.speech_end = 0, w_end
            else:
                self.silence += 1
            if self.silence >= self.pause_w:
                events += self._finalize(self.speech_end)
            elif self.speculate and self.silence == self.spec_w:
                self._speculate()
            elif w_end - self.utt_start >= self.max_utt:
                events += self._cut()
            elif (
                self.language is None
                and w_end - self.utt_start + self.pad >= self.langid_n
                and self.best >= self.min_run
            ):
                self._identify(self.utt_start, self.speech_end)
        # a partial only while the speaker is talking (≤ 64 ms of silence): one started in the pause
        # would shift nothing on screen and could hold up the final behind it
        if (
            not final
            and self.utt_start is not None
            and self.best >= self.min_run
            and self.t - self.last_partial_at >= self.partial_every
            and self.silence <= 2
        ):
            events += self._partial()
        return events

    def _trim(self, keep_from: int) -> None:
        """Drop buffered samples before `keep_from` (context is kept for the next utterance's padding)."""
        drop = min(keep_from, self.t) - self.buf_start
        if drop > 0:
            self.buf, self.buf_start = self.buf[drop:], self.buf_start + drop

    def _audio(self, start: int, end: int) -> np.ndarray:
        """Buffered samples [start, end) (clipped to what is held)."""
        lo, hi = max(start, self.buf_start) - self.buf_start, min(end, self.t) - self.buf_start
        return self.buf[lo : max(lo, hi)]

    def _identify(self, start: int, end: int) -> None:
        """Fix the stream's language from the utterance [start, end) (at most langid_s of it)."""
        from .transcribe import identify_language

        t0 = time.perf_counter()
        audio = self._audio(start - self.pad, min(end + self.pad, start - self.pad + self.langid_n))
        self.language = identify_language(self.model, audio)[0][0]
        self.stats["langid_s"] += time.perf_counter() - t0

    def _partial(self) -> list[StreamEvent]:
        from .transcribe import decode_batch

        t0 = time.perf_counter()
        self.last_partial_at = self.t
        audio = self._audio(self.utt_start - self.pad, self.t)
        opts = dataclasses.replace(self.partial_options, language=self.language)
        text = decode_batch(self.model, [audio], opts, [self.language], word_timestamps=False)[0].text
        dt = time.perf_counter() - t0
        self.stats["partials"] += 1
        self.stats["partial_s"] += dt
        if not text or text == self.last_partial:
            return []
        self.last_partial = text
        return [
            StreamEvent(
                "partial",
                self.next_id,
                text,
                self.utt_start / SAMPLE_RATE,
                self.t / SAMPLE_RATE,
                self.language,
                decode_s=dt,
            )
        ]

    def _decode(self, start: int, end: int):
        """Decode the utterance [start, end) (speech, unpadded) with the model's default path:
        (offset of the decoded audio in s, Transcription, seconds taken). Identifies the language first
        if the stream has none yet."""
        from .transcribe import decode_batch

        t0 = time.perf_counter()
        lo = max(start - self.pad, self.buf_start)  # pad_s of context each side, where the stream has it
        audio = self._audio(lo, end + self.pad)
        if self.language is None:
            self._identify(start, end)
        opts = dataclasses.replace(self.options, language=self.language)
        r = decode_batch(self.model, [audio], opts, [self.language])[0]
        return lo / SAMPLE_RATE, r, time.perf_counter() - t0

    def _speculate(self) -> None:
        """The speaker has been silent for pad_s: all the audio a final at this speech end would decode
        has arrived, so decode it now, while the rest of the pause is still to come. If the pause
        completes, _finalize uses this result (the same audio, the same text); if speech resumes, it
        is dropped. In real time this hides the decode behind the pause instead of adding them."""
        if self.best >= self.min_run:
            self.spec = (self.utt_start, self.speech_end, *self._decode(self.utt_start, self.speech_end))
            self.stats["speculative"] += 1

    def _finalize(self, end: int) -> list[StreamEvent]:
        """Close the open utterance at `end` (its speech end); decode it with the model's default path."""
        start, partial_shown, keep, spec = self.utt_start, bool(self.last_partial), self.best >= self.min_run, self.spec
        if not keep:  # a blip (single windows over threshold): not speech
            self._reset_utterance()
            self._trim(end)
            return []
        if spec is not None and spec[:2] == (start, end):
            offset, r, dt = spec[2:]
            self.stats["speculative_used"] += 1
        else:
            offset, r, dt = self._decode(start, end)
        self._reset_utterance()
        self._trim(end)  # the next utterance may reuse the tail as its leading context
        self.stats["finals"] += 1
        self.stats["final_s"] += dt
        if not r.text and not partial_shown:  # noise the VAD took for speech, never shown: nothing to close
            return []
        s, e = start / SAMPLE_RATE, end / SAMPLE_RATE
        words = [
            {
                "word": w.text,
                "start": round(min(max(w.start + offset, s), e), 3),
                "end": round(min(max(w.end + offset, s), e), 3),
                "confidence": round(w.confidence, 4),
            }
            for w in r.words
        ]
        ev = StreamEvent("final", self.next_id, r.text, s, e, self.language, words, dt, steps=r.steps)
        self.next_id += 1
        return [ev]

    def _cut(self) -> list[StreamEvent]:
        """An utterance reached max_utterance_s without a pause: close it at its least speech-like
        window in the second half, and open the next utterance there (speech continues)."""
        probs = np.asarray(self.probs)
        half = len(probs) // 2
        k = half + int(np.argmin(probs[half:]))
        cut = self.utt_start + (k + 1) * WINDOW
        saved = (self.speech_end, self.silence, self.run, self.best, self.probs[k + 1 :])
        events = self._finalize(cut)
        self.speech_end, self.silence, self.run, self.best, self.probs = saved
        self.utt_start = self.last_partial_at = cut
        return events


def stream(model, language: str | None = None, **kwargs) -> StreamSession:
    """`model.stream(language=None, **kwargs)`: a StreamSession (see its parameters)."""
    return StreamSession(model, language, **kwargs)


def play(
    session: StreamSession, audio: np.ndarray, realtime: bool = True, chunk_s: float = 0.02, on_event=None
) -> list[tuple[StreamEvent, float]]:
    """Feed a 16 kHz float32 array (n,) to `session` as a live source would, then close it.

    realtime: audio becomes available on the wall clock (sample i at i / 16000 s after the start), in
    pieces of chunk_s; each feed takes everything available so far, so a decode slower than real time
    delays events but never piles up calls. Returns (event, latency s) pairs, where latency is the wall
    time the event came out minus the wall time its `end` sample became available (for a final: end
    of speech -> final). Without realtime the audio is fed in chunk_s pieces at once and latency is
    measured on the same audio clock (it can be negative: the decode ran ahead of real time).
    `on_event(event, latency)` is called as each event comes out.
    """
    out = []
    step = max(1, int(chunk_s * SAMPLE_RATE))
    t0, pos, n = time.monotonic(), 0, audio.size

    def emit(events, now):
        for ev in events:
            lat = now - ev.end
            out.append((ev, lat))
            if on_event is not None:
                on_event(ev, lat)

    while pos < n:
        now = time.monotonic() - t0
        avail = min(n, int(now * SAMPLE_RATE) // step * step) if realtime else min(n, pos + step)
        if avail <= pos:
            time.sleep((pos + step) / SAMPLE_RATE - now)
            continue
        events = session.feed(audio[pos:avail])
        pos = avail
        emit(events, time.monotonic() - t0 if realtime else pos / SAMPLE_RATE)
    events = session.close()
    emit(events, max(time.monotonic() - t0, n / SAMPLE_RATE) if realtime else n / SAMPLE_RATE)
    return out
