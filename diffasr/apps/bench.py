"""Where the time goes, and how it compares with faster-whisper in the same run: `diffasr bench`.

Four measurements, each a median over `--repeats` runs after a warm-up:
- stages: audio decode, encoder, projector + CTC, prefill, the full sampler (from the `timings` that
  `transcribe` returns) and one `model.denoise` call timed directly, for a ~10 s clip at batch 1 and 8;
- throughput at batch 1/8/32 over 32 clips (one timed pass each, the model already warm) (clips/s, real-time factor); faster-whisper decodes
  one file at a time, so its figure is sequential;
- decode time against transcript length at fixed steps (the shortest and the longest clip): the
  sampler runs `steps` forward passes whatever the length, while autoregressive decoding runs one
  per token;
- peak resident memory after each system.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from ..decoding.options import METHODS, reads
from ..errors import ConfigError, DataError


def shared_dir() -> Path:
    return Path(os.environ.get("DIFFASR_SHARED", Path(__file__).resolve().parents[3] / "shared"))


def default_clips() -> list[tuple[Path, str | None]]:
    """(audio, language) of every real_dev clip."""
    from .evaluate import load_manifest

    manifest = shared_dir() / "data" / "real_dev" / "manifest.jsonl"
    if not manifest.is_file():
        raise DataError(f"{manifest}: no real_dev manifest (set DIFFASR_SHARED or pass --clips)")
    return [(c.audio, c.lang) for c in load_manifest(manifest)]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeats: int, warmup: bool = True) -> tuple[float, object]:
    """Median wall seconds of `fn()` over `repeats` runs (after one warm-up call), and the last result."""
    out = fn() if warmup else None
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# ---------------------------------------------------------------------- diffasr measurements


def stage_times(model, clip: Path, language: str | None, batch: int, options, repeats: int = 3) -> dict:
    """Seconds per stage for `batch` copies of `clip` decoded as one batch with DecodeOptions
    `options` (medians over repeats).

    `one_step` times a single denoiser pass on the batch's own canvas length, as the model's decoder
    backend runs it (`Backend.one_step`: small's DiffusionGemma on its prompt state with the
    self-conditioning logits every step after the first sees; base's Whisper decoder over a canvas of
    the language's vocabulary).
    """
    import torch

    from ..audio import load_audio
    from ..decoding.ctc import ctc_greedy
    from ..decoding.decode import decode_front
    from .evaluate import transcribe_plain as transcribe

    files = [str(clip)] * batch
    runs = []
    for i in range(repeats + 1):  # the first run warms up
        t0 = time.perf_counter()
        r = transcribe(model, files, options=dataclasses.replace(options, language=language), batch_size=batch)[0]
        if i:
            runs.append(dict(r.timings, total=time.perf_counter() - t0))
    out = {k: statistics.median(run.get(k, 0.0) for run in runs) for k in runs[0]}
    out["audio_decode"] *= batch  # transcribe reports it per input

    with torch.no_grad():
        audios = [load_audio(clip)] * batch
        feats = model.encode(audios)
        front = decode_front(model, feats, [language] * batch, options)
        ctc = ctc_greedy(front.ctc, front.n_audio, blank=model.tokenizer.pad)
        step, L = model.backend.one_step(model, feats, front, ctc, [language] * batch, options)
        out["one_step"], _ = timed(step, repeats)
    steps_run = out.get("steps_run", 0)
    out.update(batch=batch, canvas=L, steps=steps_run, per_step=out.get("denoise", 0.0) / max(1, steps_run))
    return out


def throughput(model, arrays: list[np.ndarray], language: str | None, batch: int, options, repeats: int = 1) -> dict:
    """Clips per second and real-time factor for `arrays` decoded in batches of `batch`."""
    from ..audio import SAMPLE_RATE
    from .evaluate import transcribe_plain as transcribe

    options = dataclasses.replace(options, language=language)
    seconds, _ = timed(
        lambda: transcribe(model, list(arrays), options=options, batch_size=batch), repeats, warmup=False
    )
    audio_s = sum(a.size for a in arrays) / SAMPLE_RATE
    return dict(
        batch=batch,
        clips=len(arrays),
        audio_s=audio_s,
        seconds=seconds,
        clips_per_s=len(arrays) / seconds,
        rtf=seconds / audio_s,
    )


def length_times(model, arrays: list[np.ndarray], languages: list, options, repeats: int = 3) -> list[dict]:
    """For each clip at batch 1: transcript tokens, steps run and sampler seconds (median)."""
    from ..audio import SAMPLE_RATE
    from .evaluate import transcribe_plain as transcribe

    rows = []
    for a, lang in zip(arrays, languages):
        runs = [transcribe(model, a, options=dataclasses.replace(options, language=lang)) for _ in range(repeats + 1)][
            1:
        ]
        rows.append(
            dict(
                audio_s=a.size / SAMPLE_RATE,
                tokens=len(runs[0].tokens),
                steps_run=runs[0].steps_run,
                tail_tokens=runs[0].tail_tokens,
                denoise=statistics.median(r.timings["denoise"] for r in runs),
                total=statistics.median(sum(v for k, v in r.timings.items() if k != "steps_run") for r in runs),
            )
        )
    return rows


# ---------------------------------------------------------------------- faster-whisper


def fw_decode(fw, audio, language: str | None) -> tuple[str, int]:
    """Greedy, language given: (text, output tokens)."""
    segments, _ = fw.transcribe(audio, language=language, beam_size=1, temperature=0.0, vad_filter=False)
    segments = list(segments)
    return "".join(s.text for s in segments).strip(), sum(len(s.tokens) for s in segments)


def fw_length_times(fw, arrays: list[np.ndarray], languages: list, repeats: int = 3) -> list[dict]:
    from ..audio import SAMPLE_RATE

    rows = []
    for a, lang in zip(arrays, languages):
        seconds, (_, n) = timed(lambda a=a, lang=lang: fw_decode(fw, a, lang), repeats)
        rows.append(dict(audio_s=a.size / SAMPLE_RATE, tokens=n, seconds=seconds))
    return rows


def plot_lengths(path: str, ours: list[dict], theirs: list[dict] | None, label: str) -> None:
    """Scatter of decode seconds per clip against transcript tokens (ours: `tokens`, `total`;
    faster-whisper's: `tokens`, `seconds`), written atomically to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([r["tokens"] for r in ours], [r["total"] for r in ours], s=18, label=f"diffasr ({label})")
    if theirs:
        ax.scatter(
            [r["tokens"] for r in theirs], [r["seconds"] for r in theirs], s=18, marker="x", label="faster-whisper"
        )
    ax.set_xlabel("transcript tokens")
    ax.set_ylabel("decode seconds per clip (batch 1)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


# ---------------------------------------------------------------------- tables


def _table(header, rows) -> str:
    from .evaluate import markdown_table

    return markdown_table(header, rows)


def stage_table(stages: list[dict], fw_latency: float | None = None) -> str:
    keys = ["audio_decode", "encoder", "projector_ctc", "prefill", "one_step", "denoise"]
    known = set(keys) | {"total", "steps_run", "batch", "canvas", "steps", "per_step"}
    keys += [k for k in stages[0] if k not in known and any(s.get(k) for s in stages)] + [
        "total"
    ]  # stages a newer transcribe reports
    header = ["batch", "canvas", "steps run"] + [f"{k} ms" for k in keys] + ["ms / clip"]
    rows = [
        [s["batch"], s["canvas"], s.get("steps_run", 0)]
        + [f"{1000 * s.get(k, 0.0):.1f}" for k in keys]
        + [f"{1000 * s['total'] / s['batch']:.1f}"]
        for s in stages
    ]
    text = _table(header, rows)
    if fw_latency is not None:
        text += f"\nfaster-whisper, same clip, batch 1: {1000 * fw_latency:.1f} ms"
    return text


def throughput_table(rows: list[dict], fw: dict | None) -> str:
    header = ["system", "batch", "clips", "audio s", "seconds", "clips/s", "RTF"] + (
        ["speed vs faster-whisper"] if fw else []
    )
    out = []
    for r in rows:
        cells = [
            "diffasr",
            r["batch"],
            r["clips"],
            f"{r['audio_s']:.1f}",
            f"{r['seconds']:.2f}",
            f"{r['clips_per_s']:.1f}",
            f"{r['rtf']:.4f}",
        ]
        out.append(cells + ([f"{r['clips_per_s'] / fw['clips_per_s']:.1f}x"] if fw else []))
    if fw:
        out.append(
            [
                "faster-whisper",
                "1 (sequential)",
                fw["clips"],
                f"{fw['audio_s']:.1f}",
                f"{fw['seconds']:.2f}",
                f"{fw['clips_per_s']:.1f}",
                f"{fw['rtf']:.4f}",
                "1.0x",
            ]
        )
    return _table(header, out)


def length_table(rows: list[dict], fw_rows: list[dict] | None) -> str:
    header = ["clip", "audio s", "diffasr tokens", "steps run", "sampler ms", "diffasr total ms"]
    header += ["fw tokens", "fw total ms"] if fw_rows else []
    out = []
    for i, (name, r) in enumerate(zip(("short", "long"), rows)):
        cells = [
            name,
            f"{r['audio_s']:.1f}",
            r["tokens"],
            r["steps_run"],
            f"{1000 * r['denoise']:.1f}",
            f"{1000 * r['total']:.1f}",
        ]
        if fw_rows:
            cells += [fw_rows[i]["tokens"], f"{1000 * fw_rows[i]['seconds']:.1f}"]
        out.append(cells)
    return _table(header, out)


# ---------------------------------------------------------------------- CLI: diffasr bench


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-base)")
    p.add_argument("--clips", nargs="+", default=None, metavar="FILE", help="audio files (default: the real_dev clips)")
    p.add_argument("--language", default=None, help="language of --clips (default: auto; real_dev clips carry theirs)")
    p.add_argument("--method", default=None, choices=METHODS, help="decoding method (default: the model's)")
    p.add_argument(
        "--steps", type=int, default=None, help="denoising steps, for the methods that read them (default 8)"
    )
    p.add_argument("--batch-sizes", default="1,8,32", help="throughput batch sizes (default 1,8,32)")
    p.add_argument(
        "--throughput-clips", type=int, default=32, metavar="N", help="clips in the throughput set (default 32)"
    )
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement, after a warm-up (default 3)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for both systems (default: library defaults)")
    p.add_argument("--no-baseline", action="store_true", help="skip faster-whisper")
    p.add_argument("--json", default=None, metavar="OUT", help="write every measurement as JSON")
    p.add_argument("--device", default="cpu", help="torch device for diffasr (default cpu)")
    p.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="decode time per clip against transcript tokens, both systems, batch 1, over every distinct "
        "throughput clip (one timed run each after the warm-up)",
    )


def pick_clips(clips: list[tuple[Path, str | None]], durations: list[float], n_throughput: int = 32) -> dict:
    """The ~10 s clip for stage timings, the shortest clip of at least a second (a few words) and
    the longest, and `n_throughput` clips (cycled) of the most common language for throughput."""
    ten = min(range(len(clips)), key=lambda i: abs(durations[i] - 10))
    short = min(range(len(clips)), key=lambda i: (durations[i] < 1.0, durations[i]))
    long = max(range(len(clips)), key=lambda i: durations[i])
    langs = [lang for _, lang in clips]
    main = max(dict.fromkeys(langs), key=langs.count)
    pool = [i for i, lang in enumerate(langs) if lang == main]
    return dict(
        ten=ten, short=short, long=long, language=main, throughput=[pool[k % len(pool)] for k in range(n_throughput)]
    )


def run(args) -> int:
    from .. import load
    from ..audio import SAMPLE_RATE, load_audio
    from ..decoding import resolve
    from .evaluate import _parse_list, _write, load_faster_whisper, set_threads

    batches = _parse_list(args.batch_sizes, "batch-sizes", int)
    if min(args.repeats, args.throughput_clips, *batches) < 1:
        raise ConfigError("--repeats, --throughput-clips and --batch-sizes must be ≥ 1")
    clips = [(Path(f), args.language) for f in args.clips] if args.clips else default_clips()
    arrays = [load_audio(f) for f, _ in clips]
    durations = [a.size / SAMPLE_RATE for a in arrays]
    pick = pick_clips(clips, durations, args.throughput_clips)
    ten_clip, ten_lang = clips[pick["ten"]]

    model = load(args.model, device=args.device)
    options = resolve(model.config.decode_defaults, {"method": args.method, "steps": args.steps}, model.backend.reads)
    label = options.method + (f", {options.steps} steps" if "steps" in reads(options.method) else "")
    if args.threads:
        set_threads(model, args.threads)
    rss = dict(after_load_mb=peak_rss_mb())
    log = lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True)  # noqa: E731

    log(f"stages on {ten_clip.name} ({durations[pick['ten']]:.1f} s)")
    stages = [stage_times(model, ten_clip, ten_lang, b, options, args.repeats) for b in (1, 8)]
    tp_arrays = [arrays[i] for i in pick["throughput"]]
    log(f"throughput over {len(tp_arrays)} {pick['language'] or ''} clips at batch {', '.join(map(str, batches))}")
    tp = [throughput(model, tp_arrays, pick["language"], b, options) for b in batches]
    lengths = [pick["short"], pick["long"]]
    length_langs = [clips[i][1] for i in lengths]
    length_rows = length_times(model, [arrays[i] for i in lengths], length_langs, options, args.repeats)
    for row, i in zip(length_rows, lengths):
        row["clip"] = str(clips[i][0])
    per_clip, fw_per_clip, distinct = None, None, sorted(set(pick["throughput"]))
    if args.plot:
        log(f"decode time per clip, {len(distinct)} clips")
        per_clip = length_times(model, [arrays[i] for i in distinct], [clips[i][1] for i in distinct], options, 1)
    rss["diffasr_peak_mb"] = peak_rss_mb()

    fw_result = None
    if not args.no_baseline:
        log("faster-whisper on the same clips")
        fw = load_faster_whisper(args.threads)
        latency, _ = timed(lambda: fw_decode(fw, arrays[pick["ten"]], ten_lang), args.repeats)
        t0 = time.perf_counter()
        for a in tp_arrays:
            fw_decode(fw, a, pick["language"])
        seconds = time.perf_counter() - t0
        audio_s = sum(a.size for a in tp_arrays) / SAMPLE_RATE
        fw_tp = dict(
            batch=1,
            clips=len(tp_arrays),
            audio_s=audio_s,
            seconds=seconds,
            clips_per_s=len(tp_arrays) / seconds,
            rtf=seconds / audio_s,
        )
        fw_len = fw_length_times(fw, [arrays[i] for i in lengths], length_langs, args.repeats)
        if args.plot:
            fw_per_clip = fw_length_times(fw, [arrays[i] for i in distinct], [clips[i][1] for i in distinct], 1)
        rss["with_faster_whisper_peak_mb"] = peak_rss_mb()
        fw_result = dict(
            latency_10s=latency,
            throughput=fw_tp,
            lengths=fw_len,
            ratios=dict(
                latency_10s_batch1=latency / (stages[0]["total"] - stages[0]["audio_decode"]),
                **{f"throughput_batch{r['batch']}": r["clips_per_s"] / fw_tp["clips_per_s"] for r in tp},
            ),
        )

    print(
        f"Per-stage times, {ten_clip.name} ({durations[pick['ten']]:.1f} s), {label} "
        f"(total = transcribe from the file; one_step = one model.denoise call):"
    )
    print(stage_table(stages, fw_result["latency_10s"] if fw_result else None) + "\n")
    print(f"Throughput, {len(tp_arrays)} clips ({pick['language']}), {label}:")
    print(throughput_table(tp, fw_result["throughput"] if fw_result else None) + "\n")
    print(f"Decode time vs transcript length, batch 1, {label}:")
    print(length_table(length_rows, fw_result["lengths"] if fw_result else None) + "\n")
    print("Peak RSS: " + ", ".join(f"{k.removesuffix('_mb').replace('_', ' ')} {v:.0f} MB" for k, v in rss.items()))
    if fw_result:
        print(
            "Speed vs faster-whisper (×, higher is faster): "
            + ", ".join(f"{k.replace('_', ' ')} {v:.1f}" for k, v in fw_result["ratios"].items())
        )
    if args.plot:
        plot_lengths(args.plot, per_clip, fw_per_clip, label)
    if args.json:
        summary = dict(
            model=str(args.model or "default"),
            options=dataclasses.asdict(options),
            threads=args.threads,
            repeats=args.repeats,
            clip_10s=str(ten_clip),
            stages=stages,
            throughput=tp,
            lengths=length_rows,
            rss_mb=rss,
            faster_whisper=fw_result,
            per_clip=per_clip,
            faster_whisper_per_clip=fw_per_clip,
        )
        _write(args.json, json.dumps(summary, indent=1))
    return 0
