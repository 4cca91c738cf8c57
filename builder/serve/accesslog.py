"""The server's one output channel: access log lines and rate-limited warnings, never blocking.

Why a writer thread: stderr may be a pipe nobody drains (a supervisor, a test harness, a
`docker logs` that fell behind). A blocking write(2) from the event loop would then freeze
every connection and the SIGTERM handler with it. So unless stderr is a regular file (whose
writes do not wait for a reader), the loop only hands finished bytes to a thread; when the
thread falls more than `MAX_PENDING` bytes behind, lines are dropped and counted, and a write
error (a closed pipe) turns the log off instead of raising. Warnings use the same channel at
most once per `WARN_EVERY` seconds per kind, so a fault that repeats thousands of times a
second (too many open files) costs one line, not a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import select
import stat
import threading
import time
from typing import TextIO

MAX_PENDING = 1 << 20
WARN_EVERY = 10.0
FLUSH_EVERY = 0.1  # seconds lines wait for the writer: one hand-over per batch, not per turn
FLUSH_LINES = 2048
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def log_safe(text: str) -> str:
    """`text` with anything that could break a log line (controls, quotes, non-ASCII) escaped
    as nginx escapes it (\\xHH), so a request cannot forge or split lines."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return text
    return "".join(
        c if " " <= c <= "~" and c not in '"\\' else "".join(f"\\x{b:02X}" for b in c.encode())
        for c in text
    )


def log_date(now: float) -> str:
    """Common Log Format time: 30/Nov/2025:04:11:56 +0000."""
    t = time.gmtime(now)
    return (
        f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


class AccessLog:
    """Buffers lines for FLUSH_EVERY seconds (or FLUSH_LINES lines), then writes them to a
    regular file at once, or hands them to the writer thread, which writes whole lines of at
    most PIPE_BUF bytes per write(2) so that worker processes sharing one pipe never
    interleave inside a line. One write or one hand-over per batch, rather than per
    event-loop turn, keeps the log's cost per request low. `stream=None` logs nothing at all
    (`serve -q`); an in-memory stream (tests) is written at the end of each turn."""

    def __init__(self, stream: TextIO | None, loop: asyncio.AbstractEventLoop) -> None:
        self.stream = stream
        self.loop = loop
        self.lines: list[str] = []
        self.dropped = 0
        self.enabled = stream is not None  # off for good after a write error
        self._warned: dict[str, float] = {}
        self._writer: _Writer | None = None
        self._file = -1  # a regular file's descriptor, written from the loop
        self._memory = False
        if stream is not None:
            try:
                fd = stream.fileno()
                regular = stat.S_ISREG(os.fstat(fd).st_mode)
            except (AttributeError, OSError, ValueError):
                self._memory = True
            else:
                with contextlib.suppress(OSError, ValueError):
                    stream.flush()
                if regular:
                    self._file = fd
                else:
                    self._writer = _Writer(fd)

    def add(self, line: str) -> None:
        if not self.enabled:
            return
        lines = self.lines
        if not lines:
            if self._memory:
                self.loop.call_soon(self.flush)
            else:
                self.loop.call_later(FLUSH_EVERY, self.flush)
        lines.append(line)
        if len(lines) >= FLUSH_LINES:
            self.flush()

    def warn(self, kind: str, message: str) -> None:
        """One line for `kind` at most every WARN_EVERY seconds (later ones are dropped)."""
        now = time.monotonic()
        last = self._warned.get(kind)
        if last is not None and now - last < WARN_EVERY:
            return
        self._warned[kind] = now
        self.add(f"prewheel serve: {message}\n")

    def flush(self) -> None:
        lines, self.lines = self.lines, []
        if not lines or not self.enabled or self.stream is None:
            return
        writer = self._writer
        if self.dropped and (writer is None or writer.pending < MAX_PENDING // 2):
            lines.insert(0, f"prewheel serve: {self.dropped} log lines dropped (output blocked)\n")
            self.dropped = 0
        try:
            if self._file >= 0:
                _write_all(self._file, "".join(lines).encode("utf-8", "replace"))
            elif writer is None:
                self.stream.write("".join(lines))
                self.stream.flush()
            elif writer.failed:
                self.enabled = False
            else:
                data = "".join(lines).encode("utf-8", "replace")
                if writer.pending + len(data) > MAX_PENDING:
                    self.dropped += len(lines)
                else:
                    writer.put(data)
        except Exception:  # the log must never take the server down
            self.enabled = False

    def close(self, timeout: float = 0.3) -> None:
        """Flush, then give the writer at most `timeout` seconds: shutdown must stay prompt
        even when stderr is blocked."""
        with contextlib.suppress(Exception):
            self.flush()
        if self._writer is not None:
            self._writer.stop(timeout)


class _Writer:
    """A daemon thread doing the blocking write(2)s. Each counter has one writing thread
    (`queued` the loop's, `written` this one's), so `pending` needs no lock."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.queued = 0
        self.written = 0
        self.failed = False
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="prewheel-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        return self.queued - self.written

    def put(self, data: bytes) -> None:
        self.queued += len(data)
        self._queue.put(data)

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if not self.failed:
                try:
                    self._write_lines(data)
                except OSError:
                    self.failed = True  # a closed or broken stderr: stop writing, keep serving
            self.written += len(data)

    def _write_lines(self, data: bytes) -> None:
        """Whole lines, at most PIPE_BUF bytes per write(2) where lines allow."""
        start, end = 0, len(data)
        while start < end:
            stop = end
            if end - start > select.PIPE_BUF:
                cut = data.rfind(b"\n", start, start + select.PIPE_BUF)
                if cut < 0:  # one line longer than PIPE_BUF: it goes out alone
                    cut = data.find(b"\n", start + select.PIPE_BUF)
                stop = cut + 1 if cut >= 0 else end
            _write_all(self.fd, memoryview(data)[start:stop])
            start = stop

    def stop(self, timeout: float) -> None:
        self._queue.put(None)
        self._thread.join(timeout)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
