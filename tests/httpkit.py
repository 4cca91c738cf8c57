"""Index servers as real processes, and raw HTTP exchanges with them, for tests that play a
hostile or broken client: bytes sent as given (in one write or several), replies read until
the server closes or a timeout, every read bounded in time."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from needs import machine, missing

from builder.serve.nginx import nginx_config, perl_module


@dataclass
class Server:
    """A server process on 127.0.0.1:port; `log` is where its stderr goes."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _limit_fds(nofile: int | None) -> Callable[[], None] | None:
    if nofile is None:
        return None

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    return apply


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not listen within {timeout:.0f}s") from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextlib.contextmanager
def prewheel_server(
    root: Path, log: Path, *args: str, nofile: int | None = None, workers: int = 1
) -> Iterator[Server]:
    """`prewheel serve` on a port it picks (its banner says which), stderr to `log`;
    `nofile` lowers its file descriptor limit (soft and hard) before it starts."""
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "builder", "serve", "--wheelhouse", str(root), "--port", "0",
             "--workers", str(workers), *args],
            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_limit_fds(nofile),
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"http://127\.0\.0\.1:(\d+)/", log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prewheel serve did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        server = Server("prewheel", int(found.group(1)), proc, log)
        wait_port(server.port, proc, "prewheel serve")
        yield server
    finally:
        stop(proc)


def nginx_exe() -> str:
    exe = machine(
        "nginx", "apt-get install nginx libnginx-mod-http-perl", also=("/usr/sbin/nginx",)
    )
    if not Path(perl_module()).is_file():
        missing("nginx's perl module is missing (apt-get install libnginx-mod-http-perl)")
    return exe


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def nginx_server(
    root: Path, state: Path, *, nofile: int | None = None, **config: object
) -> Iterator[Server]:
    """nginx with the configuration `prewheel serve --print-nginx-config` writes, one worker,
    in the foreground; `config` goes to `nginx_config` (header_timeout, max_connections)."""
    exe = nginx_exe()
    state.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user = "root" if os.geteuid() == 0 else None
    conf = state / "nginx.conf"
    conf.write_text(
        nginx_config(root, port=port, state_dir=state, user=user, workers="1", **config)  # type: ignore[arg-type]
    )
    log = state / "stderr.log"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [exe, "-c", str(conf), "-e", str(state / "error.log"), "-g", "daemon off;"],
            stdout=err, stderr=subprocess.STDOUT, preexec_fn=_limit_fds(nofile),
        )  # fmt: skip
    try:
        wait_port(port, proc, f"nginx ({log.read_text() if log.exists() else ''})")
        yield Server("nginx", port, proc, log)
    finally:
        stop(proc)


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]]
    raw_head: bytes
    body: bytes


@dataclass
class Exchange:
    """What came back for some bytes sent: parsed responses, and how the connection ended."""

    data: bytes = b""
    closed: bool = False  # the server closed (FIN or reset) before the timeout
    reset: bool = False
    responses: list[Response] = field(default_factory=list)

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def parse_responses(data: bytes, head_only: bool = False) -> list[Response]:
    """Responses one after another, as far as `data` holds them (bodies by Content-Length;
    `head_only` for answers to HEAD, which have none)."""
    out = []
    rest = data
    while rest.startswith(b"HTTP/"):
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            break
        head, rest = rest[:end], rest[end + 4 :]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers = []
        for line in lines[1:]:
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        length = next((int(v) for k, v in headers if k.lower() == "content-length"), 0)
        if head_only or status in (204, 304):
            length = 0
        out.append(Response(status, headers, head, rest[:length]))
        rest = rest[length:]
    return out


def exchange(
    port: int,
    data: bytes | list[bytes],
    *,
    timeout: float = 5,
    pause: float = 0.01,
    head_only: bool = False,
) -> Exchange:
    """Send `data` (a list: one write each, `pause` seconds apart, so the server reads them
    separately), then read until the server closes or `timeout` seconds pass."""
    got = Exchange()
    chunks = [data] if isinstance(data, bytes) else data
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            for i, chunk in enumerate(chunks):
                if i:
                    time.sleep(pause)
                sock.sendall(chunk)
        except OSError as exc:  # the server closed while we were still sending
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET):
                raise
        buf = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            except ConnectionResetError:
                got.closed = got.reset = True
                break
            if not chunk:
                got.closed = True
                break
            buf.append(chunk)
    got.data = b"".join(buf)
    got.responses = parse_responses(got.data, head_only)
    return got


def request(
    method: str, target: str, *headers: str, version: str = "HTTP/1.1", close: bool = True
) -> bytes:
    """A well-formed request's bytes, Host included; `close` adds Connection: close."""
    lines = [f"{method} {target} {version}", "Host: localhost", *headers]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def get_status(port: int, path: str, timeout: float = 5, **headers: str) -> int:
    """One GET on a fresh connection; the status, or 0 when nothing came back in time."""
    extra = [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    got = exchange(port, request("GET", path, *extra), timeout=timeout)
    return got.statuses[0] if got.responses else 0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    with contextlib.suppress(OSError):
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(p) for p in text.split()]
    return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is dead for our purposes
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    return False
