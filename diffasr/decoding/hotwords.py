"""Hotwords and a prompt: steering recognition towards the caller's words (names, product terms).

Three places take them:

- The CTC prefix beam search (ctc-beam, rescore, and the base preset's sampled methods, which the
  beam seeds) boosts hotword token paths with a context graph (the Aho-Corasick automaton of
  icefall/sherpa-onnx's ContextGraph): each token that extends a partial match of a hotword earns
  `hotword_boost`; a match that breaks gives back what its tokens earned, so only completed
  hotwords keep their bonus, and a hypothesis's score at the end drops any unfinished credit.
- The causal verifier (base, verified methods: VerifierBias): the hotwords' Whisper tokens join the
  canvas vocabulary, and each token that extends a hotword match gets `hotword_boost` on its logit.
- Whisper's previous-text slot (base, verified methods): `<|startofprev|>` + the prompt's tokens
  before the start-of-transcript prompt of the released decoder, the one trained with it (verifier
  "whisper" or "ensemble"), as faster-whisper's `initial_prompt`.
"""

from __future__ import annotations

from collections import deque

import torch

from ..errors import ConfigError

MAX_HOTWORDS = 16  # a glossary, not a vocabulary: each one costs beam paths and prompt positions
MAX_HOTWORD_CHARS = 32
MAX_PROMPT_CHARS = 400
MAX_PREV_TOKENS = 192  # Whisper's 448 positions hold <|startofprev|>, the prompt, its 4-token prompt and a ≤ 224 canvas


def check(hotwords, prompt) -> tuple[str, ...]:
    """The hotwords as a tuple of stripped strings; ConfigError when there are too many, one is empty
    or too long, or the prompt is too long."""
    if isinstance(hotwords, str):
        raise ConfigError("hotwords must be a list of words, not one string (split it: 'a,b' -> ['a', 'b'])")
    words = tuple(str(w).strip() for w in hotwords)
    if len(words) > MAX_HOTWORDS:
        raise ConfigError(f"at most {MAX_HOTWORDS} hotwords, not {len(words)}")
    for w in words:
        if not w or len(w) > MAX_HOTWORD_CHARS:
            raise ConfigError(f"each of the hotwords must have 1..{MAX_HOTWORD_CHARS} characters, not {w!r}")
    if prompt is not None and (not isinstance(prompt, str) or len(prompt) > MAX_PROMPT_CHARS):
        raise ConfigError(f"prompt must be a string of at most {MAX_PROMPT_CHARS} characters")
    return words


class ContextGraph:
    """An Aho-Corasick automaton over hotword token sequences. A state is a node id; `step(state,
    token)` -> (next state, score change)."""

    def __init__(self, sequences: list[list[int]], boost: float):
        self.goto: list[dict[int, int]] = [{}]
        self.depth, self.end, self.fail = [0], [False], [0]
        self.boost = boost
        self._next: dict[int, list[int]] = {}
        for seq in sequences:
            node = 0
            for t in seq:
                if t not in self.goto[node]:
                    self.goto.append({})
                    self.depth.append(self.depth[node] + 1)
                    self.end.append(False)
                    self.fail.append(0)
                    self.goto[node][t] = len(self.goto) - 1
                node = self.goto[node][t]
            self.end[node] = True
        queue = deque(self.goto[0].values())
        while queue:  # breadth first: a node's fail link is the longest proper suffix that is in the trie
            node = queue.popleft()
            for t, child in self.goto[node].items():
                f = self.fail[node]
                while f and t not in self.goto[f]:
                    f = self.fail[f]
                self.fail[child] = self.goto[f].get(t, 0) if self.goto[f].get(t, 0) != child else 0
                self.end[child] = self.end[child] or self.end[self.fail[child]]
                queue.append(child)

    def step(self, state: int, token: int) -> tuple[int, float]:
        """From `state` on `token`: the next state (the root after a completed hotword, whose credit
        stays) and the score change (+boost for a matched token, minus the credit of a broken match)."""
        node = state
        while node and token not in self.goto[node]:
            node = self.fail[node]
        node = self.goto[node].get(token, 0)
        delta = self.boost * (self.depth[node] - self.depth[state])
        return (0, delta) if self.end[node] else (node, delta)

    def next_tokens(self, state: int) -> list[int]:
        """The tokens that extend a match from `state`: its children and those of its fail chain (the
        root's included, so a hotword can start anywhere)."""
        if state not in self._next:
            out, node = set(self.goto[state]), state
            while node:
                node = self.fail[node]
                out |= set(self.goto[node])
            self._next[state] = sorted(out)
        return self._next[state]

    def unfinished(self, state: int) -> float:
        """The credit a hypothesis ending in `state` must give back (a hotword begun, not finished)."""
        return self.boost * self.depth[state]


MIN_START_LETTERS = 3  # a hotword whose first token is shorter (" A" of Auenland) is not started by the bias


class VerifierBias:
    """Hotwords in the causal verifier (base): `boost` added to the logits of each token that would
    extend a hotword match given the canvas tokens before its position, so the greedy choice leans
    towards a hotword it nearly wrote ("Guttenberg" -> "Gutenberg") and a draft holding one is
    accepted more readily. Greedy verification cannot take back a broken match as the CTC beam does,
    so a hotword is only started by the bias when its first token has MIN_START_LETTERS letters: a
    one-letter start would turn "eight" into "A" wherever "Auenland" is a hotword; the rest of such a
    hotword is still boosted once the verifier writes its first token by itself.

    sequences: each hotword as canvas indices; starts: the indices whose start may be boosted."""

    def __init__(self, sequences: list[list[int]], starts: set[int], boost: float):
        self.graph = ContextGraph(sequences, boost)
        self.roots = set(self.graph.goto[0]) - set(starts)  # first tokens the bias never starts

    def wrap(self, causal_fn):
        """causal_fn (canvas (N, L) indices, rows, s -> logits (N, L - s, V)) with the bias added."""
        g = self.graph

        def fn(canvas_idx, rows, s):
            logits = causal_fn(canvas_idx, rows, s)
            for r, seq in enumerate(canvas_idx.tolist()):
                state = 0
                for p, tok in enumerate(seq):
                    if p >= s:
                        here = g.goto[state] if state else {}
                        nxt = [t for t in g.next_tokens(state) if t not in self.roots or t in here]
                        if nxt:
                            logits[r, p - s, nxt] += g.boost
                    state, _ = g.step(state, tok)
            return logits

        return fn


def whisper_hotwords(vocab: torch.Tensor, tokens, hotwords: tuple[str, ...], boost: float, language: str):
    """(vocab', bias): the canvas vocabulary `vocab` (sorted Whisper ids) with the Whisper tokens of
    `hotwords` added -- a language's canvas holds the tokens its training text used, and a rare name's
    often are not among them, so neither the drafter nor the verifier could write it -- and the
    VerifierBias over vocab' indices (None without hotwords or with boost 0). `tokens`:
    whisper_decoder.WhisperTokens."""
    encoded = [ids for ids in tokens.encode_batch(list(hotwords), language) if ids] if hotwords else []
    if not encoded:
        return vocab, None
    extra = torch.tensor([t for ids in encoded for t in ids], dtype=vocab.dtype)
    vocab = torch.unique(torch.cat([vocab, extra]))  # sorted, as the canvas index space is
    seqs = [torch.searchsorted(vocab, torch.tensor(ids, dtype=vocab.dtype)).tolist() for ids in encoded]
    starts = {
        q[0] for q, ids in zip(seqs, encoded) if sum(c.isalpha() for c in tokens.decode(ids[:1])) >= MIN_START_LETTERS
    }
    return vocab, (VerifierBias(seqs, starts, boost) if boost else None)


def context_graph(tok, hotwords: tuple[str, ...], boost: float) -> ContextGraph | None:
    """The graph of `hotwords` in the CTC tokenizer `tok`'s ids (as a word of its own: its spoken
    form, word-initial), or None without hotwords."""
    if not hotwords or boost == 0:
        return None
    return ContextGraph([ids for w in hotwords if (ids := tok.encode(w))], boost)


def previous_text(tokens, prompt: str | None, language: str) -> list[int]:
    """Whisper's previous-text slot for `prompt`: [<|startofprev|>] + its tokens
    (`tokens`: whisper_decoder.WhisperTokens), or [] without one. ConfigError past MAX_PREV_TOKENS.
    Hotwords do not go here (faster-whisper puts them here): measured on real clips, a list of names
    in Whisper's previous text made it write "A" for isolated spoken digits (benchmarks/hotwords.py)."""
    text = (prompt or "").strip()
    if not text:
        return []
    ids = tokens.encode(text, language)
    if len(ids) > MAX_PREV_TOKENS:
        raise ConfigError(f"the prompt takes {len(ids)} Whisper tokens; at most {MAX_PREV_TOKENS} fit")
    return [tokens.tok.token_to_id("<|startofprev|>")] + ids
