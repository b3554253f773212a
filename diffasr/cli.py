"""`diffasr` command line: transcribe | corpus | train | eval | bench | serve | batch | listen.

The CLI is thin: each subcommand's options and body live in the module of its stage, which exposes
`add_arguments(parser)` and `run(args) -> int`. Errors of type DiffasrError become one line on stderr
and exit status 2; nothing here prints a traceback for bad input.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .errors import DiffasrError

# subcommand -> (module implementing add_arguments/run, one-line help)
COMMANDS = {
    "transcribe": ("diffasr.apps.transcribe_cli", "transcribe audio files"),
    "corpus": ("diffasr.training.corpus.synth", "build the synthetic multilingual speech corpus (corpus synth ...)"),
    "train": ("diffasr.training.train", "train a model from a config file"),
    "eval": ("diffasr.apps.evaluate", "evaluate on a manifest, optionally against faster-whisper"),
    "bench": ("diffasr.apps.bench", "per-stage timings and throughput against faster-whisper"),
    "serve": ("diffasr.serving.serve", "OpenAI-compatible transcription server with a web page"),
    "batch": ("diffasr.apps.batch", "transcribe many files on Ray Data into one Parquet/JSONL table (extra: ray)"),
    "listen": (
        "diffasr.apps.listen",
        "live transcription from the microphone (or --file X --realtime), finals line by line",
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffasr", description="Diffusion-based speech recognition.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:  # import only the module that is asked for
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    name = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=name if name in COMMANDS else "")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except DiffasrError as e:
        print(f"diffasr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"diffasr {args.command}: interrupted", file=sys.stderr)
        return 130
    except (BrokenPipeError, OSError) as e:  # e.g. unwritable output dir, closed stdout
        if isinstance(e, BrokenPipeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 1
        print(f"diffasr {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
