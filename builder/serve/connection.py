"""One client connection: requests parsed by llhttp (httptools), answered in order from `Routes`.

Why llhttp: it is Node.js's HTTP parser, strict by default (a bare LF, an obsolete line fold,
a control byte or non-ASCII byte in the target, Content-Length beside Transfer-Encoding are
errors, not guesses, so no request is read two ways), and in C it parses a request faster
than the split-based parser it replaced. What it leaves to its caller, this module does:
bounding a request head's size across reads (MAX_LINE per line, MAX_HEAD in all), and, with
the server's once-a-second sweep (`check`), the time a head may take to arrive, the time an
idle keep-alive connection is kept, and the time a client may take to read its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from typing import BinaryIO, Protocol

import httptools

from .accesslog import AccessLog, log_date, log_safe
from .routes import REASONS, Routes, error_response, serialize_headers

DEFAULT_MAX_CONNECTIONS = 4096  # per worker, as nginx's worker_connections in nginx.py


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What a client may take of a worker: time to send a request head, time kept idle between
    requests, time to read an answer (plus a file's size at MIN_SEND_RATE), connections."""

    header_timeout: float = 10.0
    keepalive_timeout: float = 75.0
    send_timeout: float = 60.0
    max_connections: int = DEFAULT_MAX_CONNECTIONS


class Host(Protocol):
    """What a connection uses of the server that accepted it (`server.IndexServer`)."""

    now: float  # the sweep's clock: timeouts count in whole seconds
    routes: Routes
    limits: Limits
    clock: Clock
    log: AccessLog
    loop: asyncio.AbstractEventLoop
    connections: dict[Connection, None]  # in eviction order: the longest unanswered first

    def register(self, conn: Connection) -> None: ...

    def forget(self, conn: Connection) -> None: ...


MAX_LINE = 8 * 1024  # the request line or one header line (nginx: large_client_header_buffers)
MAX_HEAD = 32 * 1024  # everything before the body
MAX_QUEUED = 64  # pipelined requests parsed ahead of their answers; reading pauses beyond
MIN_SEND_RATE = 16 * 1024  # bytes/s a client must read a file at, on average, past send_timeout
LINGER = 2.0  # seconds an error answer waits for the client to stop sending, as nginx's
SERVER = "prewheel"
_KEEP = b"Connection: keep-alive\r\n\r\n"
_CLOSE = b"Connection: close\r\n\r\n"
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOMEM)
_RETRY = (("Retry-After", "1"),)

# method, target, HTTP version ("1.1"), headers (lower-case names), keep-alive
Request = tuple[str, str, str, dict[str, str], bool]


class Clock:
    """Date header and log timestamp, formatted once per second rather than per request."""

    def __init__(self) -> None:
        self._sec = -1
        self._prefixes: dict[int, bytes] = {}
        self.http_date = ""
        self.log_date = ""

    def tick(self) -> None:
        now = int(time.time())
        if now != self._sec:
            self._sec = now
            self._prefixes = {}
            self.http_date = formatdate(now, usegmt=True)
            self.log_date = log_date(now)

    def prefix(self, status: int) -> bytes:
        """Status line, Server and Date: the same bytes for every response this second."""
        try:
            return self._prefixes[status]
        except KeyError:
            line = (
                f"HTTP/1.1 {status} {REASONS.get(status, 'Unknown')}\r\n"
                f"Server: {SERVER}\r\nDate: {self.http_date}\r\n"
            )
            data: bytes = line.encode("latin-1")
            self._prefixes[status] = data
            return data


class _Stop(Exception):
    """Raised from a parser callback to stop parsing this connection's input on purpose."""


class Connection(asyncio.Protocol):
    """Parses what the client sends, answers each request in turn, and says to the server's
    sweep whether it has outstayed a limit. States: waiting for a head (`head_open`, or a
    fresh connection), answering (`queue`, `busy` while a file goes out), idle (keep-alive)."""

    def __init__(self, app: Host) -> None:
        self.app = app
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.url = b""
        self.headers: dict[str, str] = {}
        self.head_open = False  # a request has begun and its head is not complete
        self.head_size = 0  # its completed fields, exactly
        self.head_raw = 0  # bytes of reads that fell wholly inside it
        self.completed = 0  # heads completed during the current read
        self.answered = 0
        self.since = app.now  # start of the current wait (for a head, or idle)
        self.queue: deque[Request] = deque()
        self.busy = False  # a file is being sent; later requests wait their turn
        self.send_task: asyncio.Task[None] | None = None
        self.send_deadline = 0.0
        self.write_paused: float | None = None  # since when the client has not been reading
        self.reading_paused = False  # too many pipelined requests waiting for answers
        self.stopped = False  # read nothing more: answer what is queued, then close
        self.error: int | None = None  # the status to answer with once the queue is done
        self.lingering = False  # error answered, output shut: reading what is left, discarding
        self.closing = False

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.app.register(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.app.forget(self)
        if self.send_task is not None:
            self.send_task.cancel()

    def pause_writing(self) -> None:
        self.write_paused = self.app.now

    def resume_writing(self) -> None:
        self.write_paused = None
        self._drain()

    def data_received(self, data: bytes) -> None:
        if self.stopped or self.closing:
            return
        self.completed = 0
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.stopped = True  # CONNECT or Upgrade: answered as plain HTTP, then closed
        except httptools.HttpParserError:
            if not self.stopped and self.error is None:
                self.error = 400
            self.stopped = True
        else:
            if self.head_open:
                if not self.completed:  # this whole read belongs to the head being read
                    self.head_raw += len(data)
                if self.head_raw > MAX_HEAD:
                    self.error = 431
                    self.stopped = True
        if self.stopped and self.transport is not None:
            self.transport.pause_reading()
        self._drain()

    # -- llhttp callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = {}
        self.head_open = True
        self.head_size = self.head_raw = 0
        self.since = self.app.now

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)
        if len(self.url) > MAX_LINE:
            self.error = 414
            raise _Stop

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 4
        self.head_size += size
        if size > MAX_LINE or self.head_size > MAX_HEAD:
            self.error = 431
            raise _Stop
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        self.head_open = False
        self.completed += 1
        parser = self.parser
        headers = self.headers
        request = (
            parser.get_method().decode("latin-1"),
            self.url.decode("latin-1"),
            parser.get_http_version(),
            headers,
            parser.should_keep_alive(),
        )
        if headers.get("content-length", "0") != "0" or "transfer-encoding" in headers:
            # A body we do not read: answer, then close rather than misparse what follows.
            self.queue.append((*request[:4], False))
            self.stopped = True
            raise _Stop
        self.queue.append(request)
        if len(self.queue) > MAX_QUEUED and self.transport is not None:
            self.reading_paused = True  # resumed by _drain once answers have gone out
            self.transport.pause_reading()

    # -- answering ------------------------------------------------------------------------

    def _drain(self) -> None:
        """Answer queued requests in order while nothing blocks; then the pending error."""
        if self.lingering:
            return
        queue = self.queue
        while queue and not self.busy and not self.closing and self.write_paused is None:
            method, target, version, headers, keep = queue.popleft()
            if self.stopped and not queue and self.error is None:
                keep = False
            self._answer(method, target, version, headers, keep)
        if queue or self.busy or self.closing:
            return
        if self.error is not None:
            self._reply_error(self.error)
        elif self.stopped:
            self.close()
        elif self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def _answer(
        self, method: str, target: str, version: str, headers: dict[str, str], keep: bool
    ) -> None:
        app = self.app
        if version not in ("1.1", "1.0"):
            self._reply_error(505)
            return
        try:
            resp = app.routes.handle(method, target, headers)
        except Exception as exc:
            if isinstance(exc, OSError) and exc.errno in _OUT_OF_FILES:
                app.log.warn("files", f"cannot read the wheelhouse: {exc.strerror}")
                resp = error_response(503, _RETRY)  # the client may retry; the server goes on
            else:  # a bug: one line, once in a while, and a 500
                app.log.warn("request", f"internal error for {log_safe(target)}: {exc!r}")
                resp = error_response(500)
            keep = False
        send_body = method != "HEAD" and resp.status not in (204, 304)
        size = resp.content_length
        fh: BinaryIO | None = None
        if resp.file is not None and send_body and size:
            try:
                fh = open(resp.file, "rb")  # noqa: PTH123, SIM115 - str path; _send_file closes
            except OSError as exc:
                busy = exc.errno in _OUT_OF_FILES
                if busy:
                    app.log.warn("files", f"cannot open a file to send: {exc.strerror}")
                resp = error_response(503, _RETRY) if busy else error_response(404)
                size, keep = resp.content_length, False
        head = resp.head
        if head is None:
            try:
                head = serialize_headers(resp.headers, None if resp.status == 304 else size)
            except ValueError as exc:  # a header value that could split the response
                app.log.warn("header", f"refused an unsafe response header: {exc}")
                if fh is not None:
                    fh.close()
                    fh = None
                resp, keep = error_response(500), False
                size = resp.content_length
                head = serialize_headers(resp.headers, size)
        app.clock.tick()
        if app.log.enabled:
            app.log.add(
                f'{self.peer} - - [{app.clock.log_date}] "{method} {log_safe(target)} '
                f'HTTP/{version}" {resp.status} {size if send_body else 0}\n'
            )
        body = resp.body if send_body and fh is None else b""
        transport = self.transport
        if transport is None or transport.is_closing():
            if fh is not None:
                fh.close()
            return
        end = _KEEP if keep else _CLOSE
        transport.write(b"".join((app.clock.prefix(resp.status), head, end, body)))
        if fh is not None:
            self.busy = True
            self.send_deadline = app.now + app.limits.send_timeout + size / MIN_SEND_RATE
            self.send_task = app.loop.create_task(self._send_file(fh, resp.offset, size, keep))
            return
        self._done(keep)

    def _done(self, keep: bool) -> None:
        app = self.app
        self.answered += 1
        self.since = app.now
        connections = app.connections  # to the back of the eviction order (app.touch, inline)
        if connections.pop(self, 0) is None:
            connections[self] = None
        if not keep:
            self.stopped = True
            self.queue.clear()
            self.close()

    async def _send_file(self, fh: BinaryIO, offset: int, count: int, keep: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            with fh:
                await self.app.loop.sendfile(transport, fh, offset, count)
        except (OSError, RuntimeError):  # the client went away
            sent = False
        else:
            sent = True
        finally:  # also when cancelled by close()
            self.send_task = None
            self.busy = False
        if not sent:
            self.close()
            return
        self._done(keep)
        self._drain()

    def _reply_error(self, status: int) -> None:
        """Answer a request that could not be parsed or taken, and close: first the output,
        then, after at most LINGER seconds of discarding what the client still sends, the
        connection. Closing at once with unread input would send a reset that can destroy the
        answer before the client reads it (nginx's lingering_close)."""
        app = self.app
        resp = error_response(status)
        app.clock.tick()
        if app.log.enabled:
            app.log.add(f'{self.peer} - - [{app.clock.log_date}] "-" {status} {len(resp.body)}\n')
        self.error = None
        self.stopped = True
        transport = self.transport
        if transport is None or transport.is_closing() or not transport.can_write_eof():
            self.close()
            return
        head = serialize_headers(resp.headers, len(resp.body))
        transport.write(b"".join((app.clock.prefix(status), head, _CLOSE, resp.body)))
        transport.write_eof()
        self.lingering = True
        self.since = app.now
        self.queue.clear()
        transport.resume_reading()

    def eof_received(self) -> bool | None:
        return None  # the transport closes: nothing more to read, nothing more to say

    # -- limits ---------------------------------------------------------------------------

    @property
    def idle(self) -> bool:
        """Nothing being answered, nothing waiting to go out: the server may close this one to
        make room."""
        if self.busy or self.queue or self.write_paused is not None or self.closing:
            return False
        return self.transport is None or not self.transport.get_write_buffer_size()

    def check(self, now: float) -> None:
        """Called about once a second by the server: close what has outstayed its limit."""
        limits = self.app.limits
        if self.closing:
            return
        if self.lingering:
            if now - self.since > LINGER:
                self.close(abort=True)
        elif self.busy:
            if now > self.send_deadline:
                self.close(abort=True)
        elif self.write_paused is not None:
            if now - self.write_paused > limits.send_timeout:
                self.close(abort=True)
        elif self.head_open:
            if now - self.since > limits.header_timeout:
                self._reply_error(408)
        elif not self.queue:
            limit = limits.keepalive_timeout if self.answered else limits.header_timeout
            if now - self.since > limit:
                self.close()

    def close(self, *, abort: bool = False) -> None:
        """Close now (`abort`: drop what is not sent yet); the server forgets it at once, so
        the connection cap counts only live connections."""
        if self.closing:
            return
        self.closing = True
        self.app.forget(self)
        if self.send_task is not None:
            self.send_task.cancel()  # before abort: the transport's abort cannot stop sendfile
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
