"""The inference pipeline around the model: clips in, transcripts out.

vad.py         Silero VAD: long audio cut at pauses into <= 30 s chunks
transcribe.py  DiffusionASR.transcribe: load, cut, batch, decode, align words, identify the language
stream.py      DiffusionASR.stream: incremental partials and finals from audio pushed in real time
writers.py     txt, json, srt and vtt output of a Transcription
manifest.py    the JSON-lines clip lists that evaluation, benchmarks and training read

Audio input and features are diffasr/audio.py, below the model parts (the encoder reads its log-mel).
"""
