"""The servers that benchmarks/index_server.py compares, each started on 127.0.0.1.

Every backend is a context manager yielding a `Backend`: the URL of one project page, one
1 MiB wheel, and the index URL that pip and uv install from. All of them serve the same wheels.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.serve.nginx import nginx_config  # noqa: E402

DEVPI_VERSION = "6.20.3"
ARGON2 = ["--argon2-memory-cost", "8", "--argon2-time-cost", "1", "--argon2-parallelism", "1"]


@dataclass(frozen=True)
class Backend:
    name: str
    index_url: str  # ends with /
    page_url: str
    wheel_url: str


def tool(name: str) -> str | None:
    """A console script from this interpreter's environment first (it need not be on PATH or
    activated), then from PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                resp.read()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer in {timeout} s")


@contextlib.contextmanager
def process(argv: list[str], log: Path, **kw: object) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, **kw)  # type: ignore[call-overload]
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wheel_link(base: str, project: str) -> str:
    """The absolute URL of `project`'s first wheel, read from its (HTML) project page."""
    page_url = f"{base}{project}/"
    name_part = project.replace("-", "_") + "-"
    with urllib.request.urlopen(
        urllib.request.Request(page_url, headers={"Accept": "text/html"}), timeout=30
    ) as resp:
        html = resp.read().decode()
    for href in re.findall(r'href="([^"]+)"', html):
        if name_part in href:
            return urljoin(page_url, href.split("#")[0])
    raise RuntimeError(f"no link containing {name_part} on {page_url}")


@contextlib.contextmanager
def prewheel(wh: Path, work: Path, project: str, big: str) -> Iterator[Backend]:
    port = free_port()
    argv = [sys.executable, "-m", "builder", "serve", "--wheelhouse", str(wh), "--port", str(port)]
    with process(argv, work / "prewheel.log", cwd=REPO) as proc:
        base = f"http://127.0.0.1:{port}/cpu/simple/"
        wait_http(base, proc)
        yield Backend("prewheel serve", base, f"{base}{project}/", wheel_link(base, big))


@contextlib.contextmanager
def nginx(wh: Path, work: Path, project: str, big: str) -> Iterator[Backend]:
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    state = work / "nginx"
    state.mkdir(exist_ok=True)
    port = free_port()
    conf = state / "nginx.conf"
    user = "root" if os.geteuid() == 0 else None
    conf.write_text(nginx_config(wh, port=port, state_dir=state, user=user))
    argv = [exe, "-c", str(conf), "-e", str(state / "error.log"), "-g", "daemon off;"]
    with process(argv, work / "nginx.log") as proc:
        base = f"http://127.0.0.1:{port}/cpu/simple/"
        wait_http(base, proc)
        yield Backend("nginx (generated config)", base, f"{base}{project}/",
                      wheel_link(base, big))  # fmt: skip


PLAIN_NGINX = """\
{user}
worker_processes auto;
pid {state}/nginx.pid;
error_log {state}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    client_body_temp_path {state}/client_body;
    proxy_temp_path {state}/proxy;
    fastcgi_temp_path {state}/fastcgi;
    uwsgi_temp_path {state}/uwsgi;
    scgi_temp_path {state}/scgi;
    access_log {state}/access.log combined buffer=64k flush=1s;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {root};
        index index.html;
    }}
}}
"""


@contextlib.contextmanager
def nginx_plain(wh: Path, work: Path, project: str, big: str) -> Iterator[Backend]:
    """nginx with a minimal static config (HTML only, no negotiation): the upper bound."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    state = work / "nginx-plain"
    state.mkdir(exist_ok=True)
    port = free_port()
    conf = state / "nginx.conf"
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(PLAIN_NGINX.format(user=user, state=state, port=port, root=wh))
    argv = [exe, "-c", str(conf), "-e", str(state / "error.log"), "-g", "daemon off;"]
    with process(argv, work / "nginx-plain.log") as proc:
        base = f"http://127.0.0.1:{port}/cpu/simple/"
        wait_http(base, proc)
        yield Backend("nginx (plain static)", base, f"{base}{project}/", wheel_link(base, big))


@contextlib.contextmanager
def http_server(wh: Path, work: Path, project: str, big: str) -> Iterator[Backend]:
    port = free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1",
            "--directory", str(wh)]  # fmt: skip
    with process(argv, work / "http_server.log") as proc:
        base = f"http://127.0.0.1:{port}/cpu/simple/"
        wait_http(base, proc)
        yield Backend("python -m http.server", base, f"{base}{project}/",
                      wheel_link(base, big))  # fmt: skip


def _venv_with(work: Path, name: str, requirement: str, exe: str) -> Path:
    """A venv holding `requirement` (installed once, from PyPI, with uv)."""
    venv = work / f"venv-{name}"
    binary = venv / "bin" / exe
    if not binary.exists():
        uv = tool("uv") or "uv"
        subprocess.run([uv, "venv", "--no-config", "-q", "--python", sys.executable, str(venv)],
                       check=True)  # fmt: skip
        py = str(venv / "bin" / "python")
        subprocess.run([uv, "pip", "install", "--no-config", "-q", "--python", py,
                        *requirement.split()], check=True)  # fmt: skip
    return binary


@contextlib.contextmanager
def pypiserver(wheels: list[Path], work: Path, project: str, big: str) -> Iterator[Backend]:
    exe = _venv_with(work, "pypiserver", "pypiserver[cache]==2.4.2 waitress", "pypi-server")
    pkgs = work / "pypiserver-packages"
    if not pkgs.is_dir():
        pkgs.mkdir()
        for w in wheels:
            os.link(w, pkgs / w.name)
    port = free_port()
    argv = [str(exe), "run", "-i", "127.0.0.1", "-p", str(port), "-a", ".", "-P", ".",
            "--disable-fallback", "--server", "auto", "--backend", "cached-dir",
            str(pkgs)]  # fmt: skip
    with process(argv, work / "pypiserver.log") as proc:
        base = f"http://127.0.0.1:{port}/simple/"
        wait_http(base, proc)
        yield Backend("pypiserver 2.4", base, f"{base}{project}/", wheel_link(base, big))


def _devpi_upload(base: str, auth: str, wheel: Path) -> None:
    boundary = uuid.uuid4().hex
    name, version = wheel.name.split("-")[:2]
    parts = []
    for key, value in ((":action", "file_upload"), ("name", name), ("version", version)):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                     f"{value}\r\n".encode())  # fmt: skip
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="content"; '
        f'filename="{wheel.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + wheel.read_bytes()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    req = urllib.request.Request(
        base + "root/bench/", data=b"".join(parts), method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                 "X-Devpi-Auth": auth, "Accept": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=120) as resp:
        resp.read()


@contextlib.contextmanager
def devpi(wheels: list[Path], work: Path, project: str, big: str) -> Iterator[Backend]:
    """devpi-server, pinned, with Argon2 turned down so it starts in about a second."""
    server = tool("devpi-server")
    init = tool("devpi-init")
    if server is None or init is None:
        exe = _venv_with(work, "devpi", f"devpi-server=={DEVPI_VERSION}", "devpi-server")
        server, init = str(exe), str(exe.with_name("devpi-init"))
    serverdir = work / "devpi-srv"
    fresh = not (serverdir / ".nodeinfo").exists()
    if fresh:
        shutil.rmtree(serverdir, ignore_errors=True)
        subprocess.run([init, "--serverdir", str(serverdir), "--no-root-pypi",
                        "--root-passwd", "bench"], check=True, capture_output=True)  # fmt: skip
    port = free_port()
    argv = [server, "--serverdir", str(serverdir), "--host", "127.0.0.1", "--port", str(port),
            *ARGON2]  # fmt: skip
    with process(argv, work / "devpi.log") as proc:
        root = f"http://127.0.0.1:{port}/"
        wait_http(root + "+api", proc)
        if fresh:
            _devpi_fill(root, wheels)
        base = f"{root}root/bench/+simple/"
        yield Backend(f"devpi-server {DEVPI_VERSION}", base, f"{base}{project}/",
                      wheel_link(base, big))  # fmt: skip


def _devpi_fill(root: str, wheels: list[Path]) -> None:
    login = urllib.request.Request(
        root + "+login", data=json.dumps({"user": "root", "password": "bench"}).encode(),
        method="POST", headers={"Content-Type": "application/json", "Accept": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(login, timeout=30) as resp:
        token = json.loads(resp.read())["result"]["password"]
    auth = base64.b64encode(f"root:{token}".encode()).decode()
    stage = {"type": "stage", "bases": [], "volatile": True}
    create = urllib.request.Request(
        root + "root/bench", data=json.dumps(stage).encode(),
        method="PUT", headers={"Content-Type": "application/json", "X-Devpi-Auth": auth,
                               "Accept": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(create, timeout=30) as resp:
        resp.read()
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda w: _devpi_upload(root, auth, w), wheels))
    print(f"  devpi: uploaded {len(wheels)} wheels in {time.monotonic() - started:.0f} s",
          file=sys.stderr)  # fmt: skip
