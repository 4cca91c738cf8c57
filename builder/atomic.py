"""Writing files so that a reader sees the old bytes or the new ones, never a part, whatever
interrupts the writer; and naming the path when the disk is full or read-only.

A temp file names its writer's pid (`.<name>.pw<pid>.XXXX.tmp`), so what a killed writer
left is found (`leftover_temp`) and removed by the next run or `index check --repair`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .errors import WheelhouseWriteError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


TEMP_SUFFIX = ".tmp"
_TEMP = re.compile(r"^\..+\.pw(\d+)\.[^.]+\.tmp$")


def write_error(path: Path, exc: OSError) -> WheelhouseWriteError:
    """One line that names the path and the cause (read-only, disk full, permissions); the
    OSError is not chained: it says the same again."""
    return WheelhouseWriteError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at `path` whole when the block ends, or not at all.

    Written under a temp name in the same directory (`.<name>.pw<pid>.XXXX.tmp`), fsynced,
    then renamed: readers see the old file or the new one, never a part, whatever interrupts
    the writer. A write that fails (read-only, disk full) raises `WheelhouseWriteError`.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            dir=path.parent, prefix=f".{path.name}.pw{os.getpid()}.", suffix=TEMP_SUFFIX
        )
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def leftover_temp(path: Path) -> bool:
    """Whether `path` is a temp file whose writer is gone (killed mid-write)."""
    m = _TEMP.match(path.name)
    return m is not None and not Path(f"/proc/{m.group(1)}").exists()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomic write, skipped when the bytes are already there (keeps mtime and ETag)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)
    return True


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_copy(src: Path, dst: Path) -> None:
    with atomic_open(dst) as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out, CHUNK)
