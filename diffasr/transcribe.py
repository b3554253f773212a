"""From audio to text: voice activity, chunks, batching, the two decoders, timestamps, language id, CLI.

`transcribe(model, audio, ...)` is the one entry point (also `model.transcribe`). For each input it
finds speech with the VAD (vad.py: silence or noise gives empty text, no segments), cuts audio over
30 s into chunks at pauses (each chunk is a segment), identifies the language when none is given,
decodes the chunks of all inputs in batches (encoder, projector, greedy CTC or the diffusion
sampler), times each word by CTC forced alignment of the final tokens over the audio tokens
(align.py) and returns `Transcription` objects. Files longer than STREAM_SECONDS are decoded block
by block, twice, and never held whole in memory.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .align import Word, ctc_align, words_from_tokens
from .audio import MAX_SAMPLES, SAMPLE_RATE, load_audio
from .diffusion import (SAMPLERS, DecodeOptions, canvas_length, canvas_scores, clean_canvas, corrupt, random_canvas, sample,
                        with_defaults)
from .encoder import FRAMES_PER_SECOND
from .errors import ConfigError
from .tokenizer import LANGUAGES, SCRIPTS
from .vad import Chunk, file_duration, fixed_chunks, read_chunks, scan_file, speech_chunks

STREAM_SECONDS = 600.0  # files longer than this are streamed (two block-wise passes) instead of loaded
LANGID_METHOD = "whisper"  # "whisper" | "model": see identify_language; benchmarks/langid.py compares them


@dataclass
class Segment:
    start: float  # seconds
    end: float
    text: str


@dataclass
class Transcription:
    text: str
    language: str | None
    tokens: list[int] = field(default_factory=list)  # transcript token ids
    confidences: list[float] = field(default_factory=list)  # one per token, in [0, 1]
    token_strings: list[str] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)  # one per speech chunk, absolute times
    duration: float = 0.0  # seconds of audio
    decoder: str = "diffusion"
    steps_run: int = 0
    timings: dict = field(default_factory=dict)  # seconds per stage, for this batch
    words: list[Word] = field(default_factory=list)  # CTC-aligned, absolute times, inside their segment
    language_probability: float | None = None  # when the language was identified, not given
    speech: dict = field(default_factory=dict)  # per window: speech_evidence (CTC tokens/s, confidence)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _ctc_runs(best: list[int], blank: int) -> list[tuple[int, int, int]]:
    """(token, first frame, end frame) of each token the greedy CTC path `best` emits: repeats
    collapsed, blanks dropped."""
    runs, prev = [], None
    for f, t in enumerate(best):
        if t != blank:
            if t != prev:
                runs.append((t, f, f + 1))
            else:
                runs[-1] = (t, runs[-1][1], f + 1)
        prev = t
    return runs


def ctc_greedy(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[int]]:
    """Greedy CTC: argmax per audio token, collapse repeats, drop blanks. logits (B, T, V)."""
    return [[t for t, _, _ in _ctc_runs(row[:n], blank)] for row, n in zip(logits.argmax(-1).tolist(), lengths.tolist())]


def ctc_sample(logits: torch.Tensor, lengths: torch.Tensor, blank: int, gen: torch.Generator, k: int = 8) -> list[list[int]]:
    """One CTC path per row sampled from the posteriors (each frame among its `k` likeliest tokens,
    Gumbel-max), collapsed like greedy CTC. logits (B, T, V) -> token lists."""
    vals, idx = logits.float().topk(k, dim=-1)
    u = torch.rand(vals.shape, generator=gen).clamp_(1e-9, 1 - 1e-9).to(vals.device)
    path = idx.gather(-1, (vals.log_softmax(-1) - (-u.log()).log()).argmax(-1, keepdim=True))[..., 0]
    return [[t for t, _, _ in _ctc_runs(row[:m], blank)] for row, m in zip(path.tolist(), lengths.tolist())]


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) on Python floats (numpy's ufunc costs ~1 µs a call; the beam makes many)."""
    if a < b:
        a, b = b, a
    return a if b == -math.inf else a + math.log1p(math.exp(b - a))


def ctc_prefix_beam(log_probs: np.ndarray, blank: int, beam: int = 16, topk: int = 20, prune: float = -12.0,
                    lm=None, lm_weight: float = 0.0, length_bonus: float = 0.0) -> list[tuple[list[int], float]]:
    """CTC prefix beam search over log-probabilities (T, V): up to `beam` (token ids, score) pairs, best
    first. Per frame only the `topk` likeliest tokens above `prune` extend a prefix. Without `lm` the
    score is log P(ids | audio). With an n-gram `lm` (lm.NgramLM) it is shallow fusion: log P(ids | audio)
    + lm_weight × log P_lm(ids, EOS) + length_bonus × len(ids), and the beam is pruned by that score."""
    lse, ninf = _logaddexp, -math.inf
    beams = {(): (0.0, ninf)}  # prefix -> (log p ending in blank, log p ending in a token)
    extra = {(): 0.0}  # prefix -> its LM and length terms
    for row in log_probs:
        top = np.argpartition(-row, topk)[:topk] if topk < len(row) else range(len(row))
        cand = [(int(c), float(row[c])) for c in top if c != blank and row[c] > prune]
        p_blank = float(row[blank])
        nxt: dict = {}
        for pre, (pb, pnb) in beams.items():
            total, last = lse(pb, pnb), (pre[-1] if pre else None)
            b_, nb = nxt.get(pre, (ninf, ninf))
            nxt[pre] = (lse(b_, total + p_blank), nb)
            ctx = lm.context(pre) if lm is not None else None
            for c, p in cand:
                ext = pre + (c,)
                if ext not in extra:
                    extra[ext] = extra[pre] + length_bonus + (lm_weight * lm.logprob(ctx, c) if lm is not None else 0.0)
                b_, nb = nxt.get(ext, (ninf, ninf))
                # a repeated token is a new token only after a blank; without one it extends `pre`
                nxt[ext] = (b_, lse(nb, (pb if c == last else total) + p))
                if c == last:
                    b_, nb = nxt[pre]
                    nxt[pre] = (b_, lse(nb, pnb + p))
        beams = dict(sorted(nxt.items(), key=lambda kv: -(lse(*kv[1]) + extra[kv[0]]))[:beam])
        extra = {pre: extra[pre] for pre in beams}
    end = (lambda pre: lm_weight * lm.logprob(lm.context(pre), lm.eos)) if lm is not None else (lambda pre: 0.0)
    return sorted(((list(p), lse(*v) + extra[p] + end(p)) for p, v in beams.items()), key=lambda x: -x[1])


def ctc_token_confidence(logits: torch.Tensor, lengths: torch.Tensor, blank: int) -> list[list[float]]:
    """Per token of `ctc_greedy`'s output, the highest probability it had on the frames that emitted it."""
    probs, best = logits.float().softmax(-1).max(-1)
    return [[max(p_row[a:b]) for _, a, b in _ctc_runs(row[:n], blank)]
            for p_row, row, n in zip(probs.tolist(), best.tolist(), lengths.tolist())]


# No-speech guard for audio decoded without the VAD. Its evidence is the CTC head read with no
# language in the prompt (with the decoding language the head hallucinates more readily: silence then
# emits 1.7 tokens/s): greedy CTC tokens per second, and the mean winning probability over frames
# whose winner is not blank. A window is speech when, for some (rate, confidence) of SPEECH_EVIDENCE,
# it emits at least that many tokens per second at least that confidently. Digital silence (RMS
# under SILENCE_RMS) never is. Set on 150 real_train clips + real_dev (slowest speech over 1 s:
# Chinese, 1.11 tokens/s at 0.68, 1.47 at 0.38) against 125 white/brown noises of 4 levels, silence,
# hum, tones, a melody and tone+click mixes (noise ≤ 1.1 tokens/s, ≤ 0.34 confident at ≥ 0.8 tokens/s;
# the music-like mix 1.63 at 0.28): docs/results/no_speech_guard.txt. A 30-s window holding only
# a few words among long pauses falls under 0.8 tokens/s and is dropped: use the VAD for such audio.
SPEECH_EVIDENCE = ((2.0, 0.0), (1.4, 0.35), (0.8, 0.45))  # (CTC tokens per second, mean confidence)
SILENCE_RMS = 1e-4  # -80 dBFS
# Under a second (12 audio tokens) the counts say too little: real_dev's 0.3-s "four" gets no CTC
# token at all yet decodes right, so shorter windows are judged only by SILENCE_RMS.
MIN_JUDGED_SECONDS = 1.0


def speech_evidence(ctc: torch.Tensor, lengths: torch.Tensor, durations: list[float], blank: int) -> list[dict]:
    """Per row of CTC logits (B, T', V): `rate`, greedy CTC tokens per second of audio (durations in
    seconds), and `confidence`, the mean top probability over frames whose top token is not blank."""
    probs = ctc.float().softmax(-1)
    top, arg = probs.max(-1)
    out = []
    for i, (n, d) in enumerate(zip(lengths.tolist(), durations)):
        emitted = arg[i, :n] != blank
        runs = _ctc_runs(arg[i, :n].tolist(), blank)
        conf = float(top[i, :n][emitted].mean()) if bool(emitted.any()) else 0.0
        out.append({"rate": round(len(runs) / max(d, 1e-3), 3), "confidence": round(conf, 4), "seconds": round(d, 3)})
    return out


def is_speech(evidence: dict) -> bool:
    """The no-speech guard's verdict on one window's `speech_evidence` (+ its `rms`)."""
    rate, conf = evidence["rate"], evidence["confidence"]
    if evidence.get("rms", 1.0) < SILENCE_RMS:
        return False
    if evidence.get("seconds", math.inf) < MIN_JUDGED_SECONDS:
        return True
    return any(rate >= min_rate and conf >= min_conf for min_rate, min_conf in SPEECH_EVIDENCE)


def _guard_evidence(model, audio_tokens, n_audio, durations: list[float]) -> list[dict]:
    """speech_evidence from the model's CTC head with no language in the prompt."""
    if model.config.ctc_from == "prompt":
        _, _, hidden = model.prefill(audio_tokens, n_audio, [None] * len(durations))
        logits = model.prompt_ctc_logits(hidden, n_audio)
    else:
        logits = model.ctc_logits(audio_tokens)
    return speech_evidence(logits, n_audio, durations, model.tokenizer.pad)


def _allowed_tokens(tok, languages: list, options: DecodeOptions, device) -> torch.Tensor | None:
    """(B, V) bool: the tokens each row may emit given its language (all for rows without one), or
    None when nothing is restricted. Without it, a weak acoustic model spells unclear Spanish with
    Devanagari pieces: every language shares one vocabulary, and the projector CTC head never sees
    the prompt (the prompt head does, but knowing the language is not the same as obeying it)."""
    if not options.restrict_script or not any(lang in SCRIPTS for lang in languages):
        return None
    every = torch.ones(tok.vocab_size, dtype=torch.bool)
    return torch.stack([tok.script_mask(lang) if lang in SCRIPTS else every for lang in languages]).to(device)


def _until_eos(ids: list[int], conf: list[float], tok) -> tuple[list[int], list[float]]:
    """Tokens before the first EOS, without pads/specials (the canvas ends in EOS then padding)."""
    keep_ids, keep_conf = [], []
    for i, c in zip(ids, conf):
        if i == tok.eos:
            break
        if i in (tok.pad, tok.bos, tok.sep, tok.audio):
            continue
        keep_ids.append(i)
        keep_conf.append(c)
    return keep_ids, keep_conf


def _align_words(model, ids: list[int], conf: list[float], log_probs: torch.Tensor, duration: float) -> list[Word]:
    """Words of one piece, times relative to its start. log_probs: CTC log-probabilities (T, V)."""
    if not ids:
        return []
    tok = model.tokenizer
    vocab = sorted(set(ids))  # align over the columns that matter: blank + the transcript's tokens
    cols = torch.tensor([tok.pad] + vocab, device=log_probs.device)
    col_of = {v: i + 1 for i, v in enumerate(vocab)}
    spans = ctc_align(log_probs[:, cols].float().cpu().numpy(), [col_of[i] for i in ids], blank=0)
    if spans is None:  # more tokens than audio tokens (CTC cannot place them): spread them evenly
        edges = np.linspace(0.0, duration, len(ids) + 1)
        times = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    else:
        spt = model.projector.factor / FRAMES_PER_SECOND  # seconds per audio token (0.08 at 4×)
        times = [(min(a * spt, duration), min((b + 1) * spt, duration)) for a, b in spans.tolist()]
    return words_from_tokens(tok, ids, tok.token_strings(ids), times, conf)


def _step_fn(model, cache, mask, allowed):
    """The sampler's view of the decoder: canvas (B, L) [+ self-conditioning logits] -> logits (B, L, V)
    over the prompt cache, tokens outside each row's script (`allowed` (B, V), or None) ruled out."""
    def step_fn(canvas, sc):
        logits = model.backbone.denoise(cache, mask, canvas, sc)
        return logits if allowed is None else logits.masked_fill(~allowed[:, None, :], -1e4)
    return step_fn


def ctc_nbest(model, ctc: torch.Tensor, n_audio: torch.Tensor, languages: list, options: DecodeOptions,
              k: int) -> list[list[tuple[list[int], float]]]:
    """Per row, CTC prefix beam search's `k` best (token ids, score) over logits (B, T', V), fused with
    the row language's n-gram when options.lm_weight > 0 and the model has one (model.ngrams)."""
    log_probs = ctc.float().log_softmax(-1).cpu().numpy()
    out = []
    for i, n in enumerate(n_audio.tolist()):
        lm = model.ngrams.get(languages[i]) if options.lm_weight > 0 else None
        fuse = dict(lm=lm, lm_weight=options.lm_weight, length_bonus=options.length_bonus) if lm is not None else {}
        out.append(ctc_prefix_beam(log_probs[i, :n], model.tokenizer.pad, beam=max(options.beam, k), **fuse)[:k])
    return out


def _rescore(model, audio_tokens, n_audio, ctc, languages: list, allowed, options: DecodeOptions, prefilled=None,
             chunk: int = 16) -> dict[int, tuple[list[int], list[float]]]:
    """The rescore sampler: per row, CTC prefix beam search (`ctc_nbest`, with the n-gram when asked)
    proposes `options.nbest` transcripts; the decoder scores every candidate canvas in one pass
    (`canvas_scores`, audio prompt, script mask), and the best beam score + rescore_weight × decoder
    log-likelihood wins. Candidates of all rows share batches of ≤ `chunk` canvases (each holds (L, V)
    float32 logits, 3.7 MB at L=192 and 5,000 tokens, and a prompt-cache copy: with 64, a batch of
    8 × 30 s peaked at 2.21 GB RSS, with 16 at 1.31 GB, same text, same time); each reads its
    row's prompt cache, copied from `prefilled` (the prefill the prompt CTC head ran) when given.
    Returns {row: (token ids, probability per token)}."""
    tok = model.tokenizer
    cands = []  # (row, ids, beam score)
    for i, beam in enumerate(ctc_nbest(model, ctc, n_audio, languages, options, options.nbest)):
        cands += [(i, ids[: model.config.canvas_length - 1], score) for ids, score in beam]
    L = canvas_length(max(len(c[1]) for c in cands), options, model.config.canvas_length)
    best: dict[int, tuple[float, list[int], list[float]]] = {}
    for b in range(0, len(cands), chunk):
        part = cands[b: b + chunk]
        rows = torch.tensor([c[0] for c in part], device=model.device)
        if prefilled is not None:
            cache, mask = copy.deepcopy(prefilled[0]), prefilled[1][rows]
            cache.reorder_cache(rows)  # row i's prompt cache, once per candidate of row i
        else:
            cache, mask, _ = model.prefill(audio_tokens[rows], n_audio[rows], [languages[c[0]] for c in part])
        step_fn = _step_fn(model, cache, mask, None if allowed is None else allowed[rows])
        canvas = clean_canvas([c[1] for c in part], L, tok.eos, tok.pad).to(model.device)
        lengths = torch.tensor([min(len(c[1]) + 1, L) for c in part], device=model.device)  # tokens + EOS
        dec, probs = canvas_scores(step_fn, canvas, lengths)
        for (i, ids, ctc_score), d, p in zip(part, dec.tolist(), probs.tolist()):
            total = ctc_score + options.rescore_weight * d
            if i not in best or total > best[i][0]:
                best[i] = (total, ids, p[: len(ids)])
    return {i: (ids, conf) for i, (_, ids, conf) in best.items()}


@torch.no_grad()
def decode_batch(model, audios: list[np.ndarray], options: DecodeOptions, languages: list,
                 word_timestamps: bool = True, speech_guard: bool = False) -> list[Transcription]:
    """Transcribe ≤ 30 s arrays as one batch (word times relative to each array's start).
    speech_guard: arrays the CTC head finds no speech in (`is_speech`) come back with empty text."""
    t0 = time.perf_counter()
    feats = model.encode(audios)
    times = {"encoder": time.perf_counter() - t0}
    results = decode_features(model, feats, [a.size / SAMPLE_RATE for a in audios], options, languages,
                              word_timestamps, times, speech_guard)
    if speech_guard:  # digital silence: no model evidence needed
        for r, a in zip(results, audios):
            r.speech["rms"] = round(float(np.sqrt(np.mean(np.square(a, dtype=np.float64)))), 6)
            if not is_speech(r.speech):
                r.text, r.tokens, r.confidences, r.token_strings, r.words = "", [], [], [], []
    return results


@torch.no_grad()
def decode_features(model, feats: list, durations: list[float], options: DecodeOptions, languages: list,
                    word_timestamps: bool = True, times: dict | None = None,
                    speech_guard: bool = False) -> list[Transcription]:
    """Decode frozen-encoder features (list of (frames_i, d)) as one batch: the part of
    `decode_batch` after the encoder, shared with evaluation on cached features during training."""
    tok = model.tokenizer
    times = {} if times is None else times
    t0 = time.perf_counter()
    audio_tokens, n_audio = model.project(feats)
    ctc, prefilled = model.ctc(audio_tokens, n_audio, languages)
    allowed = _allowed_tokens(tok, languages, options, ctc.device)
    if allowed is not None:  # a known language rules out the other scripts' tokens, in CTC and decoder alike
        ctc = ctc.masked_fill(~allowed[:, None, :], -1e4)
    times["projector_ctc"] = time.perf_counter() - t0
    evidence = _guard_evidence(model, audio_tokens, n_audio, durations) if speech_guard else [{} for _ in durations]
    if getattr(model, "denoiser", None) is not None and options.decoder == "diffusion":
        from .base_decoding import decode_rows

        results = decode_rows(model, feats, durations, options, languages, ctc, n_audio, word_timestamps, times)
        for r, ev in zip(results, evidence):
            r.speech = ev
            if speech_guard and not is_speech(ev):
                r.text, r.tokens, r.confidences, r.token_strings, r.words = "", [], [], [], []
        return results

    results = []
    if options.decoder == "diffusion" and options.sampler == "rescore":
        t0 = time.perf_counter()
        out_rows = _rescore(model, audio_tokens, n_audio, ctc, languages, allowed, options, prefilled)
        # one decoder pass; "denoise" includes the CTC beam search, "prefill" is the CTC head's, reused
        times.update(prefill=0.0, denoise=time.perf_counter() - t0, steps_run=1)
        for i, (d, lang) in enumerate(zip(durations, languages)):
            ids, conf = out_rows[i]
            results.append(Transcription(text=tok.decode(ids), language=lang, tokens=ids, confidences=conf,
                                         token_strings=tok.token_strings(ids), duration=d, decoder="diffusion", steps_run=1))
    elif options.decoder == "ctc":
        if options.lm_weight > 0:  # beam search with the n-gram instead of greedy
            ctc_ids = [beam[0][0] if beam else [] for beam in ctc_nbest(model, ctc, n_audio, languages, options, 1)]
        else:
            ctc_ids = ctc_greedy(ctc, n_audio, blank=tok.pad)
        for d, ids, lang in zip(durations, ctc_ids, languages):
            results.append(Transcription(text=tok.decode(ids), language=lang, tokens=ids, confidences=[1.0] * len(ids),
                                         token_strings=tok.token_strings(ids), duration=d, decoder="ctc"))
    else:
        # Rows are grouped by canvas length and each row draws its noise from its own generator
        # seeded with options.seed, so a clip's transcript does not depend on its batch-mates.
        ctc_ids = ctc_greedy(ctc, n_audio, blank=tok.pad)  # the canvas seed, and its length estimate
        lengths = [canvas_length(len(ids), options, model.config.canvas_length) for ids in ctc_ids]
        times["prefill"] = times["denoise"] = 0.0
        out_rows: dict[int, tuple[list[int], list[float], int]] = {}
        for L in sorted(set(lengths)):
            rows = [i for i, l in enumerate(lengths) if l == L]
            t0 = time.perf_counter()
            if prefilled is not None and len(rows) == len(feats):  # the CTC head's prefill serves every row
                cache, mask, _ = prefilled
            else:
                cache, mask, _ = model.prefill(audio_tokens[rows], n_audio[rows], [languages[i] for i in rows])
            times["prefill"] += time.perf_counter() - t0
            t0 = time.perf_counter()
            gens = [torch.Generator().manual_seed(options.seed) for _ in rows]
            free = None
            if options.init == "ctc":  # seed the canvas with the CTC transcript, EOS, then padding
                init = clean_canvas([ctc_ids[i] for i in rows], L, tok.eos, tok.pad)
                if options.remask > 0:  # Mask-CTC: tokens CTC was unsure of become noise for the decoder to fill
                    confs = ctc_token_confidence(ctc[rows], n_audio[rows], tok.pad)
                    free = torch.zeros_like(init, dtype=torch.bool)
                    for j, c in enumerate(confs):
                        c = torch.tensor(c[: L], dtype=torch.float32)
                        free[j, : len(c)] = c < options.remask
                    init = torch.where(free, random_canvas(len(rows), L, tok.vocab_size, gens), init)
            else:
                init = random_canvas(len(rows), L, tok.vocab_size, gens)

            step_fn = _step_fn(model, cache, mask, None if allowed is None else allowed[rows])
            out = sample(step_fn, init.to(model.device), tok.vocab_size, options,
                         torch.Generator(model.device).manual_seed(options.seed), row_generators=gens,
                         free=None if free is None else free.to(model.device))
            times["denoise"] += time.perf_counter() - t0
            for j, i in enumerate(rows):
                ids, conf = _until_eos(out.tokens[j].tolist(), out.confidence[j].tolist(), tok)
                out_rows[i] = (ids, conf, out.steps_run)
        times["steps_run"] = max(r[2] for r in out_rows.values())
        for i, (d, lang) in enumerate(zip(durations, languages)):
            ids, conf, steps_run = out_rows[i]
            results.append(Transcription(text=tok.decode(ids), language=lang, tokens=ids, confidences=conf,
                                         token_strings=tok.token_strings(ids), duration=d,
                                         decoder="diffusion", steps_run=steps_run))
    for r, ev in zip(results, evidence):
        r.speech = ev
        if speech_guard and not is_speech(ev):  # no VAD upstream: the guard stands in for it
            r.text, r.tokens, r.confidences, r.token_strings = "", [], [], []
    if word_timestamps:
        t0 = time.perf_counter()
        log_probs = ctc.float().log_softmax(-1)
        for r, lp, n in zip(results, log_probs, n_audio.tolist()):
            r.words = _align_words(model, r.tokens, r.confidences, lp[:n], r.duration)
        times["align"] = time.perf_counter() - t0
    for r in results:
        r.timings = dict(times)
    return results


# ---------------------------------------------------------------------- language identification


def identify_language(model, audio: np.ndarray, method: str = LANGID_METHOD) -> list[tuple[str, float]]:
    """Languages of the model with probabilities, best first, from (the first 30 s of) 16 kHz speech.

    "whisper": CTranslate2 Whisper's language head over the frozen encoder (input zero-padded to
    ≥ 10 s; "whisper30" pads to the 30-s window Whisper was trained on), restricted to the
    model's languages (falls back to "model" when the encoder has no such head, e.g. the hf backend).
    "model": the decoder's own language tokens: the likelihood of the CTC transcript under each
    `<|lang|>` prompt (see `_model_language_scores`).
    """
    audio = audio[:MAX_SAMPLES]
    languages = tuple(model.config.languages)
    if method not in ("whisper", "whisper30", "model"):
        raise ConfigError(f"language id method must be 'whisper', 'whisper30' or 'model', not {method!r}")
    if method != "model" and hasattr(model.encoder, "detect_language"):
        return model.encoder.detect_language(audio, languages, min_seconds=30.0 if method == "whisper30" else 10.0)
    return _model_language_scores(model, audio, languages)


@torch.no_grad()
def _model_language_scores(model, audio: np.ndarray, languages: tuple[str, ...],
                           rates: tuple[float, ...] = (0.3, 0.7)) -> list[tuple[str, float]]:
    """Score each `<|lang|>` prompt by how well the denoiser restores the CTC transcript (+ EOS)
    from a corrupted copy (fixed seed, a few corruption rates): a one-step, Monte Carlo estimate of
    log p(transcript | audio, lang). The transcript is shared: CTC with no language given."""
    tok = model.tokenizer
    audio_tokens, n_audio = model.project(model.encode([audio]))
    ids = ctc_greedy(model.ctc(audio_tokens, n_audio, [None])[0], n_audio, blank=tok.pad)[0]
    L = canvas_length(len(ids), DecodeOptions(), model.config.canvas_length)
    clean = clean_canvas([ids], L, tok.eos, tok.pad)
    g = torch.Generator().manual_seed(0)
    noisy = torch.cat([corrupt(clean, torch.tensor([r]), tok.vocab_size, g) for r in rates])  # (R, L)
    K, R = len(languages), len(rates)
    cache, mask, _ = model.prefill(audio_tokens.repeat(K * R, 1, 1), n_audio.repeat(K * R),
                                   [lang for lang in languages for _ in rates])
    logits = model.backbone.denoise(cache, mask, noisy.repeat(K, 1).to(model.device), None)  # (K·R, L, V)
    target = clean.to(model.device).expand(K * R, -1)[..., None]
    score = logits.float().log_softmax(-1).gather(-1, target)[..., 0].sum(-1).view(K, R).mean(-1)
    probs = score.softmax(0).tolist()
    return sorted(zip(languages, probs), key=lambda x: -x[1])


# ---------------------------------------------------------------------- long-form orchestration


@dataclass
class _Piece:
    job: "_Job"
    span: Chunk  # samples decoded (word times are relative to its start)
    segment: Chunk  # the segment it reports (the speech inside span, or span itself)
    audio: np.ndarray


class _Job:
    """One input on its way through `transcribe`: plan its chunks, identify its language, collect parts."""

    def __init__(self, model, source, options: DecodeOptions, vad: bool):
        self.model, self.source, self.options, self.vad = model, source, options, vad
        self.language, self.language_probability = options.language, None
        self.n_samples = 0
        self.parts: list[tuple[_Piece, Transcription]] = []
        self.timings: dict = {}

    def pieces(self):
        """Yields _Piece objects in order; audio of a long file is read as the pieces are consumed."""
        t0 = time.perf_counter()
        if _is_long_file(self.source):
            chunks, self.n_samples = scan_file(self.source, use_vad=self.vad)
            plan = [(c, c) for c in chunks]
            audios = read_chunks(self.source, chunks)
        else:
            audio = load_audio(self.source)
            self.n_samples = audio.size
            self.timings["audio_decode"] = time.perf_counter() - t0
            chunks = speech_chunks(audio) if self.vad else fixed_chunks(audio.size)
            if self.vad and chunks and audio.size <= MAX_SAMPLES:  # fits one window: decode it whole
                plan = [(Chunk(0, audio.size), Chunk(chunks[0].start, chunks[-1].end))]
            else:
                plan = [(c, c) for c in chunks]
            audios = (audio[c.start: c.end] for c, _ in plan)
        self.timings["vad"] = time.perf_counter() - t0 - self.timings.get("audio_decode", 0.0)
        items = zip(plan, audios)
        if self.language is None and plan:
            head, total = [], 0  # the first ≤ 30 s of speech (chunks are read, not skipped)
            for item in items:
                head.append(item)
                total += item[1].size
                if total >= MAX_SAMPLES:
                    break
            t0 = time.perf_counter()
            ranked = identify_language(self.model, np.concatenate([a for _, a in head]))
            self.language, self.language_probability = ranked[0][0], round(float(ranked[0][1]), 4)
            self.timings["language_id"] = time.perf_counter() - t0
            items = itertools.chain(head, items)
        for (span, segment), a in items:
            yield _Piece(self, span, segment, a)

    def result(self) -> Transcription:
        parts = [(p, t) for p, t in self.parts if t.text]
        segments, words = [], []
        for p, t in parts:
            lo, hi = round(p.segment.start_s, 3), round(p.segment.end_s, 3)
            segments.append(Segment(start=lo, end=hi, text=t.text))
            for w in t.words:  # absolute, clamped into the segment (monotonic within and across)
                s = min(max(w.start + p.span.start_s, lo), hi)
                e = min(max(w.end + p.span.start_s, s), hi)
                words.append(Word(round(s, 3), round(e, 3), w.text, round(w.confidence, 4)))
        sep = "" if self.language == "zh" else " "
        return Transcription(
            text=sep.join(t.text for _, t in parts).strip(), language=self.language,
            tokens=[i for _, t in parts for i in t.tokens], confidences=[c for _, t in parts for c in t.confidences],
            token_strings=[s for _, t in parts for s in t.token_strings], segments=segments,
            duration=self.n_samples / SAMPLE_RATE, decoder=self.options.decoder,
            steps_run=max((t.steps_run for _, t in self.parts), default=0), timings=self.timings,
            words=words, language_probability=self.language_probability,
        )


def _is_long_file(source) -> bool:
    if not isinstance(source, (str, Path)) or not Path(source).is_file():
        return False
    seconds = file_duration(source)
    return seconds is not None and seconds > STREAM_SECONDS


def transcribe(model, audio, steps: int = 8, language: str | None = None, batch_size: int = 8,
               options: DecodeOptions | None = None, *, vad: bool = True, word_timestamps: bool = True, **kwargs):
    """Transcribe one input (-> Transcription) or a list of inputs (-> list, chunks decoded in batches).

    audio: a path, bytes, a file object, a 16 kHz array, (array, sample_rate), or a list of these.
    steps, language and any DecodeOptions field (decoder="ctc", sampler=..., seed=...) may be given
    as keywords; `options` replaces them all. language None or "auto": identified per input.
    vad=False skips voice activity detection (fixed 30-s windows, no silence removal);
    word_timestamps=False skips the alignment (`words` stays empty).
    """
    single = not isinstance(audio, list)
    items = [audio] if single else list(audio)
    if options is None:
        # The checkpoint may name better defaults (e.g. init="ctc"); explicit keywords win.
        given = {"steps": steps, "language": language, **kwargs}
        options = DecodeOptions(**with_defaults(model.config.decode_defaults, given))
    if options.language == "auto":
        options = dataclasses.replace(options, language=None)
    if options.language is not None and options.language not in model.config.languages:
        raise ConfigError(f"language {options.language!r} not supported (choose from {', '.join(model.config.languages)})")
    if batch_size < 1:
        raise ConfigError("batch_size must be ≥ 1")
    jobs = [_Job(model, x, options, vad) for x in items]
    pieces = (p for job in jobs for p in job.pieces())  # lazy: long files stream through
    while batch := list(itertools.islice(pieces, batch_size)):
        outs = decode_batch(model, [p.audio for p in batch], options, [p.job.language for p in batch], word_timestamps,
                            speech_guard=not vad)
        for p, o in zip(batch, outs):
            p.job.parts.append((p, o))
        for job in {id(p.job): p.job for p in batch}.values():  # batch timings once per input in it
            for k, v in outs[0].timings.items():
                job.timings[k] = max(job.timings.get(k, 0), v) if k == "steps_run" else job.timings.get(k, 0.0) + v
    results = [job.result() for job in jobs]
    return results[0] if single else results


# ---------------------------------------------------------------------- CLI: diffasr transcribe


# Decoding flags shared by `diffasr transcribe` and `diffasr eval`: None means the model's decode_defaults
# (config.json), else DecodeOptions' own default.
DECODING_FLAGS = ("sampler", "init", "edit_threshold", "remask", "nbest", "rescore_weight", "beam", "lm_weight",
                  "length_bonus", "seed")


def add_decoding_arguments(p) -> None:
    """The DecodeOptions flags (DECODING_FLAGS) on an argparse parser."""
    p.add_argument("--sampler", default=None, choices=SAMPLERS,
                   help="sampler (default: the model's, else refine; edit: confident edits of a CTC-seeded canvas; "
                        "rescore: the decoder picks among CTC's n-best)")
    p.add_argument("--init", default=None, choices=["noise", "ctc"], help="canvas start: noise or the CTC transcript (default: the model's, else noise)")
    p.add_argument("--edit-threshold", type=float, default=None,
                   help="refine: revise a committed token; edit: replace a seed token, when this sure (default: the model's, else 0.95)")
    p.add_argument("--remask", type=float, default=None,
                   help="edit sampler: CTC tokens below this probability start as noise for the decoder (Mask-CTC; default: the model's, else 0)")
    p.add_argument("--nbest", type=int, default=None, help="rescore sampler: CTC hypotheses scored (default: the model's, else 8)")
    p.add_argument("--rescore-weight", type=float, default=None,
                   help="rescore sampler: weight of the decoder's log-likelihood against CTC's (default: the model's, else 2)")
    p.add_argument("--beam", type=int, default=None, help="CTC prefix beam width (default: the model's, else 16)")
    p.add_argument("--lm-weight", type=float, default=None,
                   help="CTC beam search: weight of the language's n-gram; 0: none, and --decoder ctc is greedy (default: the model's, else 0)")
    p.add_argument("--length-bonus", type=float, default=None, help="with an n-gram: bonus per token (default: the model's, else 0)")
    p.add_argument("--seed", type=int, default=0, help="sampler seed (default 0)")


def decoding_overrides(args) -> dict:
    """The DECODING_FLAGS the user gave (not None), to merge over the model's decode_defaults."""
    return {k: v for k in DECODING_FLAGS if (v := getattr(args, k)) is not None}


def add_arguments(p) -> None:
    from .writers import WRITERS

    p.add_argument("files", nargs="+", metavar="FILE", help="audio files (wav, flac, ogg, mp3, ...)")
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-small)")
    p.add_argument("--steps", type=int, default=8, help="denoising steps (default 8)")
    p.add_argument("--language", default=None, choices=("auto",) + LANGUAGES, help="spoken language (default: auto, identified)")
    p.add_argument("--decoder", default="diffusion", choices=["diffusion", "ctc"], help="decoder (default diffusion)")
    add_decoding_arguments(p)
    p.add_argument("--batch-size", type=int, default=8, help="chunks decoded together (default 8)")
    p.add_argument("--format", default="txt", choices=[*WRITERS, "all"], help="output format (default txt); all: every format")
    p.add_argument("--output-dir", default=None, help="write <dir>/<stem>.<format> per file instead of stdout")
    p.add_argument("--no-vad", action="store_true", help="no voice activity detection: fixed 30-s windows, silence kept")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args) -> int:
    import sys

    from tqdm import tqdm

    from . import load
    from .errors import AudioError
    from .writers import WRITERS

    formats = list(WRITERS) if args.format == "all" else [args.format]
    if len(formats) > 1 and not args.output_dir:
        raise ConfigError("--format all writes several files: give --output-dir")
    model = load(args.model, device=args.device)
    given = {"steps": args.steps, "language": args.language, "decoder": args.decoder, **decoding_overrides(args)}
    options = DecodeOptions(**with_defaults(model.config.decode_defaults, {k: v for k, v in given.items() if v is not None}))
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    bar = tqdm(args.files, unit="file", disable=len(args.files) < 2 or not sys.stderr.isatty())
    for f in bar:
        try:
            r = transcribe(model, f, options=options, batch_size=args.batch_size, vad=not args.no_vad)
        except AudioError as e:
            message = str(e) if str(e).startswith(str(f)) else f"{f}: {e}"  # which file, when there are several
            if len(args.files) == 1:
                raise AudioError(message) from None
            print(f"diffasr transcribe: error: {message}", file=sys.stderr)
            failed += 1
            continue
        for fmt in formats:
            text = WRITERS[fmt](r)
            if out_dir:
                dest = out_dir / f"{Path(f).stem}.{fmt}"
                tmp = dest.with_name(dest.name + ".tmp")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(dest)  # atomic: a reader never sees half a file
            else:
                sys.stdout.write(f"{f}: {text}" if fmt == "txt" and len(args.files) > 1 else text)
                sys.stdout.flush()
    return 1 if failed else 0
