"""Batch transcription on Ray Data: many files, a pool of model replicas, one Parquet (or JSONL) table.

    diffasr batch INPUT --output OUT.parquet [--actors 2] [--batch-size 8] [--address auto]

INPUT is a folder (searched recursively for audio), a glob, a manifest (JSON lines with `audio`
relative to it and an optional `lang`), one file, or a pyarrow filesystem URI (s3://bucket/dir,
gs://..., hdfs://..., file:///...; a folder or a single object). Files become rows of a Ray dataset;
`map_batches` sends them to an actor pool whose every actor holds one model (`Transcriber`), and each
batch of files is decoded with `transcribe` itself (same VAD chunking, same long-file streaming,
chunks of all files in the batch decoded together). A file that fails gets a row with `error` set;
if a whole batch fails, its files are retried one by one so one bad file never costs the others.

The driver writes OUT (local path) atomically: every `--flush-every` seconds and at the end, the whole
table is written to a temporary file and renamed over OUT, so OUT is always a complete table. A
re-run with the same OUT keeps its rows without an error and transcribes only the rest (failed
files are tried again). Output schema: SCHEMA below, documented in the README.
"""

from __future__ import annotations

import glob as globlib
import json
import os
import sys
import time
from pathlib import Path

from ..errors import ConfigError, DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".wma")
URI_SCHEMES = ("s3://", "gs://", "gcs://", "hdfs://", "viewfs://", "file://", "abfs://", "abfss://")


def _schema():
    """One row per input file (pyarrow schema; JSONL rows carry the same fields)."""
    import pyarrow as pa

    word = pa.struct(
        [("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()), ("confidence", pa.float64())]
    )
    segment = pa.struct(
        [("start", pa.float64()), ("end", pa.float64()), ("text", pa.string()), ("words", pa.list_(word))]
    )
    return pa.schema(
        [
            ("path", pa.string()),  # the input as listed (local absolute path or URI)
            ("text", pa.string()),  # full transcript (null on error)
            ("language", pa.string()),  # given or identified
            ("language_probability", pa.float64()),  # null when the language was given
            ("duration", pa.float64()),  # seconds of audio
            ("segments", pa.list_(segment)),  # one per speech chunk, absolute times, with its words
            (
                "timings",
                pa.map_(pa.string(), pa.float64()),
            ),  # seconds per stage; `file` = this file's share of its batch
            ("method", pa.string()),  # the decoding method
            ("steps", pa.int64()),  # denoising steps run
            ("tail_tokens", pa.int64()),  # verified methods: tokens the causal pass wrote one by one after the step cap
            ("error", pa.string()),  # null = ok; else "ExceptionType: message"
        ]
    )


# ---------------------------------------------------------------------------- inputs


def list_inputs(source: str, language: str | None = None) -> list[dict]:
    """INPUT -> rows {path, language}, sorted and de-duplicated. Raises DataError when nothing is found."""
    if source.startswith(URI_SCHEMES):
        rows = [{"path": p, "language": language} for p in _list_uri(source)]
    elif source.endswith(".jsonl") and Path(source).is_file():
        rows = _read_manifest(Path(source), language)
    elif Path(source).is_dir():
        rows = [
            {"path": str(p.resolve()), "language": language}
            for p in Path(source).rglob("*")
            if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
        ]
    elif Path(source).is_file():
        rows = [{"path": str(Path(source).resolve()), "language": language}]
    else:
        rows = [
            {"path": str(Path(p).resolve()), "language": language}
            for p in globlib.glob(source, recursive=True)
            if Path(p).is_file()
        ]
    seen, out = set(), []
    for r in sorted(rows, key=lambda r: r["path"]):
        if r["path"] not in seen:
            seen.add(r["path"])
            out.append(r)
    if not out:
        raise DataError(f"{source}: no audio files found (a folder, glob, manifest .jsonl, file or s3://-style URI)")
    return out


def _list_uri(uri: str) -> list[str]:
    import pyarrow.fs as pafs

    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.File:
            infos = [info]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        else:
            raise DataError(f"{uri}: not found")
    except DataError:
        raise
    except Exception as e:  # bad scheme, no credentials, unreachable endpoint: one line, not a traceback
        raise DataError(f"{uri}: cannot list ({type(e).__name__}: {e})") from None
    scheme = uri.split("://", 1)[0]
    prefix = uri[: uri.index("://") + 3]
    files = [i.path for i in infos if i.type == pafs.FileType.File and i.path.lower().endswith(AUDIO_EXTENSIONS)]
    # local paths from file:// come back absolute; object stores return "bucket/key"
    return [f"{prefix}{p.lstrip('/') if scheme != 'file' else p}" for p in files]


def _read_manifest(path: Path, language: str | None) -> list[dict]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(r, dict) or not isinstance(r.get("audio"), str):
            raise DataError(f"{path}:{n}: needs an 'audio' field")
        a = r["audio"]
        full = a if a.startswith(URI_SCHEMES) else str((path.parent / a).resolve())
        rows.append({"path": full, "language": language or r.get("lang")})
    return rows


# ---------------------------------------------------------------------------- output


def read_output(path: Path) -> list[dict]:
    """Rows of an existing OUT (Parquet or JSONL); [] if it does not exist."""
    if not path.is_file():
        return []
    try:
        if path.suffix == ".jsonl":
            return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    except Exception as e:
        raise DataError(
            f"{path}: exists but cannot be read as {path.suffix[1:]} ({e}); move it away or pick another --output"
        ) from None


def write_output(path: Path, rows: list[dict]) -> None:
    """Whole table to a temporary file in the same folder, then renamed over `path` (atomic)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    if path.suffix == ".jsonl":
        with open(tmp, "w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({**r, "timings": dict(r["timings"] or {})}, ensure_ascii=False) + "\n")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist([_for_arrow(r) for r in rows], schema=_schema()), tmp)
    os.replace(tmp, path)


def _for_arrow(r: dict) -> dict:
    t = r.get("timings")
    return {**r, "timings": list(t.items()) if isinstance(t, dict) else t}


def _row(path: str, t=None, error: str | None = None, share: float = 0.0) -> dict:
    """A Transcription (or an error) -> one output row (plain Python values)."""
    if t is None:
        return {
            "path": path,
            "text": None,
            "language": None,
            "language_probability": None,
            "duration": None,
            "segments": None,
            "timings": {"file": share},
            "method": None,
            "steps": None,
            "tail_tokens": None,
            "error": error,
        }
    segments, words, k = [], list(t.words), 0
    for j, s in enumerate(t.segments):  # words are clamped into their segment and in order: one pass
        nxt = t.segments[j + 1].start if j + 1 < len(t.segments) else float("inf")
        seg_words = []
        # a word starting exactly where this segment ends belongs here unless the next one starts there
        while k < len(words) and (words[k].start < s.end or (words[k].start == s.end and nxt > s.end)):
            w = words[k]
            seg_words.append({"start": w.start, "end": w.end, "text": w.text, "confidence": w.confidence})
            k += 1
        segments.append({"start": s.start, "end": s.end, "text": s.text, "words": seg_words})
    timings = {key: float(v) for key, v in t.timings.items() if key != "steps_run"} | {"file": share}
    return {
        "path": path,
        "text": t.text,
        "language": t.language,
        "language_probability": t.language_probability,
        "duration": t.duration,
        "segments": segments,
        "timings": timings,
        "method": t.method,
        "steps": t.steps_run,
        "tail_tokens": t.tail_tokens,
        "error": None,
    }


# ---------------------------------------------------------------------------- the actor


def _read_source(path: str):
    """A local path as is (long files stream from disk); a URI's bytes through pyarrow's filesystem."""
    if not path.startswith(URI_SCHEMES):
        return path
    import pyarrow.fs as pafs

    fs, p = pafs.FileSystem.from_uri(path)
    with fs.open_input_stream(p) as f:
        return f.read()


class Transcriber:
    """One model replica (a Ray actor in the pool): a pyarrow batch of {path, language} -> output rows."""

    def __init__(self, model: str | None, device: str, threads: int, decode: dict, chunk_batch: int):
        import torch

        import diffasr

        if threads > 0:
            torch.set_num_threads(threads)
        self.model = diffasr.load(model, device=device)
        self.decode, self.chunk_batch = decode, chunk_batch

    def _transcribe(self, sources: list, language: str | None) -> list:
        from ..pipeline.transcribe import transcribe

        return transcribe(self.model, sources, language=language, batch_size=self.chunk_batch, **self.decode)

    def __call__(self, batch):
        import pyarrow as pa

        paths, langs = batch["path"].to_pylist(), batch["language"].to_pylist()
        out: dict[int, dict] = {}
        for lang in dict.fromkeys(langs):  # transcribe takes one language (or None = identify) per call
            idx = [i for i, l in enumerate(langs) if l == lang]
            t0 = time.perf_counter()
            sources = {}
            for i in idx:
                try:
                    sources[i] = _read_source(paths[i])
                except Exception as e:
                    out[i] = _row(paths[i], error=f"{type(e).__name__}: {e}")
            good = list(sources)
            try:
                results = self._transcribe([sources[i] for i in good], lang) if good else []
                share = (time.perf_counter() - t0) / max(1, len(good))
                out.update({i: _row(paths[i], r, share=share) for i, r in zip(good, results)})
            except Exception:  # some file in the batch is bad: one by one, so only it fails
                for i in good:
                    t1 = time.perf_counter()
                    try:
                        out[i] = _row(paths[i], self._transcribe([sources[i]], lang)[0], share=time.perf_counter() - t1)
                    except Exception as e:
                        out[i] = _row(paths[i], error=f"{type(e).__name__}: {e}", share=time.perf_counter() - t1)
        return pa.Table.from_pylist([_for_arrow(out[i]) for i in range(len(paths))], schema=_schema())


# ---------------------------------------------------------------------------- the job


def run_batch(
    source: str,
    output: str | Path,
    model: str | None = None,
    actors: int = 1,
    batch_size: int = 8,
    address: str | None = None,
    device: str = "cpu",
    threads: int = 0,
    gpus_per_actor: float = 0.0,
    language: str | None = None,
    decode: dict | None = None,
    flush_every: float = 30.0,
    progress: bool = True,
) -> dict:
    """Transcribe every file of `source` into `output`; returns counts and seconds.

    actors: model replicas (Ray actors); batch_size: files per map_batches call (their chunks are
    decoded `batch_size` at a time); threads: torch threads per actor (0: this node's CPUs / actors).
    """
    output = Path(output)
    if output.suffix not in (".parquet", ".jsonl"):
        raise ConfigError(f"--output must end in .parquet or .jsonl, not {output.name!r}")
    if actors < 1 or batch_size < 1:
        raise ConfigError("--actors and --batch-size must be ≥ 1")
    if not output.parent.is_dir():
        raise ConfigError(f"{output.parent}: output folder does not exist")
    rows = list_inputs(source, language)
    previous = read_output(output)
    done = {r["path"]: r for r in previous if r.get("error") is None}
    todo = [r for r in rows if r["path"] not in done]
    stats = {"files": len(rows), "skipped": len(rows) - len(todo), "processed": 0, "failed": 0}
    t_start = time.time()
    if not todo:
        write_output(output, list(done.values()))
        return stats | {"seconds": 0.0}

    try:  # only now: a re-run with nothing left to do, or bad input, never starts (or imports) Ray
        import ray
    except ImportError:
        raise ConfigError("diffasr batch needs Ray Data: pip install 'diffasr[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        # A local Ray's workers must import this same diffasr (a source tree may shadow an install);
        # on a cluster every node brings its own install.
        env = {
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")])
            )
        }
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="ERROR",
            runtime_env=None if address else {"env_vars": env},
        )
    t_ready = time.time()
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False  # ours (files, from the driver) replaces Ray's per-operator bars
    if threads <= 0:
        threads = max(1, int(ray.cluster_resources().get("CPU", os.cpu_count() or 1)) // actors)
    # One block per batch of files: a block's rows reach the driver (progress bar, flushes) when the
    # block is done, so bigger blocks would hold finished files back (capped for huge jobs).
    ds = ray.data.from_items(todo, override_num_blocks=max(1, min(-(-len(todo) // batch_size), 2000)))
    ds = ds.map_batches(
        Transcriber,
        batch_size=batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1 if gpus_per_actor == 0 else 0,  # one CPU slot per actor, so N actors fit N cores
        num_gpus=gpus_per_actor or None,
        fn_constructor_kwargs=dict(
            model=model, device=device, threads=threads, decode=decode or {}, chunk_batch=batch_size
        ),
    )
    from tqdm import tqdm

    new: list[dict] = []
    last_flush = time.time()
    first_at = None
    bar = tqdm(total=len(todo), unit="file", disable=not progress, file=sys.stderr, mininterval=1.0)
    try:
        for table in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            for r in table.to_pylist():
                r["timings"] = dict(r["timings"] or [])
                new.append(r)
                stats["failed"] += r["error"] is not None
            first_at = first_at or time.time()
            bar.update(table.num_rows)
            if time.time() - last_flush > flush_every:
                write_output(output, _merge(done, new))
                last_flush = time.time()
    finally:
        bar.close()
        write_output(output, _merge(done, new))  # whatever finished survives an interruption
        if started_here:
            ray.shutdown()
    stats["processed"] = len(new)
    end = time.time()
    return stats | {
        "seconds": round(end - t_start, 2),
        "ray_start_s": round(t_ready - t_start, 2),
        "first_result_s": round((first_at or end) - t_start, 2),
    }


def _merge(done: dict, new: list[dict]) -> list[dict]:
    rows = dict(done)
    rows.update({r["path"]: r for r in new})
    return sorted(rows.values(), key=lambda r: r["path"])


# ---------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    from ..text import LANGUAGES
    from .transcribe_cli import add_decoding_arguments

    p.add_argument(
        "input",
        metavar="INPUT",
        help="folder, glob, manifest .jsonl, file, or pyarrow URI (s3://, gs://, hdfs://, file://)",
    )
    p.add_argument(
        "--output", required=True, help="OUT.parquet or OUT.jsonl (re-running skips the files already in it)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint directory or shipped model name, readable on every node (default: diffasr-base)",
    )
    p.add_argument("--actors", type=int, default=1, help="model replicas in the actor pool (default 1)")
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="files per actor call; their chunks are decoded this many at a time (default 8)",
    )
    p.add_argument(
        "--address", default=None, help="Ray cluster to join ('auto', ray://host:10001); default: start a local Ray"
    )
    p.add_argument(
        "--device", default="cpu", help="torch device in each actor (default cpu; cuda with --gpus-per-actor)"
    )
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs Ray reserves per actor (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch threads per actor (default: CPUs / actors)")
    p.add_argument(
        "--language",
        default=None,
        choices=LANGUAGES,
        help="language of every file (default: a manifest's `lang`, else identified)",
    )
    add_decoding_arguments(p)
    p.add_argument(
        "--flush-every", type=float, default=30.0, help="seconds between atomic rewrites of OUT (default 30)"
    )


def run(args) -> int:
    from .transcribe_cli import decoding_overrides

    decode = decoding_overrides(args)
    if args.device.startswith("cuda") and args.gpus_per_actor <= 0:
        raise ConfigError("--device cuda needs --gpus-per-actor (e.g. 1, or 0.5 for two replicas per GPU)")
    s = run_batch(
        args.input,
        args.output,
        model=args.model,
        actors=args.actors,
        batch_size=args.batch_size,
        address=args.address,
        device=args.device,
        threads=args.threads,
        gpus_per_actor=args.gpus_per_actor,
        language=args.language,
        decode=decode,
        flush_every=args.flush_every,
        progress=sys.stderr.isatty(),
    )
    print(
        f"{args.output}: {s['processed']} transcribed ({s['failed']} failed), {s['skipped']} already done, "
        f"{s['files']} files, {s.get('seconds', 0):.1f} s",
        file=sys.stderr,
    )
    return 1 if s["failed"] else 0
