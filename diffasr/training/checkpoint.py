"""Training checkpoints that are never lost: written beside the last one, verified, then swapped in.

A run directory `out` holds at most three checkpoint directories:
    checkpoint      the current one
    checkpoint.tmp  the next one, being written
    checkpoint.old  the previous one, during the swap
A directory counts only once it holds `complete.json` (its step and the byte size of every file,
written last, after the files were read back), so a kill at any moment leaves at least one complete
checkpoint, and `latest(out)` finds the newest one whichever of the three names it has.

`save_dir(out, step, write, verify)` is the protocol for any trainer (`write(d)` puts its files in
`d`, `verify(d)` reads them back); `save` is it for DiffusionASR (train.py), train_base.py passes
its own. Checkpoints from before complete.json still count: a `checkpoint` with config.json +
trainer_state.pt (train.py), or a `checkpoint` / `checkpoint-old` with config.json holding its
"step" + optimizer.pt (train_base.py, which swapped them in whole).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

MARKER = "complete.json"
NAMES = ("checkpoint", "checkpoint.tmp", "checkpoint.old")
LEGACY = ("checkpoint-old", "checkpoint-new")  # train_base.py's names before this protocol; -old may be complete


def _fsync_dir(d: Path) -> None:
    """Make renames and new files in `d` durable (a power cut must not undo the marker's rename)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _files(d: Path) -> dict[str, int]:
    """Relative path -> size in bytes of every file under `d` but the marker."""
    return {str(p.relative_to(d)): p.stat().st_size for p in sorted(d.rglob("*")) if p.is_file() and p.name != MARKER}


def step_of(d: Path) -> int | None:
    """The training step of checkpoint directory `d` if it is complete, else None."""
    marker = d / MARKER
    try:
        if marker.is_file():
            info = json.loads(marker.read_text())
            return int(info["step"]) if _files(d) == info["files"] else None
        if d.name not in ("checkpoint", "checkpoint-old") or not (d / "config.json").is_file():
            return None
        if d.name == "checkpoint" and (d / "trainer_state.pt").is_file():  # train.py before markers
            return int(torch.load(d / "trainer_state.pt", weights_only=False)["state"]["step"])
        if (d / "optimizer.pt").is_file():  # train_base.py before markers: config.json was written last
            return int(json.loads((d / "config.json").read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, EOFError, json.JSONDecodeError):
        pass
    return None


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint directory in run directory `out`, or None."""
    found = [
        (s, -i, out / n)
        for i, n in enumerate(NAMES + LEGACY[:1])
        if (out / n).is_dir() and (s := step_of(out / n)) is not None
    ]
    return max(found)[2] if found else None  # equal steps: prefer `checkpoint`, then .tmp


def _verify_model(d: Path) -> None:
    """Read a DiffusionASR checkpoint back before it may replace the old one (an error if it does not load)."""
    from safetensors import safe_open

    with safe_open(str(d / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            f.get_slice(key)  # every tensor's header and offsets are in range
    torch.load(d / "trainer_state.pt", weights_only=False)
    json.loads((d / "config.json").read_text())


def _promote(out: Path) -> None:
    """Make `checkpoint` the newest complete checkpoint (after a kill mid-swap it may be .tmp or .old),
    so that the other two names hold nothing that is needed and may be deleted."""
    best = latest(out)
    final = out / "checkpoint"
    if best is None or best == final:
        return
    if final.exists():  # incomplete, or older than `best`; `best` is complete, so this can go
        shutil.rmtree(final)
    os.replace(best, final)
    _fsync_dir(out)


def save_dir(out: Path, step: int, write: Callable[[Path], None], verify: Callable[[Path], None]) -> Path:
    """Write a checkpoint with `write(dir)`, read it back with `verify(dir)`, and make it `out/checkpoint`.

    Order: promote the newest complete one to `checkpoint`; clear the other names; write .tmp; verify
    it; fsync; mark it complete; `checkpoint` -> .old; .tmp -> `checkpoint`; delete .old. Every step
    leaves a complete checkpoint under one of the names `latest` reads.
    """
    tmp, final, old = out / "checkpoint.tmp", out / "checkpoint", out / "checkpoint.old"
    _promote(out)
    if final.exists():  # then `checkpoint` is complete and newest: the others hold nothing needed
        for d in (tmp, old) + tuple(out / n for n in LEGACY):
            if d.exists():
                shutil.rmtree(d)
    write(tmp)
    verify(tmp)
    for p in tmp.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    marker = tmp / (MARKER + ".tmp")
    marker.write_text(json.dumps({"step": int(step), "files": _files(tmp)}))
    os.replace(marker, tmp / MARKER)
    _fsync_dir(tmp)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync_dir(out)
    if old.exists():
        shutil.rmtree(old)
    return final


def save(out: Path, model, state: dict, optimizer, provenance: dict | None = None) -> Path:
    """A DiffusionASR checkpoint: the model (`model.save`) + trainer state (state, optimizer, torch RNG)."""

    def write(d: Path) -> None:
        model.save(d, training=provenance)
        torch.save(
            {"state": state, "optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()},
            d / "trainer_state.pt",
        )

    return save_dir(out, int(state["step"]), write, _verify_model)
