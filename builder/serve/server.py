"""The embedded index server: HTTP/1.1 on asyncio, answering from `routes.Routes`.

Why not `http.server`: its per-request header parsing and thread hand-off cap it near 1,000
requests/s with second-long tails (see FINDINGS.md), while an index answers many small page
requests. Here a request is parsed by hand, the page bytes, gzip and ETag come from memory,
and wheels go out with `sendfile(2)`, so one process keeps up with nginx's order of magnitude.
Connections are kept alive, pipelined requests are answered in order, and each request is
logged as one line in the Common Log Format.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import TextIO

from ..log import get_logger
from .routes import REASONS, Response, Routes, error_response

log = get_logger("server")

MAX_HEAD = 64 * 1024
IDLE_TIMEOUT = 75.0
BACKLOG = 4096
SERVER = "prewheel"
_KEEP = b"Connection: keep-alive\r\n\r\n"
_CLOSE = b"Connection: close\r\n\r\n"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class _Clock:
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
            t = time.gmtime(now)
            self.log_date = (
                f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
                f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
            )

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


class _AccessLog:
    """Buffers log lines and writes them once per event-loop turn."""

    def __init__(self, stream: TextIO | None, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        if self.stream is None:
            return
        if not self.lines:
            self.loop.call_soon(self.flush)
        self.lines.append(line)

    def flush(self) -> None:
        if self.stream is not None and self.lines:
            with contextlib.suppress(OSError, ValueError):
                self._write(self.lines)
        self.lines.clear()

    def _write(self, lines: list[str]) -> None:
        """Whole lines per write(2), at most PIPE_BUF bytes, so that worker processes sharing
        one stderr never interleave inside a line."""
        stream = self.stream
        assert stream is not None
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = -1
        if fd < 0:
            stream.write("".join(lines))
            stream.flush()
            return
        stream.flush()
        chunk: list[bytes] = []
        size = 0
        for line in lines:
            data = line.encode("utf-8", "replace")
            if chunk and size + len(data) > select.PIPE_BUF:
                os.write(fd, b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        if chunk:
            os.write(fd, b"".join(chunk))


class _Connection(asyncio.Protocol):
    def __init__(self, app: IndexServer) -> None:
        self.app = app
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.peer = "-"
        self.busy = False  # a file is being sent; later requests wait their turn
        self.closing = False
        self.last_seen = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else "-"
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.app.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.app.connections.discard(self)
        self.closing = True

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self.buf += data
        if not self.busy:
            self._process()
        elif len(self.buf) > MAX_HEAD and self.transport is not None:
            self.transport.pause_reading()  # a client pipelining faster than files go out

    def _process(self) -> None:
        transport = self.transport
        assert transport is not None
        while not self.closing and not self.busy:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._reply_error(431)
                return
            head, self.buf = self.buf[:end], self.buf[end + 4 :]
            if not head.strip():
                continue
            self._request(head)

    def _reply_error(self, status: int) -> None:
        self.app.clock.tick()
        resp = error_response(status)
        self._write(status, resp.headers, resp.body, False, False)
        self.app.log.add(
            f'{self.peer} - - [{self.app.clock.log_date}] "-" {status} {len(resp.body)}\n'
        )
        self._close()

    def _request(self, head: bytes) -> None:
        try:
            text = head.decode("latin-1")
            line, _, rest = text.lstrip("\r\n").partition("\r\n")
            method, target, version = line.split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError(version)
        except ValueError:
            self._reply_error(400)
            return
        headers: dict[str, str] = {}
        for field in rest.split("\r\n") if rest else ():
            name, sep, value = field.partition(":")
            if not sep:
                self._reply_error(400)
                return
            key = name.strip().lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        conn = headers.get("connection", "").lower()
        keep = ("close" not in conn) if version == "HTTP/1.1" else ("keep-alive" in conn)
        if "content-length" in headers or "transfer-encoding" in headers:
            keep = False  # a body we do not read: answer, then close rather than misparse
        try:
            resp = self.app.routes.handle(method, target, headers)
        except Exception:
            log.exception("request failed")
            resp = Response(status=500, headers=(), body=b"500 Internal Server Error\n")
            keep = False
        self._respond(method, target, version, resp, keep)

    def _respond(self, method: str, target: str, version: str, resp: Response, keep: bool) -> None:
        app = self.app
        app.clock.tick()
        size = resp.content_length
        app.log.add(
            f'{self.peer} - - [{app.clock.log_date}] "{method} {target} {version}" '
            f"{resp.status} {size if method != 'HEAD' and resp.status != 304 else 0}\n"
        )
        send_body = method != "HEAD" and resp.status != 304
        if resp.head is not None and resp.file is None and self.transport is not None:
            body = resp.body if send_body else b""
            end = _KEEP if keep else _CLOSE
            self.transport.write(b"".join((app.clock.prefix(resp.status), resp.head, end, body)))
            if not keep:
                self._close()
            return
        if resp.file is None:
            self._write(
                resp.status, resp.headers, resp.body if send_body else b"", keep, True, size
            )
            if not keep:
                self._close()
            return
        self._write(resp.status, resp.headers, b"", keep, True, size)
        if not send_body or size == 0:
            if not keep:
                self._close()
            return
        self.busy = True
        app.loop.create_task(self._send_file(resp.file, resp.offset, size, keep))

    async def _send_file(self, path: str, offset: int, count: int, keep: bool) -> None:
        transport = self.transport
        assert transport is not None
        try:
            with Path(path).open("rb") as fh:
                await self.app.loop.sendfile(transport, fh, offset, count)
        except (OSError, RuntimeError, ConnectionError):
            self._close()
            return
        self.busy = False
        self.last_seen = time.monotonic()
        if not keep:
            self._close()
            return
        if not transport.is_reading():
            transport.resume_reading()
        if self.buf:
            self._process()

    def _write(
        self,
        status: int,
        headers: tuple[tuple[str, str], ...],
        body: bytes,
        keep: bool,
        with_length: bool,
        length: int | None = None,
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        lines = [f"{k}: {v}\r\n" for k, v in headers]
        if with_length and status != 304:
            lines.append(f"Content-Length: {len(body) if length is None else length}\r\n")
        head = "".join(lines).encode("latin-1")
        end = _KEEP if keep else _CLOSE
        transport.write(b"".join((self.app.clock.prefix(status), head, end, body)))

    def _close(self) -> None:
        self.closing = True
        if self.transport is not None:
            self.transport.close()


class IndexServer:
    """Serves a wheelhouse on one event loop; `serve_forever` or `running` start it."""

    def __init__(self, root: Path, *, access_log: TextIO | None = None) -> None:
        self.routes = Routes(root)
        self.clock = _Clock()
        self.connections: set[_Connection] = set()
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self.log = _AccessLog(access_log, self.loop)
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout (slow or forgotten clients)."""
        cutoff = time.monotonic() - IDLE_TIMEOUT
        for conn in list(self.connections):
            if conn.last_seen < cutoff and not conn.busy:
                conn._close()
        self.loop.call_later(IDLE_TIMEOUT / 5, self._sweep)

    async def _start(self, sock: socket.socket) -> None:
        self._server = await self.loop.create_server(
            lambda: _Connection(self), sock=sock, backlog=BACKLOG
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.loop.call_later(IDLE_TIMEOUT / 5, self._sweep)

    def bind(self, host: str, port: int) -> int:
        """Listen now (so the port is known and taken) and return the port."""
        return self.use_socket(listen_socket(host, port))

    def use_socket(self, sock: socket.socket) -> int:
        """Serve on an already listening socket (shared by worker processes)."""
        self.loop.run_until_complete(self._start(sock))
        return self.port

    def serve_forever(self) -> None:
        """Run until `stop()`, Ctrl-C or SIGTERM (the last two only in the main thread)."""
        asyncio.set_event_loop(self.loop)
        if threading.current_thread() is threading.main_thread():
            self.loop.add_signal_handler(signal.SIGTERM, self._shutdown)
        try:
            self.loop.run_forever()
        finally:
            self.log.flush()

    def stop(self) -> None:
        """Stop from any thread."""
        self.loop.call_soon_threadsafe(self._shutdown)

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn._close()
        self.loop.stop()

    def close(self) -> None:
        self.log.flush()
        with contextlib.suppress(RuntimeError):
            self.loop.close()


def listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    sock.setblocking(False)
    return sock


def serve(
    root: Path,
    sock: socket.socket,
    *,
    workers: int = 1,
    access_log: TextIO | None = None,
) -> None:
    """Serve on `sock` with `workers` processes until Ctrl-C or SIGTERM.

    Worker processes share the listening socket, like nginx's: each runs its own event loop,
    so pages and files are served on every core instead of one.
    """
    children: list[int] = []
    for _ in range(max(0, workers - 1)):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _serve_one(root, sock, access_log)
            except KeyboardInterrupt:
                pass
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    try:
        _serve_one(root, sock, access_log)
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def _serve_one(root: Path, sock: socket.socket, access_log: TextIO | None) -> None:
    server = IndexServer(root, access_log=access_log)
    try:
        server.use_socket(sock)
        server.serve_forever()
    finally:
        server.close()


@contextlib.contextmanager
def running(
    root: Path, host: str = "127.0.0.1", port: int = 0, access_log: TextIO | None = None
) -> Iterator[str]:
    """Serve `root` from a background thread; yields the base URL. For tests and benchmarks."""
    server = IndexServer(root, access_log=access_log)
    bound = server.bind(host, port)
    thread = threading.Thread(target=server.serve_forever, name="prewheel-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.stop()
        thread.join(10)
        server.close()
