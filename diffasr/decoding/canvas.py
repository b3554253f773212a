"""Canvases: the (B, L) token grids the denoiser reads and writes.

A clean canvas holds a transcript, EOS, then padding; a random one is the uniform-noise prior.
Lengths come in multiples of 8 so that batches of similar clips share shapes.
"""

from __future__ import annotations

import math

import torch

from .options import ANY_READS


def round_up(n: int, multiple: int = 8) -> int:
    """The smallest multiple of `multiple` ≥ n."""
    return -(-n // multiple) * multiple


def canvas_length(n_ctc: int, options, max_len: int) -> int:
    """Canvas size from a CTC token count: room for the transcript, EOS and a margin
    (options.length_margin), multiple of 8, at most `max_len`; options.canvas, when set, fixes it."""
    if options.canvas is not None:
        return min(options.canvas, max_len)
    n = math.ceil(n_ctc * (1 + options.length_margin)) + 4
    return int(min(max_len, max(8, round_up(n))))


def clean_canvas(rows: list[list[int]], length: int, eos: int, pad: int) -> torch.Tensor:
    """Canvas (B, length) holding each row's tokens, then EOS, then padding (cut at `length`):
    the training target x0, and the CTC-seeded start of the sampler."""
    canvas = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, ids in enumerate(rows):
        row = (list(ids) + [eos])[:length]
        canvas[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return canvas


def random_canvas(batch: int, length: int, vocab_size: int, generator) -> torch.Tensor:
    """Uniformly random tokens (B, L): the diffusion prior the decoder starts from. `generator` is one
    torch.Generator, or a list with one per row (rows then independent of their batch-mates)."""
    if isinstance(generator, list):
        return torch.stack([torch.randint(0, vocab_size, (length,), generator=g) for g in generator])
    return torch.randint(0, vocab_size, (batch, length), generator=generator)


def written(ids: list[int], conf: list[float], options) -> tuple[list[int], list[float]]:
    """A sampled transcript (ids before end-of-text, confidence each) as the method writes it: with
    runs collapsed when the method reads `collapse_repeats` (options.ANY_READS) and it is set."""
    if "collapse_repeats" in ANY_READS[options.method] and options.collapse_repeats:
        return collapse_repeats(ids, conf)
    return ids, conf


def collapse_repeats(ids: list[int], conf: list[float]) -> tuple[list[int], list[float]]:
    """A run of one token at adjacent canvas positions written once, with the run's highest confidence.

    A parallel decoder unsure where a word falls writes it at every position that could hold it
    ("with with with"), the standard failure of non-autoregressive decoders; collapsing runs, as CTC
    does, is the standard repair. A word really said twice in a row is lost: rarer than the repeats.
    """
    out, out_conf = [], []
    for i, c in zip(ids, conf):
        if out and out[-1] == i:
            out_conf[-1] = max(out_conf[-1], c)
            continue
        out.append(i)
        out_conf.append(c)
    return out, out_conf
