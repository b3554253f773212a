"""From audio to text: voice activity, chunks, batching, decoding, timestamps, language id.

`transcribe(model, audio, ...)` is the one entry point (also `model.transcribe`). For each input it
finds speech with the VAD (pipeline/vad.py: silence or noise gives empty text, no segments), cuts audio over
30 s into chunks at pauses (each chunk is a segment), identifies the language when none is given,
decodes the chunks of all inputs in batches (encoder, projector, CTC head, then the decoding
method of DecodeOptions: decoding/), times each word by CTC forced alignment of the final tokens over the audio tokens
(decoding/align.py) and returns `Transcription` objects. Files longer than STREAM_SECONDS are decoded block
by block, twice, and never held whole in memory.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..audio import MAX_SAMPLES, SAMPLE_RATE, load_audio
from ..decoding import DecodeOptions, resolve
from ..decoding.align import Word, ctc_align, words_from_tokens, words_of_text
from ..decoding.ctc import speech_evidence
from ..decoding.decode import decode, decode_front
from ..errors import ConfigError
from ..models.encoder import FRAMES_PER_SECOND
from ..text import word_separator
from .vad import Chunk, file_duration, fixed_chunks, read_chunks, scan_file, speech_chunks

STREAM_SECONDS = 600.0  # files longer than this are streamed (two block-wise passes) instead of loaded


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclass
class Transcription:
    text: str
    language: str | None
    tokens: list[int] = field(default_factory=list)  # transcript token ids
    confidences: list[float] = field(default_factory=list)  # one per token, in [0, 1]
    token_strings: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # one per speech chunk, absolute times
    duration: float = 0.0  # seconds of audio
    method: str = "diffusion"  # the decoding method (DecodeOptions.method)
    steps_run: int = 0
    tail_tokens: int = 0  # verified methods: tokens the causal pass wrote one by one once the steps ran out
    timings: dict = field(default_factory=dict)  # seconds per stage, for this batch
    words: list[Word] = field(default_factory=list)  # CTC-aligned, absolute times, inside their segment
    language_probability: float | None = None  # when the language was identified, not given
    speech: dict = field(default_factory=dict)  # per window: speech_evidence (CTC tokens/s, confidence)
    steps: list[dict] | None = None  # return_steps: each step's canvas per segment (decoding/steps.py)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d["steps"] is None:  # not asked for: the dict is as it was before steps existed
            del d["steps"]
        return d


# No-speech guard for audio decoded without the VAD. Its evidence is the CTC head read with no
# language in the prompt (with the decoding language the head hallucinates more readily: silence then
# emits 1.7 tokens/s): greedy CTC tokens per second, and the mean winning probability over frames
# whose winner is not blank. A window is speech when, for some (rate, confidence) of SPEECH_EVIDENCE,
# it emits at least that many tokens per second at least that confidently. Digital silence (RMS
# under SILENCE_RMS) never is. Set on 150 real_train clips + real_dev (slowest speech over 1 s:
# Chinese, 1.11 tokens/s at 0.68, 1.47 at 0.38) against 125 white/brown noises of 4 levels, silence,
# hum, tones, a melody and tone+click mixes (noise ≤ 1.1 tokens/s, ≤ 0.34 confident at ≥ 0.8 tokens/s;
# the music-like mix 1.63 at 0.28): docs/results/no_speech_guard.txt. A 30-s window holding only
# a few words among long pauses falls under 0.8 tokens/s and is dropped: use the VAD for such audio.
SPEECH_EVIDENCE = ((2.0, 0.0), (1.4, 0.35), (0.8, 0.45))  # (CTC tokens per second, mean confidence)
SILENCE_RMS = 1e-4  # -80 dBFS
# Under a second (12 audio tokens) the counts say too little: real_dev's 0.3-s "four" gets no CTC
# token at all yet decodes right, so shorter windows are judged only by SILENCE_RMS.
MIN_JUDGED_SECONDS = 1.0


def is_speech(evidence: dict) -> bool:
    """The no-speech guard's verdict on one window's `speech_evidence` (+ its `rms`)."""
    rate, conf = evidence["rate"], evidence["confidence"]
    if evidence.get("rms", 1.0) < SILENCE_RMS:
        return False
    if evidence.get("seconds", math.inf) < MIN_JUDGED_SECONDS:
        return True
    return any(rate >= min_rate and conf >= min_conf for min_rate, min_conf in SPEECH_EVIDENCE)


def guard_evidence(model, audio_tokens, n_audio, durations: list[float]) -> list[dict]:
    """speech_evidence from the model's CTC head with no language in the prompt."""
    logits, _ = model.ctc(audio_tokens, n_audio, [None] * len(durations))
    return speech_evidence(logits, n_audio, durations, model.tokenizer.pad)


def _align_words(model, ids: list[int], conf: list[float], log_probs: torch.Tensor, duration: float) -> list[Word]:
    """Words of one piece, times relative to its start. log_probs: CTC log-probabilities (T, V)."""
    if not ids:
        return []
    tok = model.tokenizer
    vocab = sorted(set(ids))  # align over the columns that matter: blank + the transcript's tokens
    cols = torch.tensor([tok.pad] + vocab, device=log_probs.device)
    col_of = {v: i + 1 for i, v in enumerate(vocab)}
    spans = ctc_align(log_probs[:, cols].float().cpu().numpy(), [col_of[i] for i in ids], blank=0)
    if spans is None:  # more tokens than audio tokens (CTC cannot place them): spread them evenly
        edges = np.linspace(0.0, duration, len(ids) + 1)
        times = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    else:
        spt = model.projector.factor / FRAMES_PER_SECOND  # seconds per audio token (0.08 at 4×)
        times = [(min(a * spt, duration), min((b + 1) * spt, duration)) for a, b in spans.tolist()]
    return words_from_tokens(tok, ids, tok.token_strings(ids), times, conf)


@torch.no_grad()
def decode_batch(
    model,
    audios: list[np.ndarray],
    options: DecodeOptions,
    languages: list,
    word_timestamps: bool = True,
    speech_guard: bool = False,
) -> list[Transcription]:
    """Transcribe ≤ 30 s arrays as one batch (word times relative to each array's start).
    speech_guard: arrays the CTC head finds no speech in (`is_speech`) come back with empty text."""
    t0 = time.perf_counter()
    feats = model.encode(audios)
    windows = None
    if any(want := model.backend.needs_window(options, languages)):
        # the released decoder verifies these rows: it reads Whisper's padded 30-s window
        padded = iter(model.encode_window([a for a, w in zip(audios, want) if w]))
        windows = [next(padded) if w else None for w in want]
    times = {"encoder": time.perf_counter() - t0}
    results = decode_features(
        model,
        feats,
        [a.size / SAMPLE_RATE for a in audios],
        options,
        languages,
        word_timestamps,
        times,
        speech_guard,
        windows,
    )
    if speech_guard:  # digital silence: no model evidence needed
        for r, a in zip(results, audios):
            r.speech["rms"] = round(float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))), 6)
            if not is_speech(r.speech):
                r.text, r.tokens, r.confidences, r.token_strings, r.words = "", [], [], [], []
    return results


@torch.no_grad()
def decode_features(
    model,
    feats: list,
    durations: list[float],
    options: DecodeOptions,
    languages: list,
    word_timestamps: bool = True,
    times: dict | None = None,
    speech_guard: bool = False,
    windows: list | None = None,
) -> list[Transcription]:
    """Decode frozen-encoder features (list of (frames_i, d)) as one batch: the part of
    `decode_batch` after the encoder, shared with evaluation on cached features during training.
    windows (base, `whisper` verifier): per row, the encoder's padded 30-s window (1500, d) or None."""
    tok = model.tokenizer
    times = {} if times is None else times
    front = decode_front(model, feats, languages, options, times)
    evidence = (
        guard_evidence(model, front.audio_tokens, front.n_audio, durations) if speech_guard else [{}] * len(durations)
    )
    hyps = decode(model, feats, front, languages, options, times, windows)
    ctc, n_audio = front.ctc, front.n_audio
    results = []
    for h, d, lang, ev in zip(hyps, durations, languages, evidence):
        if speech_guard and not is_speech(ev):  # no VAD upstream: the guard stands in for it
            h = dataclasses.replace(h, tokens=[], confidences=[], text="", token_strings=[], spans=[], align_tokens=[])
        results.append(
            Transcription(
                text=tok.decode(h.tokens) if h.text is None else h.text,
                language=lang,
                tokens=h.tokens,
                confidences=h.confidences,
                token_strings=tok.token_strings(h.tokens) if h.token_strings is None else h.token_strings,
                duration=d,
                method=options.method,
                steps_run=h.steps_run,
                tail_tokens=h.tail_tokens,
                speech=ev,
                steps=h.steps,
            )
        )
    if word_timestamps:
        t0 = time.perf_counter()
        log_probs = ctc.float().log_softmax(-1)
        for r, h, lp, n in zip(results, hyps, log_probs, n_audio.tolist()):
            if h.align_tokens is None:  # the CTC head's own tokens: their words, as sure as their tokens
                r.words = _align_words(model, r.tokens, r.confidences, lp[:n], r.duration)
            else:  # the words of the text, as sure as the tokens that wrote them, timed by the CTC head
                timed = _align_words(model, h.align_tokens, [1.0] * len(h.align_tokens), lp[:n], r.duration)
                r.words = words_of_text(r.text, h.spans, h.confidences, timed, r.duration)
        times["align"] = time.perf_counter() - t0
    for r in results:
        r.timings = dict(times)
    return results


# ---------------------------------------------------------------------- language identification


def identify_language(model, audio: np.ndarray) -> list[tuple[str, float]]:
    """Languages of the model with probabilities, best first, from (the first 30 s of) 16 kHz speech:
    CTranslate2 Whisper's language head over the frozen encoder (input zero-padded to ≥ 10 s),
    restricted to the model's languages."""
    if not hasattr(model.encoder, "detect_language"):
        raise ConfigError("this model's encoder cannot identify the language: give the language")
    return model.encoder.detect_language(audio[:MAX_SAMPLES], tuple(model.config.languages))


# ---------------------------------------------------------------------- long-form orchestration


@dataclass
class _Piece:
    job: _Input
    span: Chunk  # samples decoded (word times are relative to its start)
    segment: Chunk  # the segment it reports (the speech inside span, or span itself)
    audio: np.ndarray


class _Input:
    """One input on its way through `transcribe`: plan its chunks, identify its language, collect parts."""

    def __init__(self, model, source, options: DecodeOptions, vad: bool):
        self.model, self.source, self.options, self.vad = model, source, options, vad
        self.language, self.language_probability = options.language, None
        self.n_samples = 0
        self.parts: list[tuple[_Piece, Transcription]] = []
        self.timings: dict = {}

    def pieces(self):
        """Yields _Piece objects in order; audio of a long file is read as the pieces are consumed."""
        t0 = time.perf_counter()
        if _is_long_file(self.source):
            chunks, self.n_samples = scan_file(self.source, use_vad=self.vad)
            plan = [(c, c) for c in chunks]
            audios = read_chunks(self.source, chunks)
        else:
            audio = load_audio(self.source)
            self.n_samples = audio.size
            self.timings["audio_decode"] = time.perf_counter() - t0
            chunks = speech_chunks(audio) if self.vad else fixed_chunks(audio.size)
            if self.vad and chunks and audio.size <= MAX_SAMPLES:  # fits one window: decode it whole
                plan = [(Chunk(0, audio.size), Chunk(chunks[0].start, chunks[-1].end))]
            else:
                plan = [(c, c) for c in chunks]
            audios = (audio[c.start : c.end] for c, _ in plan)
        self.timings["vad"] = time.perf_counter() - t0 - self.timings.get("audio_decode", 0.0)
        items = zip(plan, audios)
        if self.language is None and plan:
            head, total = [], 0  # the first ≤ 30 s of speech (chunks are read, not skipped)
            for item in items:
                head.append(item)
                total += item[1].size
                if total >= MAX_SAMPLES:
                    break
            t0 = time.perf_counter()
            ranked = identify_language(self.model, np.concatenate([a for _, a in head]))
            self.language, self.language_probability = ranked[0][0], round(float(ranked[0][1]), 4)
            self.timings["language_id"] = time.perf_counter() - t0
            items = itertools.chain(head, items)
        for (span, segment), a in items:
            yield _Piece(self, span, segment, a)

    def result(self) -> Transcription:
        parts = [(p, t) for p, t in self.parts if t.text]
        segments, words = [], []
        steps = [] if self.options.return_steps else None
        for p, t in parts:
            if steps is not None:
                steps += [{**st, "segment": len(segments)} for st in t.steps or []]
            lo, hi = round(p.segment.start_s, 3), round(p.segment.end_s, 3)
            segments.append(Segment(start=lo, end=hi, text=t.text))
            for w in t.words:  # absolute, clamped into the segment (monotonic within and across)
                s = min(max(w.start + p.span.start_s, lo), hi)
                e = min(max(w.end + p.span.start_s, s), hi)
                words.append(Word(round(s, 3), round(e, 3), w.text, round(w.confidence, 4)))
        return Transcription(
            text=word_separator(self.language).join(t.text for _, t in parts).strip(),
            language=self.language,
            tokens=[i for _, t in parts for i in t.tokens],
            confidences=[c for _, t in parts for c in t.confidences],
            token_strings=[s for _, t in parts for s in t.token_strings],
            segments=segments,
            duration=self.n_samples / SAMPLE_RATE,
            method=self.options.method,
            steps_run=max((t.steps_run for _, t in self.parts), default=0),
            tail_tokens=sum(t.tail_tokens for _, t in self.parts),
            timings=self.timings,
            words=words,
            language_probability=self.language_probability,
            steps=steps,
        )


def _is_long_file(source) -> bool:
    if not isinstance(source, (str, Path)) or not Path(source).is_file():
        return False
    seconds = file_duration(source)
    return seconds is not None and seconds > STREAM_SECONDS


def transcribe(
    model,
    audio,
    steps: int | None = None,
    language: str | None = None,
    batch_size: int = 8,
    options: DecodeOptions | None = None,
    *,
    vad: bool = True,
    word_timestamps: bool = True,
    **kwargs,
):
    """Transcribe one input (-> Transcription) or a list of inputs (-> list, chunks decoded in batches).

    audio: a path, bytes, a file object, a 16 kHz array, (array, sample_rate), or a list of these.
    language and any DecodeOptions field (method="ctc-greedy", steps=4, seed=...) may be given as
    keywords, over the model's decode_defaults (decoding.resolve: a field the method does not read is
    a ConfigError); `options` replaces them all. language None or "auto": identified per input.
    vad=False skips voice activity detection (fixed 30-s windows, no silence removal);
    word_timestamps=False skips the alignment (`words` stays empty). return_steps=True (a DecodeOptions
    field, read by the canvas methods) fills `steps`: each step's canvas (decoding/steps.py).
    """
    single = not isinstance(audio, list)
    items = [audio] if single else list(audio)
    if options is None:
        options = resolve(
            model.config.decode_defaults, {"steps": steps, "language": language, **kwargs}, model.backend.reads
        )
    if options.language == "auto":
        options = dataclasses.replace(options, language=None)
    if options.language is not None and options.language not in model.config.languages:
        raise ConfigError(
            f"language {options.language!r} not supported (choose from {', '.join(model.config.languages)})"
        )
    if batch_size < 1:
        raise ConfigError("batch_size must be ≥ 1")
    jobs = [_Input(model, x, options, vad) for x in items]
    pieces = (p for job in jobs for p in job.pieces())  # lazy: long files stream through
    while batch := list(itertools.islice(pieces, batch_size)):
        outs = decode_batch(
            model,
            [p.audio for p in batch],
            options,
            [p.job.language for p in batch],
            word_timestamps,
            speech_guard=not vad,
        )
        for p, o in zip(batch, outs):
            p.job.parts.append((p, o))
        for job in {id(p.job): p.job for p in batch}.values():  # batch timings once per input in it
            for k, v in outs[0].timings.items():
                job.timings[k] = max(job.timings.get(k, 0), v) if k == "steps_run" else job.timings.get(k, 0.0) + v
    results = [job.result() for job in jobs]
    return results[0] if single else results
