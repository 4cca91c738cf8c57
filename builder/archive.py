"""Unpacking an sdist without trusting it: no member may land outside the tree.

An sdist is a tar (or zip) file someone else made. A member named `/etc/x` or `../x`, a
symlink or hard link that points out of the tree, a member written through a symlinked
directory (pip 23.2 follows one), a device or a FIFO: each is refused before anything is
written, with an error that names the member, so the package fails on its own and every other
package goes on. Python's `tarfile` data filter does part of this only from 3.11.4 / 3.12 on
(bookworm has 3.11.2); the check here does not depend on it, and the filter is used on top
where it exists.
"""

from __future__ import annotations

import calendar
import functools
import posixpath
import tarfile
import zipfile
from pathlib import Path

from .errors import StepError


def _inside(name: str) -> str | None:
    """`name` normalised, or None when it is absolute or climbs out of the tree."""
    if not name or "\x00" in name or name.startswith(("/", "\\")) or "\\" in name:
        return None
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or posixpath.isabs(norm):
        return None
    return norm


def check_members(entries: list[tuple[str, str, str]], archive: str) -> None:
    """Refuse an archive whose members `(name, kind, link target)` could write outside the
    tree. Kinds: "file", "dir", "symlink", "hardlink", "other"."""
    links: set[str] = set()
    files: set[str] = set()
    for name, kind, target in entries:
        norm = _inside(name)
        if norm is None:
            raise StepError(f"{archive}: member {name!r} lies outside the tree", step="unpack")
        parts = norm.split("/")
        through = next(
            ("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in links),
            None,
        )
        if through is not None:
            raise StepError(
                f"{archive}: member {name!r} would be written through the link {through!r}",
                step="unpack",
            )
        if kind == "symlink":
            dest = _inside(posixpath.join(posixpath.dirname(norm), target))
            if target.startswith("/") or dest is None:
                raise StepError(
                    f"{archive}: link {name!r} points outside the tree ({target!r})",
                    step="unpack",
                )
            links.add(norm)
        elif kind == "hardlink":
            dest = _inside(target)
            if dest is None or dest not in files:
                raise StepError(
                    f"{archive}: hard link {name!r} points outside the tree ({target!r})",
                    step="unpack",
                )
        elif kind == "other":
            raise StepError(
                f"{archive}: member {name!r} is not a file, directory or link", step="unpack"
            )
        if kind in ("file", "hardlink"):
            files.add(norm)


def _tar_kind(m: tarfile.TarInfo) -> str:
    if m.isfile():
        return "file"
    if m.isdir():
        return "dir"
    if m.issym():
        return "symlink"
    if m.islnk():
        return "hardlink"
    return "other"


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """Unpack `sdist` into `dest` after checking every member; return its one top-level
    directory. Raises `StepError` (step `unpack`), never a `tarfile` error."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                entries = [
                    (i.filename, "dir" if i.is_dir() else _zip_kind(i), "") for i in zf.infolist()
                ]
                check_members(entries, sdist.name)
                zf.extractall(dest)
        else:
            with tarfile.open(sdist) as tf:
                members = tf.getmembers()
                check_members([(m.name, _tar_kind(m), m.linkname) for m in members], sdist.name)
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, filter="data")
                else:  # Pythons before the extraction filters (3.11.2, bookworm's)
                    tf.extractall(dest)
    except StepError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise StepError(f"{sdist.name}: cannot unpack: {exc}", step="unpack") from exc
    tops = [p for p in dest.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise StepError(f"{sdist.name}: expected one top-level directory", step="unpack")
    return tops[0]


def newest_mtime(sdist: Path) -> int | None:
    """The newest modification time among the sdist's members (seconds since the epoch),
    the build's `SOURCE_DATE_EPOCH`: a time the sdist itself fixes, so two builds of it
    write the same time into whatever they stamp. None when the archive holds no times."""
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                times = [int(calendar.timegm((*i.date_time, 0, 0, 0))) for i in zf.infolist()]
        else:
            with tarfile.open(sdist) as tf:
                times = [int(m.mtime) for m in tf.getmembers()]
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError):
        return None
    found = [t for t in times if t > 0]
    return max(found) if found else None


# What a compiler reads: the files whose presence makes a build native, and their headers.
NATIVE_SOURCES = frozenset({".c", ".cc", ".cpp", ".cxx", ".pyx", ".cu", ".rs", ".f90", ".f"})
_HEADERS = frozenset({".h", ".hh", ".hpp", ".hxx", ".cuh", ".pxd"})


@functools.lru_cache(maxsize=256)
def native_bytes(sdist: Path) -> int:
    """The bytes of native source (and headers) in `sdist`, read from its member list
    without unpacking: how much a build of it compiles, to start the longest builds first.
    0 for a pure sdist, or one that cannot be read (its build fails on its own). Read once
    per run: the scheduler orders a wave's builds by it, and each build's wait for a slot."""
    wanted = NATIVE_SOURCES | _HEADERS
    try:
        if sdist.name.endswith(".zip"):
            with zipfile.ZipFile(sdist) as zf:
                return sum(i.file_size for i in zf.infolist() if _suffix(i.filename) in wanted)
        with tarfile.open(sdist) as tf:
            return sum(m.size for m in tf.getmembers() if m.isfile() and _suffix(m.name) in wanted)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError):
        return 0


def _suffix(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def _zip_kind(info: zipfile.ZipInfo) -> str:
    """Zip members are files, unless their Unix mode says otherwise (a link in a zip sdist
    is refused: `zipfile` would write it as a file holding the target's name)."""
    kind = (info.external_attr >> 16) & 0o170000
    return "file" if kind in (0, 0o100000) else "other"
