"""Training: three losses (uniform-diffusion CE, autoregressive auxiliary, CTC), the loop, checkpoints.

    diffasr train --config configs/small.toml [--resume] [--set optim.max_steps=100 ...]

Losses (diffusion, ar, ctc, ctc_prompt, seeded canvases, text rows): see loss.py. The config is a
`TrainConfig` (config.py: typed, validated, `base = ...` inheritance); the dev set is scored with the
decoding the model ships with (monitor.py).

Runs single-process or under `accelerate launch` (DDP, gloo on CPU). Checkpoints are written
beside the last one and swapped in once complete and verified (checkpoint.py), with optimizer, scheduler, RNG and data position, so `--resume`
continues exactly; `optim.time_budget_min` stops a run cleanly after a wall-clock budget.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from ..model import DiffusionASR
from ..models.encoder import FRAMES_PER_SECOND
from ..models.tokenizer import BPETokenizer
from ..pipeline.manifest import read_manifest
from ..text import LANGUAGES, spoken_form
from . import checkpoint, pretrained
from .config import TrainConfig, load_config
from .corpus.misspell import TextCorrections
from .data import bucket_batches, build_examples, collate, spec_augment
from .loss import LossModule
from .monitor import evaluate_examples, plot_curves

# ---------------------------------------------------------------------------- data


def build_tokenizer(cfg: TrainConfig) -> BPETokenizer:
    """The pinned `tokenizer.path`, or a BPE trained on the train split of the sentence files."""
    from .corpus.text import load_sentences

    t = cfg.tokenizer
    if t.path:
        from tokenizers import Tokenizer as HFTok

        return BPETokenizer(HFTok.from_file(str(cfg.path(t.path))))
    sents = []
    for lang in LANGUAGES:  # train split only: held-out test sentences never shape the vocabulary
        sents += load_sentences(lang, "train")[: t.sentences_per_lang]
    return BPETokenizer.train(sents, vocab_size=t.vocab_size, limit_alphabet=t.limit_alphabet)


MAX_BAD_STEPS = 20  # non-finite steps in a row before training stops (each one is skipped)


def loss_weights(cfg: TrainConfig, step: int) -> dict:
    """Loss weights at `step`: CTC from the start, the others ramped in over `ctc_warmup_steps`."""
    c = cfg.loss
    ramp = min(1.0, step / c.ctc_warmup_steps) if c.ctc_warmup_steps > 0 else 1.0
    return {
        "ctc": c.ctc,
        "ctc_prompt": c.ctc_prompt,
        "diffusion": c.diffusion * ramp,
        "ar": c.ar * ramp,
        "text": c.text * ramp,
    }


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Learning-rate factor: linear warm-up, then cosine to `min_lr_ratio` at `max_steps`."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    p = min(1.0, (step - o.warmup_steps) / max(1, o.max_steps - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))


# ---------------------------------------------------------------------------- the loop


def text_corrections(cfg: TrainConfig, model: DiffusionASR) -> TextCorrections:
    """The text-only correction set of `[text]`, without any sentence of the `exclude` manifests."""
    t = cfg.text
    exclude = {spoken_form(r.text) for m in t.exclude for r in read_manifest(cfg.path(m))}
    return TextCorrections(model.tokenizer, list(t.langs), t.max_rate, exclude, model.config.canvas_length - 2)


def start_model(cfg: TrainConfig, found: Path | None) -> DiffusionASR:
    """The model to train: a resumed checkpoint, `init_from`'s weights, or a fresh preset."""
    if found is not None:
        return pretrained.load_model(found, cfg) if pretrained.is_pretrained(cfg) else DiffusionASR.load(found)
    if cfg.init_from:
        model = DiffusionASR.load(cfg.path(cfg.init_from))
    elif pretrained.is_pretrained(cfg):  # frozen backbone + LoRA (the published gemma-26b recipe)
        model = pretrained.build_model(cfg)
    else:
        model = DiffusionASR.from_preset(cfg.preset, tokenizer=build_tokenizer(cfg))
    if cfg.ctc_from:
        model.config.ctc_from = cfg.ctc_from
    return model


def train(cfg: TrainConfig, resume: bool = False) -> Path:
    """Run (or with `resume`, continue) training; returns `<out>/checkpoint`."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from tqdm import tqdm

    acc = Accelerator(
        cpu=not torch.cuda.is_available(), kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)]
    )
    out = cfg.path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    found = checkpoint.latest(out) if resume else None  # newest complete, even if a kill interrupted its swap
    if found is not None:
        acc.print(f"resuming from {found}")
    elif resume:
        acc.print(f"no checkpoint in {out}; starting fresh")
    model = start_model(cfg, found)
    ts = torch.load(found / "trainer_state.pt", weights_only=False) if found is not None else None
    state = (
        ts["state"] if ts is not None else {"step": 0, "epoch": 0, "batch": 0, "history": [], "wall": 0.0, "utts": 0}
    )
    model.train()
    d, o, seed = cfg.data, cfg.optim, cfg.seed
    if not d.train and not d.hf:
        raise ConfigError("data.train lists no manifests and data.hf no Hugging Face sources")
    cache = cfg.path(d.cache)
    with acc.main_process_first():  # one process fills the feature cache, the others then read it
        train_ex = (
            build_examples(model, [cfg.path(m) for m in d.train], cache, d.max_seconds, desc="train features")
            if d.train
            else []
        )
        train_ex += pretrained.hf_examples(model, list(d.hf), cache, d.max_seconds, d.streaming) if d.hf else []
        dev_ex = (
            build_examples(model, [cfg.path(d.dev)], cache, d.max_seconds, d.dev_limit, "dev features") if d.dev else []
        )
        dev_ex += (
            pretrained.hf_examples(model, list(d.hf_dev), cache, d.max_seconds, d.streaming, desc="hf dev")[
                : d.dev_limit
            ]
            if d.hf_dev
            else []
        )
    lossmod = LossModule(model, cfg.loss)
    texts = text_corrections(cfg, model) if cfg.loss.text > 0 else None
    ngrams = cfg.path(cfg.eval.ngrams) if cfg.eval.ngrams else None
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    if ts is not None:
        opt.load_state_dict(ts["optimizer"])
        torch.set_rng_state(ts["torch_rng"])
    lossmod, opt = acc.prepare(lossmod, opt)
    gen = torch.Generator().manual_seed(seed * 1000 + state["step"] + acc.process_index)
    budget = o.time_budget_min * 60
    t_start = time.time()
    ema: dict = {}
    bar = tqdm(total=o.max_steps, initial=state["step"], disable=not acc.is_main_process, unit="step", mininterval=5)
    hardware = torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else f"{os.cpu_count()} CPU threads"

    def provenance() -> dict:
        return {
            "steps": state["step"],
            "utterances_seen": state["utts"],
            "wall_seconds": round(state["wall"]),
            "train_hours": round(sum(e.feats.shape[0] for e in train_ex) / FRAMES_PER_SECOND / 3600, 3),
            "config": cfg.to_dict(),
            "hardware": f"{hardware}, torch {torch.__version__}",
        }

    done, bad_run = False, 0
    while not done:
        rng = np.random.default_rng([seed, state["epoch"]])
        batches = bucket_batches([e.feats.shape[0] for e in train_ex], d.max_frames, d.max_batch, rng)
        batches = batches[acc.process_index :: acc.num_processes]
        while state["batch"] < len(batches):
            idx = batches[state["batch"]]
            brng = np.random.default_rng([seed, state["epoch"], state["batch"]])
            feats, lens, x0, targets, langs = collate(
                [train_ex[i] for i in idx], model.tokenizer, int(brng.integers(0, 9)), cfg.loss.lang_drop, brng
            )
            # Re-seeded every step from (seed, step, rank): an interrupted and resumed run draws the same noise.
            gen.manual_seed(seed * 1_000_003 + state["step"] * 17 + acc.process_index)
            if cfg.loss.spec_augment:
                feats = spec_augment(feats, lens, gen)
            feats, lens = feats.to(acc.device), lens.to(acc.device)
            for group in opt.param_groups:
                group["lr"] = o.lr * lr_at(cfg, state["step"])
            w = loss_weights(cfg, state["step"])
            t0 = time.time()
            with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=o.bf16):
                text = texts.batch(cfg.text.batch, random.Random(seed * 1_000_003 + state["step"])) if texts else None
                losses = lossmod(feats, lens, x0, targets, langs, w, gen, text)
            total = sum(w[k] * v for k, v in losses.items())
            acc.backward(total / o.accumulate)
            state["batch"] += 1
            if state["batch"] % o.accumulate == 0:
                norm = acc.clip_grad_norm_(params, o.grad_clip)
                if torch.isfinite(norm):
                    opt.step()
                    bad_run = 0
                else:  # a NaN/inf loss or gradient must not reach the weights, nor a saved checkpoint
                    state["skipped"] = state.get("skipped", 0) + 1
                    bad_run += 1
                    if bad_run >= MAX_BAD_STEPS:
                        raise ConfigError(
                            f"loss or gradient non-finite for {bad_run} steps in a row at step {state['step']}; "
                            f"the checkpoint in {out} holds the last finite weights (try optim.bf16=false or a lower optim.lr)"
                        )
                opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["utts"] += len(idx) * acc.num_processes
            state["wall"] += time.time() - t0
            for k, v in losses.items():
                v = float(v.detach())
                if math.isfinite(v):
                    ema[k] = 0.9 * ema.get(k, v) + 0.1 * v
            bar.update(1)
            bar.set_postfix(
                {k: f"{v:.3f}" for k, v in ema.items()}
                | {"utt/s": f"{state['utts'] / max(1e-9, state['wall']):.1f}"}
                | ({"skipped": state["skipped"]} if state.get("skipped") else {})
            )
            s = state["step"]
            if s % cfg.eval.log_every == 0:
                state["history"].append(
                    {
                        "kind": "train",
                        "step": s,
                        "wall": round(state["wall"], 1),
                        **ema,
                        "lr": opt.param_groups[0]["lr"],
                    }
                )
            stop = s >= o.max_steps or (budget and time.time() - t_start > budget) or s == o.stop_at
            if acc.is_main_process and dev_ex and (s % cfg.eval.every == 0 or stop):
                ev = evaluate_examples(acc.unwrap_model(lossmod).model, dev_ex, cfg.eval, ngrams)
                state["history"].append({"kind": "eval", "step": s, "wall": round(state["wall"], 1), **ev})
                acc.print(
                    f"\nstep {s}: CER {ev['cer']:.1f}  CE(t=1) right/wrong {ev['ce_t1_right']:.2f}/{ev['ce_t1_wrong']:.2f}  "
                    + " ".join(f"{l}:{v['cer']:.0f}" for l, v in ev["per_lang"].items())
                )
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": s, **{k: v for k, v in ev.items() if k != "examples"}}) + "\n")
            if acc.is_main_process and (s % cfg.eval.save_every == 0 or stop):
                checkpoint.save(out, acc.unwrap_model(lossmod).model, state, opt, provenance())
                plot_curves(out, state["history"])
            if stop:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    acc.wait_for_everyone()
    return out / "checkpoint"


# ---------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="TOML training config (see configs/)")
    p.add_argument(
        "--resume", action="store_true", help="continue exactly from the newest complete checkpoint in <out>"
    )
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")


def run(args) -> int:
    cfg = load_config(args.config, args.set)
    threads = int(os.environ.get("DIFFASR_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    ckpt = train(cfg, resume=args.resume)
    print(f"checkpoint: {ckpt}")
    return 0
