"""Bounds for `diffasr serve`: how much a flood of clients, or one slow or hostile client, can take.

Three layers, outermost first:
  * `bounded_protocol`: uvicorn's h11 protocol with a 431 for request heads over `max_header_kb`
    (h11 alone answers 400 and closes with the rest unread, which the client sees as a TCP reset),
    a timeout for a request head to arrive (slow-header clients), and a cap on how long the body
    of an already-answered request may keep draining.
  * `Guard` (ASGI middleware): the Host allow-list, the upload-size cap (413), the body-read
    timeout (408) and the overall request timeout (503 + Retry-After); counts response codes.
  * `Admission`: at most `max_uploads` transcription requests receiving their body at once (over
    it: 429 + Retry-After) and at most `max_queue` past the upload (decoding audio, queued, in the
    model; over it: 503 + Retry-After). Refusals happen before the body is read.
Uploads are spooled to a temporary file past 1 MB by Starlette and decoded from that file, so a
request holds at most its decoded 16-kHz float32 samples (4 bytes × 16,000 per second) in memory.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import ipaddress
import json
import logging
from dataclasses import dataclass

from fastapi.responses import JSONResponse

log = logging.getLogger("diffasr.serve")

MB = 1 << 20
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "localhost.localdomain")
RETRYABLE = (429, 503)


class ApiError(Exception):
    """A request the server refuses; becomes `{"error": {message, type, param, code}}` with `status`."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
        headers: dict | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass(frozen=True)
class Limits:
    """What one server accepts at once and how long it waits. Seconds, kibibytes, request counts."""

    max_uploads: int = 8  # transcription requests receiving their body at the same time
    max_queue: int = 16  # transcription requests past the upload: decoding audio, queued or in the model
    body_timeout_s: float = 60.0  # the whole request body must arrive within this (from the request head)
    request_timeout_s: float = 300.0  # request head to response start, queueing and decoding included
    header_timeout_s: float = 10.0  # first byte of a request head to its end (and connect to first byte)
    max_header_kb: float = 32.0  # request line + headers; over it: 431
    max_connections: int = 256  # open connections; over it uvicorn answers 503 (a backstop, /health included)
    allowed_hosts: tuple[str, ...] | None = None  # Host header names (no port) accepted; None: any
    retry_after_s: int = 5  # the Retry-After of 429 and 503 answers

    def check(self) -> None:
        from ..errors import ConfigError

        for name in ("max_uploads", "max_queue", "max_connections"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be ≥ 1, not {getattr(self, name)}")
        for name in ("body_timeout_s", "request_timeout_s", "header_timeout_s", "max_header_kb"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, not {getattr(self, name)}")
        if self.retry_after_s < 0:
            raise ConfigError(f"retry_after_s must be ≥ 0, not {self.retry_after_s}")


def default_hosts(bind: str) -> tuple[str, ...] | None:
    """The Host allow-list for a server bound to `bind`: the loopback names when it is loopback
    (a DNS-rebinding page cannot then reach it under another name), else None (any)."""
    try:
        loopback = bind == "localhost" or ipaddress.ip_address(bind).is_loopback
    except ValueError:
        loopback = False
    return LOOPBACK_HOSTS if loopback else None


def parse_hosts(value: str | None, bind: str) -> tuple[str, ...] | None:
    """`--allowed-hosts`: None -> default_hosts(bind); "*" -> any; else comma-separated names."""
    if value is None:
        return default_hosts(bind)
    names = tuple(h.strip().lower() for h in value.split(",") if h.strip())
    return None if "*" in names or not names else names


def host_name(header: bytes) -> str:
    """The name part of a Host header value: 'example.com:8000' -> 'example.com', '[::1]:80' -> '::1'."""
    host = header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def busy(status: int, message: str, limits: Limits, code: str) -> ApiError:
    return ApiError(status, message, code=code, type_="server_busy", headers={"retry-after": str(limits.retry_after_s)})


class Admission:
    """Counts transcription requests receiving (body not yet complete) and working (past the upload).

    `receiving()` and `working()` are context managers: entering one over its cap raises the 429/503
    ApiError; leaving it frees the slot. When the server falls idle again, freed heap is returned to
    the OS (glibc keeps it otherwise, and RSS after a flood would stay near its peak).
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.n_receiving = 0
        self.n_working = 0
        self.refused = 0

    def admit(self) -> None:
        """Refuse a new upload before its body is read: 503 if the work queue is full, 429 if
        `max_uploads` bodies are already being received."""
        lim = self.limits
        if self.n_working >= lim.max_queue:
            self.refused += 1
            raise busy(
                503,
                f"the server is busy ({self.n_working} requests queued, the most it holds); retry later",
                lim,
                "queue_full",
            )
        if self.n_receiving >= lim.max_uploads:
            self.refused += 1
            raise busy(
                429, f"too many uploads at once (the limit is {lim.max_uploads}); retry later", lim, "too_many_uploads"
            )
        self.n_receiving += 1

    def received(self) -> None:
        """The body of an admitted upload is complete (or abandoned): free its receiving slot."""
        self.n_receiving -= 1
        self._maybe_trim()

    def start_work(self) -> None:
        """The upload becomes work; 503 when `max_queue` requests are already past their upload."""
        if self.n_working >= self.limits.max_queue:
            self.refused += 1
            raise busy(
                503,
                f"the server is busy ({self.n_working} requests queued, the most it holds); retry later",
                self.limits,
                "queue_full",
            )
        self.n_working += 1

    def done(self) -> None:
        self.n_working -= 1
        self._maybe_trim()

    def _maybe_trim(self) -> None:
        if self.n_receiving == 0 and self.n_working == 0:
            trim_heap()


_LIBC = None


def trim_heap() -> None:
    """Give free heap pages back to the OS (glibc malloc_trim; a no-op elsewhere). Costs ~ms."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
            _LIBC.malloc_trim  # noqa: B018 (musl and macOS lack it)
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


class Guard:
    """ASGI middleware around the app: Host allow-list (400), body size (413), body-read timeout
    (408, connection closed), request timeout until the response starts (503 + Retry-After);
    counts response codes into `metrics.responses`."""

    def __init__(self, app, max_body: int, limits: Limits, metrics):
        self.app, self.max_body, self.limits, self.metrics = app, max_body, limits, metrics

    async def _refuse(self, error: ApiError, scope, receive, send) -> None:
        self.metrics.responses[error.status] += 1
        await error.response()(scope, receive, send)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        lim = self.limits
        headers = dict(scope["headers"])
        if scope["type"] == "websocket":
            # The stream endpoint bounds itself (stream_server); only the Host check applies here, so
            # that a rebinding page cannot open /v1/stream either. Closing before accept is a 403.
            if lim.allowed_hosts is not None and host_name(headers.get(b"host", b"")) not in lim.allowed_hosts:
                self.metrics.responses[403] += 1
                return await send({"type": "websocket.close", "code": 1008})
            return await self.app(scope, receive, send)
        if lim.allowed_hosts is not None and host_name(headers.get(b"host", b"")) not in lim.allowed_hosts:
            # DNS rebinding: a web page's own name resolving to 127.0.0.1 still sends that name as Host
            return await self._refuse(
                ApiError(400, "Host header not allowed (see diffasr serve --allowed-hosts)", code="invalid_host"),
                scope,
                receive,
                send,
            )
        too_large = ApiError(
            413,
            f"request body exceeds the upload limit of {self.max_body / MB:.1f} MB",
            param="file",
            code="file_too_large",
        )
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return await self._refuse(too_large, scope, receive, send)
        loop = asyncio.get_running_loop()
        body_deadline = loop.time() + lim.body_timeout_s
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), max(0.0, body_deadline - loop.time()))
            except TimeoutError:  # a slow client must not hold a connection and an upload slot forever
                raise ApiError(
                    408,
                    f"the request body did not arrive within {lim.body_timeout_s:g} s",
                    code="body_timeout",
                    headers={"connection": "close"},
                ) from None
            seen += len(message.get("body", b""))
            if seen > self.max_body:
                raise too_large
            return message

        async def counting_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                timer.reschedule(None)  # a response under way is not cut off
                self.metrics.responses[message["status"]] += 1
            await send(message)

        try:
            async with asyncio.timeout(lim.request_timeout_s) as timer:
                await self.app(scope, limited_receive, counting_send)
        except TimeoutError:
            if started:
                raise
            log.warning("request to %s timed out after %g s", scope.get("path"), lim.request_timeout_s)
            error = busy(
                503,
                f"the request was not answered within {lim.request_timeout_s:g} s; retry later",
                lim,
                "request_timeout",
            )
            error.headers["connection"] = "close"
            await self._refuse(error, scope, receive, send)


# ---------------------------------------------------------------------- the HTTP protocol


def _raw_response(status: int, reason: str, message: str, code: str) -> bytes:
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode() + body


def bounded_protocol(limits: Limits):
    """A uvicorn h11 protocol class enforcing `limits` on request heads and on draining bodies.

    It subclasses uvicorn's internal H11Protocol (uvicorn has no public hook for a request-head limit),
    so pyproject pins uvicorn to the release this was tested against; tests/test_serve_limits.py checks
    that the installed uvicorn is that release and that these limits hold."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    max_head = int(limits.max_header_kb * 1024)
    linger_s = 2.0  # after a refusal, read and drop what the client still sends, so it reads the answer

    class BoundedH11Protocol(H11Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self._closing_softly = False
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)

        def connection_lost(self, exc):
            if self._head_timer is not None:
                self._head_timer.cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._closing_softly:
                return  # lingering after a refusal: drop it
            if self.conn.their_state is h11.IDLE:
                buffered = self.conn.trailing_data[0] + data
                if len(buffered) > max_head and b"\r\n\r\n" not in buffered[: max_head + 4]:
                    self._refuse(
                        431,
                        "Request Header Fields Too Large",
                        f"request line and headers exceed {limits.max_header_kb:g} KB",
                        "headers_too_large",
                    )
                    return
                if self._head_timer is None:
                    self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_timeout)
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE and self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                # answered before its body arrived (e.g. 429): uvicorn reads and drops the rest, for at most this long
                cycle = self.cycle
                self.loop.call_later(limits.body_timeout_s, self._drain_timeout, cycle)

        def _drain_timeout(self, cycle) -> None:
            if self.cycle is cycle and self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
                self.transport.close()

        def _head_timeout(self) -> None:
            self._head_timer = None
            if (
                self.conn.their_state is h11.IDLE
                and not self.transport.is_closing()
                and (self.cycle is None or self.cycle.response_complete)
            ):
                if self.conn.trailing_data[0]:  # a request head started and did not finish
                    self._refuse(
                        408,
                        "Request Timeout",
                        f"the request head did not arrive within {limits.header_timeout_s:g} s",
                        "header_timeout",
                    )
                else:
                    self.transport.close()

        def _refuse(self, status: int, reason: str, message: str, code: str) -> None:
            log.warning("refused a connection from %s: %s", self.client, message)
            self.transport.write(_raw_response(status, reason, message, code))
            # Closing with unread input makes the kernel send a reset, which can destroy the answer
            # before the client reads it; half-close, drop further input, close a little later.
            self._closing_softly = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(linger_s, self.transport.close)

    return BoundedH11Protocol


def uvicorn_config(app, limits: Limits, **kwargs):
    """uvicorn.Config for `app` with `limits` applied (the protocol above, connection cap, h11 buffer)."""
    import uvicorn

    return uvicorn.Config(
        app,
        http=bounded_protocol(limits),
        limit_concurrency=limits.max_connections,
        h11_max_incomplete_event_size=int(limits.max_header_kb * 1024) * 2 + 16 * 1024,
        **kwargs,
    )


def add_arguments(p) -> None:
    """The `diffasr serve` flags for Limits (defaults from the dataclass)."""
    d = Limits()
    p.add_argument(
        "--max-uploads",
        type=int,
        default=d.max_uploads,
        help=f"transcription uploads received at once; more get 429 + Retry-After (default {d.max_uploads})",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help=f"requests past their upload (decoding, queued, in the model); more get 503 + Retry-After "
        f"(default {d.max_queue})",
    )
    p.add_argument(
        "--body-timeout-s",
        type=float,
        default=d.body_timeout_s,
        help=f"seconds for a whole request body to arrive; slower gets 408 and is closed (default {d.body_timeout_s:g})",
    )
    p.add_argument(
        "--request-timeout-s",
        type=float,
        default=d.request_timeout_s,
        help=f"seconds from request to response start; longer gets 503 (default {d.request_timeout_s:g})",
    )
    p.add_argument(
        "--header-timeout-s",
        type=float,
        default=d.header_timeout_s,
        help=f"seconds for a request's headers to arrive (default {d.header_timeout_s:g})",
    )
    p.add_argument(
        "--max-header-kb",
        type=float,
        default=d.max_header_kb,
        help=f"largest request line + headers; larger gets 431 (default {d.max_header_kb:g})",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help=f"open connections; more get 503 (default {d.max_connections})",
    )
    p.add_argument(
        "--allowed-hosts",
        default=None,
        metavar="NAMES",
        help="comma-separated Host header names accepted, '*' for any (default: localhost, 127.0.0.1 "
        "and ::1 when --host is loopback, else any)",
    )
    p.add_argument(
        "--retry-after-s",
        type=int,
        default=d.retry_after_s,
        help=f"Retry-After of 429/503 answers (default {d.retry_after_s})",
    )


def from_args(args) -> Limits:
    limits = Limits(
        max_uploads=args.max_uploads,
        max_queue=args.max_queue,
        body_timeout_s=args.body_timeout_s,
        request_timeout_s=args.request_timeout_s,
        header_timeout_s=args.header_timeout_s,
        max_header_kb=args.max_header_kb,
        max_connections=args.max_connections,
        allowed_hosts=parse_hosts(args.allowed_hosts, args.host),
        retry_after_s=args.retry_after_s,
    )
    limits.check()
    return limits
