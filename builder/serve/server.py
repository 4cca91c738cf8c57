"""The embedded index server: HTTP/1.1 on asyncio, answering from `routes.Routes`.

Why not `http.server`: its per-request header parsing and thread hand-off cap it near 1,000
requests/s with second-long tails (see FINDINGS.md), while an index answers many small page
requests. Here llhttp parses (`connection.py`), the page bytes, gzip and ETag come from
memory, and wheels go out with `sendfile(2)`, so one process keeps up with nginx's order of
magnitude. Connections are kept alive and pipelined requests answered in order.

Why its own accept loop rather than `loop.create_server`: what a server must do when clients
misbehave happens at accept. Each worker keeps at most `max_connections`; a new client gets
in by closing the connection that has made no progress for longest (a slow or forgotten one),
never one that is being answered. Out of file descriptors, asyncio's accept logs a traceback
per pending connection and re-arms itself each time (a flood and a spin); here the server
closes idle connections to free descriptors, or stops accepting for half a second, and says
so in one line. A sweep once a second enforces the header, keep-alive and send timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import resource
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from .accesslog import AccessLog
from .connection import DEFAULT_MAX_CONNECTIONS, Clock, Connection, Limits
from .routes import Routes

BACKLOG = 4096
ACCEPT_BATCH = 16  # per loop turn, so new connections are read before many more arrive
ACCEPT_RETRY = 0.5  # seconds without accepting when descriptors are out and none can be freed
EVICT_BATCH = 16  # idle connections closed when accept finds no descriptor left
SWEEP_EVERY = 1.0
STOP_GRACE = 0.5  # seconds worker processes get to exit before they are killed
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
LOG_GRACE = 0.05  # seconds the log writer gets to finish at exit (it may be blocked for good)
MIN_CONNECTIONS = 16
FD_RESERVE = 32  # descriptors kept for pages, the status page and the loop itself
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def connection_cap(requested: int | None, fd_limit: int, fds_open: int) -> tuple[int, str | None]:
    """Connections per worker, and a warning when the requested number cannot all be open at
    once. Each connection may hold two descriptors (its socket and a file being sent), so the
    default stays within what RLIMIT_NOFILE leaves; a number asked for is kept (past the limit,
    idle connections are closed to make room), with a warning."""
    room = max(MIN_CONNECTIONS, (fd_limit - fds_open - FD_RESERVE) // 2)
    if requested is None:
        return min(DEFAULT_MAX_CONNECTIONS, room), None
    if requested > room:
        return requested, (
            f"--max-connections {requested} is more than the file descriptor limit "
            f"({fd_limit}) leaves room for (about {room}); past that, idle connections are "
            f"closed to make room"
        )
    return requested, None


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard one (any process may), as nginx's
    worker_rlimit_nofile does; returns (the limit now, descriptors open now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
    try:
        fds_open = sum(1 for _ in Path("/proc/self/fd").iterdir())
    except OSError:
        fds_open = 16
    return int(soft), fds_open


class IndexServer:
    """Serves a wheelhouse on one event loop; `serve_forever` or `running` start it."""

    def __init__(
        self, root: Path, *, access_log: TextIO | None = None, limits: Limits | None = None
    ) -> None:
        self.routes = Routes(root)
        self.limits = limits or Limits()
        self.clock = Clock()
        self.now = time.monotonic()  # updated by the sweep: timeouts count in whole seconds
        # Live connections, the one that made progress longest ago first (eviction order):
        # a connection moves to the back when it connects and each time it is answered.
        self.connections: dict[Connection, None] = {}
        self.pending = 0  # accepted, transport not made yet
        self.loop: asyncio.AbstractEventLoop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.log = AccessLog(access_log, self.loop)
        self.listener: socket.socket | None = None
        self.parent: int | None = None  # a worker stops when this process is gone
        self.on_stop: Callable[[], None] | None = None  # the first process: stop the workers
        self.closed = False
        self.port = 0
        self.evicted = 0
        self.refused = 0

    # -- the connection registry ----------------------------------------------------------

    def register(self, conn: Connection) -> None:
        self.connections[conn] = None

    def forget(self, conn: Connection) -> None:
        self.connections.pop(conn, None)

    def _evict(self, count: int) -> int:
        """Close up to `count` idle connections, longest without progress first."""
        victims = []
        for conn in self.connections:
            if conn.idle:
                victims.append(conn)
                if len(victims) >= count:
                    break
        for conn in victims:
            conn.close(abort=True)
        self.evicted += len(victims)
        return len(victims)

    # -- accepting ------------------------------------------------------------------------

    def _accept(self) -> None:
        listener = self.listener
        assert listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                self._accept_failed(exc)
                return
            full = len(self.connections) + self.pending >= self.limits.max_connections
            if full and not self._evict(1):
                sock.close()  # every connection is being answered: no room for this one
                self.refused += 1
                self.log.warn("full", "every connection is busy: refusing new ones")
                continue
            sock.setblocking(False)
            self.pending += 1
            self.loop.create_task(self._connect(sock))

    async def _connect(self, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: Connection(self), sock)
        except (OSError, RuntimeError) as exc:
            sock.close()
            self.log.warn("connect", f"could not set up a connection: {exc}")
        finally:
            self.pending -= 1

    def _accept_failed(self, exc: OSError) -> None:
        """Out of descriptors (or memory): free some by closing idle connections and accept
        again on the next turn, or, with nothing to close, pause accepting. One line per
        episode, not one per attempt."""
        self._stop_accepting()
        if exc.errno in _OUT_OF_RESOURCES:
            freed = self._evict(EVICT_BATCH)
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
            self.log.warn(
                "accept",
                f"cannot accept: {exc.strerror} (descriptor limit {limit}, "
                f"{len(self.connections)} connections open); "
                + (f"closed {freed} idle connections" if freed else "pausing new connections"),
            )
            delay = 0.0 if freed else ACCEPT_RETRY
        else:
            self.log.warn("accept", f"cannot accept: {exc}")
            delay = ACCEPT_RETRY
        self.loop.call_later(delay, self._start_accepting)

    def _start_accepting(self) -> None:
        if not self.closed and self.listener is not None:
            self.loop.add_reader(self.listener.fileno(), self._accept)

    def _stop_accepting(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(self.listener.fileno())

    # -- time -----------------------------------------------------------------------------

    def _sweep(self) -> None:
        """Once a second: the clock for timeouts, each connection's limits, the parent."""
        self.now = now = time.monotonic()
        for conn in list(self.connections):
            conn.check(now)
        if self.parent is not None and os.getppid() != self.parent:
            self._shutdown()
            return
        if not self.closed:
            self.loop.call_later(SWEEP_EVERY, self._sweep)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own errors: one line per minute at most, never a traceback flood."""
        with contextlib.suppress(Exception):
            exc = context.get("exception")
            message = context.get("message", "error")
            self.log.warn("loop", f"{message}: {exc!r}" if exc is not None else str(message))

    # -- life cycle -----------------------------------------------------------------------

    def bind(self, host: str, port: int) -> int:
        """Listen now (so the port is known and taken) and return the port."""
        return self.use_socket(listen_socket(host, port))

    def use_socket(self, sock: socket.socket) -> int:
        """Serve on an already listening socket (shared by worker processes)."""
        self.listener = sock
        self.port = sock.getsockname()[1]
        self._start_accepting()
        self.loop.call_later(SWEEP_EVERY, self._sweep)
        return self.port

    def serve_forever(self) -> None:
        """Run until `stop()`, Ctrl-C or SIGTERM (the last two only in the main thread)."""
        asyncio.set_event_loop(self.loop)
        main = threading.current_thread() is threading.main_thread()
        before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS} if main else {}
        for sig in before:
            self.loop.add_signal_handler(sig, self._shutdown)
        try:
            self.loop.run_forever()
        finally:
            # Stopping already: a second SIGTERM (the parent's, then a supervisor's to the
            # whole group) is ignored until the end, instead of reaching the loop's wakeup
            # socket as it closes ("Exception ignored ... Bad file descriptor", once per
            # worker). The parent kills a worker that has not ended after STOP_GRACE.
            for sig in before:
                self.loop.remove_signal_handler(sig)
                signal.signal(sig, signal.SIG_IGN)
        try:
            # One more turn closes the aborted connections' sockets and cancelled sends.
            self.loop.run_until_complete(asyncio.sleep(0))
        finally:
            self.log.close(LOG_GRACE)
            for sig, handler in before.items():
                signal.signal(sig, handler)

    def stop(self) -> None:
        """Stop from any thread."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._shutdown)

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.on_stop is not None:
            with contextlib.suppress(Exception):
                self.on_stop()  # the workers stop alongside, not after this one
        self._stop_accepting()
        for conn in list(self.connections):
            conn.close(abort=True)
        self.loop.stop()

    def close(self) -> None:
        self.log.close(0)
        with contextlib.suppress(RuntimeError):
            self.loop.close()


def listen_socket(host: str, port: int) -> socket.socket:
    """Listen on host:port; OSError when the port is taken, even by a server that set
    SO_REUSEPORT (the first bind is a plain one). The socket then listens with SO_REUSEPORT
    where the system has it, so that each worker can listen with a socket of its own."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    if hasattr(socket, "SO_REUSEPORT"):
        bound = sock.getsockname()[1]
        sock.close()
        sock = socket.create_server((host, bound), family=family, backlog=BACKLOG, reuse_port=True)
    sock.setblocking(False)
    return sock


def worker_socket(sock: socket.socket) -> socket.socket:
    """This worker's own listening socket on `sock`'s address, or `sock` itself where that
    cannot be. Why: on one shared socket, the worker that wakes first accepts every pending
    connection (wrk's 16 went 15 to one worker, 1 to the other, about half the runs), leaving
    a core idle; with SO_REUSEPORT the kernel spreads new connections over the sockets."""
    try:
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            return sock
        host, port = sock.getsockname()[:2]
        own = socket.create_server(
            (host, port), family=sock.family, backlog=BACKLOG, reuse_port=True
        )
    except (AttributeError, OSError):
        return sock
    own.setblocking(False)
    sock.close()
    return own


def serve(
    root: Path,
    sock: socket.socket,
    *,
    workers: int = 1,
    access_log: TextIO | None = None,
    limits: Limits | None = None,
) -> None:
    """Serve on `sock` with `workers` processes until Ctrl-C or SIGTERM.

    Worker processes listen on the same address, like nginx's with `reuseport`: each runs its
    own event loop on a socket of its own (`worker_socket`), so pages and files are served on
    every core instead of one. On SIGTERM the first process
    stops the others within STOP_GRACE seconds, killing any that do not exit; a worker whose
    parent has gone stops by itself.
    """
    children: list[int] = []
    parent = os.getpid()
    for _ in range(max(0, workers - 1)):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 0
            try:
                _serve_one(root, worker_socket(sock), access_log, limits, parent, None)
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        children.append(pid)
    try:
        _serve_one(root, sock, access_log, limits, None, lambda: _signal(children))
    finally:
        _signal(children)
        _reap(children)


def _signal(children: list[int]) -> None:
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _reap(children: list[int]) -> None:
    """Wait STOP_GRACE seconds for the signalled workers, then kill the rest."""
    left = set(children)
    deadline = time.monotonic() + STOP_GRACE
    while left:
        for pid in list(left):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                left.discard(pid)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for pid in left:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _serve_one(
    root: Path, sock: socket.socket, access_log: TextIO | None, limits: Limits | None,
    parent: int | None, on_stop: Callable[[], None] | None,
) -> None:  # fmt: skip
    server = IndexServer(root, access_log=access_log, limits=limits)
    server.parent = parent
    server.on_stop = on_stop
    try:
        server.use_socket(sock)
        server.serve_forever()
    finally:
        server.close()


@contextlib.contextmanager
def running(
    root: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: TextIO | None = None,
    limits: Limits | None = None,
) -> Iterator[str]:
    """Serve `root` from a background thread; yields the base URL. For tests and benchmarks."""
    server = IndexServer(root, access_log=access_log, limits=limits)
    bound = server.bind(host, port)
    thread = threading.Thread(target=server.serve_forever, name="prewheel-serve", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.stop()
        thread.join(10)
        server.close()
