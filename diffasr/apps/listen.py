"""`diffasr listen`: live transcription from the microphone (or a file played as if live), finals line by line.

    diffasr listen                              # default microphone (needs `pip install diffasr[mic]` + PortAudio)
    diffasr listen --file talk.wav --realtime   # play a file at real-time pace (for testing without a microphone)
    diffasr listen --file talk.wav --timestamps --partials

Each final (an utterance closed at a pause) is printed on its own line of stdout once it is decoded;
--partials also shows the utterance in progress on stderr. Ctrl-C ends a microphone stream: the
utterance still open is decoded and printed before exiting.
"""

from __future__ import annotations

import queue
import sys

import numpy as np

from ..errors import ConfigError
from ..text import LANGUAGES


def add_arguments(p) -> None:
    p.add_argument("--file", default=None, help="transcribe this audio file as a live stream instead of the microphone")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="with --file: play it at real-time pace (default: as fast as it decodes)",
    )
    p.add_argument(
        "--language", default=None, choices=("auto",) + LANGUAGES, help="spoken language (default: identified once)"
    )
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-base)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument(
        "--input-device", default=None, help="microphone: sounddevice device name or index (default: the system's)"
    )
    p.add_argument("--pause-s", type=float, default=0.5, help="a pause this long closes an utterance (default 0.5)")
    p.add_argument("--timestamps", action="store_true", help="prefix each final with [start -> end] seconds")
    p.add_argument("--partials", action="store_true", help="show the utterance in progress on stderr")


def _printer(args):
    def on_event(ev, latency=None):
        if ev.type == "final":
            if args.partials:
                sys.stderr.write("\r\033[K" if sys.stderr.isatty() else "")
            prefix = f"[{ev.start:7.2f} -> {ev.end:7.2f}] " if args.timestamps else ""
            sys.stdout.write(f"{prefix}{ev.text}\n")
            sys.stdout.flush()
        elif args.partials:
            if sys.stderr.isatty():
                sys.stderr.write(f"\r\033[K… {ev.text}")
            else:
                sys.stderr.write(f"… {ev.text}\n")
            sys.stderr.flush()

    return on_event


def _open_microphone(device, blocks: queue.Queue):
    """A started sounddevice InputStream putting (float32 (n,), rate) blocks on `blocks`; one clear
    ConfigError when there is no sounddevice, no PortAudio or no input device."""
    try:
        import sounddevice as sd
    except (ImportError, OSError) as e:  # OSError: the package is there but the PortAudio library is not
        raise ConfigError(
            f"no microphone support ({e}); install it with `pip install 'diffasr[mic]'` and the "
            "PortAudio library (apt install libportaudio2), or use --file X --realtime"
        ) from None
    try:
        device = int(device) if device is not None and str(device).isdigit() else device
        info = sd.query_devices(device, kind="input")
        rate = int(info["default_samplerate"])
        stream = sd.InputStream(
            device=device,
            channels=1,
            samplerate=rate,
            dtype="float32",
            blocksize=rate // 10,
            callback=lambda data, frames, t, status: blocks.put((data[:, 0].copy(), rate)),
        )
        stream.start()
    except Exception as e:  # sounddevice raises PortAudioError / ValueError for missing or busy devices
        raise ConfigError(f"cannot open a microphone ({e}); try --input-device, or --file X --realtime") from None
    return stream, info["name"]


def run(args) -> int:
    from .. import load
    from ..audio import load_audio
    from ..pipeline.stream import play

    if args.realtime and not args.file:
        raise ConfigError("--realtime plays a --file; without one the microphone is already real time")
    audio = load_audio(args.file) if args.file else None  # a bad file fails before the model loads
    model = load(args.model, device=args.device)
    session = model.stream(language=args.language, pause_s=args.pause_s)
    on_event = _printer(args)
    if audio is not None:
        play(session, audio, realtime=args.realtime, chunk_s=0.1, on_event=on_event)
        return 0
    blocks: queue.Queue = queue.Queue()
    stream, name = _open_microphone(args.input_device, blocks)
    print(f"diffasr listen: listening on {name!r}; Ctrl-C to stop", file=sys.stderr)
    try:
        while True:
            items = [blocks.get()]
            while not blocks.empty():  # everything that arrived while the last decode ran, in one feed
                items.append(blocks.get_nowait())
            rate = items[0][1]
            for ev in session.feed((np.concatenate([x for x, _ in items]), rate)):
                on_event(ev)
    except KeyboardInterrupt:
        pass
    finally:
        stream.stop()
        stream.close()
    for ev in session.close():
        on_event(ev)
    return 0
