"""Output writers: txt, json, srt, vtt. Each takes a Transcription and returns a string.

json holds everything: text, language (+ probability when identified), segments, words with times
and confidences, tokens with confidences, timings. srt/vtt cues are the segments (one per speech
chunk), with times made monotonic (a cue never starts before the previous one ends).
"""

from __future__ import annotations

import json


def _ts(seconds: float, sep: str) -> str:
    ms = int(round(max(0.0, seconds) * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _cues(result) -> list[tuple[float, float, str]]:
    segs = [(s.start, s.end, s.text.strip()) for s in result.segments if s.text.strip()]
    if not segs and result.text:
        segs = [(0.0, result.duration, result.text.strip())]
    cues, last = [], 0.0
    for start, end, text in segs:
        start = max(start, last)
        end = max(end, start)
        cues.append((start, end, text))
        last = end
    return cues


def write_txt(result) -> str:
    return result.text + "\n"


def write_json(result) -> str:
    return json.dumps(result.to_dict(), ensure_ascii=False) + "\n"


def write_srt(result) -> str:
    blocks = [f"{i}\n{_ts(s, ',')} --> {_ts(e, ',')}\n{text}\n" for i, (s, e, text) in enumerate(_cues(result), 1)]
    return "\n".join(blocks)


def write_vtt(result) -> str:
    blocks = [f"{_ts(s, '.')} --> {_ts(e, '.')}\n{text}\n" for s, e, text in _cues(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)


WRITERS = {"txt": write_txt, "json": write_json, "srt": write_srt, "vtt": write_vtt}
