"""`diffasr corpus synth`: build a synthetic multilingual speech corpus with offline TTS engines.

Engine choice follows shared/docs/tts.md: Kokoro-82M (a fresh Dirichlet mix of its 5 style vectors per
utterance) is the backbone for all six languages; espeak-ng, Flite, Festival and Piper add cheap acoustic
and speaker diversity where they are intelligible. Utterance k of a language is fully determined by
`np.random.default_rng([seed, split_code, lang_index, k])` (plus a per-language sentence permutation from
`[seed, split_code, lang_index]`), so the corpus is reproducible and work can run in any order.

Layout: OUT/audio/<lang>/<id>.flac (16 kHz, 16-bit), OUT/manifest.jsonl (sorted by id), OUT/corpus.json.
Crash safety: audio is written to a temp name and `os.replace`d; only then is its manifest line appended
to OUT/manifest.partial.jsonl (parent process only), which is merged into manifest.jsonl atomically at the
end or on interruption. A restart reads both and skips finished ids.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from .engines import ENGINES, SR, engine
from .numbers import number_utterance
from .text import LANGS, load_sentences, short_utterance

MIN_S, MAX_S = 0.5, 20.0
MIN_S_SHORT = 0.25  # one spoken digit is ~0.3 s
SPLIT_CODES = {"train": 0, "test": 1}  # test draws from a disjoint seed stream -> unseen voice mixes
# Share of utterances per engine and language (renormalised over the engines that are selected).
# espeak fr/hi are left out: Whisper mishears them (CER ~0.6-0.9 in tts.md), so labels would be wrong.
WEIGHTS = {
    "en": {"kokoro": 0.65, "piper": 0.12, "flite": 0.10, "espeak": 0.08, "festival": 0.05},
    "de": {"kokoro": 0.75, "espeak": 0.25},
    "fr": {"kokoro": 1.0},
    "es": {"kokoro": 0.70, "espeak": 0.30},
    "hi": {"kokoro": 0.75, "festival": 0.25},
    "zh": {"kokoro": 0.88, "espeak": 0.12},
}


_PERM: dict[tuple, np.ndarray] = {}  # per-process sentence permutations


_KIND_TAG = {"sentences": "", "short": "s", "numbers": "n"}


def _uid(cfg: dict, lang: str, k: int) -> str:
    """Utterance id; short and number utterances get an `s`/`n` so their ids never collide with sentence ids."""
    return f"{lang}_{cfg['split']}_{_KIND_TAG[cfg.get('kind', 'sentences')]}{k:07d}"


def make_clip(cfg: dict, lang: str, k: int) -> dict:
    """Synthesise utterance k of `lang`; write its FLAC. Returns {"record"} or {"error"}, plus stats.

    Runs in a worker process; everything random comes from the (seed, split, lang, k) generator.
    """
    import soundfile as sf
    import soxr

    from .augment import augment_described, normalize_loudness, peak_limit, trim_silence

    li, code = LANGS.index(lang), SPLIT_CODES[cfg["split"]]
    short = cfg.get("kind") in ("short", "numbers")
    uid = _uid(cfg, lang, k)
    sents = load_sentences(lang, cfg["split"], cfg.get("text_dir"))
    rng = np.random.default_rng([cfg["seed"], code, li, k])
    if cfg.get("kind") == "numbers":
        text = number_utterance(lang, sents, rng)
    elif short:
        text = short_utterance(lang, sents, rng)
    else:
        pkey = (cfg["seed"], code, li, len(sents))
        if pkey not in _PERM:  # a permutation instead of sampling with replacement: no repeats until wrap-around
            _PERM[pkey] = np.random.default_rng([cfg["seed"], code, li]).permutation(len(sents))
        text = sents[_PERM[pkey][k % len(sents)]]
    names, w = zip(*cfg["weights"][lang].items())
    ename = str(rng.choice(names, p=np.asarray(w) / sum(w)))
    eng = engine(ename)
    voice = eng.sample(rng, lang)
    out = {"id": uid, "lang": lang, "engine": ename, "cpu_s": 0.0}
    t0, c0 = time.process_time(), os.times()
    try:
        audio, sr = eng.synth(text, lang, voice)
    except Exception as e:  # any engine failure skips this utterance only
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    finally:  # engine CPU time includes the waited-for subprocesses (espeak, flite, text2wave)
        c1 = os.times()
        out["cpu_s"] = (
            time.process_time() - t0 + (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
        )
    x = np.asarray(audio, dtype=np.float32).reshape(-1)
    if sr != SR:
        x = soxr.resample(x, sr, SR).astype(np.float32)
    x = trim_silence(x)
    dur = len(x) / SR
    lo = MIN_S_SHORT if short else MIN_S
    if not (lo <= dur <= MAX_S) or not np.isfinite(x).all():
        out["error"] = f"dropped: duration {dur:.2f}s outside [{lo}, {MAX_S}] or non-finite"
        return out
    if cfg["augment"]:
        x, aug = augment_described(x, rng)
    else:  # test split / --no-augment: clean, only levelled
        x, aug = peak_limit(normalize_loudness(x, -23.0)), "clean"
    rel = f"audio/{lang}/{uid}.flac"
    dst = Path(cfg["out"], rel)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{uid}.tmp.flac")
    sf.write(tmp, x, SR, format="FLAC", subtype="PCM_16")
    os.replace(tmp, dst)  # a crash never leaves a half-written file under the final name
    out["record"] = {
        "id": uid,
        "audio": rel,
        "text": text,
        "lang": lang,
        "engine": ename,
        "voice": voice["voice"],
        "augment": aug,
        "duration_s": round(dur, 3),
        "sample_rate": SR,
        "split": cfg["split"],
    }
    return out


def safe_clip(cfg: dict, lang: str, k: int) -> dict:
    """`make_clip` that turns any non-OS error (a bug on one odd sentence) into a skipped utterance;
    OSErrors (disk full, unwritable --out) still stop the run."""
    try:
        return make_clip(cfg, lang, k)
    except OSError:
        raise
    except Exception as e:
        return {
            "id": _uid(cfg, lang, k),
            "lang": lang,
            "engine": "?",
            "cpu_s": 0.0,
            "error": f"{type(e).__name__}: {e}",
        }


def _interrupt(signum, frame):
    """SIGTERM handler: stop like Ctrl-C, so the manifest is merged before exiting."""
    raise KeyboardInterrupt


def _worker_init() -> None:
    """Workers ignore Ctrl-C (the parent stops them) and use one thread each."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:  # Linux: die with the parent if it is killed hard, instead of idling forever as an orphan
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    os.environ["OMP_NUM_THREADS"] = "1"


# ----------------------------------------------------------------------------------------- CLI / driver


def add_arguments(parser) -> None:
    from . import perturb

    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION")
    perturb.add_arguments(sub)
    p = sub.add_parser(
        "synth",
        help="synthesise a multilingual speech corpus with offline TTS",
        description="Synthesise a multilingual speech corpus with offline TTS engines.",
    )
    p.add_argument("--langs", default=",".join(LANGS), help="comma list of languages (default: all six)")
    p.add_argument("--hours", type=float, default=1.0, help="total audio hours, split equally over languages")
    p.add_argument("--out", required=True, help="output directory (resumes if it holds a partial corpus)")
    p.add_argument(
        "--split",
        default="train",
        choices=sorted(SPLIT_CODES),
        help="train, or test: held-out sentences, unseen voice mixes, no augmentation",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--kind",
        default="sentences",
        choices=tuple(_KIND_TAG),
        help="sentences; short: 1-4 word utterances (numbers, digit strings, sentence fragments); "
        "numbers (hi only): spoken dates, years, times and amounts, alone or beside a sentence stretch",
    )
    p.add_argument("--workers", type=int, default=2, help="worker processes (one thread each)")
    p.add_argument("--engines", default=None, help=f"restrict to these engines ({','.join(ENGINES)})")
    p.add_argument("--no-augment", action="store_true", help="no noise/reverb/codec augmentation")
    p.add_argument("--text-dir", default=None, help="sentence files directory (default: DIFFASR_TEXT_DIR)")


def _config(args) -> dict:
    """Validate arguments into the plain dict that workers receive."""
    langs = [x.strip() for x in str(args.langs).split(",") if x.strip()]
    bad = [x for x in langs if x not in LANGS]
    if not langs or bad:
        raise ConfigError(f"--langs: unknown language(s) {','.join(bad) or '(none)'}; choose from {','.join(LANGS)}")
    if not (args.hours > 0 and np.isfinite(args.hours)):
        raise ConfigError(f"--hours must be a positive number, got {args.hours}")
    if args.kind == "numbers" and langs != ["hi"]:
        raise ConfigError(f"--kind numbers exists for hi only, got --langs {','.join(langs)}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {args.workers}")
    wanted = [x.strip() for x in args.engines.split(",") if x.strip()] if args.engines else list(ENGINES)
    if [x for x in wanted if x not in ENGINES] or not wanted:
        raise ConfigError(f"--engines: unknown engine in {args.engines!r}; choose from {','.join(ENGINES)}")
    missing = [x for x in wanted if not ENGINES[x]().available()]
    if missing and args.engines:
        raise ConfigError(f"engine(s) not installed: {','.join(missing)} (see scripts/setup.sh)")
    for x in missing:
        print(f"diffasr corpus synth: warning: engine {x} not installed, skipped", file=sys.stderr)
    usable = [x for x in wanted if x not in missing]
    weights = {}
    for lang in langs:
        weights[lang] = {e: w for e, w in WEIGHTS[lang].items() if e in usable}
        if not weights[lang]:
            can = [e for e in WEIGHTS[lang]]
            raise ConfigError(f"no selected engine speaks {lang}; engines for {lang}: {','.join(can)}")
    return {
        "out": str(Path(args.out).resolve()),
        "langs": langs,
        "hours": float(args.hours),
        "split": args.split,
        "seed": int(args.seed),
        "kind": args.kind,
        "augment": args.split == "train" and not args.no_augment,
        "engines": usable,
        "weights": weights,
        "workers": int(args.workers),
        "text_dir": args.text_dir,
    }


def _read_jsonl(path: Path) -> list[dict]:
    """Records of a manifest; a torn last line (crash mid-append) is ignored, other bad lines are errors."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for i, line in enumerate(lines, 1):
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i < len(lines):
                raise DataError(f"{path}:{i}: not valid JSON ({e})") from e
    return out


def _merge(out: Path) -> list[dict]:
    """Merge manifest.jsonl and the append-only partial file into manifest.jsonl (sorted, atomic)."""
    main, part = out / "manifest.jsonl", out / "manifest.partial.jsonl"
    recs = {r["id"]: r for r in _read_jsonl(main) + _read_jsonl(part)}
    rows = [recs[k] for k in sorted(recs)]
    tmp = out / ".manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, main)
    part.unlink(missing_ok=True)  # after the replace: a crash in between only leaves duplicates to dedupe
    return rows


def _check_corpus_json(out: Path, cfg: dict) -> None:
    """A resumed corpus must use the same generator parameters; --hours and --langs may change."""
    path, keys = out / "corpus.json", ("seed", "split", "kind", "augment", "engines")
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        old.setdefault("kind", "sentences")  # corpora from before --kind existed
        diff = [k for k in keys if old.get(k) != cfg[k]]
        if diff:
            raise ConfigError(
                f"{out} holds a corpus built with other {', '.join(diff)} "
                f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out"
            )
    meta = {k: cfg[k] for k in ("langs", "hours", "split", "seed", "kind", "augment", "engines", "weights")}
    meta["command"] = (
        f"diffasr corpus synth --langs {','.join(cfg['langs'])} --hours {cfg['hours']:g} "
        f"--out {out} --split {cfg['split']} --seed {cfg['seed']} --engines {','.join(cfg['engines'])}"
        + ("" if cfg["kind"] == "sentences" else f" --kind {cfg['kind']}")
        + ("" if cfg["augment"] or cfg["split"] == "test" else " --no-augment")
    )
    meta["sample_rate"] = SR
    tmp = out / ".corpus.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def run(args) -> int:
    if getattr(args, "corpus_command", None) == "perturb":
        from . import perturb

        return perturb.run(args)
    if getattr(args, "corpus_command", None) != "synth":
        raise ConfigError("usage: diffasr corpus synth|perturb ... (see diffasr corpus --help)")
    from tqdm import tqdm

    cfg = _config(args)
    for lang in cfg["langs"]:  # fail early (missing text files) before starting workers
        load_sentences(lang, cfg["split"], cfg["text_dir"])
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    _check_corpus_json(out, cfg)
    done = _merge(out)  # recover anything a killed run left in the partial file
    have = {r["id"] for r in done}
    secs = {lang: sum(r["duration_s"] for r in done if r["lang"] == lang) for lang in cfg["langs"]}
    target = cfg["hours"] * 3600 / len(cfg["langs"])
    next_k = dict.fromkeys(cfg["langs"], 0)
    fails = dict.fromkeys(cfg["langs"], 0)  # consecutive failures: stop a language whose engines all fail
    stats: dict[str, list[float]] = {}  # engine -> [clips, audio s, cpu s]
    os.environ["OMP_NUM_THREADS"] = "1"
    for name in cfg["engines"]:
        engine(name).prepare()

    def next_task():
        """The (lang, k) of the least-complete language still below target, skipping finished ids."""
        open_ = [lg for lg in cfg["langs"] if secs[lg] < target and fails[lg] < 50]
        if not open_:
            return None
        lang = min(open_, key=lambda lg: (secs[lg] + inflight[lg] * 4.0, lg))  # ~4 s per pending clip
        while _uid(cfg, lang, next_k[lang]) in have:
            next_k[lang] += 1
        next_k[lang] += 1
        return lang, next_k[lang] - 1

    inflight = dict.fromkeys(cfg["langs"], 0)
    bar = tqdm(
        total=round(target * len(cfg["langs"])),
        initial=round(sum(min(v, target) for v in secs.values())),
        unit="s",
        desc="audio",
        dynamic_ncols=True,
        disable=None,
    )
    old_term = signal.signal(signal.SIGTERM, _interrupt)
    pool = cf.ProcessPoolExecutor(cfg["workers"], initializer=_worker_init) if cfg["workers"] > 1 else None
    t_start = time.time()
    try:
        with open(out / "manifest.partial.jsonl", "a", encoding="utf-8") as part:

            def record(res):
                lang, e = res["lang"], res["engine"]
                st = stats.setdefault(e, [0, 0.0, 0.0])
                st[2] += res["cpu_s"]
                if "error" in res:
                    fails[lang] += 1
                    tqdm.write(f"skip {res['id']} ({e}): {res['error']}", file=sys.stderr)
                    return
                fails[lang] = 0
                r = res["record"]
                part.write(json.dumps(r, ensure_ascii=False) + "\n")
                part.flush()  # the audio is already in place: the line may now become visible
                st[0] += 1
                st[1] += r["duration_s"]
                secs[lang] += r["duration_s"]
                bar.update(round(r["duration_s"]))

            if pool is None:
                while (task := next_task()) is not None:
                    record(safe_clip(cfg, *task))
            else:
                pending: dict = {}
                while True:
                    while len(pending) < 2 * cfg["workers"] and (task := next_task()) is not None:
                        inflight[task[0]] += 1
                        pending[pool.submit(safe_clip, cfg, *task)] = task
                    if not pending:
                        break
                    fin, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                    for f in fin:
                        inflight[pending.pop(f)[0]] -= 1
                        record(f.result())
    finally:  # also on Ctrl-C: stop workers, then publish everything finished so far
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        rows = _merge(out)
        signal.signal(signal.SIGTERM, old_term)
    wall = time.time() - t_start
    print(
        f"corpus: {len(rows)} clips, {sum(r['duration_s'] for r in rows) / 3600:.3f} h in {out} "
        f"(this run {sum(s[1] for s in stats.values()):.0f} s audio in {wall:.0f} s wall)"
    )
    for e, (n, a, c) in sorted((e, v) for e, v in stats.items() if v[0] or v[2]):
        print(
            f"  {e:9s} clips {int(n):6d}  audio {a:9.1f} s  cpu {c:8.1f} s  "
            f"{a / c if c else float('nan'):7.1f} audio-s per CPU-s"
        )
    for lang in cfg["langs"]:
        if fails[lang] >= 50:
            print(f"warning: {lang} stopped after 50 consecutive failures", file=sys.stderr)
    return 0
