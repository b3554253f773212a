"""Turn a `python -m diffasr.training.train_base` checkpoint into a `base` model directory.

    python scripts/export_base.py runs/base/checkpoint diffasr/assets/diffasr-base \
        --decode-defaults '{"method": "rescore", "rescore_weight": 0.5}'

The directory holds only what was trained (denoiser.safetensors: LoRA + LayerNorms, fp16) and the
per-language vocabularies; the frozen Whisper-base decoder loads from the installed package and
the CTC head from `--ctc-model` (a shipped name, default diffasr-small).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from diffasr.decoding import resolve
from diffasr.decoding.options import VERIFIERS, WHISPER_READS
from diffasr.errors import ConfigError
from diffasr.models.whisper_denoiser import VOCAB_FILE, WEIGHTS_FILE


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("out")
    ap.add_argument("--ctc-model", default="diffasr-small")
    ap.add_argument("--decode-defaults", default="{}")
    ap.add_argument(
        "--verifier-by-language", default="{}", help='JSON: the verifier each language uses, e.g. {"hi": "adapted"}'
    )
    ap.add_argument("--training", default=None, help="JSON file with the recipe/provenance to record")
    args = ap.parse_args(argv)
    src, out = Path(args.checkpoint), Path(args.out)
    try:
        defaults = json.loads(args.decode_defaults)
        resolve({}, defaults, WHISPER_READS)
        by_language = json.loads(args.verifier_by_language)
        if not isinstance(by_language, dict) or any(v not in VERIFIERS[1:] for v in by_language.values()):
            raise ConfigError(f"--verifier-by-language maps languages to one of {', '.join(VERIFIERS[1:])}")
    except (ValueError, TypeError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ck = json.loads((src / "config.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    for name in (WEIGHTS_FILE, VOCAB_FILE):
        shutil.copyfile(src / name, out / name)
    training = {k: v for k, v in ck.items() if k != "denoiser"}
    if args.training:
        training.update(json.loads(Path(args.training).read_text()))
    cfg = {
        "preset": "base",
        "ctc_model": args.ctc_model,
        "denoiser": ck["denoiser"],
        "decode_defaults": defaults,
        "verifier_by_language": by_language,
        "training": training,
    }
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(cfg, indent=2) + "\n")
    tmp.replace(out / "config.json")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
