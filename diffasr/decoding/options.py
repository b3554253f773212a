"""DecodeOptions: how to turn audio into text, one frozen, validated object for the API, CLI and server.

`method` picks the decoding; each method reads only some of the other fields (READS). A field a
method does not read must keep its default here, and must not be given to `resolve`: asking for
it is an error, never silently ignored.

    diffusion   from uniform noise, `steps` refine passes of the denoiser (the canvas length comes
                from the CTC transcript)
    ctc-refine  the same sampler started from the CTC transcript
    ctc-edit    the CTC transcript, edited only where the denoiser is ≥ edit_threshold sure
    diffusion-verify  from uniform noise, `steps` steps of self-speculative decoding: the denoiser
                drafts, a decoder run causally verifies (base preset only; sampler.verify): the
                `verifier` "adapted" (the same decoder), "whisper" (Whisper-base's as released,
                over its 30-s padded window) or "ensemble" (the mean of the two's log-probabilities);
                "auto", the model's choice per language
    ctc-verify  the same from the CTC transcript; when the steps run out, the causal pass writes the
                unverified rest token by token (its greedy continuation), so the text is the verifier's
    rescore     CTC prefix beam search (+ the language's n-gram) proposes `nbest` transcripts; one
                denoiser pass scores them; best beam score + rescore_weight × denoiser log-likelihood
    ctc-beam    CTC prefix beam search (+ the language's n-gram when ngram_weight > 0)
    ctc-greedy  greedy CTC

`hotwords` (with `hotword_boost`) are read where the CTC beam runs (its paths are boosted), and on
base also by the verified methods' released decoder, whose previous-text slot holds them with
`prompt` (hotwords.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..errors import ConfigError
from .hotwords import check as check_hotwords

_ALWAYS = frozenset({"method", "language"})
_CANVAS = frozenset({"canvas", "length_margin", "return_steps"})  # return_steps: every canvas method records
_STEPS = _CANVAS | {"steps", "self_condition", "early_stop"}
_REFINE = _STEPS | {"temperature", "threshold", "edit_threshold", "seed", "collapse_repeats"}
_BEAM = frozenset({"beam", "ngram_weight", "length_bonus", "hotwords", "hotword_boost"})
_SCRIPT = frozenset({"restrict_script"})
# Each decoder backend runs the methods of its table (method -> the fields it reads besides method
# and language); a method missing from a backend's table is one it cannot run.
READS = {  # the DiffusionGemma backend (the small preset)
    "diffusion": _REFINE | _SCRIPT,
    "ctc-refine": _REFINE | _SCRIPT,
    "ctc-edit": _STEPS | _SCRIPT | {"edit_threshold"},
    "rescore": _BEAM | _CANVAS | _SCRIPT | {"nbest", "rescore_weight"},
    "ctc-beam": _BEAM | _SCRIPT,
    "ctc-greedy": _SCRIPT,
}
# The Whisper-decoder backend (the base preset) seeds its sampled methods with the CTC beam's best
# (n-gram fused when ngram_weight > 0) where small seeds them with greedy CTC: there they also read
# _BEAM; and it runs the verified methods, which need a decoder that also runs causally. Its
# denoiser reads no self-conditioning logits, and writes only the row language's Whisper vocabulary
# whatever restrict_script says: its denoising methods read neither.
_W_STEPS = _STEPS - {"self_condition"}
_W_REFINE = _REFINE - {"self_condition"}
WHISPER_READS = {
    "diffusion": _W_REFINE | _BEAM,
    "ctc-refine": _W_REFINE | _BEAM,
    "ctc-edit": _W_STEPS | _BEAM | {"edit_threshold"},
    "diffusion-verify": _CANVAS | _BEAM | {"steps", "seed", "verifier", "prompt"},
    "ctc-verify": _CANVAS | _BEAM | {"steps", "verifier", "prompt"},
    "rescore": _BEAM | _CANVAS | {"nbest", "rescore_weight"},
    "ctc-beam": READS["ctc-beam"],
    "ctc-greedy": READS["ctc-greedy"],
}
METHODS = ("diffusion", "ctc-refine", "ctc-edit", "diffusion-verify", "ctc-verify", "rescore", "ctc-beam", "ctc-greedy")
# What a method reads on some backend: what DecodeOptions alone can check
ANY_READS = {m: READS.get(m, frozenset()) | WHISPER_READS.get(m, frozenset()) for m in METHODS}
SAMPLED = ("diffusion", "ctc-refine", "ctc-edit", "diffusion-verify", "ctc-verify")  # run `steps` denoiser passes
VERIFIED = ("diffusion-verify", "ctc-verify")  # need a denoiser that also runs causally: the base preset
# DecodeOptions.verifier; a model's per-language choice is one of all but auto
VERIFIERS = ("auto", "adapted", "whisper", "ensemble")
RELEASED = ("whisper", "ensemble")  # the verifiers that run Whisper-base's released decoder over its padded window


def reads(method: str, table: dict | None = None) -> frozenset:
    """The fields `method` reads as a backend with READS-like `table` runs it (None: on any backend)."""
    table = ANY_READS if table is None else table
    return _ALWAYS | table.get(method, frozenset())


@dataclass(frozen=True)
class DecodeOptions:
    method: str = "diffusion"  # one of METHODS
    steps: int = 8  # denoising steps; cost is set by this, not by transcript length
    temperature: float = 0.0  # 0: commit argmax tokens; > 0 samples
    threshold: float = 0.9  # commit any position whose confidence exceeds this early
    edit_threshold: float | None = 0.95  # refine: revise a committed token when this sure of another;
    #                                      ctc-edit: replace a seed token when this sure of another
    self_condition: bool = True  # feed each step the previous step's logits
    canvas: int | None = None  # canvas length; None: estimated from the CTC length (+ margin)
    length_margin: float = 0.25  # estimated canvas = ceil(n_ctc * (1 + margin)) + 4, rounded up to 8
    early_stop: bool = True  # stop once predictions are stable
    collapse_repeats: bool = True  # diffusion, ctc-refine: a token repeated at adjacent positions is written once
    nbest: int = 8  # rescore: CTC prefix-beam hypotheses the decoder scores
    rescore_weight: float = 2.0  # rescore: pick max of CTC log-score + weight · decoder log-likelihood
    beam: int = 16  # CTC prefix beam width, at least nbest
    ngram_weight: float = 0.0  # CTC beam search: weight of the language's n-gram (the model's lm/); 0: none
    length_bonus: float = 0.0  # with an n-gram: added per token, offsetting what the n-gram charges for each
    verifier: str = "auto"  # verified methods: one of VERIFIERS
    seed: int = 0  # same seed, same input -> same output
    hotwords: tuple[str, ...] = ()  # CTC beam: boosted token paths; base verified: boosted in the verifier
    hotword_boost: float = 3.0  # per hotword token: CTC beam score of a completed hotword; verifier logit
    prompt: str | None = None  # base verified methods: previous text for the released decoder (OpenAI `prompt`)
    return_steps: bool = False  # canvas methods: record each step's canvas (Transcription.steps; steps.py)
    language: str | None = None  # None: auto
    restrict_script: bool = True  # a known language's output uses only its script's tokens

    def __post_init__(self):
        object.__setattr__(self, "hotwords", check_hotwords(self.hotwords, self.prompt))  # a list given: a tuple
        if self.method not in ANY_READS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        checks = [
            (
                isinstance(self.steps, int) and 1 <= self.steps <= 64,
                f"steps must be an integer in 1..64, not {self.steps!r}",
            ),
            (
                isinstance(self.nbest, int) and 1 <= self.nbest <= 32,
                f"nbest must be an integer in 1..32, not {self.nbest!r}",
            ),
            (0.0 <= self.rescore_weight <= 10.0, f"rescore_weight must be in [0, 10], not {self.rescore_weight}"),
            (
                isinstance(self.beam, int) and 1 <= self.beam <= 256,
                f"beam must be an integer in 1..256, not {self.beam!r}",
            ),
            (0.0 <= self.ngram_weight <= 5.0, f"ngram_weight must be in [0, 5], not {self.ngram_weight}"),
            (0.0 <= self.length_bonus <= 20.0, f"length_bonus must be in [0, 20], not {self.length_bonus}"),
            (
                self.method != "ctc-edit" or (self.edit_threshold is not None and 0 < self.edit_threshold <= 1),
                f"method 'ctc-edit' needs edit_threshold in (0, 1], not {self.edit_threshold}",
            ),
            (0.0 <= self.temperature <= 2.0, f"temperature must be in [0, 2], not {self.temperature}"),
            (0.0 < self.threshold <= 1.0, f"threshold must be in (0, 1], not {self.threshold}"),
            (self.canvas is None or 8 <= self.canvas <= 512, f"canvas must be in 8..512, not {self.canvas}"),
            (0.0 <= self.length_margin <= 2.0, f"length_margin must be in [0, 2], not {self.length_margin}"),
            (0.0 <= self.hotword_boost <= 20.0, f"hotword_boost must be in [0, 20], not {self.hotword_boost}"),
            (self.verifier in VERIFIERS, f"verifier must be one of {', '.join(VERIFIERS)}, not {self.verifier!r}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)
        unread = [
            f.name for f in fields(self) if f.name not in reads(self.method) and getattr(self, f.name) != f.default
        ]
        if unread:
            raise _unread(self.method, unread, ANY_READS)


def _unread(method: str, names: list[str], table: dict) -> ConfigError:
    read = sorted(table[method]) or ["no options"]
    return ConfigError(f"method {method!r} does not read {', '.join(names)} (it reads {', '.join(read)})")


def resolve(defaults: dict, given: dict, table: dict | None = None) -> DecodeOptions:
    """DecodeOptions from a model's `decode_defaults` and the caller's `given` fields (None values
    are not given, nor are empty hotwords). The method is the caller's, else the defaults'; defaults
    that method does not read are dropped (they belong to another method), but every given field must be read by it.
    table: what each method reads on the model's backend (`model.backend.reads`; None: READS, the
    DiffusionGemma backend's)."""
    table = READS if table is None else table
    given = {k: v for k, v in given.items() if v is not None and not (k == "hotwords" and not v)}
    names = {f.name for f in fields(DecodeOptions)}
    for where, d in (("decoding option", given), ("decode_defaults option", defaults)):
        if unknown := sorted(set(d) - names):
            raise ConfigError(f"unknown {where} {', '.join(unknown)} (known: {', '.join(sorted(names))})")
    method = given.get("method", defaults.get("method", DecodeOptions.method))
    if method not in ANY_READS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {method!r}")
    _check_runs(method, table)
    allowed = reads(method, table)
    unread = [k for k in given if k not in allowed]
    if unread:
        raise _unread(method, unread, table)
    kept = {k: v for k, v in defaults.items() if k in allowed}
    return DecodeOptions(**{**kept, **given, "method": method})


def check_reads(options: DecodeOptions, table: dict) -> None:
    """ConfigError when `options` sets a field its method does not read on the backend whose READS-like
    table is `table` (small's sampled methods do not read the beam's fields)."""
    _check_runs(options.method, table)
    unread = [
        f.name
        for f in fields(options)
        if f.name not in reads(options.method, table) and getattr(options, f.name) != f.default
    ]
    if unread:
        raise _unread(options.method, unread, table)


def _check_runs(method: str, table: dict) -> None:
    if method not in table:
        need = "a denoiser that also runs causally: use the base model" if method in VERIFIED else "another model"
        raise ConfigError(f"method {method!r} needs {need}")
