"""Projector: Whisper features (B, T, d) -> audio tokens (B, T', hidden) for the backbone's prompt.

Three Conv1d layers (kernel 3, padding 1, configurable strides) with GELU, then Linear to the
backbone width and RMS-style normalisation with a learned gain. Strides (2, 2, 2) give the
published 8× (1500 frames -> 188 tokens per 30 s); (2, 2, 1) gives 4×, which keeps CTC feasible
with a ~5k-token vocabulary (at 8× many utterances have fewer frames than tokens).
"""

from __future__ import annotations

import torch
from torch import nn


def conv_out_len(n: int | torch.Tensor, strides) -> int | torch.Tensor:
    """Output length of the conv stack for input length n (kernel 3, padding 1): ceil per stride."""
    for s in strides:
        n = (n + s - 1) // s
    return n


class Projector(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int, strides=(2, 2, 1), embed_scale: float = 1.0):
        super().__init__()
        self.strides = tuple(int(s) for s in strides)
        if len(self.strides) != 3 or any(s not in (1, 2, 3, 4) for s in self.strides):
            raise ValueError(f"projector needs three strides in 1..4, got {strides}")
        dims = [in_dim, hidden, hidden, hidden]
        self.convs = nn.ModuleList(
            nn.Conv1d(dims[i], dims[i + 1], 3, stride=s, padding=1) for i, s in enumerate(self.strides)
        )
        self.act = nn.GELU()
        self.out = nn.Linear(hidden, out_dim)
        self.norm = nn.LayerNorm(out_dim, elementwise_affine=False)
        # Unit-variance audio tokens with a learned per-channel gain; the backbone's pre-norms make the
        # absolute scale matter only relative to the residual stream, so 1.0 is a neutral start.
        self.gain = nn.Parameter(torch.full((out_dim,), float(embed_scale)))

    @property
    def factor(self) -> int:
        f = 1
        for s in self.strides:
            f *= s
        return f

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor | None = None):
        """feats (B, T, d), lengths (B,) valid frames -> (tokens (B, T', out_dim), token_lengths (B,))."""
        if lengths is None:
            lengths = torch.full((feats.shape[0],), feats.shape[1], device=feats.device)
        x = feats.transpose(1, 2)
        n = lengths
        for conv, s in zip(self.convs, self.strides):
            x = self.act(conv(x))
            n = (n + s - 1) // s
            # Zero the positions past each row's end, so a padded row sees exactly the zero padding
            # an unpadded row sees: batched and single results then agree.
            x = x * (torch.arange(x.shape[-1], device=x.device)[None] < n[:, None]).unsqueeze(1).to(x.dtype)
        x = self.norm(self.out(x.transpose(1, 2))) * self.gain
        return x, n
