"""Comparing two builds of one wheel (`build --check-reproducible`): which members differ,
and, when diffoscope is installed, what differs inside them.

A wheel's bytes are its members' bytes plus the archive around them; prewheel writes the
archive itself (`wheelfile.normalised_zip`), so two wheels that differ differ in a member,
and the member is what a user can act on (a module that records the build time, an object
with a build path in it).
"""

from __future__ import annotations

from pathlib import Path

from .. import tools
from ..cmd import probe
from ..wheelfile import member_digests

# diffoscope's report can be long: the record keeps its start.
DETAIL_LIMIT = 4000


def differing_members(first: Path, second: Path) -> tuple[str, ...]:
    """The members whose bytes differ between two wheels, or that only one has: the
    package's own files first (the cause), the `.dist-info` files after, RECORD (which
    differs whenever anything does) last."""
    a, b = member_digests(first), member_digests(second)
    differ = [n for n in a.keys() | b.keys() if a.get(n) != b.get(n)]
    return tuple(
        sorted(differ, key=lambda n: (n.endswith(".dist-info/RECORD"), ".dist-info/" in n, n))
    )


def diffoscope_detail(first: Path, second: Path, timeout: float = 120) -> str | None:
    """diffoscope's text report of the two wheels, cut to `DETAIL_LIMIT` characters; None
    when diffoscope is not installed (it is optional: `pip install diffoscope`)."""
    exe = tools.find("diffoscope")
    if exe is None:
        return None
    # diffoscope exits 1 when the files differ: `probe` would call that a failure.
    out = probe([exe, "--text", "-", "--no-progress", str(first), str(second)],
                timeout=timeout, ok_codes=(0, 1))  # fmt: skip
    if out is None:
        return None
    return out if len(out) <= DETAIL_LIMIT else out[:DETAIL_LIMIT] + "\n[...]\n"
