"""Speed of the published recipe at full size: DiffusionGemma-26B-A4B + whisper-small, random weights.

    python benchmarks/gemma26b_speed.py --device cuda --out docs/results/gpu/gemma26b_speed.json
    python benchmarks/gemma26b_speed.py --tiny --device cpu --out /tmp/dry.json      # dry run, seconds

Builds the model of configs/gemma-26b.toml at its real dimensions (25.25 B parameters, bf16 on the
GPU) with random weights — speed does not depend on the values, and the GPU machine cannot download
the real ones — and times, for a clip of `--seconds` (10) at each batch size (1 and 8):
  encoder   log-mel + whisper-small encoder (random weights, real dims; 30-s windows, as Whisper pads);
  prefill   projector + the backbone's causal pass over the prompt (fills the KV cache);
  step      one denoising step: decoder over the canvas + lm_head + softcap + self-conditioning;
  decode_N  the whole diffusion decode at N steps (projector CTC head, prefill, N steps; no early
            stop, fixed canvas `--canvas` (64 tokens: room for ~30 words), no word alignment);
  x_realtime_N  audio seconds per wall second, encoder + decode_N (the published figure: 14.9x at 8 steps);
  train     one LoRA training step (the recipe's three losses, gradient checkpointing, AdamW) on a batch
            of `--train-batch` clips: seconds and peak GPU memory.
Timings are the minimum over `--repeats` runs after one warm-up. `--tiny` builds the same structures
at test size so the script itself is checked on a CPU (tests/test_pretrained.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

WHISPER_SMALL = dict(d_model=768, encoder_layers=12, encoder_attention_heads=12, encoder_ffn_dim=3072)
WHISPER_TINY = dict(d_model=64, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=128)


class SpeedTokenizer:
    """What the model needs of a tokenizer, with the preset's Gemma ids; the prompt has the length of
    the real one ("Transcribe this audio in English." is ~8 Gemma tokens)."""

    kind = "gemma"

    def __init__(self, ids: dict):
        self.pad, self.eos, self.bos, self.sep, self.audio = (
            ids["pad"],
            ids["eos"],
            ids["bos"],
            ids["eoa"],
            ids["audio"],
        )
        self.boa, self.vocab_size = ids["boa"], ids["vocab_size"]

    def prompt_ids(self, n_audio: int, language) -> list[int]:
        return [self.bos] + list(range(1000, 1008)) + [self.boa] + [self.audio] * n_audio + [self.sep]

    def encode(self, text: str) -> list[int]:
        return [1000 + ord(c) % 5000 for c in text]

    def decode(self, ids) -> str:
        return " ".join(str(int(i)) for i in ids)

    def token_strings(self, ids) -> list[str]:
        return [str(int(i)) for i in ids]


def build(device: str, tiny: bool):
    """(model, whisper encoder, feature extractor, dtype) at full size (or tiny), random weights."""
    from transformers import DiffusionGemmaForBlockDiffusion, WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from diffasr.model import DiffusionASR
    from diffasr.models.backbone import make_config
    from diffasr.models.config import DIMS, PRESETS
    from diffasr.models.encoder import EncoderSpec
    from diffasr.training.pretrained import full_size_config

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    ids = dict(PRESETS["gemma-26b"]["gemma_ids"])
    wdims = WHISPER_TINY if tiny else WHISPER_SMALL
    if tiny:
        ids.update(boa=496, audio=497, eoa=498, vocab_size=6000)
    tok = SpeedTokenizer(ids)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: no fp32 copy of 25 B parameters
    try:
        with torch.device(device):
            lm_cfg = (
                make_config(
                    DIMS["tiny"], 256, dict(pad=0, eos=1, bos=2, audio=ids["audio"], vocab_size=ids["vocab_size"])
                )
                if tiny
                else full_size_config(256, pad_token_id=ids["pad"])
            )
            lm = DiffusionGemmaForBlockDiffusion(lm_cfg)
            wcfg = WhisperConfig(num_mel_bins=80, max_source_positions=1500, **wdims)
            whisper = WhisperEncoder(wcfg).eval()
    finally:
        torch.set_default_dtype(default)
    enc = EncoderSpec(backend="hf", name="random-whisper-small", dim=wdims["d_model"], pad_to_30s=True)
    model = DiffusionASR.from_preset("gemma-26b", tokenizer=tok, gemma=lm, encoder=enc).to(device)
    return model, whisper, WhisperFeatureExtractor(feature_size=80), dtype


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def best_of(fn, repeats: int, device: str) -> float:
    """Minimum wall seconds of fn() over `repeats` runs after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t)
    return min(times)


@torch.no_grad()
def time_inference(
    model,
    whisper,
    extractor,
    dtype,
    device: str,
    batch: int,
    seconds: float,
    steps: list[int],
    canvas: int,
    repeats: int,
) -> dict:
    import numpy as np

    from diffasr.decoding import DecodeOptions
    from diffasr.decoding.canvas import random_canvas
    from diffasr.models.encoder import n_frames
    from diffasr.pipeline.transcribe import decode_features

    model.eval()
    rng = np.random.default_rng(0)
    audios = [rng.standard_normal(int(seconds * 16000)).astype(np.float32) * 0.1 for _ in range(batch)]
    frames = n_frames(audios[0].size)
    feats_out = {}

    def encoder():
        mel = extractor(audios, sampling_rate=16000, return_tensors="pt").input_features.to(device, dtype)
        h = whisper(mel).last_hidden_state[:, :frames]
        feats_out["f"] = [x.float().cpu().numpy() for x in h]

    r = {"batch": batch, "encoder_s": best_of(encoder, repeats, device)}
    feats = feats_out["f"]
    langs = ["en"] * batch
    with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        a, n = model.project(feats)
        r["prefill_s"] = best_of(lambda: model.prefill(*model.project(feats), langs), repeats, device)
        state = model.prefill(a, n, langs)
        x = random_canvas(batch, canvas, model.tokenizer.vocab_size, torch.Generator().manual_seed(0)).to(device)
        sc = model.denoise(state, x)
        r["step_s"] = best_of(lambda: model.denoise(state, x, sc), repeats, device)
        for s in steps:
            opts = DecodeOptions(steps=s, canvas=canvas, early_stop=False, restrict_script=False)
            t = best_of(
                lambda: decode_features(model, feats, [seconds] * batch, opts, langs, word_timestamps=False),
                repeats,
                device,
            )
            r[f"decode_{s}_s"] = t
            r[f"x_realtime_{s}"] = batch * seconds / (r["encoder_s"] + t)
    r["audio_tokens"], r["canvas"] = int(n[0]), canvas
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


def time_training(model, dtype, device: str, batch: int, seconds: float, canvas: int, repeats: int) -> dict:
    from diffasr.decoding.canvas import clean_canvas
    from diffasr.models.encoder import FRAMES_PER_SECOND
    from diffasr.training.loss import LossModule
    from diffasr.training.pretrained import _finish
    from diffasr.training.train import load_config, loss_weights

    cfg = load_config(REPO / "configs" / "gemma-26b.toml")
    _finish(model, cfg)  # trained parts fp32, gradient checkpointing as the recipe runs it
    model.train()
    lossmod = LossModule(model, cfg.loss)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    T = int(seconds * FRAMES_PER_SECOND)
    feats = torch.randn(batch, T, model.config.encoder["dim"], generator=g).to(device)
    lens = torch.full((batch,), T, device=device)
    tok = model.tokenizer
    targets = [torch.randint(1000, 6000, (40,), generator=g).tolist() for _ in range(batch)]  # ~30 words
    x0 = clean_canvas(targets, canvas, tok.eos, tok.pad)
    w = loss_weights(cfg, 10**6)  # every loss at full weight
    losses = {}

    def step():
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = lossmod(feats, lens, x0, targets, ["en"] * batch, w, g)
        total = sum(w[k] * v for k, v in out.items())
        total.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.update({k: round(float(v.detach()), 3) for k, v in out.items()})

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    r = {
        "train_batch": batch,
        "train_step_s": round(best_of(step, repeats, device), 4),
        "losses": losses,
        "trainable_M": round(sum(p.numel() for p in params) / 1e6, 2),
    }
    if device.startswith("cuda"):
        r["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return r


def run(
    device: str = "cuda",
    tiny: bool = False,
    batches=(1, 8),
    steps=(8, 16),
    seconds: float = 10.0,
    canvas: int = 64,
    train_batch: int = 8,
    repeats: int = 3,
) -> dict:
    t0 = time.time()
    model, whisper, extractor, dtype = build(device, tiny)
    res = {
        "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else f"{platform.machine()} CPU",
        "torch": torch.__version__,
        "tiny": tiny,
        "dtype": str(dtype).replace("torch.", ""),
        "params_B": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "clip_seconds": seconds,
        "build_s": round(time.time() - t0, 1),
        "inference": [],
        "published_x_realtime_8": 14.9,
    }
    for b in batches:
        try:
            res["inference"].append(
                time_inference(model, whisper, extractor, dtype, device, b, seconds, list(steps), canvas, repeats)
            )
        except Exception as e:  # e.g. out of memory at batch 8: keep the other results
            res["inference"].append({"batch": b, "error": f"{type(e).__name__}: {e}"[:500]})
    try:
        res["train"] = time_training(model, dtype, device, train_batch, seconds, canvas, max(1, repeats - 1))
    except Exception as e:
        res["train"] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="test-size dimensions (CPU dry run)")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--steps", default="8,16")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--canvas", type=int, default=64)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    a = p.parse_args()
    res = run(
        a.device,
        a.tiny,
        [int(x) for x in a.batches.split(",")],
        [int(x) for x in a.steps.split(",")],
        a.seconds,
        a.canvas,
        a.train_batch,
        a.repeats,
    )
    res["command"] = "python " + " ".join(sys.argv)
    text = json.dumps(res, indent=1)
    print(text)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
