"""WebSocket endpoint for live transcription: `GET /v1/stream` (upgraded), one StreamSession per connection.

    ws://HOST/v1/stream?language=en&sample_rate=48000     (language: optional, identified once if left out;
                                                           sample_rate: of the PCM the client sends, default 16000)
    ws://HOST/v1/stream?format=webm                       (a browser MediaRecorder's WebM/Opus, any timeslice)
  client -> server  binary frames: format=pcm16 (default): little-endian signed 16-bit mono PCM (any length, an
                    even number of bytes); format=webm: consecutive pieces of one WebM (or Ogg) stream, decoded
                    as they arrive by PyAV in a thread of the connection's own (a broken stream ends it)
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
import io
import json
import logging
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from ..audio import SAMPLE_RATE
from ..errors import DiffasrError
from ..pipeline.stream import StreamSession

log = logging.getLogger("diffasr.stream")

CLOSE_NORMAL, CLOSE_POLICY, CLOSE_ERROR, CLOSE_TRY_LATER = 1000, 1008, 1011, 1013
DEFAULTS = dict(max_streams=4, max_buffer_s=30.0, idle_timeout_s=30.0, max_frame_bytes=1 << 20)


class _Closed(Exception):
    """The stream ends: (error code, message, close code); code None for a normal end."""


def stream_router(
    model,
    max_streams: int = 4,
    max_buffer_s: float = 30.0,
    idle_timeout_s: float = 30.0,
    max_frame_bytes: int = 1 << 20,
    **session_options,
) -> APIRouter:
    """The `/v1/stream` WebSocket route for `model`; session_options go to StreamSession (pause_s, ...)."""
    from ..errors import ConfigError

    for ok, msg in [
        (max_streams >= 1, f"max_streams must be ≥ 1, not {max_streams}"),
        (max_buffer_s > 0, f"max_buffer_s must be > 0, not {max_buffer_s}"),
        (idle_timeout_s > 0, f"idle_timeout_s must be > 0, not {idle_timeout_s}"),
        (max_frame_bytes >= 2, f"max_frame_bytes must be ≥ 2, not {max_frame_bytes}"),
    ]:
        if not ok:
            raise ConfigError(msg)
    router = APIRouter()
    worker = ThreadPoolExecutor(1, thread_name_prefix="diffasr-stream")
    state = {"active": 0, "served": 0}
    limits = {
        "max_streams": max_streams,
        "max_buffer_s": max_buffer_s,
        "idle_timeout_s": idle_timeout_s,
        "max_frame_bytes": max_frame_bytes,
    }
    router.stream_state = state  # for tests and /metrics-style introspection

    @router.websocket("/v1/stream")
    async def stream_endpoint(ws: WebSocket):
        await ws.accept()
        if state["active"] >= max_streams:
            await _send(
                ws, _error("too_many_streams", f"this server streams at most {max_streams} connections at once")
            )
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
    """language and sample_rate from the query string (format is checked, read by the caller);
    ValueError with a message otherwise."""
    q = ws.query_params
    unknown = sorted(set(q) - {"language", "sample_rate", "format", "steps"})
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (this endpoint takes language, sample_rate, format, steps)")
    if q.get("steps", "false") not in ("true", "false"):
        raise ValueError(f"steps must be true or false, not {q.get('steps')!r}")
    if q.get("format", "pcm16") not in ("pcm16", "webm"):
        raise ValueError(f"format must be pcm16 or webm, not {q.get('format')!r}")
    language = (q.get("language") or "").strip().lower() or None
    if language == "auto":
        language = None
    if language is not None and language not in model.config.languages:
        raise ValueError(
            f"language {language!r} is not supported (choose from {', '.join(model.config.languages)}, "
            "or leave it out to detect it)"
        )
    raw = q.get("sample_rate") or "16000"
    if not raw.isdigit() or not 8000 <= int(raw) <= 192000:
        raise ValueError(f"sample_rate must be an integer in 8000..192000, not {raw!r}")
    return language, int(raw)


async def _serve(ws: WebSocket, model, worker, limits: dict, session_options: dict) -> None:
    loop = asyncio.get_running_loop()
    try:
        language, rate = _params(ws, model)
        steps = {"return_steps": True} if ws.query_params.get("steps") == "true" else {}  # finals carry their steps
        session = await loop.run_in_executor(worker, lambda: StreamSession(model, language, **session_options, **steps))
    except (ValueError, DiffasrError) as e:
        await _send(ws, _error("invalid_parameter", str(e)))
        return await _close(ws, CLOSE_POLICY)
    webm = ws.query_params.get("format") == "webm"
    if webm:
        rate = SAMPLE_RATE  # the decoder resamples whatever the container holds
    await _send(
        ws,
        {
            "type": "ready",
            "sample_rate": rate,
            "language": language,
            "limits": limits,
            "format": "webm" if webm else "pcm16",
        },
    )
    pending: list[np.ndarray] = []  # received, not yet fed: int16 PCM at `rate`, or float32 at 16 kHz from webm
    wake = asyncio.Event()
    stop = asyncio.Event()
    max_pending = int(limits["max_buffer_s"] * rate)

    def decoded(block: np.ndarray) -> None:  # on the event loop, from the webm thread
        pending.append(block)
        wake.set()

    def from_thread(fn, *args) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may be gone when a late block arrives
            loop.call_soon_threadsafe(fn, *args)

    decoder = (
        _ContainerDecoder(
            lambda b: from_thread(decoded, b), lambda: from_thread(wake.set), max_bytes=4 * limits["max_frame_bytes"]
        )
        if webm
        else None
    )

    async def receive():
        """Frames -> pending until stop, disconnect or a limit (raises _Closed)."""
        while not stop.is_set():
            try:
                msg = await asyncio.wait_for(ws.receive(), limits["idle_timeout_s"])
            except TimeoutError:
                raise _Closed("idle_timeout", f"no audio for {limits['idle_timeout_s']:g} s", CLOSE_POLICY) from None
            if msg["type"] == "websocket.disconnect":
                raise _Closed(None, "client disconnected", None)
            data, text = msg.get("bytes"), msg.get("text")
            if data is not None and decoder is not None:
                if len(data) > limits["max_frame_bytes"]:
                    await _send(
                        ws, _error("bad_frame", f"frame of {len(data)} bytes dropped: larger than max_frame_bytes")
                    )
                elif not decoder.put(data):
                    raise _Closed("buffer_full", "the WebM decoder is too far behind", CLOSE_POLICY)
            elif data is not None:
                if len(data) > limits["max_frame_bytes"] or len(data) % 2:
                    why = "larger than max_frame_bytes" if len(data) % 2 == 0 else "an odd number of bytes"
                    await _send(
                        ws,
                        _error(
                            "bad_frame",
                            f"frame of {len(data)} bytes dropped: {why} (expected 16-bit little-endian mono PCM)",
                        ),
                    )
                    continue
                pending.append(np.frombuffer(data, dtype="<i2"))
                if sum(p.size for p in pending) > max_pending:
                    raise _Closed(
                        "buffer_full",
                        f"more than {limits['max_buffer_s']:g} s of audio waiting to be "
                        "decoded: the client sends faster than real time",
                        CLOSE_POLICY,
                    )
                wake.set()
            elif text is not None:
                try:
                    kind = json.loads(text).get("type")
                except (ValueError, AttributeError):
                    kind = None
                if kind != "stop":
                    await _send(
                        ws, _error("bad_message", 'text frames must be {"type": "stop"}; audio goes in binary frames')
                    )
                    continue
                stop.set()
                if decoder is not None:
                    decoder.end()
                wake.set()

    async def process():
        """pending -> session.feed on the model thread -> events; after stop, close -> done."""
        while True:
            await wake.wait()
            wake.clear()
            if decoder is not None and decoder.error is not None:
                raise _Closed("invalid_audio", f"cannot decode the WebM stream: {decoder.error}", CLOSE_POLICY)
            if sum(p.size for p in pending) > max_pending:
                raise _Closed(
                    "buffer_full",
                    f"more than {limits['max_buffer_s']:g} s of audio waiting to be decoded",
                    CLOSE_POLICY,
                )
            if pending:
                chunk = np.concatenate(pending)
                pending.clear()
                for ev in await loop.run_in_executor(worker, session.feed, (chunk, rate)):
                    await _send(ws, ev.to_dict())
            if stop.is_set() and decoder is not None and decoder.thread.is_alive():
                await asyncio.to_thread(decoder.thread.join)  # its last blocks are on their way; they wake us
                wake.set()
                continue
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
        if decoder is not None:
            decoder.end()  # the thread sees the end of input and exits
        for t in (recv_task, proc_task):
            t.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(recv_task, proc_task, return_exceptions=True)


class _ContainerDecoder(io.RawIOBase):
    """A growing WebM/Ogg byte stream -> 16 kHz mono float32 blocks, decoded by PyAV in a thread.

    The websocket side `put`s bytes and `end`s; PyAV reads them through this blocking file object.
    `on_block(array)` gets each decoded block, `on_done()` is called when the thread ends; `error`
    holds what went wrong (a broken stream cannot be resumed: frames depend on the header)."""

    def __init__(self, on_block, on_done, max_bytes: int):
        super().__init__()
        self.buf, self.eof, self.error, self.max_bytes = bytearray(), False, None, max_bytes
        self.cv = threading.Condition()
        self.on_block, self.on_done = on_block, on_done
        self.thread = threading.Thread(target=self._run, name="diffasr-webm", daemon=True)
        self.thread.start()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def put(self, data: bytes) -> bool:
        """Queue bytes for the decoder; False when more than max_bytes are already waiting."""
        with self.cv:
            if len(self.buf) + len(data) > self.max_bytes:
                return False
            self.buf += data
            self.cv.notify()
        return True

    def end(self) -> None:
        with self.cv:
            self.eof = True
            self.cv.notify()

    def readinto(self, b) -> int:
        with self.cv:
            while not self.buf and not self.eof:
                self.cv.wait()
            n = min(len(b), len(self.buf))
            b[:n] = self.buf[:n]
            del self.buf[:n]
            return n

    def _run(self) -> None:
        import av

        try:
            with av.open(self, mode="r", metadata_errors="ignore") as container:
                if not container.streams.audio:
                    raise ValueError("no audio track")
                resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
                for frame in container.decode(container.streams.audio[0]):
                    for out in resampler.resample(frame):
                        self.on_block(out.to_ndarray().reshape(-1).astype(np.float32))
                for out in resampler.resample(None):
                    self.on_block(out.to_ndarray().reshape(-1).astype(np.float32))
        except Exception as e:  # hostile or truncated bytes: the stream's fault, reported to its client
            if not (self.eof and not self.buf and isinstance(e, EOFError)):
                self.error = f"{type(e).__name__}: {e}"[:200]
        finally:
            self.on_done()


def add_arguments(p) -> None:
    """`diffasr serve` flags for the stream endpoint."""
    p.add_argument(
        "--max-streams",
        type=int,
        default=DEFAULTS["max_streams"],
        help=f"most live streams at once on /v1/stream (default {DEFAULTS['max_streams']})",
    )
    p.add_argument(
        "--stream-idle-s",
        type=float,
        default=DEFAULTS["idle_timeout_s"],
        help=f"close a stream that sends nothing for this long (default {DEFAULTS['idle_timeout_s']:g})",
    )
    p.add_argument(
        "--stream-buffer-s",
        type=float,
        default=DEFAULTS["max_buffer_s"],
        help=f"most undecoded audio held per stream, seconds (default {DEFAULTS['max_buffer_s']:g})",
    )


def limits_from(args) -> dict:
    return dict(max_streams=args.max_streams, idle_timeout_s=args.stream_idle_s, max_buffer_s=args.stream_buffer_s)
