"""Running prewheel, pip and servers from tests as a user would: real subprocesses."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from upstream import pip_isolated_env


def prewheel(
    *args: str | os.PathLike[str],
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """Run `python -m builder ARGS` and return the finished process (never raises)."""
    return subprocess.run(
        [sys.executable, "-m", "builder", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**(os.environ if env is None else env), "COLUMNS": "200"},
    )


def pip_install(
    python: Path, index_url: str, *requirements: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """`pip install --isolated --only-binary=:all:` from one index, as a runtime stage does."""
    return subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--isolated",
            "--only-binary=:all:",
            "--index-url",
            index_url,
            *requirements,
        ],
        capture_output=True,
        text=True,
        env=env,
    )


def readline(stream: IO[str], timeout: float = 30) -> str:
    """One line from a child's pipe, or an AssertionError after `timeout` seconds: a test
    never hangs on a child that stopped talking."""
    ready, _, _ = select.select([stream], [], [], timeout)
    if not ready:
        raise AssertionError(f"no line from the child within {timeout:.0f}s")
    return stream.readline()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(wheelhouse: Path) -> Iterator[str]:
    """`prewheel serve` on a free port; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "builder",
            "serve",
            "--wheelhouse",
            str(wheelhouse),
            "--port",
            str(port),
            "--quiet",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(base + "/cpu/simple/", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"prewheel serve did not start: {proc.stderr}") from None
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def compiler_free_venv(path: Path, python: str = sys.executable) -> tuple[Path, dict[str, str]]:
    """A fresh venv, and an environment in which no compiler can be found or run."""
    subprocess.run([python, "-m", "venv", str(path)], check=True)
    fence = path / "fence"
    fence.mkdir()
    for name in ("cc", "gcc", "g++", "c++", "clang"):
        tool = fence / name
        tool.write_text("#!/bin/sh\nexit 1\n")
        tool.chmod(0o755)
    env = pip_isolated_env(
        {"PATH": f"{fence}:{path / 'bin'}", "CC": str(fence / "cc"), "CXX": str(fence / "c++")}
    )
    return path / "bin" / "python", env


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: compare before and after to prove no change."""
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def content(wheelhouse: Path) -> dict[str, bytes]:
    """`snapshot` of what a wheelhouse serves and records: all but its caches (`cache/`)."""
    return {k: v for k, v in snapshot(wheelhouse).items() if not k.startswith("cache/")}


def start(
    *args: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> subprocess.Popen[str]:
    """`python -m builder ARGS` in the background, stdout and stderr in one pipe (progress
    lines go to stdout, errors to stderr; not a TTY: plain lines)."""
    return subprocess.Popen(
        [sys.executable, "-m", "builder", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**(os.environ if env is None else env), "COLUMNS": "200"},
    )


@contextlib.contextmanager
def lines_of(proc: subprocess.Popen[str]) -> Iterator[list[str]]:
    """The output lines of `proc` as they arrive (read by a thread: never a blocking read)."""
    got: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.append(line)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        yield got
    finally:
        t.join(timeout=30)


def wait_for(got: list[str], proc: subprocess.Popen[str], timeout: float, *needles: str) -> bool:
    """Whether a line holding every one of `needles` arrived within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if any(all(n in line for n in needles) for line in list(got)):
            return True
        if proc.poll() is not None or time.monotonic() > deadline:
            return any(all(n in line for n in needles) for line in list(got))
        time.sleep(0.05)
