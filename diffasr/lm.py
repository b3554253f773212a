"""Token n-gram language models for CTC beam search (shallow fusion).

An interpolated Kneser-Ney n-gram over the model's own token ids, one per language, trained on the
training split of the sentence files (`scripts/build_lm.py`) and shipped beside the checkpoint as
`lm/<lang>.npz`. The CTC prefix beam search (`transcribe.ctc_prefix_beam`) adds
`weight × log P(token | previous tokens)` to every extension, so spellings the training text never
had ("▁coun y") lose to words it had ("▁country") when the audio is ambiguous.

    P(w | h) = max(c(h w) - D, 0) / c(h) + b(h) · P(w | h[1:]),   b(h) = 1 - Σ_w max(c(h w) - D, 0) / c(h)

with c the raw count at the highest order and the continuation count (how many different tokens
precede h w) below it, one discount D = n1 / (n1 + 2 n2) per order, and a uniform distribution over
the vocabulary under the unigram. Without pruning b(h) = D · types(h) / c(h); with it, b(h) also takes
the pruned n-grams' mass, so every P(· | h) still sums to 1. Contexts start with `order - 1` copies of a sentence-start id
(`vocab_size`, not a real token); sentences end with the tokenizer's EOS.
"""

from __future__ import annotations

import io
import math
import os
import tempfile
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import ConfigError


class NgramLM:
    """An interpolated Kneser-Ney token n-gram. `logprob(context, token)` is the natural log."""

    def __init__(self, order: int, vocab_size: int, eos: int, tables: list[dict], discounts: list[float]):
        # tables[n]: {context (n ids): (count c(h), backoff weight b(h), {token: count})}
        self.order, self.vocab_size, self.eos = order, vocab_size, eos
        self.bos = vocab_size
        self.tables, self.discounts = tables, discounts
        self._memo: dict = {}

    # ------------------------------------------------------------------ queries

    def context(self, prefix) -> tuple:
        """The last `order - 1` ids of `prefix`, padded on the left with sentence-start ids."""
        k = self.order - 1
        tail = tuple(prefix[-k:]) if k else ()
        return (self.bos,) * (k - len(tail)) + tail

    def _prob(self, ctx: tuple, w: int) -> float:
        key = (ctx, w)
        p = self._memo.get(key)
        if p is None:
            lower = self._prob(ctx[1:], w) if ctx else 1.0 / self.vocab_size
            n = len(ctx)
            entry = self.tables[n].get(ctx)
            if entry is None:  # unseen context: all its mass comes from the shorter one
                p = lower
            else:
                total, backoff, row = entry
                p = max(row.get(w, 0) - self.discounts[n], 0.0) / total + backoff * lower
            if len(self._memo) > 2_000_000:
                self._memo.clear()
            self._memo[key] = p
        return p

    def logprob(self, context: tuple, token: int) -> float:
        """log P(token | context), context as returned by `context()` (order - 1 ids)."""
        return math.log(self._prob(context, token))

    def score(self, ids: list[int], eos: bool = True) -> float:
        """log P of a whole token sequence (plus its end when `eos`)."""
        seq = list(ids) + ([self.eos] if eos else [])
        return sum(self.logprob(self.context(seq[:i]), t) for i, t in enumerate(seq))

    # ------------------------------------------------------------------ training

    @classmethod
    def train(cls, sequences: Iterable[list[int]], vocab_size: int, eos: int, order: int = 4,
              min_count: int = 1) -> "NgramLM":
        """Count `sequences` (token id lists) into an `order`-gram. Highest-order n-grams seen fewer
        than `min_count` times are dropped from the table (their mass stays with the context, so
        the lower orders take them over): a smaller file for a slightly blunter model."""
        if order < 1:
            raise ConfigError(f"n-gram order must be >= 1, got {order}")
        bos = vocab_size
        top: Counter = Counter()
        for ids in sequences:
            seq = [bos] * (order - 1) + list(ids) + [eos]
            for i in range(order - 1, len(seq)):
                top[tuple(seq[i - order + 1: i + 1])] += 1
        # counts per order: raw at the top, continuation counts (distinct left neighbours) below
        counts: list[Counter] = [Counter() for _ in range(order)]
        counts[order - 1] = top
        for n in range(order - 1, 0, -1):
            for g in counts[n]:
                counts[n - 1][g[1:]] += 1
        tables: list[dict] = []
        discounts: list[float] = []
        for n in range(order):
            n1 = sum(1 for c in counts[n].values() if c == 1)
            n2 = sum(1 for c in counts[n].values() if c == 2)
            d = n1 / (n1 + 2 * n2) if n1 + 2 * n2 else 0.5
            discounts.append(d)
            table: dict = defaultdict(dict)
            total: Counter = Counter()
            for g, c in counts[n].items():
                total[g[:-1]] += c
                if n < order - 1 or c >= min_count:
                    table[g[:-1]][g[-1]] = c
            # a context none of whose n-grams survived the pruning backs off entirely (not kept)
            tables.append({h: (total[h], 1.0 - sum(max(c - d, 0.0) for c in row.values()) / total[h], row)
                           for h, row in table.items()})
        return cls(order, vocab_size, eos, tables, discounts)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """One compressed .npz (atomic): per order n, `g{n}` rows (context…, token, count), `h{n}` rows
        (context…) and `s{n}` rows (count, backoff weight) of the same contexts, plus the header."""
        arrays = {"header": np.array([self.order, self.vocab_size, self.eos], dtype=np.int64),
                  "discounts": np.array(self.discounts, dtype=np.float64)}
        for n in range(self.order):
            t = self.tables[n]
            g = [(*ctx, w, c) for ctx, (_, _, row) in t.items() for w, c in row.items()]
            arrays[f"g{n}"] = np.array(g, dtype=np.uint32).reshape(-1, n + 2)
            arrays[f"h{n}"] = np.array(list(t), dtype=np.uint32).reshape(len(t), n)
            arrays[f"s{n}"] = np.array([(c, b) for c, b, _ in t.values()], dtype=np.float64).reshape(-1, 2)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> "NgramLM":
        try:
            z = np.load(path)
            order, vocab_size, eos = (int(x) for x in z["header"])
            discounts = [float(x) for x in z["discounts"]]
            tables = []
            for n in range(order):
                rows: dict = defaultdict(dict)
                for g in z[f"g{n}"].tolist():
                    rows[tuple(g[:n])][g[n]] = g[n + 1]
                tables.append({tuple(h): (c, b, rows[tuple(h)]) for h, (c, b) in zip(z[f"h{n}"].tolist(), z[f"s{n}"].tolist())})
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"{path}: not a diffasr n-gram file ({e})") from None
        return cls(order, vocab_size, eos, tables, discounts)


class LanguageModels:
    """The n-grams of a checkpoint's `lm/` folder, one per language, loaded on first use."""

    def __init__(self, directory: str | Path | None):
        self.directory = None if directory is None else Path(directory)
        self._loaded: dict[str, NgramLM] = {}

    def languages(self) -> list[str]:
        if self.directory is None or not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.npz"))

    def get(self, language: str | None) -> NgramLM | None:
        """The n-gram of `language`, or None when there is none (unknown language, no lm folder)."""
        if language is None or self.directory is None:
            return None
        if language not in self._loaded:
            path = self.directory / f"{language}.npz"
            if not path.is_file():
                return None
            self._loaded[language] = NgramLM.load(path)
        return self._loaded[language]
