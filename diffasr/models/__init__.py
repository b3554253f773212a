"""Model parts: what turns 16-kHz audio into token probabilities, one part per file.

encoder.py          the frozen Whisper encoder (CTranslate2 or Hugging Face): log-mel -> frames
projector.py        strided convolutions from encoder frames to the backbone's audio tokens
backbone.py         the DiffusionGemma backbone (from scratch or pretrained + LoRA)
tokenizer.py        small's compact BPE and the Gemma tokenizer
whisper_decoder.py  Whisper-base's decoder, read from the installed CTranslate2 model
whisper_denoiser.py that decoder made the `base` preset's denoiser
config.py           the presets (DIMS, PRESETS) and ModelConfig, the schema of a checkpoint's config.json

The assembled model (encoder + projector + CTC head + a decoder backend) is diffasr/model.py; it
sits above decoding/, which these parts sit below. Nothing here imports decoding, model or the pipeline.
"""
