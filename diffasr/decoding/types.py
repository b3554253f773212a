"""What the decoding stages hand each other: `Front` (what every method starts from) and
`Hypothesis` (one row's transcript in its backend's own tokens)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
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
    tokens: list[int]  # the model's tokenizer ids
    confidences: list[float]  # one per token, in [0, 1]
    steps_run: int = 0
    text: str | None = None  # set when the method writes text itself (base: Whisper's detokenised output)
    char_confidences: np.ndarray | None = None  # with `text`: per character
