"""The server's decisions, tested alone (no socket, no process): what a hostile request target
can reach in a response header, the head limits applied to exactly the reads the server gets
(one read or many, which a real socket cannot promise), the connection cap against the
descriptor limit, and an access log that neither blocks nor raises. The end-to-end tests in
tests/reliability/ prove the same over real connections."""

from __future__ import annotations

import asyncio
import io
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from indexkit import sample_wheelhouse

from builder import index
from builder.serve import accesslog, routes
from builder.serve.accesslog import AccessLog, log_safe
from builder.serve.connection import DEFAULT_MAX_CONNECTIONS, MAX_HEAD, MAX_LINE, Connection
from builder.serve.server import IndexServer, connection_cap


class FakeTransport(asyncio.Transport):
    """Collects what the connection writes; records pauses and closes."""

    def __init__(self) -> None:
        super().__init__()
        self.out = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.out += data

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 1) if name == "peername" else default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading

    def get_write_buffer_size(self) -> int:
        return 0

    def statuses(self) -> list[int]:
        return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) [A-Za-z ]+\r\n", self.out)]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wh = sample_wheelhouse(tmp_path_factory.mktemp("decide") / "wh")
    index.rebuild(wh)
    return wh.root


@pytest.fixture
def app(root: Path) -> Iterator[IndexServer]:
    server = IndexServer(root, access_log=io.StringIO())
    yield server
    server.close()


def connect(app: IndexServer) -> tuple[Connection, FakeTransport]:
    conn, transport = Connection(app), FakeTransport()
    conn.connection_made(transport)
    return conn, transport


HOSTILE_TARGETS = [
    "/cpu/simple/A%0d%0aSet-Cookie:%20x=1/",
    "/cpu/simple/A%0d%0aSet-Cookie:%20x=1",
    "/cpu%0d%0aSet-Cookie:%20x=1/simple",
    "/cpu%0aX:%20y/simple/Alpha/",
    "/cpu/simple/%E2%82%AC/",
    "/cpu/simple/%E2%82%ACAlpha/",
    "/cpu/simple/%E2%82%AC",
    "/%E2%82%AC/simple/",
    "/cpu/simple/%FF/",
    "/cpu/simple/A%00/",
    "/cpu/simple/-alpha-/",
    "/cpu/simple/.alpha/",
]


@pytest.mark.parametrize("target", HOSTILE_TARGETS)
def test_no_target_reaches_a_header(root: Path, target: str) -> None:
    """Names are validated before anything echoes them: such targets get 404, and whatever
    is answered serializes to printable ASCII header lines."""
    resp = routes.Routes(root).handle("GET", target, {})
    assert resp.status == 404, (target, resp.headers)
    head = routes.serialize_headers(resp.headers, len(resp.body)).decode("ascii")
    assert all(line.isprintable() for line in head.split("\r\n")), head


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/cpu/simple", "/cpu/simple/"),
        ("/cpu/simple/Alpha", "/cpu/simple/Alpha/"),
        ("/cpu/simple/Alpha/", "/cpu/simple/alpha/"),
        ("/cu128/simple/A.B_c/", "/cu128/simple/a-b-c/"),
    ],
)
def test_redirects_are_built_from_valid_names(root: Path, target: str, location: str) -> None:
    resp = routes.Routes(root).handle("GET", target, {})
    assert (resp.status, dict(resp.headers)["Location"]) == (301, location)


@pytest.mark.parametrize("value", ["a\r\nSet-Cookie: x", "a\nb", "a\rb", "a\x00b", "caf\u00e9"])
def test_serialize_headers_refuses_what_could_split_a_response(value: str) -> None:
    with pytest.raises(ValueError, match=r"Location|non-ASCII"):
        routes.serialize_headers((("Location", value),))


def test_serialize_headers_adds_the_length() -> None:
    got = routes.serialize_headers((("ETag", '"x"'),), 12)
    assert got == b'ETag: "x"\r\nContent-Length: 12\r\n'


def test_a_huge_header_line_in_one_read_is_refused(app: IndexServer) -> None:
    conn, transport = connect(app)
    conn.data_received(b"GET /cpu/simple/ HTTP/1.1\r\nX-Big: " + b"a" * 65536 + b"\r\n\r\n")
    assert transport.statuses() == [431] and transport.eof


def test_many_headers_in_one_read_are_refused(app: IndexServer) -> None:
    conn, transport = connect(app)
    fields = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(MAX_HEAD // 100))
    conn.data_received(b"GET /cpu/simple/ HTTP/1.1\r\n" + fields + b"\r\n")
    assert transport.statuses() == [431]


def test_a_head_growing_across_reads_is_refused_past_the_limit(app: IndexServer) -> None:
    """Refused once past MAX_HEAD, though the line never ends: the bytes are counted as they
    arrive, not when the parser finishes a field."""
    conn, transport = connect(app)
    conn.data_received(b"GET /cpu/simple/ HTTP/1.1\r\nX-Long: ")
    sent = 0
    while not transport.statuses() and sent < 4 * MAX_HEAD:
        conn.data_received(b"b" * 1024)
        sent += 1024
    assert transport.statuses() == [431]
    assert MAX_HEAD - 1024 <= sent <= MAX_HEAD + 1024


def test_a_long_url_is_refused(app: IndexServer) -> None:
    conn, transport = connect(app)
    conn.data_received(b"GET /" + b"a" * (MAX_LINE + 1) + b" HTTP/1.1\r\n\r\n")
    assert transport.statuses() == [414]


@pytest.mark.parametrize(
    "data",
    [b"GET / HTTP/1.1\nHost: x\n\n", b"GET / HTTP/1.1\rHost: x\r\r", b"\x16\x03\x01\x00",
     b"GET /\x00 HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"],
)  # fmt: skip
def test_malformed_heads_are_answered_400_at_once(app: IndexServer, data: bytes) -> None:
    conn, transport = connect(app)
    conn.data_received(data)
    assert transport.statuses() == [400] and transport.eof


def test_pipelined_requests_then_junk(app: IndexServer) -> None:
    conn, transport = connect(app)
    one = b"GET /cpu/simple/ HTTP/1.1\r\nHost: x\r\n\r\n"
    conn.data_received(one * 3 + b"junk\r\n\r\n")
    assert transport.statuses() == [200, 200, 200, 400]


def test_a_slow_head_gets_408_after_the_header_timeout(app: IndexServer) -> None:
    conn, transport = connect(app)
    conn.data_received(b"GET /cpu/simple/ HTTP/1.1\r\nX-Slow: a")
    conn.check(app.now + app.limits.header_timeout / 2)
    assert not transport.statuses()
    conn.check(app.now + app.limits.header_timeout + 1)
    assert transport.statuses() == [408]


def test_an_idle_connection_is_evicted_oldest_first(app: IndexServer) -> None:
    first, t1 = connect(app)
    _, t2 = connect(app)
    first.data_received(b"GET /cpu/simple/ HTTP/1.1\r\nHost: x\r\n\r\n")  # answered: newest
    assert app._evict(1) == 1
    assert t2.closed and not t1.closed


def test_connection_cap_fits_the_descriptor_limit() -> None:
    assert connection_cap(None, 1 << 20, 10) == (DEFAULT_MAX_CONNECTIONS, None)
    cap, warning = connection_cap(None, 1024, 10)
    assert cap < 512 and warning is None
    cap, warning = connection_cap(1000, 64, 10)
    assert cap == 1000 and warning is not None and "limit (64)" in warning
    assert connection_cap(100, 1024, 10) == (100, None)


@pytest.mark.parametrize(
    ("text", "logged"),
    [("/cpu/simple/", "/cpu/simple/"), ('/a"b', "/a\\x22b"), ("/\u20ac", "/\\xE2\\x82\\xAC"),
     ("/a\nb", "/a\\x0Ab"), ("/a\\b", "/a\\x5Cb")],
)  # fmt: skip
def test_log_lines_cannot_be_forged(text: str, logged: str) -> None:
    assert log_safe(text) == logged


def test_access_log_never_blocks_on_a_full_pipe() -> None:
    """Nobody reads the pipe: flushing stays instant, what does not fit is dropped and
    counted, and closing gives up after its grace."""
    read_end, write_end = os.pipe()
    loop = asyncio.new_event_loop()
    try:
        with os.fdopen(write_end, "w") as stream:
            log = AccessLog(stream, loop)
            line = "x" * 200 + "\n"
            started = time.monotonic()
            for _ in range(40):
                for _ in range(accesslog.FLUSH_LINES):
                    log.add(line)
            assert time.monotonic() - started < 5  # a blocking write would never return
            assert log.dropped > 0
            log.close(0.05)
    finally:
        os.close(read_end)
        loop.close()


def test_access_log_turns_off_when_its_pipe_breaks() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    loop = asyncio.new_event_loop()
    try:
        with os.fdopen(write_end, "w") as stream:
            log = AccessLog(stream, loop)
            log.add("one\n")
            log.flush()
            log.close(1.0)  # the writer met EPIPE (Python ignores SIGPIPE): no exception
            log.add("two\n")
            log.flush()
            assert not log.enabled
    finally:
        loop.close()


def test_an_unsafe_header_from_a_route_becomes_a_500(app: IndexServer) -> None:
    """The last line of defence: whatever a route returns, no CR/LF reaches the wire."""
    app.routes.handle = lambda *a: routes.Response(  # type: ignore[method-assign]
        status=301, headers=(("Location", "/a\r\nSet-Cookie: x=1"),), body=b""
    )
    conn, transport = connect(app)
    conn.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.statuses() == [500] and transport.closed
    assert b"Set-Cookie" not in transport.out


def test_a_failing_route_is_a_500_and_one_warning(app: IndexServer) -> None:
    def broken(*args: object) -> routes.Response:
        raise KeyError("bug")

    app.routes.handle = broken  # type: ignore[method-assign]
    for _ in range(3):
        conn, transport = connect(app)
        conn.data_received(b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")
        assert transport.statuses() == [500]
    app.log.flush()
    stream = app.log.stream
    assert isinstance(stream, io.StringIO)
    assert stream.getvalue().count("internal error") == 1


def test_a_stopped_server_leaves_no_signal_wakeup_behind(app: IndexServer) -> None:
    """Stopped by SIGTERM, the server takes its signal handlers off before its loop closes
    (a second SIGTERM, a supervisor's to the whole group, is ignored meanwhile), so no signal
    is ever written to the closed wakeup socket: the H200 node's 16 workers each printed
    "Exception ignored when trying to write to the signal wakeup fd: Bad file descriptor"."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers are installed from the main thread only")
    before = signal.getsignal(signal.SIGTERM)
    app.bind("127.0.0.1", 0)
    app.loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    app.serve_forever()
    assert app.closed
    assert signal.getsignal(signal.SIGTERM) is before
    assert signal.set_wakeup_fd(-1) == -1, "a wakeup fd still points at the loop"
