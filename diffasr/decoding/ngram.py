"""Token n-gram language models for CTC beam search (shallow fusion).

An interpolated Kneser-Ney n-gram over the model's own token ids, one per language, trained on the
training split of the sentence files (`scripts/build_lm.py`) and shipped beside the checkpoint as
`lm/<lang>.npz`. The CTC prefix beam search (`decoding.ctc.ctc_prefix_beam`) adds
`ngram_weight × log P(token | previous tokens)` to every extension, so spellings the training text never
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
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError


class NgramLM:
    """An interpolated Kneser-Ney token n-gram. `logprob(context, token)` is the natural log.

    Held as packed numpy arrays, one `_Order` per context length n (0 … order-1): about 8 MB per
    language where Python dictionaries took 100 MB. A query computes the whole distribution
    P(· | context) in `order` vectorised steps and caches it, because the beam search asks the same
    context about many tokens."""

    def __init__(self, order: int, vocab_size: int, eos: int, rows: list[tuple], discounts: list[float]):
        # rows[n] = (g, h, s) as in the file: g (G, n+2) context…, token, count; h (C, n) contexts;
        # s (C, 2) count c(h) and backoff weight b(h) of the same contexts
        if (vocab_size + 1) ** max(order - 1, 1) >= 2**63:
            raise ConfigError(f"a {order}-gram over {vocab_size} tokens does not fit the packed context keys")
        self.order, self.vocab_size, self.eos = order, vocab_size, eos
        self.bos = vocab_size
        self.discounts = [float(d) for d in discounts]
        self._orders = [_Order.build(n, *r, base=vocab_size + 1) for n, r in enumerate(rows)]
        self._cache: dict = {}

    # ------------------------------------------------------------------ queries

    def context(self, prefix) -> tuple:
        """The last `order - 1` ids of `prefix`, padded on the left with sentence-start ids."""
        k = self.order - 1
        tail = tuple(prefix[-k:]) if k else ()
        return (self.bos,) * (k - len(tail)) + tail

    @property
    def sizes(self) -> tuple[int, int]:
        """(contexts, n-grams) held, summed over the orders."""
        return sum(len(o.keys) for o in self._orders), sum(len(o.tokens) for o in self._orders)

    def logprobs(self, context: tuple) -> np.ndarray:
        """log P(· | context), (vocab_size,) float64: from the uniform distribution up, each longer
        context that was counted mixes its discounted counts over its backoff weight times the
        shorter context's distribution."""
        lp = self._cache.get(context)
        if lp is None:
            p = np.full(self.vocab_size, 1.0 / self.vocab_size)
            base = self.vocab_size + 1
            for n, o in enumerate(self._orders):
                key = 0  # the last n ids packed as `_pack` packs them, on Python ints (the beam's hot path)
                for t in context[len(context) - n :] if n else ():
                    key = key * base + t
                i = int(np.searchsorted(o.keys, key))
                if i == len(o.keys) or o.keys[i] != key:
                    continue  # unseen context: all its mass comes from the shorter one
                lo, hi = o.lo[i], o.hi[i]
                p *= o.backoff[i]
                p[o.tokens[lo:hi]] += np.maximum(o.counts[lo:hi] - self.discounts[n], 0.0) / o.total[i]
            with np.errstate(divide="ignore"):
                lp = np.log(p)
            if len(self._cache) >= 512:  # 64 KB each
                self._cache.clear()
            self._cache[context] = lp
        return lp

    def logprob(self, context: tuple, token: int) -> float:
        """log P(token | context), context as returned by `context()` (order - 1 ids)."""
        return float(self.logprobs(context)[token])

    def score(self, ids: list[int], eos: bool = True) -> float:
        """log P of a whole token sequence (plus its end when `eos`)."""
        seq = list(ids) + ([self.eos] if eos else [])
        return sum(self.logprob(self.context(seq[:i]), t) for i, t in enumerate(seq))

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls, sequences: Iterable[list[int]], vocab_size: int, eos: int, order: int = 4, min_count: int = 1
    ) -> NgramLM:
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
                top[tuple(seq[i - order + 1 : i + 1])] += 1
        # counts per order: raw at the top, continuation counts (distinct left neighbours) below
        counts: list[Counter] = [Counter() for _ in range(order)]
        counts[order - 1] = top
        for n in range(order - 1, 0, -1):
            for g in counts[n]:
                counts[n - 1][g[1:]] += 1
        rows: list[tuple] = []
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
            g_rows = [(*h, w, c) for h, row in table.items() for w, c in row.items()]
            s_rows = [
                (total[h], 1.0 - sum(max(c - d, 0.0) for c in row.values()) / total[h]) for h, row in table.items()
            ]
            rows.append(
                (
                    np.array(g_rows, dtype=np.uint32).reshape(-1, n + 2),
                    np.array(list(table), dtype=np.uint32).reshape(len(table), n),
                    np.array(s_rows, dtype=np.float64).reshape(-1, 2),
                )
            )
        return cls(order, vocab_size, eos, rows, discounts)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> None:
        """One compressed .npz (atomic): per order n, `g{n}` rows (context…, token, count), `h{n}` rows
        (context…) and `s{n}` rows (count, backoff weight) of the same contexts, plus the header."""
        arrays = {
            "header": np.array([self.order, self.vocab_size, self.eos], dtype=np.int64),
            "discounts": np.array(self.discounts, dtype=np.float64),
        }
        for n, o in enumerate(self._orders):
            arrays[f"g{n}"], arrays[f"h{n}"], arrays[f"s{n}"] = o.rows(n, self.vocab_size + 1)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> NgramLM:
        try:
            z = np.load(path)
            order, vocab_size, eos = (int(x) for x in z["header"])
            rows = [(z[f"g{n}"], z[f"h{n}"], z[f"s{n}"]) for n in range(order)]
            return cls(order, vocab_size, eos, rows, list(z["discounts"]))
        except (OSError, KeyError, ValueError) as e:
            raise ConfigError(f"{path}: not a diffasr n-gram file ({e})") from None


def _pack(contexts: np.ndarray, base: int) -> np.ndarray:
    """(N, n) token ids -> (N,) int64 keys, most recent token least significant."""
    keys = np.zeros(len(contexts), dtype=np.int64)
    for j in range(contexts.shape[1]):
        keys = keys * base + contexts[:, j].astype(np.int64)
    return keys


@dataclass
class _Order:
    """The counted contexts of one length n, sorted by packed key, and their n-grams grouped by
    context: context i's tokens and counts are tokens[lo[i]:hi[i]], counts[lo[i]:hi[i]]."""

    keys: np.ndarray  # (C,) int64
    total: np.ndarray  # (C,) float64 c(h)
    backoff: np.ndarray  # (C,) float64 b(h)
    lo: np.ndarray  # (C,) int64
    hi: np.ndarray  # (C,) int64
    tokens: np.ndarray  # (G,) int32
    counts: np.ndarray  # (G,) float64

    @classmethod
    def build(cls, n: int, g: np.ndarray, h: np.ndarray, s: np.ndarray, base: int) -> _Order:
        g = np.asarray(g).reshape(-1, n + 2)
        h, s = np.asarray(h), np.asarray(s, dtype=np.float64).reshape(-1, 2)
        h = h.reshape(len(h), n)
        if len(h) != len(s):
            raise ValueError(f"order {n}: {len(h)} contexts but {len(s)} statistics")
        hk = _pack(h, base)
        by = np.argsort(hk, kind="stable")
        gk = _pack(g[:, :n], base)
        rows = np.lexsort((g[:, n], gk))
        gk = gk[rows]
        keys = hk[by]
        return cls(
            keys=keys,
            total=s[by, 0],
            backoff=s[by, 1],
            lo=np.searchsorted(gk, keys, "left"),
            hi=np.searchsorted(gk, keys, "right"),
            tokens=g[rows, n].astype(np.int32),
            counts=g[rows, n + 1].astype(np.float64),
        )

    def rows(self, n: int, base: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Back to the file's (g, h, s) arrays."""
        h = np.zeros((len(self.keys), n), dtype=np.uint32)
        k = self.keys.copy()
        for j in range(n - 1, -1, -1):
            h[:, j], k = k % base, k // base
        per = self.hi - self.lo
        g = np.concatenate(
            [np.repeat(h, per, axis=0), np.stack([self.tokens, self.counts], axis=1).astype(np.uint32)], axis=1
        )
        return g.reshape(-1, n + 2), h, np.stack([self.total, self.backoff], axis=1)


class NgramModels:
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
