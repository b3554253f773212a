"""What the decoding stages hand each other: `Front` (what every method starts from) and
`Hypothesis` (one row's transcript in its backend's own tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class Front(NamedTuple):
    """What every method starts from: audio tokens (B, T', h) with lengths n_audio (B,), CTC logits
    (B, T', V) script-masked, the prompt state the CTC head computed (or None), and the tokens each
    row may emit (B, V) (or None)."""

    audio_tokens: torch.Tensor
    n_audio: torch.Tensor
    ctc: torch.Tensor
    prefilled: object
    allowed: torch.Tensor | None


@dataclass
class Hypothesis:
    """One row's transcript in the tokens of whatever wrote it: the CTC head's (the model's tokenizer)
    or the backend's own (base: Whisper's cased, punctuated tokens, which then set `text`,
    `token_strings`, `spans` and `align_tokens`)."""

    tokens: list[int]  # token ids
    confidences: list[float]  # one per token, in [0, 1]
    steps_run: int = 0
    text: str | None = None  # None: the model tokenizer's decode of `tokens`
    token_strings: list[str] | None = None  # None: the model tokenizer's strings of `tokens`
    spans: list[tuple[int, int]] | None = None  # per token, the characters of `text` it wrote
    align_tokens: list[int] | None = None  # the transcript in the CTC head's ids, to time words by; None: tokens
    tail_tokens: int = 0  # verify: tokens written one by one by the causal pass once the steps ran out
    steps: list[dict] | None = None  # options.return_steps: each step's canvas (steps.py)
