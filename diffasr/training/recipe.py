"""Rebuild a shipped model from the repository alone: corpus, tokenizer, every stage, export, n-grams.

    python -m diffasr.training.recipe small --dry-run     # the plan: every command, in order, with wall times
    python -m diffasr.training.recipe small               # run it; re-run to continue after an interruption
    python -m diffasr.training.recipe disjoint DEV.jsonl TEST.jsonl OUT.jsonl   # DEV minus TEST's sentences

A recipe is `configs/recipes/<name>.toml`: `run_dir` and a list of `[[step]]` tables, each one of
- `run`: a command line (or a list of them), run from the repository root;
- `check`: a file the recipe needs that is pinned in the repository;
- `train`: a stage config (+ `set` overrides). The recipe points its `out` at `<run_dir>/<stage>` and
  its `init_from` at the previous training step's checkpoint there, never at a checkpoint outside the
  run, and exports it (scripts/export_model.py) to `<run_dir>/export/<stage>`, keeping the previous
  export's training record, so the last export describes every stage as the shipped config.json does.
`{export}` in a command is the last export. Every step has `minutes` (wall time) and `source`
("measured" or "estimate"). A training step whose checkpoint has reached its last step is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DiffasrError
from . import checkpoint
from .config import TrainConfig, load_config

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "configs" / "recipes"
SOURCES = ("measured", "estimate")


@dataclass(frozen=True)
class Step:
    name: str
    commands: tuple[tuple[str, ...], ...]  # argv lists, run in order from the repository root
    minutes: float
    source: str
    config: TrainConfig | None = None  # training steps: the stage's config as the recipe runs it
    check: str = ""  # a pinned file that must exist

    def done(self) -> bool:
        """A training step whose checkpoint reached its last step (stop_at, else max_steps)."""
        if self.config is None:
            return False
        ckpt = checkpoint.latest(self.config.path(self.config.out))
        last = self.config.optim.stop_at or self.config.optim.max_steps
        return ckpt is not None and (checkpoint.step_of(ckpt) or 0) >= last


def _argv(line: str, export: str) -> tuple[str, ...]:
    argv = tuple(shlex.split(line.replace("{export}", export)))
    if argv[0] == "diffasr":
        return (sys.executable, "-m", "diffasr") + argv[1:]
    return (sys.executable,) + argv[1:] if argv[0] == "python" else argv


def plan(name: str, run_dir: str | None = None) -> list[Step]:
    """The steps of `configs/recipes/<name>.toml`, training configs loaded and chained."""
    path = RECIPES / f"{name}.toml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in RECIPES.glob("*.toml")))
        raise ConfigError(f"no recipe {name!r} (have: {have})")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    unknown = set(raw) - {"run_dir", "step"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    run = run_dir or raw.get("run_dir", f"runs/rebuild-{name}")
    steps, prev, export = [], None, ""
    for i, s in enumerate(raw.get("step", []), 1):
        where = f"{path}: step {i} ({s.get('name', '?')})"
        kinds = [k for k in ("run", "check", "train") if k in s]
        unknown = set(s) - {"name", "run", "check", "train", "set", "minutes", "source"}
        if len(kinds) != 1 or unknown or not isinstance(s.get("name"), str):
            raise ConfigError(
                f"{where}: needs a name and exactly one of run, check, train (unknown: {sorted(unknown)})"
            )
        if not isinstance(s.get("minutes"), (int, float)) or s.get("source") not in SOURCES:
            raise ConfigError(f"{where}: needs minutes (a number) and source ({' or '.join(SOURCES)})")
        common = dict(name=s["name"], minutes=float(s["minutes"]), source=s["source"])
        if "run" in s:
            lines = [s["run"]] if isinstance(s["run"], str) else s["run"]
            steps.append(Step(commands=tuple(_argv(l, export) for l in lines), **common))
        elif "check" in s:
            steps.append(Step(commands=(), check=s["check"], **common))
        else:
            stage = Path(load_config(REPO / s["train"]).out).name  # e.g. small2
            out = f"{run}/{stage}"
            sets = [f'out="{out}"'] + ([f'init_from="{prev}/checkpoint"'] if prev else []) + list(s.get("set", []))
            cfg = load_config(REPO / s["train"], sets)
            if prev is None and cfg.init_from:
                raise ConfigError(f"{where}: the first stage must start from scratch, not {cfg.init_from}")
            train = (
                sys.executable,
                "-m",
                "diffasr",
                "train",
                "--config",
                s["train"],
                "--resume",
                *[a for kv in sets for a in ("--set", kv)],
            )
            new_export = f"{run}/export/{stage}"
            export_cmd = (
                sys.executable,
                "scripts/export_model.py",
                f"{out}/checkpoint",
                new_export,
                "--decode-defaults",
                json.dumps(cfg.eval.decode),
                *(("--previous", export) if export else ()),
            )
            steps.append(Step(commands=(train, export_cmd), config=cfg, **common))
            prev, export = out, new_export
    return steps


def describe(steps: list[Step]) -> str:
    """The plan as text: each step, its commands, its wall time; the total."""
    lines = []
    for s in steps:
        lines.append(f"# {s.name}: {s.minutes:g} min ({s.source})" + (" [done]" if s.done() else ""))
        if s.check:
            lines.append(f"test -f {s.check}")
        lines += [shlex.join(c).replace(sys.executable, "python") for c in s.commands]
    total = sum(s.minutes for s in steps)
    lines.append(f"# total: {total:g} min ({total / 60:.1f} h)")
    return "\n".join(lines)


def execute(steps: list[Step]) -> None:
    env = dict(os.environ, DIFFASR_THREADS=os.environ.get("DIFFASR_THREADS", "2"))
    for s in steps:
        if s.check and not (REPO / s.check).is_file():
            raise ConfigError(f"{s.name}: {s.check} is missing from the repository")
        if s.done():
            print(f"# {s.name}: done", flush=True)
            continue
        for c in s.commands:
            print("+ " + shlex.join(c), flush=True)
            r = subprocess.run(c, cwd=REPO, env=env)
            if r.returncode != 0:
                raise DiffasrError(f"{s.name}: `{shlex.join(c)}` exited with {r.returncode}; re-run to continue")


def disjoint(manifest: Path, exclude: Path, out: Path) -> int:
    """Write the rows of `manifest` whose sentence is in no row of `exclude`; returns how many."""
    from ..pipeline.manifest import read_manifest
    from ..text import spoken_form

    taken = {spoken_form(u.text) for u in read_manifest(exclude)}
    rows = [json.loads(l) for l in manifest.read_text(encoding="utf-8").splitlines() if l.strip()]
    keep = [r for r in rows if spoken_form(r["text"]) not in taken]
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in keep), encoding="utf-8")
    return len(keep)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["disjoint"]:
            if len(argv) != 4:
                raise ConfigError("usage: python -m diffasr.training.recipe disjoint MANIFEST EXCLUDE OUT")
            print(f"{disjoint(*map(Path, argv[1:]))} rows kept")
            return 0
        p = argparse.ArgumentParser(prog="python -m diffasr.training.recipe", description=__doc__.splitlines()[0])
        p.add_argument("name", help="a recipe in configs/recipes/ (small)")
        p.add_argument("--run-dir", help="where the stages go (default: the recipe's run_dir)")
        p.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
        args = p.parse_args(argv)
        steps = plan(args.name, args.run_dir)
        if args.dry_run:
            print(describe(steps))
        else:
            execute(steps)
        return 0
    except DiffasrError as e:
        print(f"recipe: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
