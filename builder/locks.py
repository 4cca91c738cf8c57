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


def _take(path: Path) -> int | None:
    """The open, locked file of `path`, or None when another holds it. A lock taken on a
    file that was removed meanwhile (its holder gave it up, `Taken.give_up`) is not the
    path's lock any more: taken again on the file now there."""
    while True:
        fd = _open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.fstat(fd).st_ino == path.stat().st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


@contextlib.contextmanager
def hold(path: Path) -> Iterator[None]:
    """Wait for the lock on `path`, hold it while the block runs. Waiting stops with
    `Interrupted` when the run is told to stop."""
    while (fd := _take(path)) is None:
        check_stop()
        time.sleep(POLL)
    try:
        yield
    finally:
        os.close(fd)  # closing the file drops the lock


@contextlib.contextmanager
def attempt(path: Path) -> Iterator[bool]:
    """Take the lock on `path` if it is free: yields whether it was taken."""
    fd = _take(path)
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


class Taken:
    """A lock taken without waiting and held until `release` or `give_up`, by any thread
    (a build ahead of the plan takes its key's lock; the plan's build releases it). One
    whose file it created and then gives up removes the file first, so that giving up
    leaves the directory as it was: whoever waits on the removed file takes the new one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        made = not path.exists()
        self._fd = _take(path)
        self.made = made and self._fd is not None

    @property
    def taken(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def give_up(self) -> None:
        if self._fd is not None and self.made:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self.release()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *_: object) -> None:
        self.release()
