"""`diffasr transcribe FILE...`, and the decoding flags it shares with `diffasr eval` and `diffasr batch`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..decoding.options import METHODS, VERIFIERS
from ..errors import AudioError, ConfigError
from ..text import LANGUAGES

# DecodeOptions fields with a flag. None (not given) means the model's decode_defaults, else
# DecodeOptions' own default; a flag the chosen method does not read is an error (decoding.resolve).
DECODING_FLAGS = (
    "method",
    "steps",
    "edit_threshold",
    "nbest",
    "rescore_weight",
    "beam",
    "ngram_weight",
    "length_bonus",
    "verifier",
    "seed",
    "hotwords",
    "hotword_boost",
    "prompt",
)


def add_decoding_arguments(p, method: bool = True, steps: bool = True) -> None:
    """The DECODING_FLAGS on an argparse parser (`method`/`steps` False: the caller defines its own)."""
    if method:
        p.add_argument(
            "--method",
            default=None,
            choices=METHODS,
            help="decoding method (default: the model's): diffusion (from noise), ctc-refine / ctc-edit "
            "(the denoiser refines / edits the CTC transcript), diffusion-verify / ctc-verify (base: "
            "denoiser drafts checked by a decoder run causally (--verifier), from noise / the CTC transcript), "
            "rescore (the denoiser picks among the CTC beam's n-best), ctc-beam, ctc-greedy",
        )
    if steps:
        p.add_argument(
            "--steps",
            type=int,
            default=None,
            help="diffusion, ctc-refine, ctc-edit, *-verify: denoising steps (default 8)",
        )
    p.add_argument(
        "--edit-threshold",
        type=float,
        default=None,
        help="ctc-edit: replace a seed token, refine: revise a committed one, when this sure (default 0.95)",
    )
    p.add_argument(
        "--nbest", type=int, default=None, help="rescore: CTC hypotheses scored (default: the model's, else 8)"
    )
    p.add_argument(
        "--rescore-weight",
        type=float,
        default=None,
        help="rescore: weight of the denoiser's log-likelihood against CTC's (default: the model's, else 2)",
    )
    p.add_argument(
        "--beam",
        type=int,
        default=None,
        help="rescore, ctc-beam: CTC prefix beam width (default: the model's, else 16)",
    )
    p.add_argument(
        "--ngram-weight",
        type=float,
        default=None,
        help="rescore, ctc-beam: weight of the language's n-gram; 0: none (default: the model's, else 0)",
    )
    p.add_argument(
        "--length-bonus",
        type=float,
        default=None,
        help="with an n-gram: bonus per token (default: the model's, else 0)",
    )
    p.add_argument(
        "--verifier",
        choices=VERIFIERS,
        default=None,
        help="*-verify: who checks the drafts: the adapted decoder (fastest), Whisper-base's as released (over its "
        "padded 30-s window: a second encoder pass), ensemble (both, log-probabilities averaged), or auto, the "
        "model's choice per language (default)",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="diffusion, ctc-refine, diffusion-verify: noise seed (default 0)"
    )
    p.add_argument(
        "--hotwords",
        type=_words,
        default=None,
        metavar="WORD,WORD",
        help="comma-separated words to favour (names, terms; at most 16): boosted in the CTC beam (ctc-beam, "
        "rescore, base's sampled methods) and, for base's verified methods, in the causal verifier",
    )
    p.add_argument(
        "--hotword-boost",
        type=float,
        default=None,
        help="with --hotwords: bonus per hotword token, in the CTC beam and the verifier's logits (default 3)",
    )
    p.add_argument(
        "--prompt",
        default=None,
        help="base, *-verify: text the released Whisper decoder reads as what came before (spelling, names, style)",
    )


def _words(value: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in value.split(",") if w.strip())


def decoding_overrides(args) -> dict:
    """The DECODING_FLAGS the user gave (not None), to merge over the model's decode_defaults."""
    return {k: v for k in DECODING_FLAGS if (v := getattr(args, k, None)) is not None}


def add_arguments(p) -> None:
    from ..pipeline.writers import WRITERS

    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-base)")
    p.add_argument(
        "--language", default=None, choices=("auto",) + LANGUAGES, help="spoken language (default: auto, identified)"
    )
    add_decoding_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="chunks decoded together (default 8)")
    p.add_argument(
        "--format", default="txt", choices=[*WRITERS, "all"], help="output format (default txt); all: every format"
    )
    p.add_argument("--output-dir", default=None, help="write <dir>/<stem>.<format> per file instead of stdout")
    p.add_argument(
        "--no-vad", action="store_true", help="no voice activity detection: fixed 30-s windows, silence kept"
    )
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--show-steps",
        action="store_true",
        help="print each denoising step's canvas on stderr ([rejected] {renoised} <reseeded> tokens marked), and "
        "with --output-dir write <stem>.steps.json (canvas methods only; json output holds them too)",
    )


def run(args) -> int:
    from tqdm import tqdm

    from .. import load
    from ..decoding import resolve
    from ..pipeline.transcribe import transcribe
    from ..pipeline.writers import WRITERS

    formats = list(WRITERS) if args.format == "all" else [args.format]
    if len(formats) > 1 and not args.output_dir:
        raise ConfigError("--format all writes several files: give --output-dir")
    model = load(args.model, device=args.device)
    options = resolve(
        model.config.decode_defaults,
        {"language": args.language, **decoding_overrides(args), "return_steps": args.show_steps or None},
        model.backend.reads,
    )
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    bar = tqdm(args.files, unit="file", disable=len(args.files) < 2 or not sys.stderr.isatty())
    for f in bar:
        try:
            r = transcribe(model, f, options=options, batch_size=args.batch_size, vad=not args.no_vad)
        except AudioError as e:
            message = str(e) if str(e).startswith(str(f)) else f"{f}: {e}"  # which file, when there are several
            if len(args.files) == 1:
                raise AudioError(message) from None
            print(f"diffasr transcribe: error: {message}", file=sys.stderr)
            failed += 1
            continue
        if args.show_steps:
            show_steps(f, r, out_dir)
        for fmt in formats:
            text = WRITERS[fmt](r)
            if out_dir:
                dest = out_dir / f"{Path(f).stem}.{fmt}"
                tmp = dest.with_name(dest.name + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(dest)  # atomic: a reader never sees half a file
            else:
                sys.stdout.write(f"{f}: {text}" if fmt == "txt" and len(args.files) > 1 else text)
                sys.stdout.flush()
    return 1 if failed else 0


MARKS = {"kept": "{}", "rejected": "[{}]", "renoised": "{{{}}}", "reseeded": "<{}>"}


def show_steps(f, result, out_dir: Path | None) -> None:
    """`--show-steps`: one line per step on stderr (tokens marked by status), and the steps as JSON
    in <out_dir>/<stem>.steps.json when an output directory is given."""
    import json

    for st in result.steps or []:
        line = "".join(MARKS[s].format(t) for t, s in zip(st["tokens"], st["status"]))
        print(f"{f} segment {st['segment']} step {st['step']:2d}: {line}", file=sys.stderr)
    if out_dir:
        (out_dir / f"{Path(f).stem}.steps.json").write_text(json.dumps(result.steps, ensure_ascii=False), "utf-8")
