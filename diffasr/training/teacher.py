"""Teacher labels: what Whisper-base as released writes for a clip, cached for distillation.

    python -m diffasr.training.teacher --manifest ../shared/data/real_train/manifest.jsonl \
        --langs en,de,es,fr,zh --out data/teacher/real_train

The teacher is Whisper-base as released over its 30-s padded window: CTranslate2 on the shipped
weights (int8, what faster-whisper runs), greedy, the language given, without timestamps (the
mode diffasr's decoder writes in; faster-whisper's default decodes with timestamps, which changes
a few tokens: "2點" for "二點"). The window is encoded once and serves both the greedy transcript
and the top-k below. It needs no human transcript, so any audio becomes training data. Per clip it writes `<key>.npz` beside a
manifest:

    ids    (T,)    int32    the teacher's text tokens (Whisper ids; no specials)
    top    (T, K)  int32    the K most likely next tokens of Whisper-base's released decoder, run in
    logp   (T, K)  float16  torch over the 30-s padded window and teacher-forced on `ids`, at each of
                            the T positions, with their log-probabilities (over the whole vocabulary)

`manifest.jsonl` rows are {audio, lang, text (the teacher's), reference (the manifest's text or
null), teacher (the npz)}: a train_base manifest. `report.json` gives, per language, how often the
teacher and the reference disagree (WER; CER for zh/hi) where a reference exists. Resumable: a clip
whose npz exists is not labelled again (atomic writes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..audio import load_audio
from ..metrics import error_rate
from ..models.encoder import CT2WhisperEncoder, EncoderSpec, whisper_base_dir
from ..models.whisper_decoder import WhisperDecoder, WhisperTokens
from ..pipeline.manifest import read_manifest

TOP_K = 8


def clip_key(audio: str) -> str:
    return hashlib.sha1(str(audio).encode()).hexdigest()[:16]


def teacher_greedy(enc: CT2WhisperEncoder, tokens: WhisperTokens, window: np.ndarray, lang: str) -> list[int]:
    """CTranslate2's greedy transcript (text ids) of one padded window (1500, D), language given:
    faster-whisper's suppression (blank at the start, the config's suppress ids), no timestamps."""
    import ctranslate2

    feats = ctranslate2.StorageView.from_array(np.ascontiguousarray(window[None], np.float32))
    res = enc.model.generate(
        feats, [tokens.prompt(lang)], beam_size=1, suppress_blank=True, suppress_tokens=[-1], max_length=220
    )
    return [i for i in res[0].sequences_ids[0] if i < tokens.n_text]


@torch.no_grad()
def teacher_topk(
    decoder: WhisperDecoder, tokens: WhisperTokens, window: np.ndarray, lang: str, ids: list[int], k: int = TOP_K
) -> tuple[np.ndarray, np.ndarray]:
    """The released decoder's K best next tokens at each text position, teacher-forced on `ids`
    (T,) over the padded window (1500, D): (top (T, K) int32, logp (T, K) float16). Position t is
    the distribution of token t given the prompt and ids[:t] (the last prompt token predicts ids[0])."""
    prompt = tokens.prompt(lang)
    seq = torch.tensor([prompt + ids])
    kv = decoder.cross_kv(torch.from_numpy(np.asarray(window, np.float32))[None])
    mask = torch.ones(seq.shape[1], seq.shape[1], dtype=torch.bool).tril()
    h = decoder(seq, kv, mask)[0, len(prompt) - 1 : len(prompt) - 1 + len(ids)]
    logits = decoder.logits(h)
    logits[:, tokens.n_text + 1 :] = -torch.inf  # text tokens and end-of-text only, as in decoding
    lp = logits.log_softmax(-1)
    v, i = lp.topk(k, -1)
    return i.numpy().astype(np.int32), v.numpy().astype(np.float16)


def label(rows, out: Path, threads: int = 2, k: int = TOP_K, progress: bool = True) -> list[dict]:
    """Teacher-label manifest rows (Utterance), skipping those already labelled; returns manifest rows."""
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    d = whisper_base_dir()
    enc = dec = None
    tokens = WhisperTokens(d, repair=True)
    done = []
    for u in tqdm(rows, desc="teacher", mininterval=10, disable=not progress):
        audio = str(Path(u.audio).resolve())
        p = out / f"{clip_key(audio)}.npz"
        if not p.is_file():
            if enc is None:
                torch.set_num_threads(threads)
                enc = CT2WhisperEncoder(EncoderSpec(), threads=threads)
                dec = WhisperDecoder.from_ct2(d)
            window = enc.encode_window([load_audio(audio)])[0]
            ids = teacher_greedy(enc, tokens, window, u.lang)
            text = tokens.decode(ids)
            top, logp = teacher_topk(dec, tokens, window, u.lang, ids + [tokens.eot], k)
            tmp = p.with_suffix(".tmp.npz")
            np.savez(tmp, ids=np.asarray(ids, np.int32), top=top, logp=logp, text=np.asarray(text))
            os.replace(tmp, p)
        text = str(np.load(p)["text"])
        done.append(
            {
                "audio": audio,
                "lang": u.lang,
                "text": text,
                "duration_s": u.duration,
                "reference": u.text or None,
                "teacher": str(p),
            }
        )
    return done


def disagreement(rows: list[dict]) -> dict:
    """Per language: clips with a reference, and the teacher's error rate against it."""
    out = {}
    for lang in sorted({r["lang"] for r in rows}):
        have = [r for r in rows if r["lang"] == lang and r["reference"]]
        if have:
            er, metric = error_rate([r["reference"] for r in have], [r["text"] for r in have], lang)
            out[lang] = {"clips": len(have), metric: round(er, 4)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifest", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--langs", default="en,de,es,fr,zh", help="label only these languages")
    ap.add_argument("--max-seconds", type=float, default=29.0, help="longer clips are skipped (one window)")
    ap.add_argument("--topk", type=int, default=TOP_K)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    langs = {x.strip() for x in args.langs.split(",") if x.strip()}
    rows = [
        u
        for m in args.manifest
        for u in read_manifest(m)
        if u.lang in langs and not (u.duration and u.duration > args.max_seconds)
    ]
    out = Path(args.out)
    labelled = label(rows, out, args.threads, args.topk)
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in labelled), encoding="utf-8")
    tmp.replace(out / "manifest.jsonl")
    report = disagreement(labelled)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
