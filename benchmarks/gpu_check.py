"""GPU check: the `small` preset's decoding and training, and the `gemma-26b` code path, on CUDA.

A script for a machine with an NVIDIA GPU and no network (not a test; CI has no GPU). That machine has
no CTranslate2 and no Whisper weights, so it works from encoder features made here:

    python benchmarks/gpu_check.py pack .gpu                 # here: features of real_dev and of a few
                                                              # training clips, a slice of the sentence files
    python benchmarks/gpu_check.py run .gpu OUT               # there: writes OUT/gpu_check.json
    python benchmarks/gpu_check.py score .gpu OUT/gpu_check.json   # here: real_dev WER of what it decoded

`run` measures, each part on its own so that one failure does not hide the others:
  decode   the shipped model on CUDA and on the host CPU in the same process, on the same real_dev
           features: do the transcripts agree, and decoder time per batch (speed as a GPU/CPU ratio);
  train    `diffasr train` (the stage-5 recipe, from the shipped weights) on CUDA for a few steps on the
           packed clips, then the same recipe on the host CPU in a subprocess: s/step both ways, and the
           GPU checkpoint reloaded on the CPU;
  gemma    the published recipe's structure at DiffusionGemma-26B-A4B width (2816 hidden, 128 experts,
           262,144 vocabulary) with 2 of its 30 layers, random weights (the real ones cannot be fetched
           there), frozen bf16 backbone + LoRA + projector: loss, backward and optimizer step per batch,
           with the eager and grouped_mm expert kernels, then one decode;
  finite   one real batch, each training loss backpropagated alone, per kernel, bf16 and fp32;
  steps    six optimizer steps as `train` takes them, plain and under accelerate, each step's losses,
           gradient norm and non-finite weights: written to find where bf16 training on CUDA goes
           NaN (docs/results/gpu/README.md), not yet run on a GPU (the session's device time ran out).
`--only decode,train,...` runs some parts; `--device cpu` is a dry run of the script without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
REAL_DEV = ROOT.parent / "shared" / "data" / "real_dev" / "manifest.jsonl"
TRAIN_SECONDS = 110.0  # packed training audio: one stage-5 batch (max_frames 8000 = 160 s) fits in 64 MiB


def pack(dest: Path) -> None:
    """Features (float16) of every real_dev clip and of ~110 s of training clips, their texts, and the
    first 3,000 lines of each sentence file."""
    from diffasr import load
    from diffasr.data.datasets import FeatureCache, read_manifest

    model = load()
    key = model.encoder.cache_key
    cache = FeatureCache(ROOT / "data" / "features", model.encoder)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "features" / key).mkdir(parents=True)
    dev = read_manifest(REAL_DEV)
    np.savez(dest / "real_dev.npz", *[cache.get(u.audio) for u in dev])
    (dest / "real_dev.json").write_text(json.dumps(
        [{"audio": u.audio.name, "lang": u.lang, "text": u.text} for u in dev], ensure_ascii=False))
    rows, total, per_lang = [], 0.0, {}
    for u in read_manifest(ROOT / "data" / "corpus" / "train" / "manifest.jsonl"):
        if total >= TRAIN_SECONDS or not 2.0 <= u.duration <= 5.0 or per_lang.get(u.lang, 0) >= 6:
            continue
        k = FeatureCache.key(u.audio)
        (dest / "features" / key / k[:2]).mkdir(exist_ok=True)
        np.save(dest / "features" / key / k[:2] / f"{k}.npy", cache.get(u.audio))
        rows.append({"audio": f"audio/{k}.wav", "text": u.text, "lang": u.lang})
        total += u.duration
        per_lang[u.lang] = per_lang.get(u.lang, 0) + 1
    (dest / "train.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (dest / "text").mkdir()
    for f in sorted((ROOT.parent / "shared" / "data" / "text").glob("*.txt")):
        lines = f.read_text(encoding="utf-8").splitlines()[:3000]
        (dest / "text" / f.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dest / "encoder.json").write_text(json.dumps({"cache_key": key}))
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    print(f"{dest}: {len(dev)} real_dev clips, {len(rows)} training clips ({total:.0f} s), {size / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------- on the GPU machine


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats: int = 3) -> float:
    """Best wall time of `repeats` calls after one warm-up, in seconds."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def part_decode(data: Path, device: str) -> dict:
    import torch

    from diffasr import DecodeOptions, load
    from diffasr.decoding import resolve
    from diffasr.transcribe import decode_features

    rows = json.loads((data / "real_dev.json").read_text())
    z = np.load(data / "real_dev.npz")
    feats = [z[f"arr_{i}"] for i in range(len(rows))]
    langs, durs = [r["lang"] for r in rows], [f.shape[0] / 50 for f in feats]
    torch.set_num_threads(os.cpu_count())
    models = {device: load(device=device), "cpu": load()}
    settings = {"default": resolve(models["cpu"].config.decode_defaults, {}),
                "ctc": DecodeOptions(method="ctc-greedy"),
                "noise8": resolve(models["cpu"].config.decode_defaults, {"method": "diffusion", "steps": 8})}
    out = {"hyps": {}, "agree": {}, "ms_per_batch": {}}
    for name, opt in settings.items():
        try:
            hyp = {d: [r.text for b in range(0, len(feats), 8) for r in
                       decode_features(models[d], feats[b: b + 8], durs[b: b + 8], opt, langs[b: b + 8], word_timestamps=False)]
                   for d in models}
        except Exception as e:
            out.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"[:800]
            continue
        out["hyps"][name] = hyp
        out["agree"][name] = sum(a == b for a, b in zip(hyp[device], hyp["cpu"]))
        # Decoder time (features in, text out) for the ~10 s clips, batch 1 / 8 / 32, each device.
        clip = min(range(len(feats)), key=lambda i: abs(durs[i] - 10))
        for batch in (1, 8, 32):
            fb, lb = [feats[clip]] * batch, [langs[clip]] * batch
            for d, m in models.items():
                t = _timed(lambda: decode_features(m, fb, [durs[clip]] * batch, opt, lb, word_timestamps=False))
                out["ms_per_batch"][f"{name}/b{batch}/{d}"] = round(1000 * t, 1)
    out["n_clips"], out["clip_s"] = len(feats), round(durs[clip], 1)
    out["cpu_threads"] = torch.get_num_threads()
    return out


def _train_cfg(data: Path, run_dir: Path, steps: int) -> list[str]:
    return [f'out="{run_dir}"', 'init_from="diffasr/assets/diffasr-small"', f'data.train=["{data}/train.jsonl"]',
            f'data.dev="{data}/train.jsonl"', "data.dev_limit=16", f'data.cache="{data}/features"',
            f"optim.max_steps={steps}", "optim.warmup_steps=5", f"eval.every={steps}", f"eval.save_every={steps}",
            "eval.log_every=5", "text.exclude=[]"]


TRAIN_SNIPPET = """
import json, os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from diffasr.backbone import Backbone
Backbone.experts_kernel = os.environ.get("GPU_CHECK_EXPERTS", "auto")
from diffasr.data.datasets import FeatureCache
from diffasr.model import DiffusionASR
from diffasr.train import load_config, train

class CachedFeatures:  # the packed features stand in for the encoder (no CTranslate2 on this machine)
    cache_key = {key!r}
    def encode(self, audios):
        raise RuntimeError("feature not packed")

FeatureCache.key = staticmethod(lambda p: Path(p).stem)   # packed files are named by their content hash
DiffusionASR.encoder = property(lambda self: CachedFeatures())
cfg = load_config({root!r} + "/configs/small-stage5.toml", {sets!r})
train(cfg)
st = json.loads(Path(cfg["out"], "checkpoint", "config.json").read_text())["training"]
print("TRAINED", json.dumps(st["steps"]), st["wall_seconds"], st["hardware"])
"""


def part_train(data: Path, out: Path, gpu_steps: int, cpu_steps: int, variants: list) -> dict:
    import torch

    key = json.loads((data / "encoder.json").read_text())["cache_key"]
    (data / "audio").mkdir(exist_ok=True)
    for line in (data / "train.jsonl").read_text().splitlines():
        (data / json.loads(line)["audio"]).touch()  # read_manifest wants the files to exist
    res = {}
    env = dict(os.environ, DIFFASR_TEXT_DIR=str(data / "text"), PYTHONUNBUFFERED="1")
    runs = [("cuda", gpu_steps, v) for v in variants] + ([("cpu", cpu_steps, "auto/bf16")] if cpu_steps else [])
    for device, steps, variant in runs:
        kernel, precision = variant.split("/")
        tag = f"{device}_{kernel}_{precision}"
        run_dir = Path("/tmp") / f"gpu_check_train_{tag}"
        shutil.rmtree(run_dir, ignore_errors=True)
        e = dict(env, CUDA_VISIBLE_DEVICES="" if device == "cpu" else env.get("CUDA_VISIBLE_DEVICES", "0"),
                 GPU_CHECK_EXPERTS=kernel)
        sets = _train_cfg(data, run_dir, steps) + [f"optim.bf16={str(precision == 'bf16').lower()}"]
        code = TRAIN_SNIPPET.format(root=str(ROOT), key=key, sets=sets)
        t0 = time.time()
        p = subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, cwd=ROOT)
        (out / f"train_{tag}.log").write_text(p.stdout[-20000:] + "\n----\n" + p.stderr[-20000:])
        r = {"rc": p.returncode, "wall_s": round(time.time() - t0, 1)}
        hist = run_dir / "checkpoint" / "trainer_state.pt"
        if hist.is_file():
            state = torch.load(hist, weights_only=False)["state"]
            r["steps"], r["train_s"] = state["step"], round(state["wall"], 1)
            r["s_per_step"] = round(state["wall"] / max(1, state["step"]), 3)
            r["utt_per_s"] = round(state["utts"] / max(1e-9, state["wall"]), 1)
            r["losses"] = [{k: round(v, 3) for k, v in h.items() if isinstance(v, float)} | {"step": h["step"]}
                           for h in state["history"] if h["kind"] == "train"][::4]
            r["eval"] = [{k: v for k, v in h.items() if k.startswith("cer_")} for h in state["history"] if h["kind"] == "eval"]
        if device == "cuda" and p.returncode == 0 and variant == variants[0]:  # the GPU-trained checkpoint loads and decodes on the CPU
            from diffasr import DecodeOptions, load
            from diffasr.transcribe import decode_features

            m = load(run_dir / "checkpoint")
            feat = np.load(next((data / "features" / key).rglob("*.npy")))
            r["reload_cpu_text"] = decode_features(m, [feat], [feat.shape[0] / 50], DecodeOptions(), [None],
                                                   word_timestamps=False)[0].text
        res[tag] = r
    return res


class WideVocab:
    """The small BPE tokenizer seen through a Gemma-sized vocabulary (its ids are a subset)."""

    def __init__(self, tok, vocab_size: int):
        self._tok, self.vocab_size = tok, vocab_size

    def __getattr__(self, name):
        return getattr(self._tok, name)


def part_gemma(data: Path, device: str, B: int = 8, steps: int = 6) -> dict:
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion

    from diffasr import DecodeOptions, load
    from diffasr.backbone import make_config
    from diffasr.model import PRESETS, DiffusionASR, token_ids
    from diffasr.loss import LossModule
    from diffasr.train import DEFAULTS
    from diffasr.transcribe import decode_features

    tok = WideVocab(load().tokenizer, PRESETS["gemma-26b"]["gemma_ids"]["vocab_size"])
    dims = dict(hidden=2816, layers=2, heads=16, kv_heads=8, head_dim=256, intermediate=2112, experts=128,
                top_k=8, moe_intermediate=704, sliding_window=1024)
    t0 = time.time()
    with torch.device(device):
        torch.manual_seed(0)
        lm = DiffusionGemmaForBlockDiffusion(make_config(dims, 192, token_ids(tok))).to(torch.bfloat16)
    m = DiffusionASR.from_preset("gemma-26b", tokenizer=tok, gemma=lm).to(device)
    res = {"build_s": round(time.time() - t0, 1),
           "params_total_M": round(sum(p.numel() for p in m.parameters()) / 1e6, 1),
           "params_trainable_M": round(sum(p.numel() for p in m.parameters() if p.requires_grad) / 1e6, 2)}
    cfg = {"loss": dict(DEFAULTS["loss"], text=0.0)}
    lossmod = LossModule(m, cfg)
    params = [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, 1500, 768, generator=g).to(device)  # 30 s of whisper-small-sized features
    lens = torch.full((B,), 1500, device=device)
    sentences = (data / "text" / "en.txt").read_text(encoding="utf-8").splitlines()[:B]
    targets = [tok.encode(s)[:150] for s in sentences]
    from diffasr.decoding.canvas import clean_canvas

    x0 = clean_canvas(targets, 192, tok.eos, tok.pad)
    w = {"ctc": 0.5, "ctc_prompt": 0.0, "diffusion": 1.0, "ar": 0.3}
    logits = {}
    with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):  # do the two expert kernels agree?
        for impl in ("eager", "grouped_mm"):
            m.backbone.experts_kernel = impl
            state = m.prefill(*m.projector(feats[:2], lens[:2]), ["en"] * len(feats[:2]))
            logits[impl] = m.denoise(state, x0[:2].to(device))
    diff = (logits["eager"] - logits["grouped_mm"]).abs()
    res["kernels_logit_diff_max_mean"] = [round(float(diff.max()), 4), round(float(diff.mean()), 5)]
    res["logit_std"] = round(float(logits["eager"].std()), 3)
    res["kernels_argmax_agree"] = round(float((logits["eager"].argmax(-1) == logits["grouped_mm"].argmax(-1)).float().mean()), 4)
    for impl in ("eager", "grouped_mm"):
        try:
            m.backbone.experts_kernel = impl
            times, losses = [], []
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            for _ in range(steps):
                _sync()
                t = time.perf_counter()
                with torch.autocast(device, dtype=torch.bfloat16):
                    out = lossmod(feats, lens, x0, targets, ["en"] * B, w, g)
                total = sum(w[k] * v for k, v in out.items())
                total.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                _sync()
                times.append(time.perf_counter() - t)
                losses.append({k: round(float(v.detach()), 3) for k, v in out.items()})
            res[impl] = {f"s_per_step_b{B}": round(min(times[1:]), 3), "first_step_s": round(times[0], 2),
                         "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device == "cuda" else None,
                         "losses": [losses[0], losses[-1]]}
        except Exception as e:
            res[impl] = {"error": f"{type(e).__name__}: {e}"[:800]}
    m.eval()
    m.backbone.experts_kernel = "auto"
    fl = [f.float().cpu().numpy() for f in feats[:2]]
    decode = lambda: decode_features(m, fl, [30.0] * len(fl), DecodeOptions(steps=8), [None] * len(fl), word_timestamps=False)
    try:
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16):
            res[f"decode_b{len(fl)}_8steps_s"] = round(_timed(decode, 2), 3)
            res["decode_tokens"] = [len(h.tokens) for h in decode()]
    except Exception as e:
        res["decode_error"] = f"{type(e).__name__}: {e}"[:800]
    return res


def _packed_batch(data: Path, tok) -> tuple[dict, list]:
    """The stage-5 recipe (its text rows read from the packed sentence slice) and the first 16 packed
    training clips as Examples."""
    os.environ["DIFFASR_TEXT_DIR"] = str(data / "text")
    from diffasr.data.datasets import Example
    from diffasr.train import load_config

    key = json.loads((data / "encoder.json").read_text())["cache_key"]
    cfg = load_config(ROOT / "configs" / "small-stage5.toml", ["text.exclude=[]"])
    rows = [json.loads(l) for l in (data / "train.jsonl").read_text().splitlines()][:16]
    stems = [Path(r["audio"]).stem for r in rows]  # packed under the cache layout: <key>/<k[:2]>/<k>.npy
    return cfg, [Example(np.load(data / "features" / key / k[:2] / f"{k}.npy"), tok.encode(r["text"]), r["lang"])
                 for k, r in zip(stems, rows)]


def part_finite(data: Path, device: str) -> dict:
    """Which training loss, if any, gives a non-finite value or gradient on this device: one real batch
    (padded, CTC-seeded and self-conditioned rows, text rows), each loss backpropagated alone, under
    each expert kernel, with and without bf16 autocast."""
    import torch

    from diffasr import load
    from diffasr.loss import LossModule
    from diffasr.train import collate, text_corrections

    m = load(device=device)
    m.train()
    cfg, ex = _packed_batch(data, m.tokenizer)
    feats, lens, x0, targets, langs = collate(ex, m.tokenizer, 4, 0.2, np.random.default_rng(0))
    feats, lens = feats.to(device), lens.to(device)
    texts = text_corrections(cfg, m)
    lossmod = LossModule(m, cfg)
    res = {}
    import random as _random
    for kernel in ("auto", "eager"):
        for bf16 in (True, False):
            m.backbone.experts_kernel = kernel
            name = f"{kernel}/{'bf16' if bf16 else 'fp32'}"
            r = {}
            for loss_name in ("ctc", "ctc_prompt", "diffusion", "ar", "text"):
                m.zero_grad(set_to_none=True)
                gen = torch.Generator().manual_seed(1)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
                    out = lossmod(feats, lens, x0, targets, langs, {"ctc": 1, "ctc_prompt": 1, "diffusion": 1, "ar": 1, "text": 1},
                                  gen, texts.batch(8, _random.Random(0)))
                v = out[loss_name]
                v.backward()
                bad = [n for n, p in m.named_parameters() if p.grad is not None and not torch.isfinite(p.grad).all()]
                r[loss_name] = {"loss": round(float(v.detach()), 4), "bad_grads": len(bad), "first_bad": bad[:2]}
            res[name] = r
    return res


def part_steps(data: Path, device: str, steps: int = 6) -> dict:
    """Optimizer steps as `train` takes them (spec-augment, bf16 autocast, clip, AdamW), with and without
    accelerate's wrapping: per step, each loss, the gradient norm, and whether any weight went non-finite."""
    import random as _random

    import torch
    from accelerate import Accelerator

    from diffasr import load
    from diffasr.loss import LossModule
    from diffasr.train import collate, spec_augment, text_corrections

    res = {}
    for wrap in ("plain", "accelerate"):
        m = load(device=device)
        m.train()
        cfg, ex = _packed_batch(data, m.tokenizer)
        texts = text_corrections(cfg, m)
        lossmod = LossModule(m, cfg)
        params = [p for p in m.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=5e-4, betas=(0.9, 0.98), weight_decay=0.01)
        acc = None
        if wrap == "accelerate":
            acc = Accelerator()
            lossmod, opt = acc.prepare(lossmod, opt)
        log = []
        for step in range(steps):
            gen = torch.Generator().manual_seed(step)
            feats, lens, x0, targets, langs = collate(ex, m.tokenizer, 4, 0.2, np.random.default_rng(step))
            feats = spec_augment(feats, lens, gen)
            feats, lens = feats.to(device), lens.to(device)
            with torch.autocast(device, dtype=torch.bfloat16):
                out = lossmod(feats, lens, x0, targets, langs, {"ctc": 0.5, "ctc_prompt": 1, "diffusion": 1, "ar": 0.3, "text": 1},
                              gen, texts.batch(32, _random.Random(step)))
            total = sum(out.values())
            (acc.backward(total) if acc else total.backward())
            gn = torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            bad = [n for n, p in m.named_parameters() if not torch.isfinite(p).all()]
            log.append({**{k: round(float(v.detach()), 3) for k, v in out.items()}, "grad_norm": round(float(gn), 3),
                        "bad_weights": len(bad), "first_bad": bad[:2]})
        res[wrap] = log
    return res


def run(data: Path, out: Path, gpu_steps: int, cpu_steps: int, device: str, gemma_batch: int, only: list,
        variants: list) -> None:
    import torch
    import transformers

    out.mkdir(parents=True, exist_ok=True)
    report = {"torch": torch.__version__, "transformers": transformers.__version__,
              "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None, "host_cpus": os.cpu_count()}
    parts = {"decode": lambda: part_decode(data, device), "train": lambda: part_train(data, out, gpu_steps, cpu_steps, variants),
             "gemma": lambda: part_gemma(data, device, gemma_batch), "finite": lambda: part_finite(data, device),
             "steps": lambda: part_steps(data, device)}
    for name, fn in parts.items():
        if only and name not in only:
            continue
        t0 = time.time()
        try:
            report[name] = fn()
        except Exception:
            report[name] = {"error": traceback.format_exc()[-3000:]}
        report[name]["part_wall_s"] = round(time.time() - t0, 1)
        print(f"{name}: {time.time() - t0:.0f} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, ensure_ascii=False, indent=1))


def score(data: Path, report: Path) -> None:
    """real_dev error rates of the GPU and CPU transcripts, per language, with the project's scorer."""
    from diffasr.evaluate import error_rate

    rows = json.loads((data / "real_dev.json").read_text())
    rep = json.loads(report.read_text())["decode"]
    for name, hyp in rep["hyps"].items():
        cells = []
        for lang in sorted({r["lang"] for r in rows}):
            idx = [i for i, r in enumerate(rows) if r["lang"] == lang]
            for d in hyp:
                rate, metric = error_rate([rows[i]["text"] for i in idx], [hyp[d][i] for i in idx], lang)
                cells.append(f"{lang} {metric} {d} {rate:.3f}")
        print(f"{name} (agree {rep['agree'][name]}/{len(rows)}): " + ", ".join(cells))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("pack").add_argument("dest", type=Path)
    r = sub.add_parser("run")
    r.add_argument("data", type=Path)
    r.add_argument("out", type=Path)
    r.add_argument("--gpu-steps", type=int, default=200)
    r.add_argument("--cpu-steps", type=int, default=6)
    r.add_argument("--device", default="cuda", help="cpu: a dry run of this script without a GPU")
    r.add_argument("--gemma-batch", type=int, default=8)
    r.add_argument("--only", default="", help="comma-separated parts to run (default: all)")
    r.add_argument("--train-variants", default="auto/bf16", help="GPU training runs, KERNEL/PRECISION, comma-separated")
    s = sub.add_parser("score")
    s.add_argument("data", type=Path)
    s.add_argument("report", type=Path)
    a = p.parse_args()
    if a.cmd == "pack":
        pack(a.dest)
    elif a.cmd == "run":
        run(a.data.resolve(), a.out, a.gpu_steps, a.cpu_steps, a.device, a.gemma_batch, [x for x in a.only.split(',') if x],
            a.train_variants.split(','))
    else:
        score(a.data, a.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
