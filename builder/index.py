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
import html
import json
import os
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, unquote

from packaging.utils import canonicalize_name, parse_wheel_filename

from .errors import WheelhouseError
from .status_page import write_status
from .wheelfile import read_metadata
from .wheelhouse import (
    CatalogEntry,
    Wheelhouse,
    sha256_file,
    sorted_versions,
    write_if_changed,
)

API_VERSION = "1.1"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"
# Top-level names in the wheelhouse that are never an accelerator's index.
RESERVED = frozenset({"files", "catalog", "builds", "logs", "simple", "static"})


# -- the model ---------------------------------------------------------------------------------


def newest_builds(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """Keep, for each (version, tags), only the wheel with the highest build tag.

    A rebuild under a new cache key gets a new build tag; installers would pick the highest
    anyway, and listing only that one keeps pages short and the choice explicit.
    """
    best: dict[tuple[str, frozenset[str]], tuple[tuple[()] | tuple[int, str], CatalogEntry]] = {}
    for e in entries:
        _, version, build, wtags = parse_wheel_filename(e.filename)
        key = (str(version), frozenset(str(t) for t in wtags))
        cur = best.get(key)
        if cur is None or build > cur[0]:
            best[key] = (build, e)
    return sorted((e for _, e in best.values()), key=lambda e: e.filename)


def listed(entries: Iterable[CatalogEntry], accel: str) -> list[CatalogEntry]:
    """The wheels among `entries` that the `accel` index lists: the newest build of each."""
    return newest_builds(e for e in entries if e.listed_in(accel))


def listing(wh: Wheelhouse, project: str, accel: str) -> list[CatalogEntry]:
    """The wheels of `project` that the `accel` index lists."""
    return listed(wh.entries(project), accel)


def _chain(catalog: dict[str, list[CatalogEntry]]) -> Iterator[CatalogEntry]:
    return (e for entries in catalog.values() for e in entries)


def file_url(entry: CatalogEntry) -> str:
    """A link from a project page to the file, relative so the tree can move."""
    head, _, name = entry.path.rpartition("/")
    return f"../../../{quote(head)}/{quote(name, safe='')}"


# -- rendering ---------------------------------------------------------------------------------


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def render_project_html(project: str, entries: list[CatalogEntry]) -> bytes:
    name = html.escape(project)
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        f"<title>Links for {name}</title>",
        "</head>",
        "<body>",
        f"<h1>Links for {name}</h1>",
    ]
    for e in entries:
        attrs = [f'href="{_attr(file_url(e))}#sha256={e.sha256}"']
        if e.requires_python:
            attrs.append(f'data-requires-python="{_attr(e.requires_python)}"')
        attrs.append(f'data-dist-info-metadata="sha256={e.metadata_sha256}"')
        attrs.append(f'data-core-metadata="sha256={e.metadata_sha256}"')
        if e.yanked is not False:
            reason = "" if e.yanked is True else str(e.yanked)
            attrs.append(f'data-yanked="{_attr(reason)}"')
        attrs.append(f'data-size="{e.size}"')
        attrs.append(f'data-upload-time="{_attr(e.upload_time)}"')
        lines.append(f"<a {' '.join(attrs)}>{html.escape(e.filename)}</a><br>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def _file_json(e: CatalogEntry) -> dict[str, object]:
    d: dict[str, object] = {
        "filename": e.filename,
        "url": file_url(e),
        "hashes": {"sha256": e.sha256},
    }
    if e.requires_python:
        d["requires-python"] = e.requires_python
    d["core-metadata"] = {"sha256": e.metadata_sha256}
    d["size"] = e.size
    d["upload-time"] = e.upload_time
    d["yanked"] = e.yanked
    return d


def render_project_json(project: str, entries: list[CatalogEntry]) -> bytes:
    versions = sorted_versions(entries)
    doc = {
        "meta": {"api-version": API_VERSION},
        "name": project,
        "versions": versions,
        "files": [_file_json(e) for e in entries],
    }
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")


def render_root_html(projects: list[str]) -> bytes:
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        "<title>Simple index</title>",
        "</head>",
        "<body>",
    ]
    lines += [f'<a href="{quote(p)}/">{html.escape(p)}</a><br>' for p in projects]
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def render_root_json(projects: list[str]) -> bytes:
    doc = {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]}
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")


# -- writing -----------------------------------------------------------------------------------


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


def _known_accelerators(wh: Wheelhouse, entries: Iterable[CatalogEntry]) -> list[str]:
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


def update_project(wh: Wheelhouse, project: str) -> None:
    """Rewrite one project's pages in every accelerator tree, then the root lists.

    Called by the pipeline after each publish; costs one catalog read and a directory scan
    per accelerator, however large the index is.
    """
    with _locked(wh):
        _update_project(wh, canonicalize_name(project))


def _update_project(wh: Wheelhouse, project: str) -> None:
    entries = wh.entries(project)
    for accel in _known_accelerators(wh, entries):
        if not (simple_dir(wh, accel) / "index.html").is_file():
            _write_tree(wh, accel, {p: wh.entries(p) for p in wh.projects()})
            continue
        shown = listed(entries, accel)
        was_listed = (simple_dir(wh, accel) / project / "index.html").is_file()
        _write_project(wh, accel, project, shown)
        if was_listed != bool(shown):  # the root list changes only when a project comes or goes
            write_root(wh, accel)


def ensure(wh: Wheelhouse) -> list[str]:
    """Write the tree of every known accelerator that has none yet; return their names.

    Run when serving starts, so that a fresh or just-upgraded wheelhouse answers `/cpu/simple/`
    with a (possibly empty) index rather than 404. Cheap when every tree exists.
    """
    if not wh.root.is_dir():
        return []
    missing = [
        a for a in _known_accelerators(wh, []) if not (simple_dir(wh, a) / "index.html").is_file()
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
        for accel in _known_accelerators(wh, _chain(catalog)):
            _write_tree(wh, accel, catalog)
    write_status(wh)


# -- checking ----------------------------------------------------------------------------------


class LinkParser(HTMLParser):
    """The attributes of every anchor in a page (PEP 503 links and their data- attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))


class _Checker:
    """Walks the trees and the store, hashing each file once."""

    def __init__(self, wh: Wheelhouse) -> None:
        self.wh = wh
        self.root = wh.root.resolve()
        self.problems: list[str] = []
        self._hashes: dict[Path, str | None] = {}
        self.pages = 0
        self.files = 0

    def sha256(self, path: Path) -> str | None:
        if path not in self._hashes:
            try:
                self._hashes[path] = sha256_file(path)
            except OSError:
                self._hashes[path] = None
        return self._hashes[path]

    def resolve(self, page: Path, href: str) -> Path | None:
        target = (page.parent / unquote(href.partition("#")[0])).resolve()
        return target if target.is_relative_to(self.root) else None

    def check_store(self) -> None:
        """Every catalog entry's bytes and metadata match what the catalog promises."""
        for project, e in self.wh.all_entries():
            self.files += 1
            path = self.wh.root / e.path
            digest = self.sha256(path)
            if digest is None:
                self.problems.append(f"{project}: {e.path} is missing")
                continue
            if digest != e.sha256:
                self.problems.append(f"{project}: {e.path}: sha256 {digest} != catalog {e.sha256}")
            meta = path.with_name(path.name + ".metadata")
            if self.sha256(meta) is None:
                self.problems.append(f"{project}: {e.path}.metadata is missing")
            elif self.sha256(meta) != e.metadata_sha256:
                self.problems.append(f"{project}: {e.path}.metadata: sha256 does not match")
            elif digest == e.sha256 and _wheel_metadata(path) != meta.read_bytes():
                self.problems.append(f"{project}: {e.path}.metadata differs from the wheel's")
        for wheel in sorted(self.wh.files_dir.glob("*/*.whl")):
            if self.wh.find(wheel.name) is None:
                self.problems.append(f"{wheel.relative_to(self.wh.root)} is in no catalog")

    def check_page(self, accel: str, project: str, entries: list[CatalogEntry]) -> None:
        pdir = simple_dir(self.wh, accel) / project
        where = f"{accel}/simple/{project}/"
        page = pdir / "index.html"
        try:
            html_bytes, json_bytes = page.read_bytes(), (pdir / "index.json").read_bytes()
        except FileNotFoundError as exc:
            self.problems.append(f"{where}: {Path(str(exc.filename)).name} is missing")
            return
        self.pages += 2
        if html_bytes != render_project_html(project, entries):
            self.problems.append(f"{where}index.html does not list what the catalog holds")
        if json_bytes != render_project_json(project, entries):
            self.problems.append(f"{where}index.json does not list what the catalog holds")
        parser = LinkParser()
        parser.feed(html_bytes.decode("utf-8", "replace"))
        for a in parser.links:
            href = a.get("href") or ""
            target = self.resolve(page, href)
            if target is None or not target.is_file():
                self.problems.append(f"{where}: link {href} does not resolve to a file")
                continue
            _, _, frag = href.partition("#sha256=")
            if frag and self.sha256(target) != frag:
                self.problems.append(f"{where}: {target.name}: bytes do not match #sha256")
            meta_hash = (a.get("data-core-metadata") or "").removeprefix("sha256=")
            meta = target.with_name(target.name + ".metadata")
            if meta_hash and self.sha256(meta) is None:
                self.problems.append(f"{where}: {meta.name} is missing")
            elif meta_hash and self.sha256(meta) != meta_hash:
                self.problems.append(f"{where}: {meta.name}: bytes do not match its hash")

    def check_tree(self, accel: str, catalog: dict[str, list[CatalogEntry]]) -> None:
        wanted = {}
        for project, entries in catalog.items():
            shown = listed(entries, accel)
            if shown:
                wanted[project] = shown
        on_disk = set(listed_projects(self.wh, accel))
        for project in sorted(set(wanted) - on_disk):
            self.problems.append(f"{accel}/simple/{project}/ is missing")
        for project in sorted(on_disk - set(wanted)):
            self.problems.append(f"{accel}/simple/{project}/ lists a project with no wheels")
        for project in sorted(set(wanted) & on_disk):
            self.check_page(accel, project, wanted[project])
        base = simple_dir(self.wh, accel)
        projects = sorted(wanted)
        for name, expected in (
            ("index.html", render_root_html(projects)),
            ("index.json", render_root_json(projects)),
        ):
            try:
                self.pages += 1
                if (base / name).read_bytes() != expected:
                    self.problems.append(f"{accel}/simple/{name} does not list every project")
            except FileNotFoundError:
                self.problems.append(f"{accel}/simple/{name} is missing")


def _wheel_metadata(path: Path) -> bytes | None:
    try:
        return read_metadata(path)
    except (OSError, zipfile.BadZipFile, KeyError, WheelhouseError):
        return None


@dataclass(frozen=True, kw_only=True)
class CheckResult:
    """What `check` found, and how much it looked at (an "OK" should say what it means)."""

    problems: list[str]
    pages: int  # index pages compared with what the catalog renders
    files: int  # catalog entries whose bytes and metadata were checked
    hashes: int  # distinct files read and hashed

    def summary(self) -> str:
        return f"{self.pages} pages, {self.files} files and {self.hashes} sha256 hashes checked"


def check(wh: Wheelhouse) -> CheckResult:
    """Every problem that would make an installer fail or see something other than the store.

    Links must resolve inside the wheelhouse, hashes must match the bytes, and each page must
    be exactly what the catalog renders to: a stale or hand-edited page is a problem too.
    """
    checker = _Checker(wh)
    checker.check_store()
    catalog = {p: wh.entries(p) for p in wh.projects()}
    for accel in _known_accelerators(wh, _chain(catalog)):
        checker.check_tree(accel, catalog)
    return CheckResult(
        problems=checker.problems,
        pages=checker.pages,
        files=checker.files,
        hashes=sum(1 for h in checker._hashes.values() if h is not None),
    )
