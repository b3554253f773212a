"""Decoding: from audio tokens and CTC logits to token ids, by one named method (options.METHODS).

options.py   DecodeOptions, the methods and the fields each reads, merging with model defaults
canvas.py    canvas lengths, clean and random canvases
ctc.py       greedy CTC, prefix beam search with n-gram fusion, n-best, token confidences
sampler.py   the refine, edit and verify samplers, canvas scoring
rescore.py   n-best rescoring (small preset)
whisper.py   the base preset's backend (Whisper decoder, per-language index space)
decode.py    the method switch
"""

from .options import METHODS, DecodeOptions, resolve

__all__ = ["METHODS", "DecodeOptions", "resolve"]
