"""The `diffasr` subcommands other than serve and training, each `add_arguments(parser)` + `run(args)`.

transcribe_cli.py  diffasr transcribe: files to txt/json/srt/vtt
batch.py           diffasr batch: many files on Ray Data into one Parquet/JSONL table
evaluate.py        diffasr eval: WER/CER on a manifest, optionally against faster-whisper
bench.py           diffasr bench: per-stage timings and throughput against faster-whisper
listen.py          diffasr listen: live transcription from the microphone or a file

diffasr/cli.py holds the subcommand table and dispatches to these, serving/serve.py and training/.
"""
