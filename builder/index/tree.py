"""The static index: one PEP 503 / PEP 691 tree per accelerator, generated from the catalog.

The tree is plain files so that the embedded server, nginx, S3 or a CDN serve it as it is:

    <accel>/simple/index.html, index.json              the root project list
    <accel>/simple/<project>/index.html, index.json    one page per project

Links are relative (`../../../files/ab/name.whl`), so the tree works under any prefix. Every
page is written atomically and only when its bytes change, so readers never see a torn page
and unchanged pages keep their ETag. Publishing one wheel rewrites only that project's pages
and the root lists, which is what keeps an update of a large index fast.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from packaging.utils import canonicalize_name

from ..wheelhouse import CatalogEntry, Wheelhouse, write_if_changed
from .pages import (
    chain,
    listed,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
)
from .status_page import write_status

# Top-level names in the wheelhouse that are never an accelerator's index.
RESERVED = frozenset({"files", "catalog", "builds", "logs", "simple", "static"})


def listing(wh: Wheelhouse, project: str, accel: str) -> list[CatalogEntry]:
    """The wheels of `project` that the `accel` index lists."""
    return listed(wh.entries(project), accel)


def simple_dir(wh: Wheelhouse, accel: str) -> Path:
    return wh.root / accel / "simple"


def indexed_accelerators(wh: Wheelhouse) -> list[str]:
    """Accelerators that already have a tree on disk (cheap: no catalog is read)."""
    found: set[str] = set()
    with contextlib.suppress(FileNotFoundError), os.scandir(wh.root) as it:
        for d in it:
            if d.name not in RESERVED and d.is_dir() and Path(d.path, "simple").is_dir():
                found.add(d.name)
    return sorted(found)


def known_accelerators(wh: Wheelhouse, entries: Iterable[CatalogEntry]) -> list[str]:
    """The accelerators of `entries` and of the wheelhouse's state, and those with a tree."""
    return sorted({*wh.accelerators(entries), *indexed_accelerators(wh)})


def listed_projects(wh: Wheelhouse, accel: str) -> list[str]:
    """Projects with a page in the `accel` tree: the directory is the source of truth."""
    out = []
    with contextlib.suppress(FileNotFoundError), os.scandir(simple_dir(wh, accel)) as it:
        for d in it:
            if d.is_dir() and os.path.isfile(d.path + "/index.html"):  # noqa: PTH113 - hot loop
                out.append(d.name)
    return sorted(out)


def write_root(wh: Wheelhouse, accel: str) -> None:
    projects = listed_projects(wh, accel)
    base = simple_dir(wh, accel)
    write_if_changed(base / "index.json", render_root_json(projects))
    write_if_changed(base / "index.html", render_root_html(projects))


def _write_project(wh: Wheelhouse, accel: str, project: str, entries: list[CatalogEntry]) -> None:
    pdir = simple_dir(wh, accel) / project
    if entries:
        # JSON first: the HTML page is what marks a project as listed (see listed_projects).
        write_if_changed(pdir / "index.json", render_project_json(project, entries))
        write_if_changed(pdir / "index.html", render_project_html(project, entries))
    elif pdir.is_dir():
        for name in ("index.html", "index.json"):
            with contextlib.suppress(FileNotFoundError):
                (pdir / name).unlink()
        shutil.rmtree(pdir, ignore_errors=True)


@contextlib.contextmanager
def _locked(wh: Wheelhouse) -> Iterator[None]:
    """One writer at a time, across threads and processes: two updates that each scan the
    project directories and then write the root list would otherwise drop each other."""
    wh.root.mkdir(parents=True, exist_ok=True)
    with (wh.root / ".index.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def update_project(wh: Wheelhouse, project: str, *, roots: bool = False) -> None:
    """Rewrite one project's pages in every accelerator tree, then the root lists when the
    project came or went there (`roots`: whatever its page said).

    Called by the pipeline after each publish; costs one catalog read and a directory scan
    per accelerator, however large the index is.
    """
    with _locked(wh):
        _update_project(wh, canonicalize_name(project), roots=roots)


def recover(wh: Wheelhouse) -> list[str]:
    """Finish the publishes that killed writers left half done (`Wheelhouse.recover`), root
    lists included: a writer killed between a new project's page and the root list left a
    page that the root list does not name, and the page alone no longer tells."""
    return wh.recover(lambda project: update_project(wh, project, roots=True))


def _update_project(wh: Wheelhouse, project: str, *, roots: bool) -> None:
    entries = wh.entries(project)
    for accel in known_accelerators(wh, entries):
        if not (simple_dir(wh, accel) / "index.html").is_file():
            _write_tree(wh, accel, {p: wh.entries(p) for p in wh.projects()})
            continue
        shown = listed(entries, accel)
        was_listed = (simple_dir(wh, accel) / project / "index.html").is_file()
        _write_project(wh, accel, project, shown)
        if roots or was_listed != bool(shown):  # else the root list has not changed
            write_root(wh, accel)


def ensure(wh: Wheelhouse) -> list[str]:
    """Write the tree of every known accelerator that has none yet; return their names.

    Run when serving starts, so that a fresh or just-upgraded wheelhouse answers `/cpu/simple/`
    with a (possibly empty) index rather than 404. Cheap when every tree exists.
    """
    if not wh.root.is_dir():
        return []
    missing = [
        a for a in known_accelerators(wh, []) if not (simple_dir(wh, a) / "index.html").is_file()
    ]
    if missing:
        with _locked(wh):
            catalog = {p: wh.entries(p) for p in wh.projects()}
            for accel in missing:
                _write_tree(wh, accel, catalog)
    return missing


def _write_tree(wh: Wheelhouse, accel: str, catalog: dict[str, list[CatalogEntry]]) -> None:
    """Write one accelerator's whole tree: on rebuild, and when an accelerator first appears
    (its index must list the universal wheels published before it existed)."""
    wanted: set[str] = set()
    for project, entries in catalog.items():
        shown = listed(entries, accel)
        if shown:
            wanted.add(project)
            _write_project(wh, accel, project, shown)
    for stale in set(listed_projects(wh, accel)) - wanted:
        _write_project(wh, accel, stale, [])
    write_root(wh, accel)


def rebuild(wh: Wheelhouse) -> None:
    """Regenerate every tree from the catalog, removing pages of projects no longer listed."""
    with _locked(wh):
        catalog = {p: wh.entries(p) for p in wh.projects()}
        for accel in known_accelerators(wh, chain(catalog)):
            _write_tree(wh, accel, catalog)
    write_status(wh)
