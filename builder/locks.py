"""Cross-process locks: `flock` on a file, held while a block runs.

Several builders (CI jobs, a cron run and a developer) may share one wheelhouse; every
read-modify-write of its catalog, records and state holds one of these, and one build per
cache key runs at a time across processes. `flock` locks belong to an open file, so two
threads of one process exclude each other as two processes do; the kernel drops a lock when
its holder dies, so a killed builder never leaves a lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from .cmd import check_stop

POLL = 0.05  # seconds between attempts: a waiting thread notices a stop request in time


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


@contextlib.contextmanager
def hold(path: Path) -> Iterator[None]:
    """Wait for the lock on `path`, hold it while the block runs. Waiting stops with
    `Interrupted` when the run is told to stop."""
    fd = _open(path)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                check_stop()
                time.sleep(POLL)
        yield
    finally:
        os.close(fd)  # closing the file drops the lock


@contextlib.contextmanager
def attempt(path: Path) -> Iterator[bool]:
    """Take the lock on `path` if it is free: yields whether it was taken."""
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)
