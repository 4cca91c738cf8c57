"""Out of file descriptors, and at the connection cap: hundreds of idle connections against a
server that can hold far fewer.

`prewheel serve` runs once with a file descriptor limit of 64 and a --max-connections above
it (so accept(2) itself fails with EMFILE, the case that made asyncio log a traceback per
pending connection and spin), and once with a connection cap below the idle connections.
nginx runs the generated configuration with the same low cap. Each must keep answering a
normal client, use next to no CPU while the idle connections wait (no spinning), keep its
stderr to a few lines, and stop within a second on SIGTERM. Counts are printed."""

from __future__ import annotations

import contextlib
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from httpkit import (
    Server,
    alive,
    children_of,
    cpu_seconds,
    get_status,
    nginx_server,
    prewheel_server,
)
from indexkit import sample_wheelhouse

from builder import index
from builder.wheelhouse import Wheelhouse

IDLE = 300
QUIET = 3.0  # seconds of CPU time measured while the idle connections wait
REQUESTS = 20


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    wh = sample_wheelhouse(tmp_path_factory.mktemp("fds") / "wh")
    index.rebuild(wh)
    return wh


@contextlib.contextmanager
def start(kind: str, wh: Wheelhouse, state: Path) -> Iterator[Server]:
    if kind == "prewheel-fd-limit":
        args = ("--max-connections", "1000")
        with prewheel_server(wh.root, state / "stderr.log", *args, nofile=64) as srv:
            yield srv
    elif kind == "prewheel-cap":
        with prewheel_server(wh.root, state / "stderr.log", "--max-connections", "50") as srv:
            yield srv
    else:
        with nginx_server(wh.root.resolve(), state, max_connections=50) as srv:
            yield srv


def tree_cpu(pid: int) -> float:
    return sum(cpu_seconds(p) for p in (pid, *children_of(pid)) if alive(p))


@pytest.mark.parametrize("kind", ["prewheel-fd-limit", "prewheel-cap", "nginx-cap"])
def test_idle_connections_past_the_limit(kind: str, wheelhouse: Wheelhouse, tmp_path: Path) -> None:
    entry = wheelhouse.find("alpha-1.0-py3-none-any.whl")
    assert entry is not None
    with start(kind, wheelhouse, tmp_path) as srv:
        idle: list[socket.socket] = []
        try:
            for _ in range(IDLE):
                idle.append(socket.create_connection(("127.0.0.1", srv.port), timeout=5))
            time.sleep(1.5)  # the server takes what it can, closes what it must
            before = tree_cpu(srv.proc.pid)
            time.sleep(QUIET)
            used = tree_cpu(srv.proc.pid) - before
            statuses = [get_status(srv.port, "/cpu/simple/alpha/") for _ in range(REQUESTS)]
            statuses.append(get_status(srv.port, "/" + entry.path))
            closed = sum(1 for s in idle if _closed(s))
        finally:
            for sock in idle:
                sock.close()
        children = children_of(srv.proc.pid)
        signalled = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        code = srv.proc.wait(5)
        took = time.monotonic() - signalled
        stderr = srv.stderr()
        print(
            f"\n{kind}: {IDLE} idle connections, {closed} closed by the server; CPU while "
            f"they waited {used:.2f}s in {QUIET:.0f}s; normal requests: "
            f"{statuses.count(200)}/{len(statuses)} answered 200; stderr {len(stderr)} bytes, "
            f"{len(stderr.splitlines())} lines; SIGTERM: exit {code} in {took:.2f}s"
        )
        assert statuses == [200] * len(statuses), statuses
        assert used < 0.5, f"{used:.2f}s of CPU in {QUIET}s with idle connections: spinning"
        assert took < 1.0 and code == 0, (code, took)
        assert not [p for p in children if alive(p)], "worker processes left running"
        if kind.startswith("prewheel"):
            assert len(stderr) < 8192, stderr[-2000:]
            assert "Traceback" not in stderr, stderr[-2000:]
        if kind == "prewheel-fd-limit":
            assert "Too many open files" in stderr  # said, once: not a line per attempt
            assert stderr.count("cannot accept") <= 2, stderr[-2000:]


def _closed(sock: socket.socket) -> bool:
    """Whether the server has closed this connection (end of file or reset)."""
    sock.settimeout(0.01)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
