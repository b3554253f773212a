"""No-speech guard evidence: `python benchmarks/no_speech_evidence.py noise|speech` prints (kind, level or language, CTC tokens/s, confidence) for 125 noises or 150 real_train clips ≥ 1 s."""

import json
import random
import sys

import numpy as np
import torch

import diffasr
from diffasr.audio import load_audio
from diffasr.pipeline.transcribe import guard_evidence

torch.set_num_threads(1)
m = diffasr.load()


def ev(x):
    at, nn = m.project(m.encode([x.astype(np.float32)]))
    return guard_evidence(m, at, nn, [x.size / 16000])[0]


out = []
with torch.no_grad():
    if sys.argv[1] == "noise":
        for seed in range(25):
            rng = np.random.default_rng(100 + seed)
            for lvl in (0.003, 0.03, 0.1, 0.3):
                e = ev(lvl * rng.standard_normal(160000))
                out.append(("white", lvl, e))
            b = np.cumsum(rng.standard_normal(160000))
            b = b - np.convolve(b, np.ones(200) / 200, "same")
            e = ev(0.05 * b / b.std())
            out.append(("brown-ish", 0.05, e))
        for name, lvl, e in out:
            print(name, lvl, e["rate"], e["confidence"])
    else:
        R = "/work/shared/data/real_train/"
        rows = [json.loads(l) for l in open(R + "manifest.jsonl") if l.strip()]
        rows = [r for r in rows if r["duration_s"] >= 1.0]
        random.Random(1).shuffle(rows)
        for r in rows[:150]:
            e = ev(load_audio(R + r["audio"])[: 30 * 16000])
            print("speech", r["lang"], e["rate"], e["confidence"], r["duration_s"], flush=True)
