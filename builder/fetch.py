"""Fetching upstream files with streamed sha256, checked against the index and the pins."""

from __future__ import annotations

from pathlib import Path

from .errors import HashMismatchError
from .plan import PlanItem
from .upstream import download
from .wheelhouse import sha256_file


def expected_hashes(item: PlanItem) -> set[str]:
    """Digests the bytes must match: the index's hash, narrowed by any --hash pins."""
    assert item.file is not None
    index = {item.file.sha256} if item.file.sha256 else set()
    if item.hashes and index and not (index & item.hashes):
        raise HashMismatchError(
            f"{item.file.filename}: the index's sha256 is not among the --hash pins",
            step="fetch",
        )
    return index or set(item.hashes)


def fetch(item: PlanItem, dest_dir: Path) -> tuple[Path, str]:
    """Download the item's file into `dest_dir` (never trusting its name for the hash)."""
    assert item.file is not None
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / item.file.filename
    expect = expected_hashes(item)
    if dest.is_file():
        digest = sha256_file(dest)
        if not expect or digest in expect:
            return dest, digest
        dest.unlink()
    return dest, download(item.file.url, dest, expect=expect)
