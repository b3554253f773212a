"""Export a training checkpoint as a shippable model directory (fp16 safetensors + config.json).

    python scripts/export_model.py runs/small2/checkpoint diffasr/assets/diffasr-small \
        --decode-defaults '{"init": "ctc"}' --previous diffasr/assets/diffasr-small

`--decode-defaults` records the DecodeOptions this model is best used with (validated here);
`--previous` keeps the training record of the model this one was fine-tuned from, so the shipped
config.json describes every stage of its training.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

from diffasr.decoding import DecodeOptions
from diffasr.errors import ConfigError
from diffasr.model import DiffusionASR


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--decode-defaults", default="{}", help="JSON object of DecodeOptions fields")
    p.add_argument("--previous", default=None, help="model directory whose training record to keep as a stage")
    args = p.parse_args()
    try:
        defaults = json.loads(args.decode_defaults)
        DecodeOptions(**defaults)  # an unknown field or a bad value is refused here, not at load time
    except (json.JSONDecodeError, TypeError, ConfigError) as e:
        p.error(f"--decode-defaults: {e}")
    if not (Path(args.checkpoint) / "config.json").is_file():
        p.error(f"{args.checkpoint}: not a checkpoint directory (no config.json)")
    src = Path(args.checkpoint)
    training = json.loads((src / "config.json").read_text())["training"]
    if args.previous:
        prev = json.loads((Path(args.previous) / "config.json").read_text()).get("training", {})
        training["previous_stages"] = prev.pop("previous_stages", []) + [prev]
    model = DiffusionASR.load(src)
    model.config.decode_defaults = defaults
    out = Path(args.out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:  # build aside, then swap in
        model.save(Path(tmp) / "m", dtype=torch.float16, training=training)
        if out.exists():
            shutil.rmtree(out)
        shutil.move(str(Path(tmp) / "m"), str(out))
    print(f"exported {src} -> {out} ({sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
