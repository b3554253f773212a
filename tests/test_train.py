"""Training mechanics on a few dozen real synthetic utterances (espeak, made by the corpus builder):
the losses fall, CTC error drops, the decoder comes to rely on the audio, the checkpoint loads and
transcribes, and a run interrupted and resumed ends in exactly the same state."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import shared_text

from diffasr.cli import main as cli


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    shared_text()
    out = tmp_path_factory.mktemp("corpus")
    assert (
        cli(
            [
                "corpus",
                "synth",
                "--langs",
                "en",
                "--engines",
                "espeak",
                "--hours",
                "0.03",
                "--workers",
                "1",
                "--no-augment",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out / "manifest.jsonl"


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    """Train the BPE once: `tokenizers`' BPE trainer breaks frequency ties differently in different
    processes, so recipes pin a tokenizer file for exact reproducibility."""
    from diffasr.models.tokenizer import BPETokenizer
    from diffasr.training.corpus.text import load_sentences

    shared_text()
    tok = BPETokenizer.train(load_sentences("en", "train")[:400], vocab_size=400, limit_alphabet=100)
    out = tmp_path_factory.mktemp("tok")
    tok.save(out)
    return out / "tokenizer.json"


def _config(tmp: Path, corpus: Path, tokenizer: Path | None = None, **over) -> Path:
    opt = dict(
        max_steps=over.pop("max_steps", 120), warmup_steps=10, lr=3e-3, bf16=False, stop_at=over.pop("stop_at", 0)
    )
    text = f"""
preset = "tiny"
out = "{tmp / "run"}"
[tokenizer]
path = "{tokenizer or ""}"
vocab_size = 400
limit_alphabet = 100
sentences_per_lang = 400
[data]
train = ["{corpus}"]
dev = "{corpus}"
cache = "{tmp.parent / "feats"}"
max_frames = 3000
max_batch = 12
dev_limit = 24
[optim]
{chr(10).join(f"{k} = {json.dumps(v) if not isinstance(v, bool) else str(v).lower()}" for k, v in opt.items())}
[loss]
ctc_warmup_steps = 10
lang_drop = 0.0
[eval]
every = {over.pop("every", 1000)}
save_every = 1000
log_every = 5
decode = {{ method = "rescore", nbest = 4, beam = 8 }}   # the shipped method, no n-gram
"""
    path = tmp / "cfg.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_losses_fall_and_decoder_uses_audio(tmp_path, corpus):
    import diffasr
    from diffasr.training.train import load_config, train

    cfg = load_config(_config(tmp_path, corpus, max_steps=150, every=150))
    torch.manual_seed(0)
    ckpt = train(cfg)
    metrics = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)["state"]
    hist = [h for h in state["history"] if h["kind"] == "train"]
    first, last = hist[0], hist[-1]
    assert last["ctc"] < 0.7 * first["ctc"] and last["diffusion"] < 0.8 * first["diffusion"]
    final = metrics[-1]
    assert final["cer"] < 90  # from ~100% (random) within a minute of training, decoded the shipped way
    assert set(final["per_lang"]) == {"en"}
    assert final["ce_t1_right"] < final["ce_t1_wrong"] - 0.1  # right audio explains the canvas better
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    model = diffasr.load(ckpt)
    clip = json.loads(corpus.read_text().splitlines()[0])["audio"]
    r = model.transcribe(str(corpus.parent / clip), steps=4)
    assert isinstance(r.text, str) and r.steps_run >= 1


def test_non_finite_steps_are_skipped_then_stop_training(tmp_path, corpus, tokenizer_file, monkeypatch):
    """A NaN loss (bf16 training on CUDA gave one, docs/results/gpu) must never reach the weights;
    a run of them stops training with one clear error, the last finite checkpoint kept."""
    from diffasr.errors import ConfigError
    from diffasr.training.loss import LossModule
    from diffasr.training.train import MAX_BAD_STEPS, load_config, train

    forward, calls = LossModule.forward, {"n": 0}

    def sometimes_nan(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        calls["n"] += 1
        bad = calls["n"] in (3, 4) or calls["n"] > 8
        return {k: v * float("nan") for k, v in out.items()} if bad else out

    monkeypatch.setattr(LossModule, "forward", sometimes_nan)
    cfg = load_config(_config(tmp_path, corpus, tokenizer_file, max_steps=8))
    cfg = cfg.replace(eval={"save_every": 4})
    ckpt = train(cfg)
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)["state"]
    assert state["step"] == 8 and state["skipped"] == 2
    from safetensors.torch import load_file

    assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values())
    cfg = cfg.replace(optim={"max_steps": 8 + MAX_BAD_STEPS + 5})
    with pytest.raises(ConfigError, match="non-finite"):
        train(cfg, resume=True)
    assert all(torch.isfinite(t).all() for t in load_file(ckpt / "model.safetensors").values())


def _train_cli(cfg: Path, *extra: str) -> None:
    """Train in a fresh process, as a user resuming after a kill would."""
    r = subprocess.run(
        [sys.executable, "-m", "diffasr", "train", "--config", str(cfg), *extra],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_resume_after_interruption_is_exact(tmp_path, corpus, tokenizer_file):
    _train_cli(_config(tmp_path / "a", corpus, tokenizer_file, max_steps=12))
    cfg_b = _config(tmp_path / "b", corpus, tokenizer_file, max_steps=12)
    _train_cli(cfg_b, "--set", "optim.stop_at=6")  # "killed" at step 6 (a checkpoint is written there)
    _train_cli(cfg_b, "--resume")
    straight, resumed = tmp_path / "a" / "run" / "checkpoint", tmp_path / "b" / "run" / "checkpoint"
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    sa = torch.load(straight / "trainer_state.pt", weights_only=False)["state"]
    sb = torch.load(resumed / "trainer_state.pt", weights_only=False)["state"]
    assert (sa["step"], sa["epoch"], sa["batch"]) == (sb["step"], sb["epoch"], sb["batch"])


def test_ctc_blank_handling_and_loss_shapes(tiny_model):
    from diffasr.decoding.ctc import ctc_greedy

    blank = tiny_model.tokenizer.pad
    logits = torch.full((1, 7, 10), -10.0)
    for t, k in enumerate([5, 5, blank, 5, 7, blank, 7]):
        logits[0, t, k] = 10
    assert ctc_greedy(logits, torch.tensor([7]), blank) == [[5, 5, 7, 7]]
    assert ctc_greedy(logits, torch.tensor([3]), blank) == [[5]]
    # F.ctc_loss with our blank: a perfect emission path gives ~0 loss
    lp = logits.log_softmax(-1).transpose(0, 1)
    loss = F.ctc_loss(lp, torch.tensor([5, 5, 7, 7]), torch.tensor([7]), torch.tensor([4]), blank=blank)
    assert loss.item() < 1e-3


def test_aligned_seed_targets_follow_the_edit_alignment():
    from diffasr.training.loss import aligned_targets

    eos, pad = 1, 0
    # seed 5 6 7 8 vs truth 5 9 7 10 8: 6 -> 9 replaced, 10 missing from the seed; 8 still targets 8
    # (position-aligned targets would ask for 10 there), EOS right after the seed's 4 tokens.
    got = aligned_targets([[5, 6, 7, 8], [5, 9, 7, 10, 8], [2, 3]], [[5, 9, 7, 10, 8], [5, 6, 7, 8], []], 8, eos, pad)
    assert got[0].tolist() == [5, 9, 7, 8, eos, pad, pad, pad]
    assert got[1].tolist() == [5, 6, 7, -100, 8, eos, pad, pad]  # the seed's extra 10 has no target
    assert got[2].tolist() == [-100, -100, eos, pad, pad, pad, pad, pad]
    # "edit" targets: a seed token with no counterpart is to be deleted (a pad inside the canvas is dropped)
    got = aligned_targets([[5, 9, 7, 10, 8]], [[5, 6, 7, 8]], 8, eos, pad, unmatched=pad)
    assert got[0].tolist() == [5, 6, 7, pad, 8, eos, pad, pad]


@pytest.mark.parametrize(
    "ctc_canvas_prob,ctc_from,seed_targets",
    [
        (0.0, "projector", "position"),
        (1.0, "projector", "position"),
        (1.0, "prompt", "aligned"),
        (1.0, "prompt", "edit"),
    ],
)
def test_loss_module_returns_finite_losses(tiny_model, ctc_canvas_prob, ctc_from, seed_targets):
    import numpy as np

    from diffasr.training.config import LossConfig
    from diffasr.training.data import Example, collate
    from diffasr.training.loss import LossModule

    tok = tiny_model.tokenizer
    ex = [
        Example(np.random.randn(120, 512).astype(np.float16), tok.encode("hello world"), "en"),
        Example(np.random.randn(80, 512).astype(np.float16), tok.encode("guten tag"), "de"),
    ]
    feats, lens, x0, targets, langs = collate(ex, tok, 3, 0.0, np.random.default_rng(0))
    assert x0.shape[1] % 8 == 0 and (x0[0, len(targets[0])] == tok.eos)
    weights = {"ctc": 1, "diffusion": 1, "ar": 1} | ({"ctc_prompt": 1} if ctc_from == "prompt" else {})
    # the "edit" case also takes a text-only correction batch (no audio)
    text = ([tok.encode("helo wrld"), tok.encode("guten")], targets, langs) if seed_targets == "edit" else None
    tiny_model.config.ctc_from = ctc_from
    try:
        loss_cfg = LossConfig(ctc_canvas_prob=ctc_canvas_prob, seed_targets=seed_targets)
        out = LossModule(tiny_model.train(), loss_cfg)(
            feats, lens, x0, targets, langs, weights, torch.Generator().manual_seed(0), text
        )
        if text:
            out["text"].backward()  # the correction loss trains the decoder
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny_model.backbone.parameters())
    finally:
        tiny_model.config.ctc_from = "projector"
        tiny_model.zero_grad(set_to_none=True)
        tiny_model.eval()
    assert set(out) == set(weights) | ({"text"} if text else set())
    assert all(math.isfinite(v.item()) and v.item() > 0 for v in out.values())


def test_misspell_makes_the_errors_it_claims():
    import random

    from diffasr.training.corpus.misspell import HOMOPHONES, misspell

    rng = random.Random(0)
    en = "and so my fellow americans ask not what your country can do for you"
    assert misspell(en, "en", 0.0, rng) == en
    bad = [misspell(en, "en", 0.5, rng) for _ in range(20)]
    assert all(b != en for b in bad) and all(b.isascii() for b in bad)  # no other language's accents appear
    zh = "这位老人家非常仁慈"
    HOMOPHONES.build([zh + "者烙夹厂"])
    swapped = {misspell(zh, "zh", 1.0, random.Random(i)) for i in range(30)}
    assert zh not in swapped
    assert any(c in "者烙夹厂" for s in swapped for c in s)  # homophones of 这/老/家/常 taken from the corpus
    assert all(set(s) <= set(zh + "者烙夹厂") for s in swapped)


def test_text_corrections_leave_out_excluded_transcripts(tmp_path, corpus, tiny_model):
    import random

    from diffasr.pipeline.manifest import read_manifest
    from diffasr.text import spoken_form
    from diffasr.training.train import load_config, text_corrections

    cfg = load_config(_config(tmp_path, corpus), ["loss.text=1.0", f'text.exclude=["{corpus}"]', 'text.langs=["en"]'])
    tc = text_corrections(cfg, tiny_model)
    heard = {spoken_form(u.text) for u in read_manifest(corpus)}
    assert heard and not heard & set(tc.sentences["en"]) and len(tc.sentences["en"]) > 40000
    seeds, truths, langs = tc.batch(16, random.Random(0))
    assert langs == ["en"] * 16 and len(seeds) == len(truths) == 16
    assert sum(s != t for s, t in zip(seeds, truths)) >= 8  # most rows carry errors to correct


def test_two_process_ddp(tmp_path, corpus):
    cfg = _config(tmp_path, corpus, max_steps=4)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--cpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "diffasr",
            "train",
            "--config",
            str(cfg),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint" / "model.safetensors").is_file()
