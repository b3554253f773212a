"""The training config: one frozen, validated `TrainConfig`, read from TOML with inheritance.

    base = "small.toml"          # optional: the file this one changes (a path relative to this file)
    out = "runs/small2"          # then only the differences; tables are merged key by key

A file's `base` is loaded first (recursively), this file's tables are deep-merged over it (a table
merges, any other value replaces), `--set section.key=value` overrides come last, and the result is
checked field by field against the dataclasses below: an unknown key or a value of the wrong type
or range is one ConfigError naming the file and the key. Relative paths are resolved against the
repository root when the leaf file lives in `configs/` (or a folder below it), else the working
directory: `cfg.path(p)`.

Retired keys (`RETIRED`) are accepted at their no-op value only, so that the training record a
shipped model carries (config.json → training.config, written before they were removed) still
loads; any other value names the stage they belonged to.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from ..text import LANGUAGES

SEED_TARGETS = ("position", "aligned", "edit")
SCHEDULES = ("linear",)
CTC_SOURCES = ("", "projector", "prompt")  # "": keep the model's own
DTYPES = ("bfloat16", "float16", "float32")

# section.key -> (no-op value, why it is gone). See docs/experiments.md, "Removed code".
RETIRED = {
    "loss.seed_misspell": (0.0, "stage 6's misspelled CTC seeds (not shipped)"),
    "loss.seed_sample": (0.0, "stage 8's CTC-sampled seeds (not shipped)"),
}


@dataclass(frozen=True)
class TokenizerConfig:
    path: str = ""  # a pinned tokenizer.json; "" trains a BPE on the train split of the sentence files
    vocab_size: int = 5000
    limit_alphabet: int = 3000
    sentences_per_lang: int = 20000


@dataclass(frozen=True)
class DataConfig:
    train: tuple[str, ...] = ()  # manifests
    dev: str = ""  # manifest scored during training
    cache: str = "data/features"  # frozen-encoder features, fp16, shared by every run
    max_frames: int = 6000  # encoder frames per batch (50 per second)
    max_batch: int = 32
    dev_limit: int = 120
    max_seconds: float = 20.0
    hf: tuple[dict, ...] = ()  # Hugging Face sources (pretrained.py), [[data.hf]] tables
    hf_dev: tuple[dict, ...] = ()
    streaming: bool = True


@dataclass(frozen=True)
class PretrainedConfig:
    """Pretrained-backbone presets only (pretrained.py); "" = the preset's Hub id."""

    backbone: str = ""
    encoder: str = ""
    lora: dict = field(default_factory=dict)
    dtype: str = "bfloat16"
    gradient_checkpointing: bool = False


@dataclass(frozen=True)
class OptimConfig:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.01
    warmup_steps: int = 200
    max_steps: int = 20000
    min_lr_ratio: float = 0.1  # cosine decay to this fraction of lr
    time_budget_min: float = 0.0  # stop cleanly (resumable) after this wall time; 0: no budget
    stop_at: int = 0  # stop this chunk at a step (resumable); 0: run to max_steps
    grad_clip: float = 1.0
    accumulate: int = 1
    bf16: bool = True


@dataclass(frozen=True)
class LossConfig:
    """Weights and options of the losses (loss.py)."""

    diffusion: float = 1.0
    ar: float = 0.3
    ctc: float = 0.5
    ctc_prompt: float = 0.0
    ctc_warmup_steps: int = 300  # the other losses ramp in linearly over these steps
    pad_weight: float = 0.1
    self_cond_prob: float = 0.5
    ctc_canvas_prob: float = 0.0
    seed_targets: str = "position"
    schedule: str = "linear"
    lang_drop: float = 0.2
    spec_augment: bool = True
    text: float = 0.0  # text-only correction rows ([text])


@dataclass(frozen=True)
class TextConfig:
    langs: tuple[str, ...] = LANGUAGES
    batch: int = 32  # sentences per step, languages drawn uniformly
    max_rate: float = 0.4  # each sentence gets a word error rate drawn from U(0, max_rate)
    exclude: tuple[str, ...] = ()  # manifests whose transcripts never become text rows


@dataclass(frozen=True)
class EvalConfig:
    every: int = 500
    save_every: int = 250
    steps: int = 8
    log_every: int = 20
    # How the dev set is decoded: DecodeOptions fields over the model's own decode_defaults ({}: exactly
    # those), and the n-gram folder the beam fuses ("": the model's own lm/, if any).
    decode: dict = field(default_factory=dict)
    ngrams: str = ""


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "small"
    out: str = "runs/small"
    seed: int = 0
    init_from: str = ""  # a checkpoint directory: its weights and tokenizer, a fresh optimizer
    ctc_from: str = ""
    tokenizer: TokenizerConfig = TokenizerConfig()
    data: DataConfig = DataConfig()
    model: PretrainedConfig = PretrainedConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()
    text: TextConfig = TextConfig()
    eval: EvalConfig = EvalConfig()
    root: Path = field(default=Path("."), compare=False)  # relative paths are resolved against this

    def path(self, p: str | Path) -> Path:
        """`p` if absolute, else relative to the config's root."""
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def to_dict(self) -> dict:
        """Plain JSON-able dict (lists for tuples), without `root`: the training record in checkpoints."""
        out = _plain(dataclasses.asdict(self))
        out.pop("root")
        return out

    def replace(self, **sections) -> TrainConfig:
        """A copy with `section={field: value}` changes (or top-level fields), validated again."""
        raw = self.to_dict()
        for k, v in sections.items():
            raw[k] = {**raw[k], **v} if isinstance(v, dict) and isinstance(raw.get(k), dict) else v
        return from_dict(raw, self.root, "replace")


def _plain(x):
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ---------------------------------------------------------------------------- loading


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The TOML of `path` deep-merged over its `base` chain."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: `base` chain loops back to itself")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be a file name, not {base!r}")
    return merge(_read(path.parent / base, seen + (path,)), raw)


def merge(base: dict, over: dict) -> dict:
    """`over` deep-merged into a copy of `base`: tables merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _override(raw: dict, item: str) -> dict:
    """Apply one `section.key=value` (value parsed as TOML, bare words as strings)."""
    key, _, val = item.partition("=")
    if not key or not val:
        raise ConfigError(f"bad override {item!r} (use section.key=value)")
    try:
        parsed = tomllib.loads(f"x = {val}")["x"]
    except tomllib.TOMLDecodeError:
        parsed = val
    *sections, name = key.split(".")
    patch: dict = {name: parsed}
    for s in reversed(sections):
        patch = {s: patch}
    return merge(raw, patch)


def _root(path: Path) -> Path:
    for parent in path.resolve().parents:
        if parent.name == "configs":
            return parent.parent
    return Path.cwd()


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The TrainConfig of a TOML file (with its `base` chain) and `section.key=value` overrides."""
    path = Path(path)
    raw = _read(path)
    for item in overrides:
        raw = _override(raw, item)
    return from_dict(raw, _root(path), str(path))


def from_dict(raw: dict, root: Path = Path("."), where: str = "config") -> TrainConfig:
    """Validate a plain dict (a merged TOML file, or a checkpoint's training record) into a TrainConfig."""
    return _build(TrainConfig, raw, where, "", root=root)


def _build(cls, raw, where: str, prefix: str, **extra):
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: [{prefix.rstrip('.')}] must be a table, not {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)} - set(extra)
    kwargs = dict(extra)
    for key, value in raw.items():
        name = prefix + key
        if name in RETIRED:
            noop, why = RETIRED[name]
            if value != noop:
                raise ConfigError(f"{where}: {name} was removed with {why}; see docs/experiments.md")
            continue
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {name!r}")
        kwargs[key] = _check(hints[key], value, where, name)
    try:
        cfg = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    _validate(cfg, where, prefix)
    return cfg


def _check(hint, value, where: str, name: str):
    """`value` as type `hint` (int accepted for float, lists for tuples), or ConfigError."""
    bad = ConfigError(f"{where}: {name} = {value!r} is not a valid {getattr(hint, '__name__', hint)}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, name + ".")
    origin = typing.get_origin(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check(args[0], v, where, name) for v in value)
        if len(value) != len(args):
            raise bad
        return tuple(_check(a, v, where, name) for a, v in zip(args, value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint in (str, bool, dict):
        if not isinstance(value, hint):
            raise bad
        return value
    if isinstance(hint, types.UnionType) or origin is typing.Union:
        raise AssertionError(f"no union fields in TrainConfig ({name})")
    raise AssertionError(f"unhandled config type {hint} ({name})")


def _validate(cfg, where: str, prefix: str) -> None:
    """Range and choice checks, one clear error for the first bad field."""

    def need(ok: bool, key: str, what: str):
        if not ok:
            raise ConfigError(f"{where}: {prefix}{key} = {getattr(cfg, key)!r}: {what}")

    if isinstance(cfg, TrainConfig):
        from ..models.config import PRESETS

        need(cfg.preset in PRESETS, "preset", f"one of {', '.join(PRESETS)}")
        need(cfg.ctc_from in CTC_SOURCES, "ctc_from", "one of " + ", ".join(map(repr, CTC_SOURCES)))
    elif isinstance(cfg, DataConfig):
        for key in ("max_frames", "max_batch", "max_seconds"):
            need(getattr(cfg, key) > 0, key, "must be > 0")
        need(cfg.dev_limit >= 0, "dev_limit", "must be ≥ 0")
    elif isinstance(cfg, PretrainedConfig):
        need(cfg.dtype in DTYPES, "dtype", f"one of {', '.join(DTYPES)}")
    elif isinstance(cfg, OptimConfig):
        need(cfg.lr > 0, "lr", "must be > 0")
        need(all(0 <= b < 1 for b in cfg.betas), "betas", "each in [0, 1)")
        need(cfg.max_steps > 0, "max_steps", "must be > 0")
        need(cfg.accumulate >= 1, "accumulate", "must be ≥ 1")
        for key in ("weight_decay", "warmup_steps", "min_lr_ratio", "time_budget_min", "stop_at", "grad_clip"):
            need(getattr(cfg, key) >= 0, key, "must be ≥ 0")
    elif isinstance(cfg, LossConfig):
        need(cfg.seed_targets in SEED_TARGETS, "seed_targets", f"one of {', '.join(SEED_TARGETS)}")
        need(cfg.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        for key in ("self_cond_prob", "ctc_canvas_prob", "lang_drop"):
            need(0 <= getattr(cfg, key) <= 1, key, "a probability in [0, 1]")
        for key in ("diffusion", "ar", "ctc", "ctc_prompt", "ctc_warmup_steps", "pad_weight", "text"):
            need(getattr(cfg, key) >= 0, key, "must be ≥ 0")
    elif isinstance(cfg, TextConfig):
        need(set(cfg.langs) <= set(LANGUAGES) and cfg.langs, "langs", f"languages among {', '.join(LANGUAGES)}")
        need(cfg.batch > 0, "batch", "must be > 0")
        need(0 <= cfg.max_rate <= 1, "max_rate", "a rate in [0, 1]")
    elif isinstance(cfg, EvalConfig):
        for key in ("every", "save_every", "steps", "log_every"):
            need(getattr(cfg, key) > 0, key, "must be > 0")
        from ..decoding import resolve

        try:
            resolve({}, cfg.decode)
        except ConfigError as e:
            raise ConfigError(f"{where}: {prefix}decode: {e}") from None
