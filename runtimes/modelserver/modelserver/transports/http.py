"""HTTP/1.1 for the REST transport: httptools parses, this module does the rest.

An ASGI server was measured here to cost what users notice: a trivial handler on uvicorn
(httptools, uvloop) answered 2,600-3,800 req/s at 64 connections on a loaded 2-core machine
where this protocol answered 9,200-14,700, and uvicorn kept a reset connection's state for the
whole keep-alive timeout, read headers without a bound, and never timed out a request that
arrived slowly. Here:

- a request's head is bounded (`max_header_bytes`, else 431) and so is its body
  (`max_body_bytes`, else 413, answered as soon as Content-Length says so);
- once a request's first byte has come, all of it must come within `read_timeout` (else 408);
  an idle connection closes after `keep_alive`; a sweep once a second enforces both, so nothing
  is scheduled per request;
- at `max_connections`, the longest-idle connection (else the slowest to send its request)
  makes room for a new one, so probes still get through;
- a connection's state goes when it goes, however it ends;
- each response is one write; pipelined requests are answered in order.

The handler gets a `Request` with its whole body, and answers through `Request.respond`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from time import perf_counter
from urllib.parse import unquote_to_bytes

import httptools
import orjson

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]
SWEEP_SECONDS = 1.0
_REASONS = {s.value: s.phrase.encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# Larger bodies go out as a separate buffer rather than copied behind the head.
_JOIN_LIMIT = 64 * 1024


@dataclass(slots=True)
class Limits:
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 256 * 1024 * 1024
    read_timeout: float = 30.0  # seconds for a request to arrive in full once begun
    keep_alive: float = 3660.0  # seconds an idle connection stays open
    max_connections: int = 2000


class Request:
    """One request, read in full. `headers` are (lower-case name, value) pairs as sent."""

    __slots__ = ("method", "path", "query", "headers", "body", "started", "connection",
                 "_keep_alive")

    def __init__(self, method: str, path: str, query: bytes, headers: Headers, body: bytes,
                 started: float, connection: Connection, keep_alive: bool):
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body = body
        self.started = started  # perf_counter() when its first byte was parsed
        self.connection = connection
        self._keep_alive = keep_alive

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def peer(self) -> tuple | None:
        """The client's address, as the socket has it."""
        return self.connection.transport.get_extra_info("peername")

    def respond(self, status: int, body: bytes, headers: Headers) -> None:
        self.connection.respond(status, body, headers, self._keep_alive)


Handler = Callable[[Request], Awaitable[None]]


class HttpServer:
    def __init__(self, handler: Handler, limits: Limits):
        self.handler = handler
        self.limits = limits
        self.connections: set[Connection] = set()
        self.draining = False
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task | None = None
        self._date = b""
        self._second = -1

    async def start(self, sock, ssl=None) -> None:
        loop = asyncio.get_running_loop()
        # A TLS handshake is bounded like a request's head (it comes before any of it).
        handshake = {"ssl_handshake_timeout": self.limits.read_timeout} if ssl else {}
        self._servers.append(await loop.create_server(lambda: Connection(self), sock=sock,
                                                      ssl=ssl, backlog=2048, **handshake))
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())

    async def shutdown(self, grace: float) -> None:
        """Stop accepting; requests in progress get `grace` seconds; then every connection
        closes (idle ones at once, the others after their answer)."""
        self.draining = True
        for server in self._servers:
            server.close()
        for connection in list(self.connections):
            if connection.idle:
                connection.close()
        deadline = time.monotonic() + grace
        while any(c.busy for c in self.connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            connection.close()
        if self._sweeper is not None:
            self._sweeper.cancel()

    def date(self) -> bytes:
        """The Date header's value, made once a second."""
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)).encode()
        return self._date

    def admit(self, connection: Connection) -> bool:
        """Room for one more connection: if one must go, the longest-idle one, else the one
        whose request has been arriving for longest (a client too slow to finish its
        request, on purpose or not). Connections whose request is being answered stay."""
        if len(self.connections) < self.limits.max_connections:
            return True
        idle = [c for c in self.connections if c.idle]
        slow = [c for c in self.connections if c.reading and c.task is None]
        if idle:
            min(idle, key=lambda c: c.deadline).close()
        elif slow:
            min(slow, key=lambda c: c.started)._fail(408, "the request did not arrive in time")
        else:
            return False
        return True

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            now = time.monotonic()
            for connection in [c for c in self.connections if c.deadline < now]:
                connection.expire()


class Connection(asyncio.Protocol):
    """One client connection: requests parsed as they arrive, answered one at a time."""

    def __init__(self, server: HttpServer):
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.task: asyncio.Task | None = None  # the handler of the request being answered
        self.deadline = 0.0  # when the current wait (idle or reading) runs out
        self.reading = False  # a request has begun and not yet arrived in full
        self.in_head = False  # ... and its head has not either
        self.raw_head = 0
        self.started = 0.0
        self.closed = False
        self.last = False  # the requests taken are answered, then the connection closes
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.headers: Headers = []
        self.head_size = 0
        self.body: list[bytes] = []
        self.body_size = 0

    @property
    def idle(self) -> bool:
        return not self.reading and self.task is None and not self.queue

    @property
    def busy(self) -> bool:
        return self.task is not None or bool(self.queue) or self.reading

    # -- asyncio ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        if not self.server.admit(self):
            transport.write(_response(503, b'{"error":"the server has too many connections"}',
                                      _JSON, False, self.server.date()))
            transport.close()
            self.closed = True
            return
        self.server.connections.add(self)
        self.deadline = time.monotonic() + self.limits.keep_alive

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.queue.clear()
        self.parser = None  # the parser refers back to this connection

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self.reading or not (self.task or self.queue):
                self._fail(400, "protocol upgrades are not supported")
            else:  # the request came whole (h2c's upgrade asks with one): answer it over
                self.last = True  # HTTP/1.1, and read nothing more on this connection
                self.transport.pause_reading()
            return
        except httptools.HttpParserError as exc:
            refused = exc.__context__  # what a callback of ours raised, if it was that
            if isinstance(refused, _Refused):
                self._fail(refused.status, refused.message)
            else:
                self._fail(400, f"malformed HTTP request: {exc}")
            return
        if self.in_head:  # httptools holds a header it has not finished: count it raw
            self.raw_head += len(data)
            if self.raw_head > self.limits.max_header_bytes:
                self._fail(431, f"the request head is over the limit of "
                                f"{self.limits.max_header_bytes} bytes")

    # -- the parser's callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self.reading = self.in_head = True
        self.raw_head = 0
        self.started = perf_counter()
        self.deadline = time.monotonic() + self.limits.read_timeout

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))
        self._count_head(len(name) + len(value) + 4)

    def _count_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.limits.max_header_bytes:
            raise _Refused(431, f"the request head is over the limit of "
                                f"{self.limits.max_header_bytes} bytes")

    def on_headers_complete(self) -> None:
        self.in_head = False
        length = expect = None
        for name, value in self.headers:
            if name == b"content-length":
                length = value
            elif name == b"expect":
                expect = value
        if length is not None and length.isdigit() and int(length) > self.limits.max_body_bytes:
            raise _Refused(413, f"the request body is over the limit of "
                                f"{self.limits.max_body_bytes} bytes")
        if expect is not None and expect.lower() == b"100-continue":
            self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self.body_size += len(body)
        if self.body_size > self.limits.max_body_bytes:
            raise _Refused(413, f"the request body is over the limit of "
                                f"{self.limits.max_body_bytes} bytes")
        self.body.append(body)

    def on_message_complete(self) -> None:
        parser = self.parser
        path, _, query = self.url.partition(b"?")
        path = unquote_to_bytes(path) if b"%" in path else path
        body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
        request = Request(parser.get_method().decode("ascii", "replace"),
                          path.decode("utf-8", "replace"), query, self.headers, body,
                          self.started, self, parser.should_keep_alive())
        self.reading = False
        self._reset_request()
        self.queue.append(request)
        if self.task is None:
            self._next()
        elif len(self.queue) > 1:
            self.transport.pause_reading()  # pipelined: take no more until these are answered

    # -- answering --------------------------------------------------------------------------
    def _next(self) -> None:
        request = self.queue.popleft()
        self.task = asyncio.get_running_loop().create_task(self._handle(request))

    async def _handle(self, request: Request) -> None:
        try:
            await self.server.handler(request)
        except Exception:
            log.exception("unhandled error on %s %s", request.method, request.path)
            if not self.closed:
                self.respond(500, b'{"error":"internal server error"}', _JSON, False)
        finally:
            self.task = None
        if self.closed:
            return
        if self.queue:
            self._next()
            if len(self.queue) <= 1:
                self.transport.resume_reading()
        elif not self.reading:
            self.deadline = time.monotonic() + self.limits.keep_alive

    def respond(self, status: int, body: bytes, headers: Headers, keep_alive: bool) -> None:
        if self.closed:
            return
        keep_alive = keep_alive and not self.server.draining and not (self.last and not self.queue)
        head = _head(status, body, headers, keep_alive, self.server.date())
        if len(body) <= _JOIN_LIMIT:
            self.transport.write(head + body)
        else:
            self.transport.writelines((head, body))
        if not keep_alive:
            self.close()

    def _fail(self, status: int, message: str) -> None:
        """The request cannot be read: say why, and close (the rest of it is not read)."""
        if not self.closed and self.task is None:
            body = orjson.dumps({"error": message})
            self.transport.write(_response(status, body, _JSON, False, self.server.date()))
        self.close()

    def expire(self) -> None:
        if self.reading:
            self._fail(408, "the request did not arrive in time")
        elif self.idle:
            self.close()
        else:  # answering takes its time; the data plane's deadline covers that
            self.deadline = time.monotonic() + self.limits.read_timeout

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.connections.discard(self)
            self.transport.close()


class _Refused(Exception):
    """Raised from a parser callback: the request is answered with `status` and dropped."""

    def __init__(self, status: int, message: str):
        self.status = status
        self.message = message


_JSON: Headers = [(b"content-type", b"application/json")]


def _head(status: int, body: bytes, headers: Headers, keep_alive: bool, date: bytes) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, b"Unknown"))]
    lines.extend(b"%s: %s" % pair for pair in headers)
    lines.append(b"content-length: %d" % len(body))
    lines.append(b"date: " + date)
    if not keep_alive:
        lines.append(b"connection: close")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)


def _response(status: int, body: bytes, headers: Headers, keep_alive: bool, date: bytes) -> bytes:
    return _head(status, body, headers, keep_alive, date) + body
