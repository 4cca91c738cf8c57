"""Helpers for the devpi tests: start a devpi-server, make users, publish hand-made wheels.

The session fixture itself lives in `devpi_fixture.py` (loaded with `pytest_plugins`), so
this module can be imported by test modules without defeating pytest's assert rewriting.
devpi-server derives its secret with Argon2 at start (9-18 s by default); the hidden
`--argon2-*` options of the pinned 6.20 bring that to about a second.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner, Result
from clitools import free_port
from indexkit import sample_record

from builder.cli import main
from builder.devpi.client import DevpiClient
from builder.wheelfile import set_build_tag
from builder.wheelhouse import CatalogEntry, Wheelhouse

DEVPI_VERSION = "6.20.3"
LOW_ARGON2 = ("--argon2-memory-cost", "8", "--argon2-time-cost", "1", "--argon2-parallelism", "1")


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


@dataclass
class DevpiServer:
    url: str  # root, with a trailing slash
    root_password: str
    serverdir: Path
    log: Path

    def new_user(self, prefix: str = "u") -> tuple[str, str]:
        """A fresh user (the tests share one server, so each test gets its own namespace)."""
        name = f"{prefix}{uuid.uuid4().hex[:8]}"
        password = uuid.uuid4().hex
        DevpiClient(self.url).create_user(name, password)
        return name, password

    def client(self, user: str, password: str) -> DevpiClient:
        c = DevpiClient(self.url)
        c.login(user, password)
        return c

    def simple_url(self, user: str, accel: str) -> str:
        return f"{self.url}{user}/{accel}/+simple/"


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"devpi-server exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "+api", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"devpi-server not ready after {limit} s:\n{log.read_text()[-3000:]}")


def key_of(char: str, prefix: str = "") -> str:
    """A 64-hex cache key (optionally starting with `prefix`) for hand-made wheels."""
    return (prefix + char * 64)[:64]


def publish_built(
    wh: Wheelhouse,
    wheel: Path,
    *,
    cache_key: str,
    accels: tuple[str, ...] | None = ("cpu",),
    when: int = 1764430000,
    source_key: str | None = None,
) -> CatalogEntry:
    """Publish `wheel` as the pipeline does: build tag `<time>_<key[:12]>`, entry, record."""
    tagged_dir = wheel.parent / f"tagged-{cache_key[:12]}"
    tagged_dir.mkdir(exist_ok=True)
    tagged = set_build_tag(wheel, f"{when}_{cache_key[:12]}", tagged_dir)
    entry = wh.publish(tagged, origin="built", accels=accels, cache_key=cache_key)
    record = sample_record(
        entry.filename.split("-")[0], entry.version, cache_key=cache_key, source_key=source_key
    ).published(wheel=entry.filename, sha256=entry.sha256, imported=(), warnings=(), duration=1)
    wh.write_record(cache_key, record)
    if source_key:
        wh.write_record(source_key, record)
    return entry


def wheel_module(path: Path) -> str:
    with zipfile.ZipFile(path) as zf:
        return next(n for n in zf.namelist() if n.endswith(".py"))


@contextlib.contextmanager
def running_devpi(base: Path) -> Iterator[DevpiServer]:
    """devpi-init + devpi-server in `base`, on a free port; stopped by its PID on exit."""
    init, server = _tool("devpi-init"), _tool("devpi-server")
    if not init or not server:
        raise FileNotFoundError(f"devpi-server=={DEVPI_VERSION} is not installed")
    serverdir, log = base / "server", base / "server.log"
    root_password = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVPISERVER_")}
    subprocess.run(
        [init, "--serverdir", str(serverdir), "--no-root-pypi", "--root-passwd", root_password],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                server,
                "--serverdir",
                str(serverdir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *LOW_ARGON2,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(proc, url, log)
        yield DevpiServer(url=url, root_password=root_password, serverdir=serverdir, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def push(
    devpi: DevpiServer,
    user: str,
    password: str | None,
    wh: Wheelhouse | Path,
    *extra: str,
    url: str | None = None,
    password_env: str = "PW_TEST_PASSWORD",
) -> Result:
    """`prewheel push` of `wh` to `url` (default: `devpi`), the password in `password_env`."""
    root = wh.root if isinstance(wh, Wheelhouse) else wh
    return CliRunner().invoke(
        main,
        [
            "push",
            "--devpi",
            url or devpi.url,
            "--user",
            user,
            "--password-env",
            password_env,
            "--wheelhouse",
            str(root),
            *extra,
        ],
        env={password_env: password},
    )
