"""A picture of one clip's denoising: rows = steps (top: the starting canvas), columns = canvas
positions, each cell the token there, coloured by confidence; re-drawn noise grey, positions reset
to the CTC seed pale blue, drafts the verifier rejected struck through.

    python scripts/plot_steps.py tests/data/en/picovoice_cheetah_test_en.wav --method diffusion-verify \
        --out docs/steps.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colormaps  # noqa: E402

import diffasr  # noqa: E402
from diffasr.decoding.steps import END  # noqa: E402

UNSURE_SURE = colormaps["RdYlGn"]
FILL = {"renoised": "#e4e6ea", "reseeded": "#dbe7f7"}  # positions that hold no decision yet


def plot(steps: list[dict], text: str, title: str, out: Path) -> None:
    """steps: Transcription.steps of one segment; writes the PNG `out`."""
    # the starting noise has no end-of-text: show it as wide as the widest later step (+ one)
    width = max(len(s["tokens"]) for s in steps[1:]) + 1 if len(steps) > 1 else len(steps[0]["tokens"])
    fig, ax = plt.subplots(figsize=(max(6.0, 0.62 * width + 1.2), 0.42 * len(steps) + 1.3), dpi=130)
    for r, st in enumerate(steps):
        cells = list(zip(st["tokens"], st["status"], st["confidence"]))[:width]
        for c, (tok, status, conf) in enumerate(cells):
            colour = FILL.get(status) or UNSURE_SURE(0.15 + 0.85 * conf)
            ax.add_patch(plt.Rectangle((c, r), 0.96, 0.9, color=colour, lw=0))
            label = "⏎" if tok == END else tok.strip() or "␣"
            ax.text(
                c + 0.48,
                r + 0.47,
                label[:9],
                ha="center",
                va="center",
                fontsize=7,
                color="#777" if status == "renoised" else "#111",
                style="italic" if status == "renoised" else "normal",
            )
            if status == "rejected":
                ax.plot([c + 0.08, c + 0.88], [r + 0.47, r + 0.47], color="#7b1f1a", lw=0.8)
    ax.set_xlim(0, width)
    ax.set_ylim(len(steps), 0)
    ax.set_yticks([r + 0.45 for r in range(len(steps))], [str(s["step"]) for s in steps], fontsize=8)
    ax.set_xticks([])
    ax.set_ylabel("step")
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"{title}\n→ {text}", fontsize=9, loc="left")
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("clip", type=Path)
    p.add_argument("--model", default="base")
    p.add_argument("--method", default=None, help="a canvas method (default: the model's)")
    p.add_argument("--language", default="en")
    p.add_argument("--out", type=Path, default=Path("docs/steps.png"))
    a = p.parse_args()
    model = diffasr.load(a.model)
    r = model.transcribe(str(a.clip), language=a.language, method=a.method, return_steps=True)
    steps = [s for s in r.steps if s["segment"] == 0]
    plot(steps, r.text, f"{a.clip.name}: diffasr-{model.config.preset}, {r.method}, {r.steps_run} steps", a.out)


if __name__ == "__main__":
    main()
