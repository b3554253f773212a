"""How much of an error rate comes from clips the reference recogniser cannot hear either.

    diffasr eval --manifest data/corpus/test/manifest.jsonl --method ctc-greedy --baseline faster-whisper \
        --metric cer --json docs/results/whisper_base_synthetic.json
    python scripts/intelligibility.py docs/results/whisper_base_synthetic.json docs/results/eval_synthetic.json

Per language: the share of clips Whisper-base transcribes within `--easy` CER, and a diffasr row's
corpus CER on those clips and on the rest. Whisper's hypotheses come from the first report; the
diffasr row (`--row`, default the first non-baseline row) from the last. Clips are matched by audio path.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from diffasr.metrics import error_rate

BASELINE = "faster-whisper greedy"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", nargs="+", help="eval --json reports; the first holds the faster-whisper row")
    p.add_argument("--row", default=None, help="diffasr row of the last report (default: its first)")
    p.add_argument("--easy", type=float, default=0.10, help="a clip is intelligible when Whisper's CER is at most this")
    a = p.parse_args()
    try:
        reports = [json.load(open(r, encoding="utf-8")) for r in a.reports]
    except (OSError, json.JSONDecodeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    whisper = {c["audio"]: c for c in reports[0]["clips"] if BASELINE in c["hyps"]}
    clips = reports[-1]["clips"]
    row = a.row or next((k for k in clips[0]["hyps"] if k != BASELINE), None)
    if not whisper or row is None or row not in clips[0]["hyps"]:
        print(f"error: need a '{BASELINE}' row in {a.reports[0]} and a row '{row}' in {a.reports[-1]}", file=sys.stderr)
        return 2
    print(f"| lang | clips | Whisper-base CER | Whisper ≤ {a.easy:.0%} | {row}: all | on those | on the rest |")
    print("|---|---|---|---|---|---|---|")
    for lang in sorted({c["lang"] for c in clips}):
        mine = [c for c in clips if c["lang"] == lang and c["audio"] in whisper]
        if not mine:
            continue
        w = [whisper[c["audio"]] for c in mine]
        easy = [error_rate([x["text"]], [x["hyps"][BASELINE]], lang, "cer")[0] <= a.easy for x in w]

        def cer(sel, row=row, lang=lang):
            rate = error_rate([c["text"] for c in sel], [c["hyps"][row] for c in sel], lang, "cer")[0]
            return "–" if math.isnan(rate) else f"{rate:.3f}"

        wcer = error_rate([x["text"] for x in w], [x["hyps"][BASELINE] for x in w], lang, "cer")[0]
        print(
            f"| {lang} | {len(mine)} | {wcer:.3f} | {sum(easy)} ({sum(easy) / len(mine):.0%}) | {cer(mine)} | "
            f"{cer([c for c, e in zip(mine, easy) if e])} | {cer([c for c, e in zip(mine, easy) if not e])} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
