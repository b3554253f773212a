"""diffasr: multilingual speech recognition with a discrete-diffusion decoder.

import diffasr
model = diffasr.load()                      # the embedded diffasr-base, offline ("small": the fast one)
print(model.transcribe("clip.wav").text)
"""

from __future__ import annotations

import os
from pathlib import Path

from .decoding import DecodeOptions
from .errors import AudioError, ConfigError, DataError, DiffasrError, ModelError

__version__ = "0.1.0"
__all__ = [
    "load",
    "available_models",
    "DecodeOptions",
    "DiffasrError",
    "AudioError",
    "ModelError",
    "ConfigError",
    "DataError",
    "__version__",
]

ASSETS = Path(__file__).parent / "assets"
DEFAULT_MODEL = "diffasr-base"
ALIASES = {"small": "diffasr-small", "base": "diffasr-base"}  # preset names for the shipped models


def available_models() -> list[str]:
    """Names of the models shipped inside the package."""
    return sorted(p.name for p in ASSETS.iterdir() if (p / "config.json").is_file()) if ASSETS.is_dir() else []


def load(name_or_path: str | os.PathLike | None = None, device: str = "cpu"):
    """Load a model by shipped name (default diffasr-base, or $DIFFASR_MODEL) or checkpoint directory.

    The returned DiffusionASR has `.transcribe(audio, language=None, method=..., ...)` (DecodeOptions fields).
    """
    import json

    from .model import DiffusionASR, load_base

    name = str(name_or_path) if name_or_path is not None else os.environ.get("DIFFASR_MODEL", DEFAULT_MODEL)
    name = ALIASES.get(name, name) if not Path(name).is_dir() else name
    path = Path(name)
    if path.is_dir() and not (ASSETS / name / "config.json").is_file():
        pass  # a directory: DiffusionASR.load says precisely what is wrong with it
    elif not (path / "config.json").is_file():
        if (ASSETS / name / "config.json").is_file():
            path = ASSETS / name
        else:
            shipped = ", ".join(available_models()) or "none shipped in this install"
            raise ModelError(f"no model {name!r}: not a checkpoint directory nor a shipped model ({shipped})")
    try:  # a base checkpoint names the CTC model it builds on; anything unreadable goes to DiffusionASR.load
        preset = json.loads((path / "config.json").read_text()).get("preset")
    except (OSError, ValueError, AttributeError):
        preset = None
    if preset == "base":
        return load_base(path, device=device)
    return DiffusionASR.load(path, device=device)


def _attach() -> None:
    """`model.transcribe(...)` and `model.stream(...)` while the code stays in pipeline/transcribe.py
    and pipeline/stream.py (as whisper does)."""
    from .model import DiffusionASR
    from .pipeline.stream import stream
    from .pipeline.transcribe import transcribe

    DiffusionASR.transcribe = transcribe
    DiffusionASR.stream = stream


_attach()
