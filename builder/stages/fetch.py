"""Fetching upstream files with streamed sha256, checked against the index and the pins."""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future
from pathlib import Path

from .. import scratch
from ..atomic import atomic_copy
from ..errors import HashMismatchError, PrewheelError
from ..log import get_logger
from ..upstream import UpstreamFile, download
from ..wheelhouse import sha256_file

log = get_logger("fetch")

# The upstream files being fetched ahead (`fetch_ahead`), by where they go in a run's kept
# files: a fetch of the same file waits for that download instead of starting its own.
_AHEAD: dict[Path, Future[None]] = {}
_AHEAD_LOCK = threading.Lock()


def expected_hashes(file: UpstreamFile, pins: frozenset[str]) -> set[str]:
    """Digests the bytes must match: the index's hash, narrowed by any --hash pins."""
    index = {file.sha256} if file.sha256 else set()
    if pins and index and not (index & pins):
        raise HashMismatchError(
            f"{file.filename}: the index's sha256 is not among the --hash pins",
            step="fetch",
        )
    return index or set(pins)


def fetch(file: UpstreamFile, pins: frozenset[str], dest_dir: Path) -> tuple[Path, str]:
    """Download `file` into `dest_dir` (never trusting its name for the hash); a copy already
    there with the right bytes is used as it is, and so is the copy this run's resolver
    fetched (`scratch.kept_files`) when its bytes are the expected ones."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / file.filename
    expect = expected_hashes(file, pins)
    kept = scratch.kept_files()
    with _AHEAD_LOCK:
        ahead = _AHEAD.get(kept / file.filename) if kept is not None else None
    if ahead is not None:
        ahead.exception()  # done, or failed: then it is downloaded here
    if dest.is_file():
        digest = sha256_file(dest)
        if not expect or digest in expect:
            return dest, digest
        dest.unlink()
    taken = _take_kept(file.filename, expect, dest)
    if taken is not None:
        return dest, taken
    return dest, download(file.url, dest, expect=expect)


def _take_kept(filename: str, expect: set[str], dest: Path) -> str | None:
    """The sha256 of the copy of `filename` the resolver's index proxy kept, copied to
    `dest`, when it has an expected digest; None otherwise (then it is downloaded). Without
    an expected digest nothing is taken: a name alone does not say which upstream's it is."""
    kept_dir = scratch.kept_files()
    if kept_dir is None or not expect:
        return None
    kept = kept_dir / filename
    try:
        digest = sha256_file(kept)
    except OSError:
        return None
    if digest not in expect:
        return None
    atomic_copy(kept, dest)
    log.debug("took %s from the files this run fetched already", filename)
    return digest


def fetch_ahead(file: UpstreamFile) -> None:
    """Start downloading `file` into the run's kept files, where `fetch` takes it once its
    bytes are the index's: a wheel the closure will need, fetched while builds still run
    instead of after the resolution. A thread of its own (a daemon: a run that ends does
    not wait for it); a failure only leaves the file to `fetch`."""
    kept = scratch.kept_files()
    if kept is None or not file.sha256:
        return
    dest, expect = kept / file.filename, {file.sha256}
    with _AHEAD_LOCK:
        if dest in _AHEAD or dest.exists():
            return
        done: Future[None] = Future()
        _AHEAD[dest] = done

    def get() -> None:
        try:
            download(file.url, dest, expect=expect)
        except (PrewheelError, OSError):
            pass  # `fetch` downloads it, and says why if that fails too
        finally:
            done.set_result(None)
            with _AHEAD_LOCK:
                del _AHEAD[dest]  # there now, or left to `fetch`

    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(get,), name="fetch-ahead", daemon=True).start()
