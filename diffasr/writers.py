"""Output writers: txt, json, srt, vtt. Each takes a Transcription and returns a string."""

from __future__ import annotations

import json


def _ts(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(result):
    segs = [s for s in result.segments if s.text.strip()]
    if not segs and result.text:
        from .transcribe import Segment

        segs = [Segment(0.0, result.duration, result.text)]
    return segs


def write_txt(result) -> str:
    return result.text + "\n"


def write_json(result) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False) + "\n"


def write_srt(result) -> str:
    blocks = [f"{i}\n{_ts(s.start, ',')} --> {_ts(s.end, ',')}\n{s.text.strip()}\n" for i, s in enumerate(_cues(result), 1)]
    return "\n".join(blocks)


def write_vtt(result) -> str:
    blocks = [f"{_ts(s.start, '.')} --> {_ts(s.end, '.')}\n{s.text.strip()}\n" for s in _cues(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)


WRITERS = {"txt": write_txt, "json": write_json, "srt": write_srt, "vtt": write_vtt}
