"""Decoding: from audio tokens and CTC logits to token ids, by one named method (options.METHODS).

options.py   DecodeOptions, the methods and the fields each reads, merging with model defaults
canvas.py    canvas lengths, clean and random canvases
ctc.py       greedy CTC, prefix beam search with n-gram fusion, n-best, token confidences
sampler.py   the refine, edit and verify samplers, canvas scoring
rescore.py   n-best rescoring (small preset)
types.py     Front and Hypothesis, what the stages hand each other
backend.py   the decoder-backend interface and the DiffusionGemma backend (small preset)
whisper.py   the Whisper-decoder backend (base preset; per-language index space)
decode.py    the method switch
"""

from .options import METHODS, DecodeOptions, resolve

__all__ = ["METHODS", "DecodeOptions", "resolve"]
