"""Manifests: the JSON-lines list of clips that training, `diffasr eval` and the benchmarks read.

One row per clip, in the real_dev format: `audio` (relative to the manifest's folder), `text`, `lang`,
optional `duration_s` and `subset`. Shared by both sides, so it lives here rather than in `training/`
(inference never imports training) or in `apps/evaluate.py` (training never imports the evaluation CLI).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError


@dataclass
class Utterance:
    audio: Path
    text: str
    lang: str
    duration: float = 0.0
    subset: str | None = None  # reported as its own row by `diffasr eval`


def read_manifest(path: str | Path) -> list[Utterance]:
    """Parse a JSON-lines manifest (training, evaluation and benchmarks all read it here).

    Any problem raises DataError naming the file and line: bad JSON, a missing field, a language
    the models do not support, or an audio file that does not exist.
    """
    from ..text import LANGUAGES

    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read manifest ({e})") from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(r, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(r).__name__}")
        for key in ("audio", "text", "lang"):
            if not isinstance(r.get(key), str) or (key != "text" and not r[key]):
                raise DataError(f"{where}: missing or non-string {key!r} field")
        if r["lang"] not in LANGUAGES:
            raise DataError(f"{where}: unsupported lang {r['lang']!r} (choose from {', '.join(LANGUAGES)})")
        audio = path.parent / r["audio"]
        if not audio.is_file():
            raise DataError(f"{where}: audio file {audio} not found")
        subset = r.get("subset")
        rows.append(
            Utterance(audio, r["text"], r["lang"], float(r.get("duration_s") or 0), str(subset) if subset else None)
        )
    if not rows:
        raise DataError(f"{path}: manifest holds no clips")
    return rows
