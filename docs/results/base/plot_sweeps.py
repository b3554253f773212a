"""English WER and RTF against steps for base's sampled methods, from the sweep reports here.

python docs/results/base/plot_sweeps.py   # writes docs/results/base/sweeps_en.png
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent
RUNS = {
    "from noise (diffusion)": "sweep_noise",
    "from noise, verified (diffusion-verify)": "sweep_noise_verify",
    "CTC-seeded refine": "sweep_seed",
    "CTC-seeded edit": "sweep_edit",
    "CTC-seeded, verified (ctc-verify)": "sweep_seed_verify",
}
fig, (ax_e, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
sweeps = {label: json.loads((HERE / f"{name}.json").read_text())["results"] for label, name in RUNS.items()}
ticks = sorted({r["steps"] for rows in sweeps.values() for r in rows})
for label, rows in sweeps.items():
    steps = [r["steps"] for r in rows]
    ax_e.plot(steps, [r["languages"]["en"]["error_rate"] for r in rows], "o-", label=label)
    ax_s.plot(steps, [r["overall"]["rtf"] for r in rows], "o-", label=label)
ref = json.loads((HERE / "real_dev.json").read_text())["results"]
for i, (r, style) in enumerate(zip(ref, ("--", ":", "-.", "-"))):  # reference rows, labels alternate sides
    ax_e.axhline(r["languages"]["en"]["error_rate"], linestyle=style, color="grey", linewidth=0.8)
    x, ha = (max(ticks), "right") if i % 2 else (1, "left")
    ax_e.annotate(r["name"], (x, r["languages"]["en"]["error_rate"]), fontsize=7, ha=ha, va="bottom")
for ax in (ax_e, ax_s):
    ax.set_xscale("log", base=2)
ax_e.set(
    xlabel="denoising steps", ylabel="English WER (real_dev, 33 clips)", xticks=ticks, xticklabels=ticks, ylim=(0, 0.9)
)
ax_s.set(xlabel="denoising steps", ylabel="real-time factor (1 thread)", xticks=ticks, xticklabels=ticks)
ax_e.legend(fontsize=8)
ax_s.legend(fontsize=8)
step = json.loads((HERE.parents[2] / "diffasr/assets/diffasr-base/config.json").read_text())["training"]["step"]
fig.suptitle(f"diffasr-base (step {step:,}): steps sweep from noise and from the CTC seed")
fig.tight_layout()
fig.savefig(HERE / "sweeps_en.png", dpi=110)
