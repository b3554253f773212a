"""Accuracy and speed on a manifest, against faster-whisper in the same run: `diffasr eval`.

A manifest is JSON lines with `audio` (relative to the manifest's folder), `text`, `lang` and an
optional `subset` (reported as its own row). Every system sees the same decoded 16 kHz arrays with
the language given, so times are compute only (audio decoding is shared and not counted).

Scoring (diffasr/metrics.py) follows Whisper's paper: its normalisers, WER for en/de/fr/es, CER for
zh/hi, corpus-level rates per language.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..decoding import METHODS, DecodeOptions, resolve
from ..decoding.options import reads
from ..errors import ConfigError, DataError
from ..metrics import error_rate
from ..pipeline.manifest import Utterance
from ..pipeline.manifest import read_manifest as load_manifest  # noqa: F401  (part of this module's API)

# ---------------------------------------------------------------------- systems


@dataclass
class SystemRun:
    """One configuration's hypotheses (aligned with the clips) and compute seconds per language."""

    name: str
    method: str  # a decoding method (decoding.METHODS) | "faster-whisper"
    steps: int | None  # for methods that read steps
    hyps: list[str]
    seconds: dict  # lang -> seconds spent on that language's clips


def transcribe_plain(model, audio, **kwargs):
    """`transcribe` without voice activity detection or word alignment, where this version has them:
    the faster-whisper baseline runs neither, and clips are pre-cut utterances."""
    import inspect

    from ..pipeline.transcribe import transcribe

    params = inspect.signature(transcribe).parameters
    kwargs.update({k: False for k in ("vad", "word_timestamps") if k in params})
    return transcribe(model, audio, **kwargs)


def run_diffasr(model, clips: list[Utterance], arrays: list, options, batch_size: int, progress=None) -> SystemRun:
    """Transcribe language by language (the language is given), in batches of `batch_size`, with
    `options` (DecodeOptions; its language is set per language)."""
    hyps, seconds = [""] * len(clips), {}
    for lang in dict.fromkeys(c.lang for c in clips):
        lang_options = dataclasses.replace(options, language=lang)
        idx = [i for i, c in enumerate(clips) if c.lang == lang]
        for b in range(0, len(idx), batch_size):
            chunk = idx[b : b + batch_size]
            t0 = time.perf_counter()
            out = transcribe_plain(model, [arrays[i] for i in chunk], options=lang_options, batch_size=batch_size)
            seconds[lang] = seconds.get(lang, 0.0) + time.perf_counter() - t0
            for i, r in zip(chunk, out):
                hyps[i] = r.text
            if progress is not None:
                progress.update(len(chunk))
    steps = options.steps if "steps" in reads(options.method) else None
    name = f"diffasr {options.method}" + (f" {steps} steps" if steps is not None else "")
    name += f" verifier {options.verifier}" if options.verifier != "auto" else ""
    return SystemRun(name=name, method=options.method, steps=steps, hyps=hyps, seconds=seconds)


def row_options(model, methods: list[str], steps: list[int] | None, flags: dict) -> list:
    """The DecodeOptions of each eval row: every method in `methods` (those that read steps once per
    step count, `steps` None: the model's), each with the decoding `flags` it reads over the model's
    decode_defaults. A flag (or --steps) that none of the methods reads is a ConfigError."""
    table = model.backend.reads
    read_by_any = set().union(*(reads(m, table) for m in methods))
    unread = sorted(set(flags) - read_by_any) + (["steps"] if steps is not None and "steps" not in read_by_any else [])
    if unread:
        raise ConfigError(f"no method of {', '.join(methods)} reads {', '.join(unread)}")
    rows = []
    for m in methods:
        given = {k: v for k, v in flags.items() if k in reads(m, table)}
        sweep = steps if steps is not None and "steps" in reads(m) else [None]
        rows += [resolve(model.config.decode_defaults, {**given, "method": m, "steps": s}, table) for s in sweep]
    return rows


def load_faster_whisper(threads: int = 0):
    """faster-whisper on the same Whisper-base weights as diffasr's encoder (CTranslate2, int8)."""
    from faster_whisper import WhisperModel

    from ..models.encoder import whisper_base_dir

    return WhisperModel(str(whisper_base_dir()), device="cpu", compute_type="int8", cpu_threads=threads)


def faster_whisper_text(fw, audio, lang: str) -> str:
    """Plain greedy decoding with the language given: beam 1, temperature 0, no fallback, no VAD."""
    segments, _ = fw.transcribe(audio, language=lang, beam_size=1, temperature=0.0, vad_filter=False)
    return "".join(s.text for s in segments).strip()  # the generator decodes as it is consumed


def run_faster_whisper(fw, clips: list[Utterance], arrays: list, progress=None) -> SystemRun:
    hyps, seconds = [], {}
    for c, a in zip(clips, arrays):
        t0 = time.perf_counter()
        hyps.append(faster_whisper_text(fw, a, c.lang))
        seconds[c.lang] = seconds.get(c.lang, 0.0) + time.perf_counter() - t0
        if progress is not None:
            progress.update(1)
    return SystemRun(name="faster-whisper greedy", method="faster-whisper", steps=None, hyps=hyps, seconds=seconds)


# ---------------------------------------------------------------------- scoring


def groups(clips: list[Utterance]) -> dict[str, list[int]]:
    """Row name -> clip indices: each language, then each language:subset that appears."""
    out: dict[str, list[int]] = {}
    for lang in dict.fromkeys(c.lang for c in clips):
        out[lang] = [i for i, c in enumerate(clips) if c.lang == lang]
    for key in dict.fromkeys((c.lang, c.subset) for c in clips if c.subset):
        out[f"{key[0]}:{key[1]}"] = [i for i, c in enumerate(clips) if (c.lang, c.subset) == key]
    return out


def score(run: SystemRun, clips: list[Utterance], durations: list[float], metric: str = "auto") -> dict:
    """Per-row metrics (n, audio_s, metric, error_rate; rtf for whole languages) and overall speed."""
    rows = {}
    for name, idx in groups(clips).items():
        lang = clips[idx[0]].lang
        rate, metric_used = error_rate([clips[i].text for i in idx], [run.hyps[i] for i in idx], lang, metric)
        audio_s = sum(durations[i] for i in idx)
        row = dict(n=len(idx), audio_s=round(audio_s, 3), metric=metric_used, error_rate=rate)
        if ":" not in name:  # times are kept per language (batches never mix languages)
            row.update(seconds=round(run.seconds[lang], 4), rtf=run.seconds[lang] / audio_s)
        rows[name] = row
    total_s, audio_s = sum(run.seconds.values()), sum(durations)
    return dict(
        languages=rows,
        overall=dict(n=len(clips), audio_s=round(audio_s, 3), seconds=round(total_s, 4), rtf=total_s / audio_s),
    )


# ---------------------------------------------------------------------- tables, report, plot


def markdown_table(header: list[str], rows: list[list]) -> str:
    cells = [header] + [[_fmt(v) for v in r] for r in rows]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    line = lambda r: "| " + " | ".join(s.ljust(w) for s, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join(
        [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in cells[1:]]
    )


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def language_table(results: list[dict]) -> str:
    """One row per language (and subset), one error-rate and RTF column pair per system."""
    first = results[0]["languages"]
    header = ["lang", "n", "audio s", "metric"]
    for r in results:
        header += [f"{r['name']} err", f"{r['name']} RTF"]
    rows = []
    for name, row in first.items():
        cells = [name, row["n"], f"{row['audio_s']:.1f}", row["metric"].upper()]
        for r in results:
            x = r["languages"][name]
            cells += [x["error_rate"], x.get("rtf", "")]
        rows.append(cells)
    cells = ["overall", results[0]["overall"]["n"], f"{results[0]['overall']['audio_s']:.1f}", ""]
    for r in results:
        cells += ["", r["overall"]["rtf"]]
    rows.append(cells)
    return markdown_table(header, rows)


def steps_table(results: list[dict]) -> str:
    """Error rate per language and overall RTF for each step count (plus CTC and the baseline)."""
    langs = [k for k in results[0]["languages"] if ":" not in k]
    header = (
        ["system"]
        + [f"{lang} {results[0]['languages'][lang]['metric'].upper()}" for lang in langs]
        + ["RTF", "x realtime"]
    )
    rows = []
    for r in results:
        rtf = r["overall"]["rtf"]
        rows.append(
            [r["name"]]
            + [r["languages"][lang]["error_rate"] for lang in langs]
            + [rtf, f"{1 / rtf:.1f}" if rtf else ""]
        )
    return markdown_table(header, rows)


def plot_steps(results: list[dict], out: str | Path) -> None:
    """Error rate and RTF against steps for the runs of one method that reads steps; the others
    (one step count, CTC, baseline) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    diff = sorted((r for r in results if r["steps"] is not None), key=lambda r: r["steps"])
    others = [r for r in results if r["steps"] is None]
    langs = [k for k in results[0]["languages"] if ":" not in k]
    fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["steps"] for r in diff]
    for j, lang in enumerate(langs):
        color = f"C{j}"
        metric = results[0]["languages"][lang]["metric"].upper()
        if diff:
            ax_e.plot(
                steps, [r["languages"][lang]["error_rate"] for r in diff], "o-", color=color, label=f"{lang} ({metric})"
            )
        for r, style in zip(others, ("--", ":", "-.")):
            ax_e.axhline(r["languages"][lang]["error_rate"], color=color, linestyle=style, linewidth=0.8)
    if diff:
        ax_s.plot(steps, [r["overall"]["rtf"] for r in diff], "o-", color="k", label=f"diffasr {diff[0]['method']}")
    for r, style in zip(others, ("--", ":", "-.")):
        ax_s.axhline(r["overall"]["rtf"], color="gray", linestyle=style, label=r["name"])
    lines = ", ".join(f"{style} {r['name']}" for r, style in zip(others, ("--", ":", "-.")))
    ax_e.set(
        xlabel="denoising steps",
        ylabel="error rate",
        title=f"Error rate vs steps ({lines})" if lines else "Error rate vs steps",
    )
    ax_e.title.set_fontsize(9)
    ax_s.set(xlabel="denoising steps", ylabel="real-time factor (lower is faster)", title="Speed vs steps")
    for ax in (ax_e, ax_s):
        if steps:
            ax.set_xticks(steps)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def report(summary: dict) -> str:
    """The markdown report: settings, the per-language table, the steps sweep, and notes."""
    s = summary["settings"]
    lines = [
        f"# diffasr eval: {summary['manifest']}",
        "",
        f"- model: `{summary['model']}`; batch size {s['batch_size']}; threads {s['threads'] or 'default'}; rows:",
        *[f"  - {name}: " + ", ".join(f"{k} {v}" for k, v in opts.items()) for name, opts in s["rows"].items()],
        f"- {summary['n_clips']} clips, {summary['audio_s']:.1f} s of audio; language given to every system",
        f"- command: `{summary['command']}`",
        "",
        "## Per language",
        "",
        language_table(summary["results"]),
        "",
        "## Steps sweep",
        "",
        steps_table(summary["results"]),
        "",
        "## Notes",
        "",
        "- WER for en/de/fr/es, CER (whitespace removed) for zh/hi; corpus-level per row (jiwer). Whisper "
        "English normaliser for en, basic normaliser otherwise (combining marks kept for hi); zh references and "
        "hypotheses are converted to simplified characters (OpenCC t2s) before scoring.",
        "- RTF = compute seconds / audio seconds on already decoded 16 kHz audio, after one warm-up clip per system; "
        "lower is faster. diffasr runs without VAD or word timestamps, as the baseline does.",
    ]
    if any(r["method"] == "faster-whisper" for r in summary["results"]):
        lines.append(
            "- Baseline: faster-whisper on the same Whisper-base weights (CTranslate2 int8, CPU), plain greedy "
            "(beam 1, temperature 0, no fallback, no VAD), language given and no prompt; its zh output is "
            "traditional as often as not and is scored after the same simplified conversion."
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- CLI: diffasr eval


def add_arguments(p) -> None:
    from .transcribe_cli import add_decoding_arguments

    p.add_argument("--manifest", required=True, help="JSON-lines manifest (audio, text, lang[, subset])")
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-base)")
    p.add_argument(
        "--method",
        default=None,
        help="comma-separated decoding methods, one row each (default: the model's method, ctc-greedy)",
    )
    p.add_argument(
        "--steps",
        default=None,
        help="comma-separated denoising step counts, one row each for the methods that read steps (default: 8)",
    )
    p.add_argument(
        "--baseline", default=None, choices=["faster-whisper"], help="also run this baseline on the same clips"
    )
    p.add_argument("--json", default=None, metavar="OUT", help="write metrics and per-clip hypotheses as JSON")
    p.add_argument("--report", default=None, metavar="OUT.md", help="write a markdown report")
    p.add_argument("--plot", default=None, metavar="OUT.png", help="plot error rate and speed vs steps")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate only the first N clips")
    p.add_argument("--batch-size", type=int, default=8, help="clips decoded together (default 8)")
    add_decoding_arguments(
        p, method=False, steps=False
    )  # --nbest, --ngram-weight, ...: the model's defaults unless given
    p.add_argument(
        "--metric",
        default="auto",
        choices=["auto", "cer", "wer"],
        help="auto: WER, CER for zh/hi (default); cer or wer: that metric for every language",
    )
    p.add_argument("--threads", type=int, default=0, help="CPU threads for every system (default: library defaults)")
    p.add_argument("--device", default="cpu", help="torch device for diffasr (default cpu)")


def _parse_list(value: str, what: str, cast=str) -> list:
    try:
        items = [cast(x.strip()) for x in value.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--{what}: expected a comma-separated list, got {value!r}") from None
    if not items:
        raise ConfigError(f"--{what}: empty list")
    return list(dict.fromkeys(items))


def set_threads(model, threads: int) -> None:
    """Pin torch and the CTranslate2 encoder to `threads` so every system gets the same CPUs."""
    import torch

    from ..models.encoder import CT2WhisperEncoder

    torch.set_num_threads(threads)
    spec = model.config.encoder_spec
    if spec.backend == "ct2":
        model.encoder = CT2WhisperEncoder(spec, device=str(model.device), threads=threads)


def run(args) -> int:
    from tqdm import tqdm

    from .. import load
    from ..audio import SAMPLE_RATE, load_audio
    from .transcribe_cli import decoding_overrides

    steps = _parse_list(args.steps, "steps", int) if args.steps is not None else None
    methods = _parse_list(args.method, "method") if args.method is not None else None
    for m in methods or []:
        if m not in METHODS:
            raise ConfigError(f"--method: unknown method {m!r} (choose from {', '.join(METHODS)})")
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise ConfigError("--batch-size and --limit must be ≥ 1")

    clips = load_manifest(args.manifest)[: args.limit]
    model = load(args.model, device=args.device)
    unsupported = sorted({c.lang for c in clips} - set(model.config.languages))
    if unsupported:
        raise DataError(f"{args.manifest}: the model does not support {', '.join(unsupported)}")
    if args.threads:
        set_threads(model, args.threads)
    arrays = [load_audio(c.audio) for c in clips]
    durations = [a.size / SAMPLE_RATE for a in arrays]

    if methods is None:
        methods = list(dict.fromkeys([model.config.decode_defaults.get("method", DecodeOptions.method), "ctc-greedy"]))
    rows = row_options(model, methods, steps, decoding_overrides(args))  # bad flags: one error, before any decoding
    missing = sorted({c.lang for c in clips} - set(model.ngrams.languages()))
    if missing and any(o.ngram_weight > 0 for o in rows):
        raise ConfigError(f"ngram_weight > 0 needs the language's n-gram: the model has none for {', '.join(missing)}")
    fw = load_faster_whisper(args.threads) if args.baseline else None
    total = len(clips) * (len(rows) + (fw is not None))
    bar = tqdm(total=total, unit="clip", desc="eval", disable=not sys.stderr.isatty())
    for lang in {c.lang for c in clips}:  # n-grams load on first use: not inside the timed runs
        model.ngrams.get(lang)
    # Warm-up (lazy encoder load, first-call allocations) on the shortest clip, not timed.
    warm = min(range(len(clips)), key=lambda i: durations[i])
    run_diffasr(model, [clips[warm]], [arrays[warm]], rows[0], 1)
    runs = [run_diffasr(model, clips, arrays, o, args.batch_size, bar) for o in rows]
    if fw is not None:
        faster_whisper_text(fw, arrays[warm], clips[warm].lang)
        runs.append(run_faster_whisper(fw, clips, arrays, bar))
    bar.close()

    results = [
        dict(name=r.name, method=r.method, steps=r.steps, **score(r, clips, durations, args.metric)) for r in runs
    ]
    summary = dict(
        manifest=str(args.manifest),
        model=str(args.model or "default"),
        command="diffasr " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else "diffasr eval ...",
        settings=dict(
            batch_size=args.batch_size,
            baseline=args.baseline,
            metric=args.metric,
            threads=args.threads,
            device=args.device,
            rows={r.name: _read_fields(o) for r, o in zip(runs, rows)},
        ),
        n_clips=len(clips),
        audio_s=sum(durations),
        results=results,
    )
    print("Per language (error rate, real-time factor):\n" + language_table(results) + "\n")
    print("Steps sweep:\n" + steps_table(results))
    if args.report:
        _write(args.report, report(summary))
    if args.plot:
        plot_steps(results, args.plot)
    if args.json:
        summary["clips"] = [
            dict(
                audio=str(c.audio),
                lang=c.lang,
                subset=c.subset,
                duration=round(d, 3),
                text=c.text,
                hyps={r.name: h for r, h in zip(runs, hyps)},
            )
            for c, d, *hyps in zip(clips, durations, *(r.hyps for r in runs))
        ]
        _write(args.json, json.dumps(_finite(summary), ensure_ascii=False, indent=1))
    return 0


def _read_fields(options) -> dict:
    """The fields of DecodeOptions `options` its method reads (language aside: it is set per language)."""
    return {k: v for k, v in dataclasses.asdict(options).items() if k in reads(options.method) and k != "language"}


def _finite(x):
    """NaN is not JSON: write null instead."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def _write(path: str | Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
