"""`diffasr serve`: an OpenAI-compatible transcription server with dynamic batching and a web page.

    POST /v1/audio/transcriptions   multipart form as OpenAI's (file, model, language, response_format,
                                    temperature, prompt) plus the extension fields `method`, `steps`,
                                    `hotwords` (comma-separated, or the field repeated) and
                                    `return_steps` (true: verbose_json's `canvas_steps` holds each
                                    step's canvas; a field the method does not read is a 400)
    GET  /v1/models, /health, /metrics (JSON counters, batch sizes included), /  (the web page)
    WS   /v1/stream                     live transcription (serving/stream_server.py)

Requests that arrive within `max_wait_ms` of the first (up to `max_batch`) with equal DecodeOptions
are decoded by one `transcribe()` call.
All model work runs in one worker thread; the event loop only parses forms and waits, and audio is
decoded in a thread pool. Bad input of any kind is a 4xx with an OpenAI-style JSON error body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from importlib import resources

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ..audio import SAMPLE_RATE, load_audio
from ..decoding import DecodeOptions, resolve
from ..decoding.options import METHODS, reads
from ..errors import AudioError, ConfigError, DiffasrError
from ..pipeline.transcribe import Transcription
from ..pipeline.writers import write_srt, write_txt, write_vtt
from .batcher import Batcher, Metrics
from .limits import Admission, ApiError, Guard, Limits, uvicorn_config
from .limits import add_arguments as limits_arguments
from .limits import from_args as limits_from_args

log = logging.getLogger("diffasr.serve")

MB = 1 << 20
FORM_OVERHEAD = 64 * 1024  # bytes of a multipart body that are not the file: boundaries, headers, fields
FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
FIELDS = (
    "file",
    "model",
    "language",
    "response_format",
    "temperature",
    "method",
    "steps",
    "return_steps",
    "prompt",
    "hotwords",
)
MODEL_ALIASES = ("whisper-1",)  # what OpenAI clients send by default; there is one model to pick


# ---------------------------------------------------------------------- request parsing


def _options(form, model, model_name: str) -> tuple[DecodeOptions, str]:
    """Validate the form's fields into DecodeOptions and a response format; ApiError(400) otherwise."""
    unknown = sorted(set(form.keys()) - set(FIELDS))
    if unknown:
        raise ApiError(
            400,
            f"unknown parameter {unknown[0]!r} (this server accepts {', '.join(FIELDS)})",
            param=unknown[0],
            code="unknown_parameter",
        )
    for key, value in form.multi_items():
        if key != "file" and not isinstance(value, str):
            raise ApiError(400, f"{key} must be a plain form field, not a file", param=key, code="invalid_value")
    name = form.get("model") or model_name
    if name not in (model_name, *MODEL_ALIASES):
        raise ApiError(
            404,
            f"model {name!r} does not exist; this server runs {model_name!r}",
            param="model",
            code="model_not_found",
        )
    fmt = form.get("response_format") or "json"
    if fmt not in FORMATS:
        raise ApiError(
            400,
            f"response_format must be one of {', '.join(FORMATS)}, not {fmt!r}",
            param="response_format",
            code="invalid_value",
        )
    language = (form.get("language") or "").strip().lower()
    language = None if language in ("", "auto") else language
    if language is not None and language not in model.config.languages:
        raise ApiError(
            400,
            f"language {language!r} is not supported (choose from {', '.join(model.config.languages)}, "
            "or leave it out to detect it)",
            param="language",
            code="unsupported_language",
        )
    given = {
        "method": form.get("method") or None,
        "language": language,
        "steps": _number(form, "steps", int, None),
        # OpenAI's default is 0 and many clients always send it: 0 means "not sampled", which
        # every method honours; another value is the caller's option, checked like the rest
        "temperature": _number(form, "temperature", float, None) or None,
        "return_steps": _flag(form, "return_steps"),
        "prompt": (form.get("prompt") or "").strip() or None,
        "hotwords": [w.strip() for v in form.getlist("hotwords") for w in str(v).split(",") if w.strip()],
    }
    try:
        options = resolve(model.config.decode_defaults, given, model.backend.reads)
    except ConfigError as e:
        unread = re.search(r"does not read (\w+)", str(e))  # the field named first, not those it reads
        named = [f for f in ("hotwords", "prompt", "return_steps", "steps", "temperature", "method") if f in str(e)]
        param = unread.group(1) if unread else next((f for f in named if re.search(rf"\b{f}\b", str(e))), None)
        raise ApiError(400, str(e), param=param, code="invalid_value") from None
    return options, fmt


def _flag(form, name: str) -> bool | None:
    """A boolean form field: true/1/yes -> True, false/0/no -> None (not given), else ApiError(400)."""
    value = (form.get(name) or "").strip().lower()
    if value in ("", "false", "0", "no"):
        return None
    if value in ("true", "1", "yes"):
        return True
    raise ApiError(400, f"{name} must be true or false, not {value!r}", param=name, code="invalid_value")


def _number(form, name: str, kind: type, default):
    value = form.get(name)
    if value is None or value == "":
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number):
        raise ApiError(
            400,
            f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}",
            param=name,
            code="invalid_value",
        )
    return number


def _decode_upload(file, max_duration_s: float) -> np.ndarray:
    """An uploaded file object (spooled to disk past 1 MB) -> 16 kHz array, refusing (AudioError,
    ApiError) what is undecodable or too long. The file is decoded where it lies, never copied into
    a bytes object. The header is probed first, so a small file that would expand to hours is refused
    before decoding."""
    probed = _probe_duration(file)
    if probed is not None and probed > max_duration_s:
        raise ApiError(
            400,
            f"audio is {probed:.0f} s long; this server accepts at most {max_duration_s:g} s",
            param="file",
            code="audio_too_long",
        )
    try:
        file.seek(0)
        audio = load_audio(file)
    except AudioError:
        raise
    except Exception as e:  # a decoder failing on hostile bytes is still the input's fault
        log.warning("audio decode failed: %r", e)
        raise AudioError(f"not a readable audio file ({type(e).__name__})") from None
    if audio.size / SAMPLE_RATE > max_duration_s:
        raise ApiError(
            400,
            f"audio is {audio.size / SAMPLE_RATE:.0f} s long; this server accepts at most {max_duration_s:g} s",
            param="file",
            code="audio_too_long",
        )
    return audio


def _probe_duration(file) -> float | None:
    """Seconds of audio according to the container header of a seekable file object, or None."""
    import soundfile as sf

    try:
        file.seek(0)
        info = sf.info(file)
        return info.frames / info.samplerate
    except Exception:
        pass
    try:
        import av

        file.seek(0)
        with av.open(file, mode="r", metadata_errors="ignore") as container:
            return container.duration / 1e6 if container.duration else None  # microseconds (av.time_base)
    except Exception:
        return None


def _render(result: Transcription, fmt: str, batch_size: int):
    headers = {"x-diffasr-batch-size": str(batch_size)}
    if fmt == "json":
        return JSONResponse({"text": result.text}, headers=headers)
    if fmt == "verbose_json":
        body = {
            "task": "transcribe",
            "language": result.language,
            "duration": result.duration,
            "text": result.text,
            "segments": [
                {"id": i, "start": s.start, "end": s.end, "text": s.text} for i, s in enumerate(result.segments)
            ],
            "words": [
                {"word": w.text, "start": w.start, "end": w.end, "confidence": round(w.confidence, 4)}
                for w in getattr(result, "words", [])
            ],
            # extensions: per-token confidence at the last denoising step, and how the text was decoded
            "tokens": [
                {"id": t, "text": s, "confidence": round(c, 4)}
                for t, s, c in zip(result.tokens, result.token_strings, result.confidences)
            ],
            "language_probability": getattr(result, "language_probability", None),
            "method": result.method,
            "steps": result.steps_run,
            "tail_tokens": result.tail_tokens,  # written one by one by the causal pass after the step cap
        }
        if result.steps is not None:  # return_steps: each step's canvas (decoding/steps.py); `steps` is the count
            body["canvas_steps"] = result.steps
        return JSONResponse(body, headers=headers)
    writer = {"text": write_txt, "srt": write_srt, "vtt": write_vtt}[fmt]
    media = "text/vtt" if fmt == "vtt" else "text/plain"
    return PlainTextResponse(writer(result), media_type=media, headers=headers)


# ---------------------------------------------------------------------- the app


def create_app(
    model,
    model_name: str | None = None,
    max_batch: int = 8,
    max_wait_ms: float = 30,
    max_upload_mb: float = 25,
    max_duration_s: float = 600,
    streams: dict | None = None,
    limits: Limits | None = None,
):
    """The FastAPI app serving `model` (a loaded DiffusionASR). Run it with uvicorn, ideally through
    `limits.uvicorn_config(app, limits)` so that the protocol-level limits apply too.
    `streams`: keyword arguments of stream_server.stream_router (limits of the /v1/stream WebSocket)."""
    limits = limits or Limits()
    limits.check()
    for ok, msg in [
        (max_batch >= 1, f"max_batch must be ≥ 1, not {max_batch}"),
        (max_wait_ms >= 0, f"max_wait_ms must be ≥ 0, not {max_wait_ms}"),
        (max_upload_mb > 0, f"max_upload_mb must be > 0, not {max_upload_mb}"),
        (max_duration_s > 0, f"max_duration_s must be > 0, not {max_duration_s}"),
    ]:
        if not ok:
            raise ConfigError(msg)
    model_name = model_name or f"diffasr-{model.config.preset}"
    max_upload = int(max_upload_mb * MB)
    metrics = Metrics()
    admission = Admission(limits)
    page = resources.files("diffasr.serving").joinpath("web/index.html")
    script = resources.files("diffasr.serving").joinpath("web/steps.js")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        app.state.batcher = Batcher(model, max_batch, max_wait_ms / 1000, metrics)
        app.state.batcher.start()
        yield
        await app.state.batcher.close()

    app = FastAPI(title="diffasr", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, max_body=max_upload + FORM_OVERHEAD, limits=limits, metrics=metrics)
    from .stream_server import stream_router

    app.include_router(stream_router(model, **(streams or {})))

    @app.exception_handler(ApiError)
    async def _api_error(request, e: ApiError):
        return e.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        return ApiError(e.status_code, str(e.detail), code="not_found" if e.status_code == 404 else None).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e):
        problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        return ApiError(400, f"invalid request: {problems}").response()

    @app.exception_handler(Exception)
    async def _server_error(request, e):
        log.exception("internal error")
        return ApiError(500, "internal server error", type_="server_error").response()

    @app.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request):
        admission.admit()  # 429/503 before a byte of the body is read
        metrics.in_flight += 1
        receiving, working = True, False
        try:
            try:
                async with request.form(max_files=1, max_fields=len(FIELDS) + 4) as form:
                    admission.received()  # the whole body is in (the file part spooled to disk past 1 MB)
                    receiving = False
                    options, fmt = _options(form, model, model_name)
                    upload = form.get("file")
                    if upload is None or isinstance(upload, str):
                        raise ApiError(
                            400, "missing the audio `file` (a multipart file upload)", param="file", code="missing_file"
                        )
                    size = upload.size if upload.size is not None else upload.file.seek(0, os.SEEK_END)
                    if size > max_upload:
                        raise ApiError(
                            413,
                            f"file is {size / MB:.1f} MB; the limit is {max_upload_mb:g} MB",
                            param="file",
                            code="file_too_large",
                        )
                    admission.start_work()  # 503 when the queue is full
                    working = True
                    try:
                        audio = await asyncio.to_thread(_decode_upload, upload.file, max_duration_s)
                    except AudioError as e:
                        raise ApiError(
                            400, f"could not decode the audio: {e}", param="file", code="invalid_audio"
                        ) from None
            except ClientDisconnect:
                raise ApiError(400, "client disconnected during upload") from None
            try:  # the spooled upload is closed (deleted) by now; only the decoded samples remain
                result, batch_size = await request.app.state.batcher.submit(audio, options)
            except DiffasrError as e:  # audio that decodes but cannot be transcribed
                raise ApiError(
                    400, f"could not transcribe the audio: {e}", param="file", code="invalid_audio"
                ) from None
            del audio
            return _render(result, fmt, batch_size)
        finally:
            if receiving:
                admission.received()
            if working:
                admission.done()
            metrics.in_flight -= 1

    @app.get("/v1/models")
    async def models():
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": int(metrics.started), "owned_by": "diffasr"}],
        }

    # what this model decodes with when a request names nothing: its own decode_defaults
    table, defaults = model.backend.reads, resolve(model.config.decode_defaults, {}, model.backend.reads)

    @app.get("/health")
    async def health():
        return {
            "status": "ok",
            "model": model_name,
            "languages": list(model.config.languages),
            "methods": [m for m in METHODS if m in table],
            "default_method": defaults.method,
            "steps_methods": [m for m in METHODS if m in table and "steps" in reads(m, table)],
            "canvas_methods": [m for m in METHODS if m in table and "return_steps" in reads(m, table)],
            "default_steps": defaults.steps,
            "max_upload_mb": max_upload_mb,
            "max_duration_s": max_duration_s,
        }

    @app.get("/metrics")
    async def metrics_():
        m = metrics
        return {
            "uptime_s": round(time.time() - m.started, 3),
            "in_flight": m.in_flight,
            "queue_depth": len(app.state.batcher.pending),
            "responses": {str(k): v for k, v in sorted(m.responses.items())},
            "batches_run": m.batches,
            "items_decoded": m.items,
            "batch_sizes": {str(k): v for k, v in sorted(m.batch_sizes.items())},
            "max_batch_size_seen": max(m.batch_sizes, default=0),
            "mean_batch_size": round(m.items / m.batches, 3) if m.batches else 0.0,
            "model_seconds_total": round(m.model_seconds, 3),
            "audio_seconds_total": round(m.audio_seconds, 3),
            "max_batch": max_batch,
            "max_wait_ms": max_wait_ms,
            "receiving": admission.n_receiving,
            "working": admission.n_working,
            "refused_busy": admission.refused,
            "max_uploads": limits.max_uploads,
            "max_queue": limits.max_queue,
        }

    @app.get("/", response_class=HTMLResponse)
    async def index():
        if not page.is_file():
            raise ApiError(404, "the web page is not installed (diffasr/web/index.html)", code="not_found")
        return HTMLResponse(page.read_text(encoding="utf-8"))

    @app.get("/steps.js")
    async def steps_js():
        if not script.is_file():
            raise ApiError(404, "the web page is not installed (diffasr/web/steps.js)", code="not_found")
        return PlainTextResponse(script.read_text(encoding="utf-8"), media_type="text/javascript")

    return app


# ---------------------------------------------------------------------- CLI: diffasr serve


def add_arguments(p) -> None:
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--model", default=None, help="checkpoint directory or model name (default: diffasr-base)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--max-batch", type=int, default=8, help="most requests decoded together (default 8)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=30,
        help="how long a request waits for others to join its batch (default 30)",
    )
    p.add_argument("--max-upload-mb", type=float, default=25, help="largest accepted upload (default 25)")
    p.add_argument("--max-duration-s", type=float, default=600, help="longest accepted audio (default 600)")
    from .stream_server import add_arguments as stream_arguments

    stream_arguments(p)
    limits_arguments(p)


def run(args) -> int:
    import uvicorn

    from .. import load
    from .stream_server import limits_from

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    limits = limits_from_args(args)
    model = load(args.model, device=args.device)
    app = create_app(
        model,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_upload_mb=args.max_upload_mb,
        max_duration_s=args.max_duration_s,
        streams=limits_from(args),
        limits=limits,
    )
    log.info(
        "serving %s on http://%s:%d (max batch %d, max wait %g ms, %d uploads / %d queued at once, hosts %s)",
        f"diffasr-{model.config.preset}",
        args.host,
        args.port,
        args.max_batch,
        args.max_wait_ms,
        limits.max_uploads,
        limits.max_queue,
        ", ".join(limits.allowed_hosts) if limits.allowed_hosts else "any",
    )
    # uvicorn handles SIGINT/SIGTERM: stop accepting, finish in-flight requests, then run the lifespan exit.
    uvicorn.Server(uvicorn_config(app, limits, host=args.host, port=args.port, log_level="info")).run()
    return 0
