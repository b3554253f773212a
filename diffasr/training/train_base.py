"""Train the `base` preset's denoiser: Whisper-base's decoder + LoRA, uniform-noise diffusion.

    python -m diffasr.training.train_base --manifest data/corpus/en/manifest.jsonl \
        --manifest ../shared/data/real_train/manifest.jsonl --out runs/base --minutes 30 [--resume]

Losses per batch (the published three, minus CTC: see below):
- diffusion: the clean canvas x0 (transcript, end-of-text, end-of-text padding) is corrupted, each
  position replaced by a uniformly random token with probability t ~ U(0, 1); half the rows first
  get token insertions/deletions, the errors a CTC seed makes, so the denoiser learns to re-align;
  cross-entropy against x0 on every canvas position (padding beyond the first end-of-text at
  `--pad-weight`); canvases are as long as the sampler will make them (CTC estimate + margin).
  A share of the rows (`--prefix-prob`) keeps a clean prefix of random length and corrupts only
  the rest: the canvases the verified methods hand the denoiser (a checked prefix, noise after).
- autoregressive: the same weights, causal, teacher-forced on x0 (weight `--ar-weight`).
The CTC head is the shipped diffasr-small's (same frozen encoder, trained already); Whisper's
cross-attention already listens, so the unlock the CTC loss gives a from-scratch decoder is not
needed here.

Frozen-encoder features are cached once per clip (fp16, unpadded, as at inference). Training runs
in resumable chunks: a checkpoint every `--save-every` minutes and at the end, saved by
checkpoint.py (written beside the last one, read back, then swapped in; `--resume` takes the newest
complete one). A checkpoint is config.json (denoiser settings, step, run meta) +
denoiser.safetensors + vocab.safetensors + optimizer.pt. `--init MODEL_DIR` starts from an exported
model instead of Whisper-base as released, to fine-tune the shipped diffasr-base on new data: its
settings and vocabularies come with it, the optimizer and the learning-rate schedule start afresh.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..audio import load_audio
from ..decoding.canvas import canvas_length, clean_canvas, round_up
from ..decoding.options import DecodeOptions
from ..decoding.whisper import MAX_CANVAS
from ..errors import ModelError
from ..models.encoder import CT2WhisperEncoder, EncoderSpec
from ..models.whisper_denoiser import TOKENIZERS, VOCAB_FILE, WEIGHTS_FILE, DenoiserConfig, WhisperDenoiser
from ..pipeline.manifest import read_manifest
from . import checkpoint
from .teacher import clip_key

_MARGIN = DecodeOptions()  # the decoding defaults' length_margin sizes the training canvases


def load_rows(manifests: list[str], max_seconds: float = 29.0) -> list[dict]:
    """Manifest rows {audio (absolute: the feature cache's key), text, lang, teacher}; clips longer
    than one encoder window dropped. `teacher`: the clip's teacher labels (teacher.py's npz, found
    beside the manifest that lists it, as teacher.py writes them) or None: then `text` is the target."""
    out = []
    for m in manifests:
        for u in read_manifest(m):
            if u.duration and u.duration > max_seconds:
                continue
            audio = str(u.audio.resolve())
            t = Path(m).parent / f"{clip_key(audio)}.npz"
            out.append({"audio": audio, "text": u.text, "lang": u.lang, "teacher": str(t) if t.is_file() else None})
    return out


_QUOTES = str.maketrans("", "", "\"'‘’“”|")


def target_text(text: str, lang: str) -> str:
    """The transcript a row is trained to write. Hindi sentence files quote dialogue and the news
    transcripts use '|' for the danda; neither is said, and a decoder taught them writes runs of
    quotation marks, so they are dropped."""
    return " ".join(text.translate(_QUOTES).split()) if lang == "hi" else text


def cache_features(rows: list[dict], cache: Path) -> list[Path]:
    """Encoder features (F, 512) fp16 per clip, computed once (atomic writes, so resumable)."""
    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    enc = None
    paths = []
    for r in tqdm(rows, desc="features", mininterval=5):
        p = cache / (hashlib.sha1(r["audio"].encode()).hexdigest()[:16] + ".npy")
        if not p.is_file():
            enc = enc or CT2WhisperEncoder(EncoderSpec())
            f = enc.encode([load_audio(r["audio"])])[0].astype(np.float16)
            tmp = p.with_suffix(".tmp.npy")
            np.save(tmp, f)
            os.replace(tmp, p)
        paths.append(p)
    return paths


def edit_noise(ids: list[int], rate: float, vocab: int, rng: random.Random) -> list[int]:
    """Insert or delete tokens at about `rate` of the positions (what a CTC seed gets wrong)."""
    out = []
    for i in ids:
        u = rng.random()
        if u < rate / 2:
            continue  # deleted
        out.append(i)
        if u > 1 - rate / 2:
            out.append(rng.randrange(vocab))  # inserted
    return out


def build_vocab(model: WhisperDenoiser, text_dir: Path, extra: list[dict]) -> dict[str, torch.Tensor]:
    """Per language: the token ids of its sentence file and of the training transcripts, + end-of-text."""
    langs = sorted({r["lang"] for r in extra} | {p.stem for p in text_dir.glob("*.txt") if len(p.stem) == 2})
    out = {}
    for lang in langs:
        f = text_dir / f"{lang}.txt"
        lines = f.read_text(encoding="utf-8").splitlines() if f.is_file() else []
        lines += [r["text"] for r in extra if r["lang"] == lang]
        ids = {model.tokens.eot}
        for e in model.tokens.encode_batch(lines, lang):
            ids.update(e)
        out[lang] = torch.tensor(sorted(ids))
    model.vocab = out
    model.restrict_scripts()
    return model.vocab


def make_batch(
    model: WhisperDenoiser,
    items: list[dict],
    rng: random.Random,
    gen: torch.Generator,
    pad_weight: float = 0.3,
    prefix_prob: float = 0.0,
):
    """One batch in the output space of the union of its languages' vocabularies `vocab` (V',):
    (prompts (B, P), noisy token ids (B, L), x0 as indices into vocab (B, L), weights (B, L),
    ar_len (B,), vocab, flipped (B, L): the positions replaced by noise, teacher (B, ar_len max, K)
    top-k indices into vocab (-1: none) and their probabilities, or None)."""
    eot = model.tokens.eot
    clean_ids = [it["ids"] for it in items]
    prefix = [rng.randint(0, len(ids)) if rng.random() < prefix_prob else -1 for ids in clean_ids]
    noisy_ids = [
        edit_noise(ids, 0.15 * rng.random(), eot, rng) if p < 0 and rng.random() < 0.5 else ids
        for ids, p in zip(clean_ids, prefix)
    ]
    n = max(max(len(a), len(b)) for a, b in zip(clean_ids, noisy_ids))
    # As long as the sampler's canvas will be: the CTC estimate of the length (off by up to 20 %) plus
    # the decoding margin, so every position the sampler fills has been trained, padding included.
    est = max(len(ids) for ids in clean_ids) * (0.8 + 0.4 * rng.random())
    L = max(round_up(n + 1), canvas_length(round(est), _MARGIN, MAX_CANVAS))
    x0 = clean_canvas(clean_ids, L, eot, eot)
    xt = clean_canvas(noisy_ids, L, eot, eot)
    t = torch.rand(len(items), generator=gen)
    flip = torch.rand(xt.shape, generator=gen) < t[:, None]
    flip &= torch.arange(L)[None] >= torch.tensor(prefix).clamp(min=0)[:, None]
    noise = torch.stack(
        [v[torch.randint(0, len(v), (L,), generator=gen)] for v in (model.vocab[it["lang"]] for it in items)]
    )
    xt = torch.where(flip, noise, xt)
    lens = torch.tensor([len(ids) + 1 for ids in clean_ids])
    w = torch.where(torch.arange(L)[None] < lens[:, None], 1.0, pad_weight)
    vocab = torch.unique(torch.cat([model.vocab[lang] for lang in {it["lang"] for it in items}]))
    target = torch.searchsorted(vocab, x0)
    prompts = model.prompts([it["lang"] for it in items])
    return prompts, xt, target, w, lens, vocab, flip, teacher_targets(items, vocab, int(lens.max()))


def teacher_targets(items: list[dict], vocab: torch.Tensor, T: int):
    """The teacher's top-k next-token distributions of a batch's rows in the index space of `vocab`:
    (indices (B, T, K) long, -1 where there is none; probabilities (B, T, K), renormalised over the
    ids `vocab` holds). None when no row has a teacher."""
    tops = [it.get("top") for it in items]
    if all(t is None for t in tops):
        return None
    K = next(t for t in tops if t is not None)[0].shape[1]
    idx = torch.full((len(items), T, K), -1, dtype=torch.long)
    prob = torch.zeros(len(items), T, K)
    for b, t in enumerate(tops):
        if t is None:
            continue
        top, logp = torch.from_numpy(t[0].astype(np.int64))[:T], torch.from_numpy(t[1].astype(np.float32))[:T]
        pos = torch.searchsorted(vocab, top).clamp(max=len(vocab) - 1)
        ok = vocab[pos] == top
        p = logp.exp() * ok
        idx[b, : len(top)] = torch.where(ok, pos, -1)
        prob[b, : len(top)] = p / p.sum(-1, keepdim=True).clamp(min=1e-8)
    return idx, prob


def own_drafts(model: WhisperDenoiser, batch, kv, fmask, gen: torch.Generator) -> torch.Tensor:
    """The canvas the sampler's next step would see (B, L): the denoiser's argmax at the noised
    positions where it is at least as confident as the row's median there, fresh uniform noise over
    the row's canvas alphabet at the rest (refine's keep-and-re-randomise), the rest as given."""
    prompts, xt, _, _, _, vocab, flip, _ = batch
    with torch.no_grad():
        p = model.decoder.logits(model.denoise(prompts, xt, kv, fmask, hidden=True), vocab).softmax(-1)
    conf, pred = p.max(-1)
    out = xt.clone()
    for b in range(xt.shape[0]):
        f = flip[b]
        if not f.any():
            continue
        keep = f & (conf[b] >= conf[b][f].median())
        renoise = f & ~keep
        out[b, keep] = vocab[pred[b, keep]]
        out[b, renoise] = vocab[torch.randint(0, len(vocab), (int(renoise.sum()),), generator=gen)]
    return out


def losses(
    model: WhisperDenoiser, batch, feats: list, self_draft: bool = False, gen: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(diffusion loss over every canvas position, AR loss over the transcript, distillation loss:
    KL(teacher ‖ causal decoder) over the teacher's top-k at the transcript positions of rows with
    a teacher, 0 without). `self_draft`: the diffusion loss is taken on the canvas after one step
    of the denoiser's own drafts (`own_drafts`) instead of on fresh noise. The output layer (most of
    a step's cost on a CPU) runs only over the language vocabularies of the batch."""
    prompts, xt, x0, w, lens, vocab, _, teacher = batch
    kv, fmask = model.memory(feats)
    if self_draft:
        xt = own_drafts(model, batch, kv, fmask, gen)
    pos = torch.arange(x0.shape[1])[None]
    h = model.denoise(prompts, xt, kv, fmask, hidden=True)
    ce = F.cross_entropy(model.decoder.logits(h, vocab).flatten(0, 1), x0.flatten(), reduction="none")
    diff = (ce * w.flatten()).sum() / w.sum()
    text = pos < lens[:, None]
    logits = model.decoder.logits(model.autoregressive(prompts, vocab[x0], kv, fmask, hidden=True), vocab)
    ar = F.cross_entropy(logits[text], x0[text])
    return diff, ar, distillation_loss(logits, teacher)


def distillation_loss(logits: torch.Tensor, teacher) -> torch.Tensor:
    """Mean over positions with a teacher of KL(p_teacher ‖ q) restricted to the teacher's top-k
    (p renormalised over them; q the decoder's full softmax). logits (B, T', V) with T' ≥ T;
    teacher: (indices (B, T, K), -1 = none; probabilities (B, T, K)) from `teacher_targets`, or None."""
    if teacher is None:
        return logits.new_zeros(())
    idx, p = teacher
    T = idx.shape[1]
    logq = logits[:, :T].float().log_softmax(-1).gather(-1, idx.clamp(min=0))
    have = idx >= 0
    kl = torch.where(have, p * (p.clamp(min=1e-8).log() - logq), 0.0).sum(-1)
    n = have.any(-1)
    return kl[n].mean() if n.any() else logits.new_zeros(())


def save(out: Path, model: WhisperDenoiser, opt, step: int, meta: dict) -> Path:
    """The new `out/checkpoint` (checkpoint.py: a kill at any point leaves a complete one)."""

    def write(d: Path) -> None:
        model.save_trained(d)
        torch.save({"opt": opt.state_dict(), "step": step}, d / "optimizer.pt")
        (d / "config.json").write_text(json.dumps({"denoiser": model.settings(), "step": step, **meta}, indent=1))

    def verify(d: Path) -> None:
        from safetensors.torch import load_file

        json.loads((d / "config.json").read_text())
        torch.load(d / "optimizer.pt")
        load_file(str(d / WEIGHTS_FILE))
        load_file(str(d / VOCAB_FILE))

    return checkpoint.save_dir(out, step, write, verify)


def init_dir(path: str) -> Path:
    """A `base` model directory to fine-tune (config.json naming denoiser settings, plus the trained
    weights and vocabularies); anything else is one clear error."""
    d = Path(path)
    try:
        cfg = json.loads((d / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ModelError(f"--init {path}: not a model directory ({e})") from None
    missing = [n for n in (WEIGHTS_FILE, VOCAB_FILE) if not (d / n).is_file()]
    if cfg.get("preset") != "base" or "denoiser" not in cfg or missing:
        raise ModelError(f"--init {path}: not a `base` model directory (preset base, {WEIGHTS_FILE}, {VOCAB_FILE})")
    return d


def init_meta(d: Path) -> dict:
    """What a fine-tuning run started from: the directory and its own training step."""
    cfg = json.loads((d / "config.json").read_text())
    # a shipped model records `steps` in its provenance record, a checkpoint its `step`
    return {"model": str(d), "step": cfg.get("training", {}).get("steps", cfg.get("step"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--cache", default="data/cache/base_feats")
    ap.add_argument("--text-dir", default="../shared/data/text", help="sentence files, for the vocabularies")
    ap.add_argument("--minutes", type=float, default=30.0, help="wall-time budget of this chunk")
    ap.add_argument("--steps", type=int, default=4000, help="total steps of the schedule")
    ap.add_argument("--stop-at", type=int, default=None, help="stop at this step of the schedule (default: --steps)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank; 0 trains every decoder weight")
    ap.add_argument("--in-place", action="store_true", help="read canvas token i at its own position")
    ap.add_argument("--ar-weight", type=float, default=0.5)
    ap.add_argument("--pad-weight", type=float, default=0.3, help="diffusion loss weight of the padding positions")
    ap.add_argument("--prefix-prob", type=float, default=0.0, help="share of rows with a clean prefix")
    ap.add_argument("--kd-weight", type=float, default=1.0, help="weight of the distillation loss (teacher rows)")
    ap.add_argument(
        "--self-draft", type=float, default=0.0, help="share of batches whose canvas is the denoiser's own drafts"
    )
    ap.add_argument("--save-every", type=float, default=5.0, help="minutes between checkpoints")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument(
        "--init",
        default=None,
        metavar="MODEL_DIR",
        help="fine-tune a `base` model directory (e.g. diffasr/assets/diffasr-base): its settings, trained "
        "weights and vocabularies, a fresh optimizer and schedule; ignored when --resume finds a checkpoint",
    )
    ap.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default="repaired",
        help="Whisper's tokenizer.json with its lost first merge restored (default), or as shipped; a resumed "
        "run that switches rebuilds its vocabularies",
    )
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    resume = checkpoint.latest(out) if args.resume else None
    try:
        start = resume or (init_dir(args.init) if args.init else None)  # whose settings, weights, vocabularies
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = load_rows(args.manifest)
    paths = cache_features(rows, Path(args.cache))
    cfg = DenoiserConfig(rank=args.rank, shift=not args.in_place, tokenizer=args.tokenizer)
    if start is not None:
        cfg = DenoiserConfig.from_dict(json.loads((start / "config.json").read_text())["denoiser"])
    switch = cfg.tokenizer != args.tokenizer
    if switch:
        print(f"tokenizer {cfg.tokenizer} -> {args.tokenizer}: the vocabularies are rebuilt", flush=True)
        cfg = dataclasses.replace(cfg, tokenizer=args.tokenizer)
    model = WhisperDenoiser(cfg)
    if start is not None and not switch:
        model.load_vocab(start / VOCAB_FILE)
    else:
        model.vocab = build_vocab(model, Path(args.text_dir), rows)
    items = [
        {"ids": model.tokens.encode(target_text(r["text"], r["lang"]), r["lang"])[:200], "lang": r["lang"], "feat": p}
        for r, p in zip(rows, paths)
        if r["lang"] in model.vocab
    ]
    known = {lang: set(v.tolist()) for lang, v in model.vocab.items()}
    for it, r in zip(items, (r for r in rows if r["lang"] in model.vocab)):
        if r["teacher"] and model.config.tokenizer == "repaired":  # the teacher's ids are the repaired tokenizer's
            t = np.load(r["teacher"])
            if len(t["ids"]) and all(int(i) in known[it["lang"]] for i in t["ids"]):
                it["ids"], it["top"] = [int(i) for i in t["ids"]][:200], (t["top"], t["logp"])
        # a token the vocabulary lacks (a resumed run on new text) cannot be a target
        it["ids"] = [i for i in it["ids"] if i in known[it["lang"]]]
        it["frames"] = int(np.load(it["feat"], mmap_mode="r").shape[0])
    items.sort(key=lambda it: it["frames"])
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    step = 0
    if start is not None:
        model.load_trained(start / WEIGHTS_FILE)
    if resume is not None:
        st = torch.load(resume / "optimizer.pt")
        opt.load_state_dict(st["opt"])
        step = st["step"]
    print(f"{len(items)} clips; trained parameters {model.n_trained():,}; starting at step {step}", flush=True)

    rng = random.Random(args.seed * 1000003 + step)
    gen = torch.Generator().manual_seed(args.seed * 1000003 + step)
    t_end = time.time() + 60 * args.minutes
    t_save = time.time() + 60 * args.save_every
    log = open(out / "log.jsonl", "a")
    meta = {
        "manifests": args.manifest,
        "batch": args.batch,
        "lr": args.lr,
        "ar_weight": args.ar_weight,
        "pad_weight": args.pad_weight,
        "prefix_prob": args.prefix_prob,
        "kd_weight": args.kd_weight,
        "self_draft": args.self_draft,
    }
    began = json.loads((resume / "config.json").read_text()).get("init") if resume else start and init_meta(start)
    if began:
        meta["init"] = began  # a fine-tuning run says what it fine-tunes, in every checkpoint
    model.train()
    while step < min(args.stop_at or args.steps, args.steps) and time.time() < t_end:
        warm = min(1.0, (step + 1) / 50)
        lr = args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        # Clips of similar length share a batch: cross-attention keys/values are computed over the
        # longest clip's frames for every row, so mixing 2-s and 25-s clips costs 10x.
        start = rng.randrange(max(1, len(items) - args.batch + 1))
        batch_items = items[start : start + args.batch]
        feats = [torch.from_numpy(np.load(it["feat"])) for it in batch_items]
        t0 = time.time()
        batch = make_batch(model, batch_items, rng, gen, args.pad_weight, args.prefix_prob)
        diff, ar, kd = losses(model, batch, feats, rng.random() < args.self_draft, gen)
        loss = diff + args.ar_weight * ar + args.kd_weight * kd
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        log.write(
            json.dumps(
                {
                    "step": step,
                    "diff": round(diff.item(), 4),
                    "ar": round(ar.item(), 4),
                    "kd": round(kd.item(), 4),
                    "lr": lr,
                    "s": round(time.time() - t0, 2),
                }
            )
            + "\n"
        )
        if step % 10 == 0:
            log.flush()
            print(
                f"step {step} diff {diff.item():.3f} ar {ar.item():.3f} kd {kd.item():.3f} {time.time() - t0:.2f}s/step",
                flush=True,
            )
        if time.time() > t_save:
            save(out, model, opt, step, meta)
            t_save = time.time() + 60 * args.save_every
    save(out, model, opt, step, meta)
    print(f"saved step {step} to {out / 'checkpoint'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
