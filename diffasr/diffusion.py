"""Uniform discrete diffusion's forward process, for training.

Training corrupts a clean canvas x0 (B, L) by replacing each position with a uniformly random
token with probability rate(t), t drawn per example from a noise schedule. The reverse process
(the samplers) is in decoding/sampler.py.
"""

from __future__ import annotations

import math

import torch

# ---------------------------------------------------------------- noise schedules (training)


class NoiseSchedule:
    """Maps diffusion time t ∈ [0, 1] to the probability that a position is corrupted."""

    def rate(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sample_t(self, batch: int, generator=None, device="cpu") -> torch.Tensor:
        return torch.rand(batch, generator=generator, device=device)


class LinearSchedule(NoiseSchedule):
    """rate = t: the DiffusionGemma SFT convention (t ~ U(0, 1), corrupt with probability t)."""

    def rate(self, t):
        return t


class CosineSchedule(NoiseSchedule):
    """rate = 1 - cos(πt/2): spends more training on lightly corrupted canvases (late sampler steps)."""

    def rate(self, t):
        return 1 - torch.cos(t * math.pi / 2)


SCHEDULES = {"linear": LinearSchedule, "cosine": CosineSchedule}


def corrupt(x0: torch.Tensor, rate: torch.Tensor, vocab_size: int, generator=None) -> torch.Tensor:
    """Uniform corruption: x0 (B, L) long, rate (B,) -> xt (B, L), each position replaced w.p. rate."""
    flip = torch.rand(x0.shape, generator=generator, device=x0.device) < rate[:, None]
    noise = torch.randint(0, vocab_size, x0.shape, generator=generator, device=x0.device)
    return torch.where(flip, noise, x0)
