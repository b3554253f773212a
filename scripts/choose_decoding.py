"""Choose decoding settings on the held-out synthetic test set (cached encoder features), never on real_dev.

    python scripts/choose_decoding.py MODEL_DIR '{"ctc": {"method": "ctc-greedy"}, "edit.9": {"method": "ctc-edit", "edit_threshold": 0.9}}'

Prints CER (%) overall and per language for each named set of DecodeOptions fields. References are
the tokenizer's spoken form (the training-eval CER), not the eval command's Whisper normalisers.
"""

import json
import sys
import time

import torch

from diffasr.decoding import resolve
from diffasr.model import DiffusionASR
from diffasr.training.config import load_config
from diffasr.training.data import build_examples
from diffasr.training.monitor import cer_by_language, decode_examples


def main(model_dir: str, settings_json: str, config: str = "configs/small-stage4.toml") -> None:
    torch.set_num_threads(2)
    model = DiffusionASR.load(model_dir)
    cfg = load_config(config)
    examples = build_examples(
        model, [cfg.path(cfg.data.dev)], cfg.path(cfg.data.cache), cfg.data.max_seconds, desc="dev"
    )
    langs = [e.lang for e in examples]
    for name, fields in json.loads(settings_json).items():
        t0 = time.time()
        refs, hyps = decode_examples(model, examples, {name: resolve({}, fields)})
        overall, per_lang = cer_by_language(refs, hyps[name], langs)
        print(
            name,
            round(overall, 2),
            {k: round(v, 1) for k, v in per_lang.items()},
            f"{time.time() - t0:.0f}s",
            flush=True,
        )


if __name__ == "__main__":
    main(*sys.argv[1:])
