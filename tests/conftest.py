"""Shared fixtures: the real clips and sentences in tests/data (origins and licences in
tests/data/SOURCES.md) and a tiny random checkpoint.

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
DATA = REPO / "tests" / "data"  # a few real_dev clips with their manifest rows, sentence excerpts
SHARED = Path(os.environ.get("DIFFASR_SHARED", REPO.parent / "shared"))  # the full data, for the few tests that need it

torch.set_num_threads(min(2, os.cpu_count() or 1))
# The suite's mechanics (CLI, server, streaming, formats) run on the fast diffasr-small wherever no
# model is named, in-process and in the subprocesses it starts; test_base checks the shipped default.
os.environ.setdefault("DIFFASR_MODEL", "diffasr-small")


def manifest_rows(folder: Path = DATA) -> list[dict]:
    """The rows of `folder`/manifest.jsonl (real_dev's format; `audio` relative to `folder`)."""
    return [json.loads(l) for l in (folder / "manifest.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]


def real_clip(lang: str = "en", name: str | None = None) -> Path:
    """Path of a tests/data clip in `lang` (the shortest one unless `name` is given)."""
    rows = [r for r in manifest_rows() if r["lang"] == lang and (name is None or Path(r["audio"]).name == name)]
    assert rows, f"tests/data has no clip {name or ''} in {lang}"
    return DATA / min(rows, key=lambda r: r["duration_s"])["audio"]


def shared_real_dev() -> Path:
    """The whole real_dev set under DIFFASR_SHARED (default ../shared), or skip the test."""
    d = SHARED / "data" / "real_dev"
    if not (d / "manifest.jsonl").is_file():
        pytest.skip(f"needs the full real_dev set: {d} not found (set DIFFASR_SHARED)")
    return d


def shared_text() -> Path:
    """The full sentence files (diffasr.training.corpus.text's default: DIFFASR_TEXT_DIR or ../shared/data/text),
    or skip the test: synthetic corpora and training vocabularies need tens of thousands of lines."""
    from diffasr.training.corpus.text import TEXT_DIR

    if not (TEXT_DIR / "en.txt").is_file():
        pytest.skip(f"needs the full sentence files: {TEXT_DIR} not found (set DIFFASR_TEXT_DIR)")
    return TEXT_DIR


def greedy_of(causal, vocab: torch.Tensor, eot_i: int, max_len: int = 60) -> list[int]:
    """One clip's transcript as canvas indices, one token at a time (greedy): `causal` is verify's view
    of a causal decoder, (canvas (1, L) indices, rows (1,), first position 0) -> logits (1, L, |V|)."""
    seq: list[int] = []
    while len(seq) < max_len:
        logits = causal(torch.tensor([seq + [eot_i]]), torch.tensor([0]), 0)[0, len(seq)]
        if not seq:
            logits[eot_i] = -torch.inf  # as verify: never an empty transcript
        nxt = int(logits.argmax())
        if nxt == eot_i:
            break
        seq.append(nxt)
    return seq


@pytest.fixture(scope="session")
def shipped_base():
    """The shipped default model (the base preset), loaded once for the suite."""
    import diffasr

    return diffasr.load("base")


@pytest.fixture(scope="session")
def en_clip() -> Path:
    return real_clip("en", "jfk.flac")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from diffasr.models.tokenizer import BPETokenizer

    lines = []
    for lang in ("en", "de", "zh"):
        lines += (DATA / "text" / f"{lang}.txt").read_text(encoding="utf-8").splitlines()[:800]
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
    """The shipped diffasr-small: for tests that assert on real text."""
    import diffasr

    return diffasr.load("small")


def close_call_log_probs():
    """(4, 6) CTC log-probabilities, blank 0, where the acoustics slightly prefer tokens 2 4 (0.55)
    over 2 3 (0.44): the close call a beam bias (n-gram, hotword) should be able to flip."""
    import numpy as np

    probs = np.full((4, 6), 1e-4)
    probs[0, 2], probs[1, 0] = 0.99, 0.99
    probs[2, 4], probs[2, 3] = 0.55, 0.44
    probs[3, 0] = 0.99
    return np.log(probs / probs.sum(1, keepdims=True))
