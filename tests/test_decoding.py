"""The decoding methods end to end: each runs on the tiny model, and the shipped default's
transcript of a real clip is pinned."""

from __future__ import annotations

import pytest

from diffasr.decoding import METHODS
from diffasr.decoding.options import VERIFIED


@pytest.mark.parametrize("method", [m for m in METHODS if m not in VERIFIED])  # those need base: test_base
def test_every_method_runs_on_the_tiny_model(tiny_model, en_clip, method):
    r = tiny_model.transcribe(str(en_clip), language="en", method=method)
    assert r.method == method and r.text == tiny_model.tokenizer.decode(r.tokens)
    assert len(r.tokens) == len(r.confidences) == len(r.token_strings)
    assert all(0.0 <= c <= 1.0 for c in r.confidences)
    assert all(0 <= w.start <= w.end <= r.duration + 0.01 for w in r.words)
    runs = {"ctc-greedy": (0, 0), "ctc-beam": (0, 0), "rescore": (1, 1)}.get(method, (1, 8))
    assert runs[0] <= r.steps_run <= runs[1], r.steps_run


def test_shipped_default_transcript_is_pinned(en_clip):
    """diffasr-small's default (rescore: the n-gram beam's 8-best scored by the denoiser) on jfk.flac,
    language identified: the exact text main produced before decoding moved into diffasr/decoding/.
    Run in a process limited to one thread (OMP_NUM_THREADS also sets the BLAS and CTranslate2
    pools at start-up): with more, the order of floating-point sums changes and a near-tie word
    flips ("bell" / "gill" here)."""
    import json
    import os
    import subprocess
    import sys

    code = (
        'import json, sys, diffasr; r = diffasr.load("small").transcribe(sys.argv[1]); '
        "print(json.dumps([r.method, r.language, r.steps_run, r.text]))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(en_clip)], env=env, capture_output=True, text=True, check=True
    )
    method, language, steps_run, text = json.loads(out.stdout.strip().splitlines()[-1])
    assert (method, language, steps_run) == ("rescore", "en", 1)
    assert text == (
        "and so my fellow americans asked not what your country can do for you "
        "asked what you can do for your country bell"
    )
