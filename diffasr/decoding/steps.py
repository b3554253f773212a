"""The canvas step by step (`return_steps`): what each sampler step left at every canvas position.

A sampler given a `StepRecorder` calls `record` once for its starting canvas (step 0: noise or
the CTC seed) and once per step (verify, when its steps run out: once more, for the rest the causal
pass wrote token by token, all kept); without one (None, the default) it records nothing and costs
nothing. Each recorded position has a status:

    kept       committed (refine), unchanged (edit), verified (verify: the agreeing prefix plus the
               verifier's correction at the first disagreement)
    rejected   verify: a draft token past the first disagreement, refused by the verifier;
               edit: a seed token the denoiser replaced (the new token is shown)
    renoised   not committed: re-drawn from uniform noise for the next step
    reseeded   not committed: reset to the CTC seed (realigned after the verified prefix)

A step as returned to the caller (`Transcription.steps`) is a dict
{"segment": int, "step": int, "tokens": [str], "status": [str], "confidence": [float]}, one entry per
canvas position up to and including the first kept end-of-text (the rest is padding).
"""

from __future__ import annotations

import torch

KEPT, REJECTED, RENOISED, RESEEDED = 0, 1, 2, 3
END = "<|endoftext|>"  # the end-of-text token's string, whatever the model's tokenizer calls it
STATUS = ("kept", "rejected", "renoised", "reseeded")


class StepRecorder:
    """Per batch row, the (tokens, status, confidence) lists of each recorded step, in the sampler's
    own index space (`strings` turns them into text)."""

    def __init__(self, batch: int):
        self.rows: list[list[tuple[list[int], list[int], list[float]]]] = [[] for _ in range(batch)]

    def record(self, rows, tokens: torch.Tensor, status: torch.Tensor, confidence: torch.Tensor) -> None:
        """One step of batch rows `rows` (N,): tokens (N, L), status codes (N, L), confidence (N, L)."""
        for r, t, s, c in zip(list(rows), tokens.tolist(), status.tolist(), confidence.float().tolist()):
            self.rows[int(r)].append((t, s, c))

    def strings(self, row: int, token_string, end: int | None, segment: int = 0) -> list[dict]:
        """Row `row`'s steps as dicts (module docstring); token_string(index) -> str; positions past
        the first end-of-text (`end`, an index) are dropped."""
        out = []
        for step, (toks, status, conf) in enumerate(self.rows[row]):
            n = len(toks)
            if end is not None:
                n = next((i + 1 for i, t in enumerate(toks) if t == end), n)
            out.append(
                {
                    "segment": segment,
                    "step": step,
                    "tokens": [token_string(t) for t in toks[:n]],
                    "status": [STATUS[s] for s in status[:n]],
                    "confidence": [round(c, 4) for c in conf[:n]],
                }
            )
        return out


def kept_text(step: dict, end_token: str) -> list[str]:
    """The kept tokens of one step (dict form) before its end-of-text token `end_token`."""
    out = []
    for t, s in zip(step["tokens"], step["status"]):
        if t == end_token:
            break
        if s == "kept":
            out.append(t)
    return out


def small_strings(recorder: StepRecorder, row: int, tok) -> list[dict]:
    """`StepRecorder.strings` for the small preset's tokenizer `tok` (end-of-sequence as END)."""

    def string(t: int) -> str:  # the token as written, its word-start mark a space
        return END if t == tok.eos else tok.token_strings([t])[0].replace("▁", " ").replace("Ġ", " ")

    return recorder.strings(row, string, tok.eos)
