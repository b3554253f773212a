"""Hotwords and a prompt: steering recognition towards the caller's words (names, product terms).

Two places take them:

- The CTC prefix beam search (ctc-beam, rescore, and the base preset's sampled methods, which the
  beam seeds) boosts hotword token paths with a context graph (the Aho-Corasick automaton of
  icefall/sherpa-onnx's ContextGraph): each token that extends a partial match of a hotword earns
  `hotword_boost`; a match that breaks gives back what its tokens earned, so only completed
  hotwords keep their bonus, and a hypothesis's score at the end drops any unfinished credit.
- Whisper's previous-text slot (base, verified methods): `<|startofprev|>` + the hotwords and the
  prompt's tokens before the start-of-transcript prompt of the released decoder, the one trained
  with it (verifier "whisper" or "ensemble"), as faster-whisper's `hotwords`/`initial_prompt`.
"""

from __future__ import annotations

from collections import deque

from ..errors import ConfigError

MAX_HOTWORDS = 16  # a glossary, not a vocabulary: each one costs beam paths and prompt positions
MAX_HOTWORD_CHARS = 32
MAX_PROMPT_CHARS = 400
MAX_PREV_TOKENS = 192  # Whisper's 448 positions hold <|startofprev|>, these, its 4-token prompt and a ≤ 224 canvas


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

    def unfinished(self, state: int) -> float:
        """The credit a hypothesis ending in `state` must give back (a hotword begun, not finished)."""
        return self.boost * self.depth[state]


def context_graph(tok, hotwords: tuple[str, ...], boost: float) -> ContextGraph | None:
    """The graph of `hotwords` in the CTC tokenizer `tok`'s ids (as a word of its own: its spoken
    form, word-initial), or None without hotwords."""
    if not hotwords or boost == 0:
        return None
    return ContextGraph([ids for w in hotwords if (ids := tok.encode(w))], boost)


def previous_text(tokens, hotwords: tuple[str, ...], prompt: str | None, language: str) -> list[int]:
    """Whisper's previous-text slot for `hotwords` and `prompt`: [<|startofprev|>] + their tokens
    (`tokens`: whisper_decoder.WhisperTokens), or [] when there are neither. ConfigError past
    MAX_PREV_TOKENS."""
    text = " ".join(x for x in (", ".join(hotwords), (prompt or "").strip()) if x)
    if not text:
        return []
    ids = tokens.encode(text, language)
    if len(ids) > MAX_PREV_TOKENS:
        raise ConfigError(f"hotwords and prompt take {len(ids)} Whisper tokens; at most {MAX_PREV_TOKENS} fit")
    return [tokens.tok.token_to_id("<|startofprev|>")] + ids
