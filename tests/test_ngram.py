"""The token n-gram (decoding/ngram.py) and its fusion into the CTC prefix beam search."""

from __future__ import annotations

import math
import random

import pytest
from conftest import DATA, close_call_log_probs

from diffasr.decoding.ctc import ctc_prefix_beam
from diffasr.decoding.ngram import NgramLM, NgramModels
from diffasr.errors import ConfigError


def _random_lm(min_count: int = 1, order: int = 3) -> NgramLM:
    rng = random.Random(0)
    seqs = [[rng.randrange(3, 30) for _ in range(rng.randrange(1, 9))] for _ in range(300)]
    return NgramLM.train(seqs, vocab_size=30, eos=1, order=order, min_count=min_count)


@pytest.mark.parametrize("min_count", [1, 2, 3])
def test_every_conditional_sums_to_one(min_count):
    """Seen, unseen and sentence-start contexts, pruned or not: P(· | h) is a distribution."""
    lm = _random_lm(min_count)
    for prefix in ([], [5], [27, 16], [29, 28], [3, 3, 3, 3]):
        ctx = lm.context(prefix)
        assert len(ctx) == 2
        assert sum(math.exp(lm.logprob(ctx, w)) for w in range(30)) == pytest.approx(1.0, abs=1e-9)


def test_kneser_ney_prefers_what_it_counted():
    lm = NgramLM.train([[5, 6, 7]] * 20 + [[5, 8]], vocab_size=10, eos=1, order=3)
    ctx = lm.context([5])
    assert lm.logprob(ctx, 6) > lm.logprob(ctx, 8) > lm.logprob(ctx, 9)
    assert lm.score([5, 6, 7]) > lm.score([5, 7, 6])


def test_save_load_round_trip_is_exact(tmp_path):
    lm = _random_lm(min_count=2, order=4)
    lm.save(tmp_path / "en.npz")
    back = NgramLM.load(tmp_path / "en.npz")
    for prefix in ([], [5], [27, 16, 4], [29, 28, 7]):
        for w in (1, 3, 17, 29):
            assert back.logprob(back.context(prefix), w) == lm.logprob(lm.context(prefix), w)
    models = NgramModels(tmp_path)
    assert models.languages() == ["en"] and models.get("en") is not None and models.get("de") is None
    (tmp_path / "de.npz").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="not a diffasr n-gram"):
        models.get("de")


def test_fusion_turns_an_unseen_spelling_into_a_known_one():
    """Acoustics slightly prefer token 4 ("coun y"-like) over 3 after token 2; an n-gram that has only
    seen 2 3 flips the choice, weight 0 leaves the acoustic best, and the fused score is the sum of its
    parts: log P(ids | audio) + weight × log P_lm(ids, EOS) + bonus × len(ids)."""
    blank, V = 0, 6
    lp = close_call_log_probs()
    lm = NgramLM.train([[2, 3]] * 50 + [[5]] * 10, vocab_size=V, eos=1, order=2)
    assert ctc_prefix_beam(lp, blank)[0][0] == [2, 4]
    assert ctc_prefix_beam(lp, blank, ngram=lm, ngram_weight=0.0)[0][0] == [2, 4]
    fused = ctc_prefix_beam(lp, blank, ngram=lm, ngram_weight=0.5, length_bonus=1.0)
    assert fused[0][0] == [2, 3]
    acoustic = dict((tuple(i), s) for i, s in ctc_prefix_beam(lp, blank, beam=64))
    assert fused[0][1] == pytest.approx(acoustic[(2, 3)] + 0.5 * lm.score([2, 3]) + 2 * 1.0)


def test_shipped_model_ngram_default_on_a_real_clip(en_clip):
    """The shipped n-grams load, and with them the default decoding spells JFK's words that greedy
    CTC misspells ("americics", "ctry", "couny" when recorded)."""
    import diffasr
    from diffasr.metrics import error_rate

    model = diffasr.load("small")
    assert model.config.ngram and set(model.ngrams.languages()) == set(model.config.ngram["languages"])
    assert model.config.decode_defaults["ngram_weight"] > 0
    ref = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    greedy = model.transcribe(en_clip, language="en", method="ctc-greedy").text
    beam = model.transcribe(en_clip, language="en", method="ctc-beam").text  # the defaults' n-gram, no denoiser
    default = model.transcribe(en_clip, language="en").text
    wer = {k: error_rate([ref], [v], "en")[0] for k, v in dict(greedy=greedy, beam=beam, default=default).items()}
    assert wer["default"] < wer["greedy"] and wer["beam"] < wer["greedy"], (wer, greedy, beam, default)
    assert "country" in default.split(), default


def test_build_script_adds_domain_text(tiny_model_dir, tmp_path):
    """`scripts/build_lm.py --text en=FILE` puts the user's sentences into English's n-gram."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from diffasr.model import DiffusionASR

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DIFFASR_TEXT_DIR": str(DATA / "text")}  # the sentence excerpts, not ../shared
    notes = tmp_path / "notes.txt"
    notes.write_text("the quilter pipeline shards every tensor\n" * 5, encoding="utf-8")
    out = {}
    for name, extra in (("plain", []), ("domain", ["--text", f"en={notes}"])):
        r = subprocess.run(
            [
                sys.executable,
                str(repo / "scripts" / "build_lm.py"),
                str(tiny_model_dir),
                "--langs",
                "en",
                "--short",
                "0",
                "--exclude",
                str(DATA / "manifest.jsonl"),
                "--out",
                str(tmp_path / name),
                *extra,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        assert r.returncode == 0, r.stderr
        out[name] = NgramLM.load(tmp_path / name / "en.npz")
    ids = DiffusionASR.load(tiny_model_dir).tokenizer.encode("the quilter pipeline shards every tensor")
    assert out["domain"].score(ids) > out["plain"].score(ids) + 5
    bad = subprocess.run(
        [sys.executable, str(repo / "scripts" / "build_lm.py"), str(tiny_model_dir), "--text", "en"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "expected LANG=FILE" in bad.stderr and "Traceback" not in bad.stderr
