"""What the reliability tests share: hostile archives, a canary server that counts who reached
it, and looking for processes a run left behind."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import os
import signal
import socket
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from upstream import Upstream, _metadata, _pyproject, dist_stem

PYTHON = sys.executable
BUILDER = Path(__file__).resolve().parents[2] / "builder"


def own_traceback(output: str) -> bool:
    """Whether `output` holds a traceback through prewheel's own code (a build's log tail,
    which prewheel prints for a failed package, may hold the package's own)."""
    return f'File "{BUILDER}/' in output


def tar_sdist(
    index: Upstream,
    name: str,
    version: str,
    files: Mapping[str, str],
    *,
    links: Mapping[str, str] | None = None,
    raw: Mapping[str, str] | None = None,
) -> Path:
    """An sdist in `index` with `files` (inside the tree, as usual), symlinks `links`
    (member -> target) and members `raw` whose names are taken as they are (`../x`)."""
    stem = dist_stem(name, version)
    content = {
        "pyproject.toml": _pyproject(name, version, (), ">=3.9"),
        "PKG-INFO": _metadata(name, version, (), ">=3.9"),
        **files,
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, text in sorted(content.items()):
            _add(tar, f"{stem}/{rel}", text)
        for member, target in (links or {}).items():
            info = tarfile.TarInfo(f"{stem}/{member}")
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
        for member, text in (raw or {}).items():
            _add(tar, member, text)
    path = index.files_dir / f"{stem}.tar.gz"
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    index.regenerate(name)
    return path


def _add(tar: tarfile.TarFile, name: str, text: str) -> None:
    data = text.encode()
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_577_836_800
    tar.addfile(info, io.BytesIO(data))


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def bad_wheel(index: Upstream, name: str, version: str, kind: str) -> Path:
    """A pure wheel in `index` that must not be published: `slip` has a `../` member with a
    valid RECORD row, `record` a member whose bytes differ from RECORD, `link` a symlink."""
    stem = dist_stem(name, version)
    di = f"{stem}.dist-info"
    module = stem.split("-")[0]
    files = {
        f"{module}/__init__.py": b"X = 1\n",
        f"{di}/METADATA": _metadata(name, version, (), ">=3.9").encode(),
        f"{di}/WHEEL": b"Wheel-Version: 1.0\nGenerator: t\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    if kind == "slip":
        files[f"{module}/../../../evil.py"] = b"print('escaped')\n"
    rows = [f"{p},{_record_hash(d)},{len(d)}" for p, d in files.items()]
    if kind == "record":
        files[f"{module}/__init__.py"] = b"X = 2  # not what RECORD says\n"
    if kind == "link":
        rows.append(f"{module}/passwd,{_record_hash(b'/etc/passwd')},11")
    files[f"{di}/RECORD"] = ("\n".join([*rows, f"{di}/RECORD,,"]) + "\n").encode()
    path = index.files_dir / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(zipfile.ZipInfo(rel, (2020, 1, 1, 0, 0, 0)), data)
        if kind == "link":
            info = zipfile.ZipInfo(f"{module}/passwd", (2020, 1, 1, 0, 0, 0))
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    index.regenerate(name)
    return path


def write_config(directory: Path, upstream: str, **tables: Any) -> Path:
    """`directory/prewheel.toml` with the upstream index and `tables` (`build={...}`,
    `packages={"name": {...}}`), for fixtures wider than a function."""
    from conftest import to_toml

    path = directory / "prewheel.toml"
    path.write_text(to_toml({"index": {"upstream": upstream}, **tables}), encoding="utf-8")
    return path


class Canary:
    """A TCP server on 127.0.0.1 that counts the connections it gets: package code in the
    sandbox must never reach it."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.hits = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.hits += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def marked(mark: str) -> list[int]:
    """Live processes (not zombies) whose command line or environment holds `mark`."""
    found = []
    needle = mark.encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            seen = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "status").read_text()
        except OSError:
            continue
        if needle in seen and "\nState:\tZ" not in state:
            found.append(int(proc.name))
    return found


def wait_gone(mark: str, timeout: float = 15) -> list[int]:
    """The processes holding `mark` that are still there after `timeout` seconds (the
    contained ones die within milliseconds of their launcher)."""
    deadline = time.monotonic() + timeout
    while True:
        left = marked(mark)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def kill_marked(mark: str) -> None:
    for pid in marked(mark):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def scratch_dirs(pid: int) -> list[Path]:
    """The scratch directories of prewheel process `pid` (`$TMPDIR/prewheel-<pid>-*`)."""
    import tempfile

    return sorted(Path(tempfile.gettempdir()).glob(f"prewheel-{pid}-*"))
