"""From audio to text: batching, windows of ≤ 30 s, the two decoders, results, and the CLI command.

`transcribe(model, audio, ...)` is the one entry point (also `model.transcribe`). It decodes the
input, runs the frozen encoder, the projector and either greedy CTC or the diffusion sampler, and
returns `Transcription` objects with text, language, per-token confidences and stage timings.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio import MAX_SAMPLES, SAMPLE_RATE, AudioInput, load_audio
from .diffusion import DecodeOptions, canvas_length, random_canvas, sample
from .errors import ConfigError
from .tokenizer import LANGUAGES


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
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio
    decoder: str = "diffusion"
    steps_run: int = 0
    timings: dict = field(default_factory=dict)  # seconds per stage, for this batch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def ctc_greedy(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Greedy CTC: argmax per audio token, collapse repeats, drop blanks. logits (B, T, V)."""
    best = logits.argmax(-1).tolist()
    out = []
    for row, n in zip(best, lengths.tolist()):
        ids, prev = [], None
        for t in row[:n]:
            if t != prev and t != blank:
                ids.append(t)
            prev = t
        out.append(ids)
    return out


def _until_eos(ids: list[int], conf: list[float], tok) -> tuple[list[int], list[float]]:
    """Tokens before the first EOS, without pads/specials (the canvas ends in EOS then padding)."""
    keep_ids, keep_conf = [], []
    for i, c in zip(ids, conf):
        if i == tok.eos:
            break
        if i in (tok.pad, tok.bos, tok.sep, tok.audio):
            continue
        keep_ids.append(i)
        keep_conf.append(c)
    return keep_ids, keep_conf


@torch.no_grad()
def decode_batch(model, audios: list[np.ndarray], options: DecodeOptions, languages: list) -> list[Transcription]:
    """Transcribe ≤ 30 s arrays as one batch."""
    tok = model.tokenizer
    times = {}
    t0 = time.perf_counter()
    feats = model.encode(audios)
    times["encoder"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    audio_tokens, n_audio = model.project(feats)
    ctc_ids = ctc_greedy(model.ctc_logits(audio_tokens), n_audio, blank=tok.pad)
    times["projector_ctc"] = time.perf_counter() - t0

    results = []
    if options.decoder == "ctc":
        for a, ids, lang in zip(audios, ctc_ids, languages):
            results.append(Transcription(text=tok.decode(ids), language=lang, tokens=ids, confidences=[1.0] * len(ids),
                                         token_strings=tok.token_strings(ids), duration=a.size / SAMPLE_RATE, decoder="ctc"))
        for r in results:
            r.timings = dict(times)
        return results

    t0 = time.perf_counter()
    cache, mask, _ = model.prefill(audio_tokens, n_audio, languages)
    times["prefill"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    L = max(canvas_length(len(ids), options, model.config.canvas_length) for ids in ctc_ids)
    g = torch.Generator().manual_seed(options.seed)
    init = random_canvas(len(audios), L, tok.vocab_size, g)
    if options.init == "ctc":  # seed the canvas with the CTC transcript, EOS, then padding
        for i, ids in enumerate(ctc_ids):
            row = (ids + [tok.eos])[:L]
            init[i, : len(row)] = torch.tensor(row)
            init[i, len(row):] = tok.pad
    init = init.to(model.device)

    def step_fn(canvas, sc):
        return model.backbone.denoise(cache, mask, canvas, sc)

    out = sample(step_fn, init, tok.vocab_size, options, g)
    times["denoise"] = time.perf_counter() - t0
    times["steps_run"] = out.steps_run
    for i, (a, lang) in enumerate(zip(audios, languages)):
        ids, conf = _until_eos(out.tokens[i].tolist(), out.confidence[i].tolist(), tok)
        results.append(Transcription(text=tok.decode(ids), language=lang, tokens=ids, confidences=conf,
                                     token_strings=tok.token_strings(ids), duration=a.size / SAMPLE_RATE,
                                     decoder="diffusion", steps_run=out.steps_run, timings=dict(times)))
    return results


def _windows(audio: np.ndarray) -> list[np.ndarray]:
    """Split audio longer than 30 s into ≤ 30 s windows (fixed cuts; long-form VAD does better)."""
    return [audio[i: i + MAX_SAMPLES] for i in range(0, max(1, audio.size), MAX_SAMPLES)]


def transcribe(model, audio, steps: int = 8, language: str | None = None, batch_size: int = 8,
               options: DecodeOptions | None = None, **kwargs):
    """Transcribe one input (-> Transcription) or a list of inputs (-> list, processed in batches).

    audio: a path, bytes, a file object, a 16 kHz array, (array, sample_rate), or a list of these.
    steps, language and any DecodeOptions field (decoder="ctc", sampler=..., seed=...) may be given
    as keywords; `options` replaces them all. Audio over 30 s is cut into windows and joined.
    """
    single = not isinstance(audio, list)
    items = [audio] if single else list(audio)
    if options is None:
        options = DecodeOptions(steps=steps, language=language, **kwargs)
    if options.language is not None and options.language not in model.config.languages:
        raise ConfigError(f"language {options.language!r} not supported (choose from {', '.join(model.config.languages)})")
    if batch_size < 1:
        raise ConfigError("batch_size must be ≥ 1")
    t0 = time.perf_counter()
    arrays = [load_audio(x) for x in items]
    t_decode = time.perf_counter() - t0
    # Flatten windows of every input, decode them in batches, then stitch per input.
    pieces = [(i, w) for i, a in enumerate(arrays) for w in _windows(a)]
    langs = [options.language] * len(pieces)
    outs: list[Transcription] = []
    for b in range(0, len(pieces), batch_size):
        chunk = pieces[b: b + batch_size]
        outs += decode_batch(model, [w for _, w in chunk], options, langs[b: b + batch_size])
    results = []
    for i, a in enumerate(arrays):
        parts = [o for (j, _), o in zip(pieces, outs) if j == i]
        results.append(_join(parts, a.size / SAMPLE_RATE, options.language, t_decode / len(arrays)))
    return results[0] if single else results


def _join(parts: list[Transcription], duration: float, language, t_audio: float) -> Transcription:
    sep = "" if language == "zh" else " "
    segs, t = [], 0.0
    for p in parts:
        segs.append(Segment(start=round(t, 3), end=round(t + p.duration, 3), text=p.text))
        t += p.duration
    first = parts[0]
    timings = {k: sum(p.timings.get(k, 0) for p in parts) for k in first.timings}
    timings["audio_decode"] = t_audio
    return Transcription(
        text=sep.join(p.text for p in parts if p.text).strip(), language=first.language,
        tokens=[t for p in parts for t in p.tokens], confidences=[c for p in parts for c in p.confidences],
        token_strings=[s for p in parts for s in p.token_strings], segments=segs, duration=duration,
        decoder=first.decoder, steps_run=max(p.steps_run for p in parts), timings=timings,
    )


# ---------------------------------------------------------------------- CLI: diffasr transcribe


def add_arguments(p) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-small)")
    p.add_argument("--steps", type=int, default=8, help="denoising steps (default 8)")
    p.add_argument("--language", default=None, choices=LANGUAGES, help="spoken language (default: auto)")
    p.add_argument("--decoder", default="diffusion", choices=["diffusion", "ctc"], help="decoder (default diffusion)")
    p.add_argument("--sampler", default="refine", choices=["refine", "entropy"], help="sampler (default refine)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")
    p.add_argument("--batch-size", type=int, default=8, help="windows decoded together (default 8)")
    p.add_argument("--format", default="txt", choices=["txt", "json"], help="output format (default txt)")
    p.add_argument("--output-dir", default=None, help="write <dir>/<stem>.<format> per file instead of stdout")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args) -> int:
    import json
    import sys

    from tqdm import tqdm

    from . import load
    from .errors import AudioError

    options = DecodeOptions(steps=args.steps, language=args.language, decoder=args.decoder, sampler=args.sampler, seed=args.seed)
    model = load(args.model, device=args.device)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    bar = tqdm(args.files, unit="file", disable=len(args.files) < 2 or not sys.stderr.isatty())
    for f in bar:
        try:
            r = transcribe(model, f, options=options, batch_size=args.batch_size)
        except AudioError as e:
            if len(args.files) == 1:
                raise
            print(f"diffasr transcribe: error: {e}", file=sys.stderr)
            failed += 1
            continue
        text = r.text + "\n" if args.format == "txt" else json.dumps(r.to_dict(), ensure_ascii=False) + "\n"
        if out_dir:
            dest = out_dir / f"{Path(f).stem}.{args.format}"
            tmp = dest.with_suffix(dest.suffix + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(dest)
        else:
            sys.stdout.write(text if len(args.files) == 1 or args.format == "json" else f"{f}: {text}")
            sys.stdout.flush()
    return 1 if failed else 0
