"""Fetching upstream files with streamed sha256, checked against the index and the pins."""

from __future__ import annotations

from pathlib import Path

from ..errors import HashMismatchError
from ..upstream import UpstreamFile, download
from ..wheelhouse import sha256_file


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
    there with the right bytes is used as it is."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / file.filename
    expect = expected_hashes(file, pins)
    if dest.is_file():
        digest = sha256_file(dest)
        if not expect or digest in expect:
            return dest, digest
        dest.unlink()
    return dest, download(file.url, dest, expect=expect)
