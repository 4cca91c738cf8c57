"""Slow clients (slowloris): many connections that send a request head a byte at a time and
never finish it, reopened as the server closes them, while a normal client keeps asking for a
page on fresh connections.

`prewheel serve` runs one worker capped well below the number of slow connections, so it
must close old slow connections to let the normal client in; nginx (the generated
configuration) runs with its cap above them and relies on its header timeout. Both must
answer every normal request (each bounded by a socket timeout, not timed), and close every
slow connection once the attack stops reopening them. Counts are printed."""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from httpkit import Server, exchange, nginx_server, prewheel_server, request
from indexkit import sample_wheelhouse

from builder import index
from builder.wheelhouse import Wheelhouse

SLOW = 600
CAP = 200  # prewheel's --max-connections in this test: a third of the slow connections
HEADER_TIMEOUT = 2
ATTACK = 6.0  # seconds the slow connections are kept up (reopened when closed)
TRICKLE = 0.5  # seconds between the bytes each slow connection sends
CLIENT_TIMEOUT = 5.0  # a normal request not answered within this counts as failed


@dataclass
class SlowStats:
    opened: int = 0
    closed: int = 0  # by the server: end of file or reset
    answered_408: int = 0
    connect_failed: int = 0
    open_at_end: int = 0
    lifetimes: list[float] = field(default_factory=list)


class Slowloris:
    """Keeps `count` connections sending an unfinished request head, one byte per TRICKLE
    seconds each; reopens those the server closed at each tick while `reopen` is set."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.count = count
        self.stats = SlowStats()
        self.reopen = threading.Event()
        self.reopen.set()
        self.sel = selectors.DefaultSelector()
        self.born: dict[socket.socket, float] = {}

    def _open(self) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            sock.sendall(b"GET /cpu/simple/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        except OSError:
            self.stats.connect_failed += 1
            return
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ)
        self.born[sock] = time.monotonic()
        self.stats.opened += 1

    def _closed(self, sock: socket.socket) -> None:
        self.sel.unregister(sock)
        self.stats.lifetimes.append(time.monotonic() - self.born.pop(sock))
        self.stats.closed += 1
        sock.close()

    def run(self, until: float) -> None:
        """Until `until` (monotonic), or until every connection is closed once reopening
        has stopped."""
        next_tick = 0.0
        while time.monotonic() < until:
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + TRICKLE
                if self.reopen.is_set():
                    for _ in range(self.count - len(self.born)):
                        self._open()
                elif not self.born:
                    return
                for sock in list(self.born):
                    try:
                        sock.send(b"a")
                    except BlockingIOError:
                        pass
                    except OSError:
                        self._closed(sock)
            for key, _ in self.sel.select(timeout=max(0.0, next_tick - time.monotonic())):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                        raise
                    data = b""
                if data.startswith(b"HTTP/1.1 408"):
                    self.stats.answered_408 += 1
                if not data or data.startswith(b"HTTP/"):
                    self._closed(sock)
        self.stats.open_at_end = len(self.born)
        for sock in list(self.born):
            self.sel.unregister(sock)
            sock.close()


@dataclass
class ClientStats:
    ok: int = 0
    failed: list[str] = field(default_factory=list)


def normal_client(port: int, stop: threading.Event, stats: ClientStats) -> None:
    while not stop.is_set():
        got = exchange(port, request("GET", "/cpu/simple/alpha/"), timeout=CLIENT_TIMEOUT)
        if got.statuses[:1] == [200]:
            stats.ok += 1
        else:
            stats.failed.append(f"{got.statuses} closed={got.closed} {got.data[:60]!r}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    wh = sample_wheelhouse(tmp_path_factory.mktemp("slow") / "wh")
    index.rebuild(wh)
    return wh


@contextlib.contextmanager
def start(kind: str, wh: Wheelhouse, state: Path) -> Iterator[Server]:
    if kind == "prewheel":
        args = ("--max-connections", str(CAP), "--header-timeout", str(HEADER_TIMEOUT), "-q")
        with prewheel_server(wh.root, state / "stderr.log", *args) as srv:
            yield srv
    else:
        with nginx_server(wh.root.resolve(), state, header_timeout=HEADER_TIMEOUT) as srv:
            yield srv


@pytest.mark.parametrize("kind", ["prewheel", "nginx"])
def test_slow_clients_do_not_lock_out_a_normal_one(
    kind: str, wheelhouse: Wheelhouse, tmp_path: Path
) -> None:
    with start(kind, wheelhouse, tmp_path) as srv:
        attack = Slowloris(srv.port, SLOW)
        client = ClientStats()
        stop = threading.Event()
        runner = threading.Thread(target=attack.run, args=(time.monotonic() + 60,))
        runner.start()
        worker = threading.Thread(target=normal_client, args=(srv.port, stop, client))
        try:
            time.sleep(1.0)  # the slow connections are up before the normal client starts
            worker.start()
            time.sleep(ATTACK)
            attack.reopen.clear()  # stop reopening: every slow connection must now be closed
            stop.set()
            worker.join(CLIENT_TIMEOUT + 5)
            runner.join(HEADER_TIMEOUT + 10)
        finally:
            attack.reopen.clear()
            stop.set()
            runner.join(60)
        stats = attack.stats
        print(
            f"\n{srv.name}: {stats.opened} slow connections opened ({SLOW} at a time), "
            f"{stats.closed} closed by the server ({stats.answered_408} with 408), "
            f"{stats.open_at_end} still open at the end, longest lived "
            f"{max(stats.lifetimes, default=0):.1f}s, {stats.connect_failed} connects failed; "
            f"normal client: {client.ok} answered, {len(client.failed)} failed"
        )
        assert srv.proc.poll() is None, srv.stderr()[-2000:]
        assert client.ok >= 5 and not client.failed, client.failed[:5]
        assert stats.open_at_end == 0, "slow connections left open after the header timeout"
        assert stats.closed >= SLOW
