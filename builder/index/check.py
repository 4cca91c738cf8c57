"""Holding the index against the store: every link resolves inside the wheelhouse, every hash
matches the bytes, every page is exactly what the catalog renders to."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import WheelhouseError
from ..simple import LinkParser
from ..wheelfile import read_metadata
from ..wheelhouse import CatalogEntry, Wheelhouse, sha256_file
from .pages import (
    chain,
    listed,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
)
from .tree import known_accelerators, listed_projects, simple_dir


class _Checker:
    """Walks the trees and the store, hashing each file once."""

    def __init__(self, wh: Wheelhouse) -> None:
        self.wh = wh
        self.root = wh.root.resolve()
        self.problems: list[str] = []
        self._hashes: dict[Path, str | None] = {}
        self.pages = 0
        self.files = 0
        self._cuda: dict[Path, tuple[str, ...]] = {}

    def cuda_libraries(self, path: Path) -> tuple[str, ...]:
        """The CUDA libraries a stored wheel needs or carries, read from its ELF objects."""
        if path not in self._cuda:
            from .. import elf  # pyelftools loads only when a check reads a wheel

            try:
                self._cuda[path] = tuple(elf.wheel_cuda(path))
            except (OSError, zipfile.BadZipFile):
                self._cuda[path] = ()
        return self._cuda[path]

    def check_no_cuda(self, accel: str, project: str, entries: list[CatalogEntry]) -> None:
        """The cpu index never holds CUDA: no wheel it lists needs or carries a CUDA
        library."""
        if accel != "cpu":
            return
        for e in entries:
            libs = self.cuda_libraries(self.wh.root / e.path)
            if libs:
                self.problems.append(
                    f"{accel}/simple/{project}/: {e.filename} needs or carries CUDA libraries "
                    f"({', '.join(libs)}): the cpu index must hold no CUDA"
                )

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
        for project in sorted(wanted):
            self.check_no_cuda(accel, project, wanted[project])
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
    for accel in known_accelerators(wh, chain(catalog)):
        checker.check_tree(accel, catalog)
    return CheckResult(
        problems=checker.problems,
        pages=checker.pages,
        files=checker.files,
        hashes=sum(1 for h in checker._hashes.values() if h is not None),
    )
