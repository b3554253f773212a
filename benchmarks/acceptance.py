"""Go/no-go measures for the distilled drafter and verifier (issue 33), per language, on any manifest:

    python benchmarks/acceptance.py --model diffasr-base --manifest ../shared/data/real_dev/manifest.jsonl \
        --teacher --out docs/results/acceptance_real_dev.json [--set method=ctc-verify --set verifier=adapted]

Per clip, one decode with the model's defaults (or the --set overrides), language given:
  tokens_per_step   transcript tokens (+ end of text) / denoiser steps: the verified methods commit
                    the agreeing draft run plus one correction per step, so 1.0 means no draft token
                    was ever accepted and the whole transcript in one step is len + 1;
  error rate        WER (CER for zh, hi) against the manifest's reference, where there is one;
  agreement         with `--teacher`: 1 - WER/CER of our transcript against faster-whisper's greedy
                    transcript of the same clip (Whisper-base int8, padded window, language given):
                    how far the unpadded, distilled decoder writes what the released one writes. It
                    needs no reference, so any audio measures it. Faster-whisper's own error rate
                    against the reference is reported beside ours.
Decode seconds are this machine's under whatever else runs: see diffasr bench for speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_sets(items: list[str]) -> dict:
    out = {}
    for s in items:
        k, _, v = s.partition("=")
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def main(argv=None) -> int:
    import diffasr
    from diffasr.metrics import error_rate
    from diffasr.pipeline.manifest import read_manifest

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--manifest", action="append", required=True, help="repeatable")
    ap.add_argument("--langs", default=None, help="comma-separated: only these languages")
    ap.add_argument("--limit", type=int, default=0, help="at most this many clips per language (0: all)")
    ap.add_argument("--teacher", action="store_true", help="also faster-whisper greedy: agreement and its errors")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="a decoding option")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch
    from tqdm import tqdm

    torch.set_num_threads(args.threads)
    langs = set(args.langs.split(",")) if args.langs else None
    rows, seen = [], defaultdict(int)
    for u in (u for m in args.manifest for u in read_manifest(m)):
        if (langs and u.lang not in langs) or (args.limit and seen[u.lang] >= args.limit):
            continue
        seen[u.lang] += 1
        rows.append(u)
    model = diffasr.load(args.model) if args.model else diffasr.load()
    fw = None
    if args.teacher:
        from faster_whisper import WhisperModel

        from diffasr.models.encoder import whisper_base_dir

        fw = WhisperModel(str(whisper_base_dir()), device="cpu", compute_type="int8", cpu_threads=args.threads)
    sets = parse_sets(args.set)
    per = []
    for u in tqdm(rows, desc="clips", mininterval=10):
        t0 = time.time()
        t = model.transcribe(str(u.audio), language=u.lang, **sets)
        sec = time.time() - t0
        row = {
            "audio": str(u.audio),
            "lang": u.lang,
            "reference": u.text,
            "text": t.text,
            "tokens": len(t.tokens),
            "steps": t.steps_run,
            "seconds": round(sec, 3),
        }
        if fw is not None:
            segs, _ = fw.transcribe(str(u.audio), language=u.lang, beam_size=1, without_timestamps=True)
            row["teacher"] = " ".join(s.text.strip() for s in segs)
        per.append(row)
    summary = {}
    for lang in sorted({r["lang"] for r in per}):
        rs = [r for r in per if r["lang"] == lang]
        s = {
            "clips": len(rs),
            "tokens_per_step": round(sum(r["tokens"] + 1 for r in rs) / max(1, sum(r["steps"] for r in rs)), 2),
            "steps_mean": round(sum(r["steps"] for r in rs) / len(rs), 2),
        }
        ref = [r for r in rs if r["reference"]]
        if ref:
            er, metric = error_rate([r["reference"] for r in ref], [r["text"] for r in ref], lang)
            s[metric] = round(100 * er, 1)
            if fw is not None:
                s[f"faster_whisper_{metric}"] = round(
                    100 * error_rate([r["reference"] for r in ref], [r["teacher"] for r in ref], lang)[0], 1
                )
        if fw is not None:
            have = [r for r in rs if r["teacher"].strip()]
            if have:
                er, metric = error_rate([r["teacher"] for r in have], [r["text"] for r in have], lang)
                s["teacher_agreement"] = round(100 * (1 - er), 1)
                s["transcripts_equal_to_teacher"] = sum(
                    error_rate([r["teacher"]], [r["text"]], lang)[0] == 0 for r in have
                )
        summary[lang] = s
    result = {"model": args.model or "default", "manifest": args.manifest, "options": sets, "summary": summary}
    print(json.dumps(summary, indent=1, ensure_ascii=False))
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps({**result, "clips": per}, indent=1, ensure_ascii=False))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
