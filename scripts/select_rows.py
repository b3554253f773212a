"""Rows of a manifest in some languages, every n-th of them: a training manifest made from another.

    python scripts/select_rows.py ../shared/data/real_train/manifest.jsonl --langs hi \
        --out data/manifests/real_train_hi.jsonl
    python scripts/select_rows.py ../shared/data/real_train/manifest.jsonl --langs en,de,es \
        --every zh=2 --out data/manifests/real_train_teach.jsonl

Audio paths become absolute (the new manifest lives elsewhere); the file is written atomically.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("manifest")
    ap.add_argument("--langs", required=True, help="comma-separated: keep every row of these")
    ap.add_argument("--every", action="append", default=[], help="LANG=N: also keep every N-th row of LANG")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    keep = set(args.langs.split(","))
    every = {k: int(v) for k, v in (e.split("=") for e in args.every)}
    src = Path(args.manifest).resolve()
    seen: dict[str, int] = {}
    rows = []
    for line in src.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        lang = r["lang"]
        seen[lang] = seen.get(lang, -1) + 1
        if lang in keep or (lang in every and seen[lang] % every[lang] == 0):
            rows.append({**r, "audio": str((src.parent / r["audio"]).resolve())})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    os.replace(tmp, out)
    print(f"{out}: {len(rows)} rows")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
