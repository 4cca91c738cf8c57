"""SIGTERM under load: `prewheel serve` stops within a second while clients hammer pages, pull
a large wheel, refuse to read what they asked for, and dribble slow heads, and while nobody
reads its stderr (a full pipe: the access log must not block the event loop). Its worker
processes go with it. Counts are printed."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest
from httpkit import alive, children_of, get_status, wait_port
from indexkit import add_wheel, sample_wheelhouse

from builder import index
from builder.wheelhouse import Wheelhouse

LOAD = 2.0  # seconds of load before the signal
BIG = 8 << 20


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> tuple[Wheelhouse, str, int]:
    root = tmp_path_factory.mktemp("sigterm")
    wh = sample_wheelhouse(root / "wh")
    big = add_wheel(wh, root / "tmp", "bigwheel", "1.0", payload=BIG)
    index.rebuild(wh)
    return wh, "/" + str(big.relative_to(wh.root)), big.stat().st_size


def _loop(
    stop: threading.Event, counts: dict[str, int], name: str, body: Callable[[], None]
) -> None:
    while not stop.is_set():
        try:
            body()
            counts[name] = counts.get(name, 0) + 1
        except (OSError, http.client.HTTPException) as exc:
            key = f"{name} {type(exc).__name__}"
            counts[key] = counts.get(key, 0) + 1
            time.sleep(0.05)


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_under_load_stops_within_a_second(
    workers: int, wheelhouse: tuple[Wheelhouse, str, int]
) -> None:
    wh, big, size = wheelhouse
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "serve", "--wheelhouse", str(wh.root), "--port", "0",
         "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    held: list[socket.socket] = []
    stop = threading.Event()
    counts: dict[str, int] = {}
    threads: list[threading.Thread] = []
    try:
        banner = proc.stderr.readline().decode()  # then nobody reads stderr again
        port = int(banner.split("http://127.0.0.1:")[1].split("/")[0])
        wait_port(port, proc, "prewheel serve")

        def pages() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                for _ in range(50):
                    conn.request("GET", "/cpu/simple/alpha/")
                    conn.getresponse().read()
            finally:
                conn.close()

        def wheel() -> None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            try:
                conn.request("GET", big)
                if len(conn.getresponse().read()) != size:
                    raise http.client.IncompleteRead(b"")
            finally:
                conn.close()

        for name, body in [("page bursts", pages)] * 3 + [("big wheels", wheel)] * 2:
            threads.append(threading.Thread(target=_loop, args=(stop, counts, name, body)))
        for _ in range(20):  # ask for the big wheel and never read it
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(f"GET {big} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            held.append(sock)
        for _ in range(100):  # slow heads
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            held.append(sock)
        for thread in threads:
            thread.start()
        time.sleep(LOAD)
        still = get_status(port, "/cpu/simple/beta/")  # stderr is full by now
        loaded = dict(counts)
        children = children_of(proc.pid)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(5)
        took = time.monotonic() - signalled
        left = [p for p in children if alive(p)]
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
        for sock in held:
            sock.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    print(
        f"\n{workers} worker(s): under load "
        + ", ".join(f"{k} {v}" for k, v in sorted(loaded.items()))
        + f", {len(held)} held connections; a request with stderr full: {still}; "
        f"SIGTERM: exit {code} in {took:.2f}s, {len(children)} worker(s), {len(left)} left"
    )
    assert set(loaded) == {"page bursts", "big wheels"}, loaded  # and no errors before the signal
    assert still == 200
    assert code == 0 and took < 1.0, (code, took)
    assert not left
