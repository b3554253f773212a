"""WebSocket endpoint for live transcription: `GET /v1/stream` (upgraded), one StreamSession per connection.

    ws://HOST/v1/stream?language=en&sample_rate=48000     (language: optional, identified once if left out;
                                                           sample_rate: of the PCM the client sends, default 16000)
  client -> server  binary frames: little-endian signed 16-bit mono PCM (any length, an even number of bytes)
                    text frames:   {"type": "stop"}  (end of audio: flush, then the server closes)
  server -> client  JSON text frames:
                    {"type": "ready", "sample_rate", "language", "limits": {...}}
                    {"type": "partial", "id", "text", "start", "end", "language", "decode_s"}
                    {"type": "final", "id", "text", "start", "end", "language", "words": [...], "decode_s"}
                    {"type": "error", "code", "message"}   (a bad frame is dropped and the stream goes on;
                                                            a limit closes the stream after it)
                    {"type": "done"}                       (after "stop": every final sent, then close 1000)
  Times are seconds of audio from the start of the stream.

Bounds: at most `max_streams` connections stream at once (the next gets error too_many_streams and
close code 1013); audio received but not yet decoded is capped at `max_buffer_s` seconds (the client
sends faster than the model keeps up: error buffer_full, close 1008); a connection that sends nothing
for `idle_timeout_s` gets error idle_timeout and close 1008; a frame over `max_frame_bytes` or with an
odd byte count gets error bad_frame and is dropped.

All sessions run their model work on one thread of their own (streams take turns; torch already uses
every core for one decode), so the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from .errors import DiffasrError
from .stream import StreamSession

log = logging.getLogger("diffasr.stream")

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER = 1000, 1008, 1011, 1013
DEFAULTS = dict(max_streams=4, max_buffer_s=30.0, idle_timeout_s=30.0, max_frame_bytes=1 << 20)


class _Closed(Exception):
    """The stream ends: (error code, message, close code); code None for a normal end."""


def stream_router(model, max_streams: int = 4, max_buffer_s: float = 30.0, idle_timeout_s: float = 30.0,
                  max_frame_bytes: int = 1 << 20, **session_options) -> APIRouter:
    """The `/v1/stream` WebSocket route for `model`; session_options go to StreamSession (pause_s, ...)."""
    from .errors import ConfigError

    for ok, msg in [(max_streams >= 1, f"max_streams must be ≥ 1, not {max_streams}"),
                    (max_buffer_s > 0, f"max_buffer_s must be > 0, not {max_buffer_s}"),
                    (idle_timeout_s > 0, f"idle_timeout_s must be > 0, not {idle_timeout_s}"),
                    (max_frame_bytes >= 2, f"max_frame_bytes must be ≥ 2, not {max_frame_bytes}")]:
        if not ok:
            raise ConfigError(msg)
    router = APIRouter()
    worker = ThreadPoolExecutor(1, thread_name_prefix="diffasr-stream")
    state = {"active": 0, "served": 0}
    limits = {"max_streams": max_streams, "max_buffer_s": max_buffer_s, "idle_timeout_s": idle_timeout_s,
              "max_frame_bytes": max_frame_bytes}
    router.stream_state = state  # for tests and /metrics-style introspection

    @router.websocket("/v1/stream")
    async def stream_endpoint(ws: WebSocket):
        await ws.accept()
        if state["active"] >= max_streams:
            await _send(ws, _error("too_many_streams", f"this server streams at most {max_streams} connections at once"))
            return await _close(ws, CLOSE_TRY_LATER)
        state["active"] += 1
        try:
            await _serve(ws, model, worker, limits, session_options)
        finally:
            state["active"] -= 1
            state["served"] += 1

    return router


def _error(code: str, message: str) -> dict:
    return {"type": "error", "code": code, "message": message}


async def _send(ws: WebSocket, message: dict) -> bool:
    """Send one JSON event; False when the client has gone."""
    if ws.client_state != WebSocketState.CONNECTED:
        return False
    try:
        await ws.send_text(json.dumps(message, ensure_ascii=False))
        return True
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False


async def _close(ws: WebSocket, code: int) -> None:
    if ws.client_state == WebSocketState.CONNECTED:
        with contextlib.suppress(Exception):
            await ws.close(code)


def _params(ws: WebSocket, model) -> tuple[str | None, int]:
    """language and sample_rate from the query string; ValueError with a message otherwise."""
    q = ws.query_params
    unknown = sorted(set(q) - {"language", "sample_rate"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (this endpoint takes language, sample_rate)")
    language = (q.get("language") or "").strip().lower() or None
    if language == "auto":
        language = None
    if language is not None and language not in model.config.languages:
        raise ValueError(f"language {language!r} is not supported (choose from {', '.join(model.config.languages)}, "
                         "or leave it out to detect it)")
    raw = q.get("sample_rate") or "16000"
    if not raw.isdigit() or not 8000 <= int(raw) <= 192000:
        raise ValueError(f"sample_rate must be an integer in 8000..192000, not {raw!r}")
    return language, int(raw)


async def _serve(ws: WebSocket, model, worker, limits: dict, session_options: dict) -> None:
    loop = asyncio.get_running_loop()
    try:
        language, rate = _params(ws, model)
        session = await loop.run_in_executor(worker, lambda: StreamSession(model, language, **session_options))
    except (ValueError, DiffasrError) as e:
        await _send(ws, _error("invalid_parameter", str(e)))
        return await _close(ws, CLOSE_POLICY)
    await _send(ws, {"type": "ready", "sample_rate": rate, "language": language, "limits": limits})
    pending: list[np.ndarray] = []  # received, not yet fed: int16 arrays
    wake = asyncio.Event()
    stop = asyncio.Event()
    max_pending = int(limits["max_buffer_s"] * rate)

    async def receive():
        """Frames -> pending until stop, disconnect or a limit (raises _Closed)."""
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), limits["idle_timeout_s"])
            except asyncio.TimeoutError:
                raise _Closed("idle_timeout", f"no audio for {limits['idle_timeout_s']:g} s", CLOSE_POLICY) from None
            if msg["type"] == "websocket.disconnect":
                raise _Closed(None, "client disconnected", None)
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None:
                if len(data) > limits["max_frame_bytes"] or len(data) % 2:
                    why = "larger than max_frame_bytes" if len(data) % 2 == 0 else "an odd number of bytes"
                    await _send(ws, _error("bad_frame", f"frame of {len(data)} bytes dropped: {why} "
                                                        "(expected 16-bit little-endian mono PCM)"))
                    continue
                pending.append(np.frombuffer(data, dtype="<i2"))
                if sum(p.size for p in pending) > max_pending:
                    raise _Closed("buffer_full", f"more than {limits['max_buffer_s']:g} s of audio waiting to be "
                                                 "decoded: the client sends faster than real time", CLOSE_POLICY)
                wake.set()
            elif text is not None:
                try:
                    kind = json.loads(text).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind != "stop":
                    await _send(ws, _error("bad_message", 'text frames must be {"type": "stop"}; audio goes in '
                                                          "binary frames"))
                    continue
                stop.set()
                wake.set()

    async def process():
        """pending -> session.feed on the model thread -> events; after stop, close -> done."""
        while True:
            await wake.wait()
            wake.clear()
            if pending:
                chunk = np.concatenate(pending)
                pending.clear()
                for ev in await loop.run_in_executor(worker, session.feed, (chunk, rate)):
                    await _send(ws, ev.to_dict())
            if stop.is_set() and not pending:
                for ev in await loop.run_in_executor(worker, session.close):
                    await _send(ws, ev.to_dict())
                await _send(ws, {"type": "done"})
                return

    recv_task, proc_task = asyncio.create_task(receive()), asyncio.create_task(process())
    try:
        done, _ = await asyncio.wait({recv_task, proc_task}, return_when=asyncio.FIRST_EXCEPTION)
        if proc_task in done:
            proc_task.result()  # a model failure surfaces here
        else:
            recv_task.result()  # a limit or a disconnect surfaces here (receive only returns after stop)
            await proc_task
        await _close(ws, CLOSE_NORMAL)
    except _Closed as e:
        code, message, close_code = e.args
        if code is not None:
            await _send(ws, _error(code, message))
            await _close(ws, close_code)
    except DiffasrError as e:
        await _send(ws, _error("invalid_audio", str(e)))
        await _close(ws, CLOSE_POLICY)
    except Exception:
        log.exception("stream failed")
        await _send(ws, _error("internal", "internal server error"))
        await _close(ws, CLOSE_ERROR)
    finally:
        for t in (recv_task, proc_task):
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(recv_task, proc_task, return_exceptions=True)


def add_arguments(p) -> None:
    """`diffasr serve` flags for the stream endpoint."""
    p.add_argument("--max-streams", type=int, default=DEFAULTS["max_streams"],
                   help=f"most live streams at once on /v1/stream (default {DEFAULTS['max_streams']})")
    p.add_argument("--stream-idle-s", type=float, default=DEFAULTS["idle_timeout_s"],
                   help=f"close a stream that sends nothing for this long (default {DEFAULTS['idle_timeout_s']:g})")
    p.add_argument("--stream-buffer-s", type=float, default=DEFAULTS["max_buffer_s"],
                   help=f"most undecoded audio held per stream, seconds (default {DEFAULTS['max_buffer_s']:g})")


def limits_from(args) -> dict:
    return dict(max_streams=args.max_streams, idle_timeout_s=args.stream_idle_s, max_buffer_s=args.stream_buffer_s)
