"""Training: three losses (uniform-diffusion CE, autoregressive auxiliary, CTC), the loop, checkpoints.

    diffasr train --config configs/small.toml [--resume] [--set optim.max_steps=100 ...]

Losses (diffusion, ar, ctc, ctc_prompt, seeded canvases, text rows): see loss.py.

Runs single-process or under `accelerate launch` (DDP, gloo on CPU). Checkpoints are written
beside the last one and swapped in once complete and verified (checkpoint.py), with optimizer, scheduler, RNG and data position, so `--resume`
continues exactly; `optim.time_budget_min` stops a run cleanly after a wall-clock budget.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint
from .data.datasets import Example, FeatureCache, bucket_batches, read_manifest
from .data.misspell import TextCorrections
from .decoding import DecodeOptions
from .decoding.canvas import clean_canvas, random_canvas, round_up
from .encoder import FRAMES_PER_SECOND
from .errors import ConfigError, DataError
from .loss import LossModule
from .model import CTC_SOURCES, DiffusionASR
from .projector import conv_out_len
from .tokenizer import LANGUAGES, BPETokenizer, spoken_form


DEFAULTS = {
    "preset": "small", "out": "runs/small", "seed": 0, "init_from": "", "ctc_from": "",
    "tokenizer": {"path": "", "vocab_size": 5000, "limit_alphabet": 3000, "sentences_per_lang": 20000},
    "data": {"train": [], "dev": "", "cache": "data/features", "max_frames": 6000, "max_batch": 32, "dev_limit": 120,
             "max_seconds": 20.0, "hf": [], "hf_dev": [], "streaming": True},
    # pretrained-backbone presets only (recipe.py): backbone/encoder Hub ids or local dirs ("" = the preset's)
    "model": {"backbone": "", "encoder": "", "lora": {}, "dtype": "bfloat16", "gradient_checkpointing": False},
    "optim": {"lr": 1e-3, "betas": [0.9, 0.98], "weight_decay": 0.01, "warmup_steps": 200, "max_steps": 20000,
              "min_lr_ratio": 0.1, "time_budget_min": 0.0, "stop_at": 0, "grad_clip": 1.0, "accumulate": 1, "bf16": True},
    "loss": {"diffusion": 1.0, "ar": 0.3, "ctc": 0.5, "ctc_prompt": 0.0, "ctc_warmup_steps": 300, "pad_weight": 0.1,
             "self_cond_prob": 0.5, "ctc_canvas_prob": 0.0, "seed_targets": "position", "schedule": "linear", "lang_drop": 0.2, "spec_augment": True,
             "text": 0.0, "seed_misspell": 0.0, "seed_sample": 0.0},
    "text": {"langs": list(LANGUAGES), "batch": 32, "max_rate": 0.4, "exclude": []},
    "eval": {"every": 500, "save_every": 250, "steps": 8, "log_every": 20},
}


# ---------------------------------------------------------------------------- config


def load_config(path: str | Path, overrides: list[str] = ()) -> dict:
    """TOML file merged over DEFAULTS; `section.key=value` overrides (value parsed as TOML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        user = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    cfg = copy.deepcopy(DEFAULTS)
    for k, v in user.items():
        if k not in cfg:
            raise ConfigError(f"{path}: unknown key {k!r}")
        if isinstance(cfg[k], dict):
            unknown = set(v) - set(cfg[k])
            if unknown:
                raise ConfigError(f"{path}: unknown key(s) in [{k}]: {', '.join(sorted(unknown))}")
            cfg[k].update(v)
        else:
            cfg[k] = v
    for o in overrides:
        key, _, val = o.partition("=")
        sec, _, name = key.partition(".")
        if not val or (name and (sec not in cfg or name not in cfg[sec])) or (not name and sec not in cfg):
            raise ConfigError(f"bad override {o!r} (use section.key=value)")
        parsed = tomllib.loads(f"x = {val}")["x"] if val[0] in '0123456789-[{"tf' else val
        if name:
            cfg[sec][name] = parsed
        else:
            cfg[sec] = parsed
    base = path.parent.parent if path.parent.name == "configs" else Path.cwd()
    cfg["_base"] = str(base)
    return cfg


def _p(cfg, p: str) -> Path:
    return Path(p) if os.path.isabs(p) else Path(cfg["_base"]) / p


# ---------------------------------------------------------------------------- data


def build_tokenizer(cfg: dict) -> BPETokenizer:
    from .data.text import load_sentences

    t = cfg["tokenizer"]
    if t["path"]:
        from tokenizers import Tokenizer as HFTok

        return BPETokenizer(HFTok.from_file(str(_p(cfg, t["path"]))))
    sents = []
    for lang in LANGUAGES:  # train split only: held-out test sentences never shape the vocabulary
        sents += load_sentences(lang, "train")[: t["sentences_per_lang"]]
    return BPETokenizer.train(sents, vocab_size=t["vocab_size"], limit_alphabet=t["limit_alphabet"])


def build_examples(model: DiffusionASR, manifests: list, cache_dir: Path, max_seconds: float, limit: int | None = None,
                   desc: str = "features") -> list[Example]:
    """Manifest rows -> Examples with cached features; drops what cannot be trained on (too long for
    the canvas, or fewer audio tokens than CTC needs)."""
    utts = [u for m in manifests for u in read_manifest(m)]
    utts = [u for u in utts if not u.duration or u.duration <= max_seconds]
    if limit:
        utts = utts[:limit]
    cache = FeatureCache(cache_dir, model.encoder)
    feats = cache.build(utts, desc=desc)
    tok, strides = model.tokenizer, model.config.projector["strides"]
    out, dropped = [], 0
    for u, f in zip(utts, feats):
        ids = tok.encode(u.text)
        n_tok = conv_out_len(f.shape[0], strides)
        repeats = sum(a == b for a, b in zip(ids, ids[1:]))
        if not ids or len(ids) + 1 > model.config.canvas_length or len(ids) + repeats > n_tok:
            dropped += 1
            continue
        out.append(Example(f, ids, u.lang))
    if not out:
        raise DataError(f"no usable examples in {', '.join(map(str, manifests))}")
    print(f"{desc}: {len(out)} examples ({dropped} dropped), {sum(e.feats.shape[0] for e in out) / FRAMES_PER_SECOND / 3600:.2f} h")
    return out


def collate(examples: list[Example], tok, canvas_extra: int, lang_drop: float, rng: np.random.Generator):
    """Pad a batch. Returns feats (B, T, d) f32, feat_lens (B,), canvas x0 (B, L), token lists, languages."""
    B, T = len(examples), max(e.feats.shape[0] for e in examples)
    feats = torch.zeros(B, T, examples[0].feats.shape[1])
    for i, e in enumerate(examples):
        feats[i, : e.feats.shape[0]] = torch.from_numpy(e.feats.astype(np.float32))
    lens = torch.tensor([e.feats.shape[0] for e in examples])
    longest = max(len(e.ids) for e in examples) + 1
    L = round_up(longest + canvas_extra)
    x0 = clean_canvas([e.ids for e in examples], L, tok.eos, tok.pad)
    langs = [None if rng.random() < lang_drop else e.lang for e in examples]
    return feats, lens, x0, [e.ids for e in examples], langs


def spec_augment(feats: torch.Tensor, lens: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SpecAugment-style masking on encoder features: 2 time masks (≤ 5% each) and 2 channel masks."""
    B, T, D = feats.shape
    feats = feats.clone()
    for i in range(B):
        n = int(lens[i])
        for _ in range(2):
            w = int(torch.randint(0, max(1, n // 20) + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, n - w), (1,), generator=gen))
            feats[i, s: s + w] = 0
            c = int(torch.randint(0, D // 16 + 1, (1,), generator=gen))
            cs = int(torch.randint(0, D - c, (1,), generator=gen))
            feats[i, :, cs: cs + c] = 0
    return feats


MAX_BAD_STEPS = 20  # non-finite steps in a row before training stops (each one is skipped)


def loss_weights(cfg: dict, step: int) -> dict:
    c = cfg["loss"]
    ramp = min(1.0, step / c["ctc_warmup_steps"]) if c["ctc_warmup_steps"] > 0 else 1.0
    return {"ctc": c["ctc"], "ctc_prompt": c["ctc_prompt"], "diffusion": c["diffusion"] * ramp, "ar": c["ar"] * ramp,
            "text": c["text"] * ramp}


def lr_at(cfg: dict, step: int) -> float:
    o = cfg["optim"]
    if step < o["warmup_steps"]:
        return (step + 1) / o["warmup_steps"]
    p = min(1.0, (step - o["warmup_steps"]) / max(1, o["max_steps"] - o["warmup_steps"]))
    return o["min_lr_ratio"] + (1 - o["min_lr_ratio"]) * 0.5 * (1 + math.cos(math.pi * p))


# ---------------------------------------------------------------------------- evaluation during training


@torch.no_grad()
def decode_examples(model: DiffusionASR, examples: list[Example], settings: dict, batch: int = 16) -> tuple[list[str], dict]:
    """Spoken-form references (N,) and, for each named DecodeOptions in `settings`, the hypotheses
    (N,) of cached-feature examples, decoded exactly as `transcribe` decodes (each row in its language)."""
    from .transcribe import decode_features

    refs, hyps = [], {name: [] for name in settings}
    for b in range(0, len(examples), batch):
        ex = examples[b: b + batch]
        feats, langs = [e.feats for e in ex], [e.lang for e in ex]
        durations = [e.feats.shape[0] / FRAMES_PER_SECOND for e in ex]
        for name, options in settings.items():
            hyps[name] += [r.text for r in decode_features(model, feats, durations, options, langs, word_timestamps=False)]
        refs += [spoken_form(model.tokenizer.decode(e.ids)) for e in ex]
    return refs, hyps


def cer_by_language(refs: list[str], hyps: list[str], langs: list[str]) -> tuple[float, dict]:
    """Corpus CER (%) over the rows with a non-empty reference: overall, and {language: CER}."""
    import jiwer

    def cer(idx):
        pairs = [(refs[i], hyps[i]) for i in idx if refs[i].strip()]
        return 100 * jiwer.cer([r for r, _ in pairs], [h for _, h in pairs]) if pairs else float("nan")

    return cer(range(len(refs))), {lang: cer([i for i, l in enumerate(langs) if l == lang]) for lang in sorted(set(langs))}


@torch.no_grad()
def evaluate_examples(model: DiffusionASR, examples: list[Example], steps: int = 8, batch: int = 16, seed: int = 123) -> dict:
    """CER of greedy CTC, of the diffusion sampler from noise, of the default sampler on a CTC-seeded
    canvas and of the edit sampler on it (decoded exactly as `transcribe` decodes), plus the
    decoder's CE on an all-noise canvas with the right audio vs another utterance's audio (a large
    gap = it listens)."""
    model.eval()
    tok = model.tokenizer
    settings = {"ctc": DecodeOptions(method="ctc-greedy"),
                "diffusion": DecodeOptions(steps=steps, seed=seed),
                "ctc_seeded": DecodeOptions(method="ctc-refine", steps=steps, seed=seed),
                "edit": DecodeOptions(method="ctc-edit", steps=steps, edit_threshold=0.9)}
    refs, hyps = decode_examples(model, examples, settings, batch)
    langs = [e.lang for e in examples]
    ce = {"right": 0.0, "wrong": 0.0}
    g = torch.Generator().manual_seed(seed)
    for b in range(0, len(examples), batch):
        ex = examples[b: b + batch]
        if len(ex) > 1:  # CE at t = 1 (pure noise) with right vs rolled (wrong) audio
            feats, lang = [e.feats for e in ex], [e.lang for e in ex]
            x0 = clean_canvas([e.ids for e in ex], max(len(e.ids) for e in ex) + 1, tok.eos, tok.pad)
            noise = random_canvas(len(ex), x0.shape[1], tok.vocab_size, g)
            for roll, which in ((0, "right"), (1, "wrong")):
                cache, mask, _ = model.prefill(*model.project(feats[roll:] + feats[:roll]), lang)
                lg = model.backbone.denoise(cache, mask, noise.to(model.device))
                ce[which] += F.cross_entropy(lg.reshape(-1, tok.vocab_size), x0.reshape(-1).to(model.device)).item() * len(ex)

    res = {"ce_t1_right": ce["right"] / len(examples), "ce_t1_wrong": ce["wrong"] / len(examples), "per_lang": {}}
    for name in settings:
        overall, per_lang = cer_by_language(refs, hyps[name], langs)
        res[f"cer_{name}"] = overall
        for lang, v in per_lang.items():
            res["per_lang"].setdefault(lang, {})[f"cer_{name}"] = v
    res["examples"] = [{"ref": refs[i], **{k: hyps[k][i] for k in ("ctc", "diffusion", "ctc_seeded")}} for i in range(min(3, len(refs)))]
    model.train()
    return res


# ---------------------------------------------------------------------------- checkpoints


def save_checkpoint(out: Path, model: DiffusionASR, state: dict, optimizer, provenance: dict) -> None:
    """The new `<out>/checkpoint`, swapped in only once complete and read back (checkpoint.py)."""
    checkpoint.save(out, model, state, optimizer, provenance)


def plot_curves(out: Path, history: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tr = [h for h in history if h["kind"] == "train"]
    ev = [h for h in history if h["kind"] == "eval"]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("diffusion", "ar", "ctc", "ctc_prompt"):
        pts = [(h["step"], h[key]) for h in tr if key in h]
        if pts:
            ax[0].plot(*zip(*pts), label=key)
    ax[0].set(xlabel="step", ylabel="loss", title="training losses", yscale="log")
    ax[0].legend()
    for key in ("cer_ctc", "cer_diffusion", "cer_ctc_seeded", "cer_edit"):
        pts = [(h["step"], h[key]) for h in ev if key in h]
        if pts:
            ax[1].plot(*zip(*pts), marker="o", label=key)
    ax[1].set(xlabel="step", ylabel="CER %", title="held-out synthetic CER")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png.tmp.png", dpi=90)
    plt.close(fig)
    os.replace(out / "curves.png.tmp.png", out / "curves.png")


# ---------------------------------------------------------------------------- the loop


def text_corrections(cfg: dict, model: DiffusionASR) -> TextCorrections:
    """The text-only correction set of `[text]`, without any sentence of the `exclude` manifests."""
    t = cfg["text"]
    exclude = {spoken_form(r.text) for m in t["exclude"] for r in read_manifest(_p(cfg, m))}
    return TextCorrections(model.tokenizer, t["langs"], t["max_rate"], exclude, model.config.canvas_length - 2)


def train(cfg: dict, resume: bool = False) -> Path:
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from tqdm import tqdm

    acc = Accelerator(cpu=not torch.cuda.is_available(),
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    out = _p(cfg, cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    torch.manual_seed(cfg["seed"])
    from . import recipe

    found = checkpoint.latest(out) if resume else None  # newest complete, even if a kill interrupted its swap
    if found is not None:
        acc.print(f"resuming from {found}")
        model = recipe.load_model(found, cfg) if recipe.is_pretrained(cfg) else DiffusionASR.load(found)
        ts = torch.load(found / "trainer_state.pt", weights_only=False)
        state = ts["state"]
    else:
        if resume:
            acc.print(f"no checkpoint in {out}; starting fresh")
        ts, state = None, {"step": 0, "epoch": 0, "batch": 0, "history": [], "wall": 0.0, "utts": 0}
        if cfg["init_from"]:
            model = DiffusionASR.load(_p(cfg, cfg["init_from"]))
        elif recipe.is_pretrained(cfg):  # frozen backbone + LoRA (the published gemma-26b recipe)
            model = recipe.build_model(cfg)
        else:
            model = DiffusionASR.from_preset(cfg["preset"], tokenizer=build_tokenizer(cfg))
        if cfg["ctc_from"]:
            if cfg["ctc_from"] not in CTC_SOURCES:
                raise ConfigError(f"ctc_from must be one of {', '.join(CTC_SOURCES)}, not {cfg['ctc_from']!r}")
            model.config.ctc_from = cfg["ctc_from"]
    model.train()
    d = cfg["data"]
    if not d["train"] and not d["hf"]:
        raise ConfigError("data.train lists no manifests and data.hf no Hugging Face sources")
    with acc.main_process_first():  # one process fills the feature cache, the others then read it
        train_ex = build_examples(model, [_p(cfg, m) for m in d["train"]], _p(cfg, d["cache"]), d["max_seconds"], desc="train features") if d["train"] else []
        train_ex += recipe.hf_examples(model, d["hf"], _p(cfg, d["cache"]), d["max_seconds"], d["streaming"]) if d["hf"] else []
        dev_ex = build_examples(model, [_p(cfg, d["dev"])], _p(cfg, d["cache"]), d["max_seconds"], d["dev_limit"], "dev features") if d["dev"] else []
        dev_ex += recipe.hf_examples(model, d["hf_dev"], _p(cfg, d["cache"]), d["max_seconds"], d["streaming"], desc="hf dev")[: d["dev_limit"]] if d["hf_dev"] else []
    lossmod = LossModule(model, cfg)
    texts = text_corrections(cfg, model) if cfg["loss"]["text"] > 0 else None
    params = [p for p in model.parameters() if p.requires_grad]
    o = cfg["optim"]
    opt = torch.optim.AdamW(params, lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"])
    if ts is not None:
        opt.load_state_dict(ts["optimizer"])
        torch.set_rng_state(ts["torch_rng"])
    lossmod, opt = acc.prepare(lossmod, opt)
    gen = torch.Generator().manual_seed(cfg["seed"] * 1000 + state["step"] + acc.process_index)
    budget = o["time_budget_min"] * 60
    t_start = time.time()
    ema: dict = {}
    bar = tqdm(total=o["max_steps"], initial=state["step"], disable=not acc.is_main_process, unit="step", mininterval=5)
    hardware = torch.cuda.get_device_name(acc.device) if acc.device.type == "cuda" else f"{os.cpu_count()} CPU threads"
    provenance = lambda: {"steps": state["step"], "utterances_seen": state["utts"], "wall_seconds": round(state["wall"]),
                          "train_hours": round(sum(e.feats.shape[0] for e in train_ex) / FRAMES_PER_SECOND / 3600, 3),
                          "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
                          "hardware": f"{hardware}, torch {torch.__version__}"}
    done, bad_run = False, 0
    while not done:
        rng = np.random.default_rng([cfg["seed"], state["epoch"]])
        batches = bucket_batches([e.feats.shape[0] for e in train_ex], d["max_frames"], d["max_batch"], rng)
        batches = batches[acc.process_index:: acc.num_processes]
        while state["batch"] < len(batches):
            idx = batches[state["batch"]]
            brng = np.random.default_rng([cfg["seed"], state["epoch"], state["batch"]])
            feats, lens, x0, targets, langs = collate([train_ex[i] for i in idx], model.tokenizer,
                                                      int(brng.integers(0, 9)), cfg["loss"]["lang_drop"], brng)
            # Re-seeded every step from (seed, step, rank): an interrupted and resumed run draws the same noise.
            gen.manual_seed(cfg["seed"] * 1_000_003 + state["step"] * 17 + acc.process_index)
            if cfg["loss"]["spec_augment"]:
                feats = spec_augment(feats, lens, gen)
            feats, lens = feats.to(acc.device), lens.to(acc.device)
            for group in opt.param_groups:
                group["lr"] = o["lr"] * lr_at(cfg, state["step"])
            w = loss_weights(cfg, state["step"])
            t0 = time.time()
            with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=o["bf16"]):
                text = texts.batch(cfg["text"]["batch"], random.Random(cfg["seed"] * 1_000_003 + state["step"])) if texts else None
                losses = lossmod(feats, lens, x0, targets, langs, w, gen, text)
            total = sum(w[k] * v for k, v in losses.items())
            acc.backward(total / o["accumulate"])
            state["batch"] += 1
            if state["batch"] % o["accumulate"] == 0:
                norm = acc.clip_grad_norm_(params, o["grad_clip"])
                if torch.isfinite(norm):
                    opt.step()
                    bad_run = 0
                else:  # a NaN/inf loss or gradient must not reach the weights, nor a saved checkpoint
                    state["skipped"] = state.get("skipped", 0) + 1
                    bad_run += 1
                    if bad_run >= MAX_BAD_STEPS:
                        raise ConfigError(f"loss or gradient non-finite for {bad_run} steps in a row at step {state['step']}; "
                                          f"the checkpoint in {out} holds the last finite weights (try optim.bf16=false or a lower optim.lr)")
                opt.zero_grad(set_to_none=True)
            state["step"] += 1
            state["utts"] += len(idx) * acc.num_processes
            state["wall"] += time.time() - t0
            for k, v in losses.items():
                v = float(v.detach())
                if math.isfinite(v):
                    ema[k] = 0.9 * ema.get(k, v) + 0.1 * v
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in ema.items()} | {"utt/s": f"{state['utts'] / max(1e-9, state['wall']):.1f}"}
                            | ({"skipped": state["skipped"]} if state.get("skipped") else {}))
            s = state["step"]
            if s % cfg["eval"]["log_every"] == 0:
                state["history"].append({"kind": "train", "step": s, "wall": round(state["wall"], 1), **ema,
                                         "lr": opt.param_groups[0]["lr"]})
            stop = s >= o["max_steps"] or (budget and time.time() - t_start > budget) or s == o["stop_at"]
            if acc.is_main_process and dev_ex and (s % cfg["eval"]["every"] == 0 or stop):
                ev = evaluate_examples(acc.unwrap_model(lossmod).model, dev_ex, steps=cfg["eval"]["steps"])
                state["history"].append({"kind": "eval", "step": s, "wall": round(state["wall"], 1), **ev})
                acc.print(f"\nstep {s}: CER ctc {ev['cer_ctc']:.1f}  diffusion {ev['cer_diffusion']:.1f}  "
                          f"ctc-seeded {ev['cer_ctc_seeded']:.1f}  edit {ev['cer_edit']:.1f}  "
                          f"CE(t=1) right/wrong {ev['ce_t1_right']:.2f}/{ev['ce_t1_wrong']:.2f}  "
                          + " ".join(f"{l}:{v['cer_ctc']:.0f}/{v['cer_diffusion']:.0f}/{v['cer_ctc_seeded']:.0f}/{v['cer_edit']:.0f}" for l, v in ev["per_lang"].items()))
                with open(out / "metrics.jsonl", "a") as f:
                    f.write(json.dumps({"step": s, **{k: v for k, v in ev.items() if k != "examples"}}) + "\n")
            if acc.is_main_process and (s % cfg["eval"]["save_every"] == 0 or stop):
                save_checkpoint(out, acc.unwrap_model(lossmod).model, state, opt, provenance())
                plot_curves(out, state["history"])
            if stop:
                done = True
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    acc.wait_for_everyone()
    return ckpt


# ---------------------------------------------------------------------------- CLI


def add_arguments(p) -> None:
    p.add_argument("--config", required=True, help="TOML training recipe (see configs/)")
    p.add_argument("--resume", action="store_true", help="continue exactly from the newest complete checkpoint in <out>")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")


def run(args) -> int:
    cfg = load_config(args.config, args.set)
    threads = int(os.environ.get("DIFFASR_THREADS", "0"))
    if threads:
        torch.set_num_threads(threads)
    ckpt = train(cfg, resume=args.resume)
    print(f"checkpoint: {ckpt}")
    return 0
