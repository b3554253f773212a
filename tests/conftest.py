"""Shared fixtures: real clips from ../shared/data/real_dev and a tiny random checkpoint.

The tiny model exercises mechanics only (shapes, determinism, formats, errors); no test asserts
on its text, which is meaningless by construction.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DIFFASR_SHARED", REPO.parent / "shared"))
REAL_DEV = SHARED / "data" / "real_dev"

torch.set_num_threads(min(2, os.cpu_count() or 1))


def real_clip(lang: str = "en", name: str | None = None) -> Path:
    """Path of a real_dev clip in `lang` (the shortest one unless `name` is given)."""
    rows = [json.loads(l) for l in (REAL_DEV / "manifest.jsonl").read_text().splitlines() if l.strip()]
    rows = [r for r in rows if r["lang"] == lang and (name is None or Path(r["audio"]).name == name)]
    if not rows:
        pytest.skip(f"no real_dev clip for {lang}")
    return REAL_DEV / min(rows, key=lambda r: r["duration_s"])["audio"]


@pytest.fixture(scope="session")
def en_clip() -> Path:
    return real_clip("en", "jfk.flac")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from diffasr.tokenizer import BPETokenizer

    lines = []
    for lang in ("en", "de", "zh"):
        lines += (SHARED / "data" / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:800]
    return BPETokenizer.train(lines, vocab_size=600, limit_alphabet=300)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer) -> Path:
    """A checkpoint directory holding a randomly initialised `tiny` model (seeded)."""
    from diffasr.model import DiffusionASR

    torch.manual_seed(0)
    model = DiffusionASR.from_preset("tiny", tokenizer=tiny_tokenizer)
    return model.save(tmp_path_factory.mktemp("tiny") / "ckpt")


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    import diffasr

    return diffasr.load(tiny_model_dir)


@pytest.fixture(scope="session")
def shipped_model():
    """The shipped default model (diffasr.load()): for tests that assert on real text."""
    import diffasr

    return diffasr.load()
