"""How far can rescoring small's CTC + n-gram n-best go? (issue #20: the default's ≤ 15 % bar)

    python docs/results/base/rescore_oracle.py MANIFEST [THREADS]   # -> rescore_oracle.md next to this file

Per clip: the beam's 32 best (beam 32, the shipped n-gram at 0.7, bonus 4), each scored by the base
denoiser twice — its clean-canvas (diffusion) log-likelihood, which the shipped `rescore` uses, and
the same weights run causally (teacher-forced autoregressive log-likelihood). Reports WER of the
beam's best, the oracle (best candidate by WER) among the first K, and the pick of beam score +
w × each score.
"""

import json
import sys
from pathlib import Path

import jiwer
import numpy as np
import torch

import diffasr
from diffasr.audio import load_audio
from diffasr.decoding import DecodeOptions
from diffasr.decoding.decode import decode_front, nbest
from diffasr.decoding.sampler import canvas_scores
from diffasr.decoding.whisper import _step_fn, candidate_canvases
from diffasr.metrics import error_rate, normalize

K = 32


@torch.no_grad()
def candidates(m, audio, lang):
    den, tok = m.denoiser, m.tokenizer
    opt = DecodeOptions(method="rescore", nbest=K, beam=32, ngram_weight=0.7, length_bonus=4.0)
    feats = m.encode([audio])
    front = decode_front(m, feats, [lang], opt)
    beam = nbest(m, front.ctc, front.n_audio, [lang], opt, K)[0]
    texts = [tok.decode(ids) for ids, _ in beam]
    rows = [den.tokens.encode(t, lang) for t in texts]
    vocab, canvas, lens, prompts, kv, fm = candidate_canvases(den, feats[0], lang, rows, opt)
    L = canvas.shape[1]
    diffusion, _ = canvas_scores(_step_fn(den, vocab, prompts, kv, fm), canvas, lens)
    lp = den.autoregressive(prompts, vocab[canvas], kv, fm, vocab).float().log_softmax(-1)
    valid = torch.arange(L)[None] < lens[:, None]
    ar = (lp.gather(-1, canvas[..., None])[..., 0] * valid).sum(-1)
    return texts, [s for _, s in beam], diffusion.tolist(), ar.tolist()


def main(manifest: str, threads: str = "1") -> None:
    torch.set_num_threads(int(threads))
    m = diffasr.load("base")
    root = Path(manifest).parent
    rows = [json.loads(line) for line in Path(manifest).read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["lang"] == "en"]
    clips = [
        dict(
            ref=r["text"],
            **dict(zip(("texts", "beam", "diffusion", "ar"), candidates(m, load_audio(str(root / r["audio"])), "en"))),
        )
        for r in rows
    ]
    refs = [c["ref"] for c in clips]

    def wer(hyps):
        return error_rate(refs, hyps, "en")[0]

    def oracle(c, k):
        n = normalize(c["ref"], "en") or "-"
        return c["texts"][int(np.argmin([jiwer.wer(n, normalize(t, "en") or "-") for t in c["texts"][:k]]))]

    lines = [
        f"# Rescoring ceiling: {len(clips)} English clips of `{manifest}`, base step-1,500 denoiser",
        "",
        f"- beam's best: {wer([c['texts'][0] for c in clips]):.3f} WER",
        "",
    ]
    lines += [
        "| K | oracle | diffusion score, w = 0.25 / 0.5 / 1 / 2 / 4 | causal score, w = 0.25 / 0.5 / 1 / 2 / 4 |",
        "|---|---|---|---|",
    ]
    for k in (4, 8, 16, 32):
        cells = [f"{wer([oracle(c, k) for c in clips]):.3f}"]
        for key in ("diffusion", "ar"):
            picks = [
                [c["texts"][int(np.argmax(np.array(c["beam"][:k]) + w * np.array(c[key][:k])))] for c in clips]
                for w in (0.25, 0.5, 1, 2, 4)
            ]
            cells.append(" / ".join(f"{wer(p):.3f}" for p in picks))
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    out = Path(__file__).with_name("rescore_oracle.md")
    out.write_text(
        "\n".join(lines) + "\n\nCommand: `python docs/results/base/rescore_oracle.py " + " ".join(sys.argv[1:]) + "`\n"
    )
    print(out.read_text())


if __name__ == "__main__":
    main(*sys.argv[1:])
