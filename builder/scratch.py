"""A run's scratch directory: every temporary file of a run, its children's included, lives in
one directory that names its owner, so that whatever kills a run (Ctrl-C, SIGTERM, `kill -9`,
a power cut) the next run can find and remove what it left.

`session()` makes `$TMPDIR/prewheel-<pid>-XXXX/` with an owner file (pid and the process's
start time, so a reused pid is not taken for the owner), points `tempfile` and every child's
TMPDIR at it, and removes it when the run ends. `clean_stale()`, called by every run that
starts work (a resolve, a build), removes the directories of owners that are gone. (A run
that finds nothing to do does not look: what it reads is what its no-op stamp holds.)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .log import get_logger

log = get_logger("scratch")

PREFIX = "prewheel-"
OWNER = ".prewheel-owner"

_current: Path | None = None


def _start_time(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()[19].decode()


def owner_token() -> str:
    """This process, as `pid start-time`: what owner files and journals name."""
    return f"{os.getpid()} {_start_time(os.getpid())}"


def alive(token: str) -> bool:
    """Whether the process an owner token names still runs (the same process, not a later
    one that got its pid)."""
    pid_text, _, started = token.partition(" ")
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    return _start_time(pid) == started.strip()


def owner_alive(marker: Path) -> bool:
    try:
        return alive(marker.read_text())
    except OSError:
        return False


def make(base: Path | None = None) -> Path:
    """A new owner-marked scratch directory under `base` (default: the temp directory)."""
    root = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=base))
    (root / OWNER).write_text(owner_token() + "\n")
    return root


def _stale(d: Path) -> bool:
    """Whether scratch directory `d` belongs to a run that is gone: its owner file says so,
    or, without one (a run killed between making the directory and marking it), no process
    has the pid its name holds."""
    marker = d / OWNER
    if marker.is_file():
        return not owner_alive(marker)
    pid = d.name.removeprefix(PREFIX).split("-", 1)[0]
    return pid.isdigit() and not Path(f"/proc/{pid}").exists()


def clean_stale(base: Path | None = None) -> list[Path]:
    """Remove the scratch directories of runs that are gone; return what was removed."""
    where = base or (_current.parent if _current is not None else Path(tempfile.gettempdir()))
    removed = []
    with contextlib.suppress(OSError):
        for d in where.glob(f"{PREFIX}*"):
            if d.is_dir() and _stale(d):
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    if removed:
        log.info("removed %d scratch directories of runs that ended abnormally", len(removed))
    return removed


@contextlib.contextmanager
def session() -> Iterator[Path]:
    """This run's scratch directory (the same one when sessions nest)."""
    global _current
    if _current is not None:
        yield _current
        return
    base = Path(tempfile.gettempdir())
    root = make(base)
    previous = tempfile.tempdir
    tempfile.tempdir = str(root)
    _current = root
    try:
        yield root
    finally:
        tempfile.tempdir = previous
        _current = None
        _remove(root)


def _remove(root: Path) -> None:
    """Remove a scratch directory, its owner file last: a run killed while it removes its
    own leaves a marked directory, which the next run's `clean_stale` finishes."""
    with contextlib.suppress(OSError), os.scandir(root) as entries:
        for entry in entries:
            if entry.name == OWNER:
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
    shutil.rmtree(root, ignore_errors=True)


def current() -> Path | None:
    return _current


def kept_files() -> Path | None:
    """Where this run keeps the sdists its resolver already fetched (read through the index
    proxy), for its own fetches to take instead of downloading them again; None outside a
    run's session."""
    return _current / "upstream-files" if _current is not None else None
