"""Holding the index against the store: every link resolves inside the wheelhouse, every hash
matches the bytes, every page is exactly what the catalog renders to, and nothing is in the
store that the catalog does not account for."""

from __future__ import annotations

import contextlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ..errors import WheelhouseError
from ..simple import LinkParser
from ..wheelfile import read_metadata
from ..wheelhouse import TEMP_SUFFIX, CatalogEntry, Wheelhouse, leftover_temp, sha256_file
from .pages import (
    chain,
    listed,
    render_project_html,
    render_project_json,
    render_root_html,
    render_root_json,
)
from .tree import (
    indexed_accelerators,
    known_accelerators,
    listed_projects,
    recover,
    simple_dir,
)


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
        self.leftovers: list[str] = []  # temp files of killed writers: harmless, not served

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
            elif path.stat().st_size != e.size:
                self.problems.append(f"{project}: {e.path}: size differs from the catalog's")
            meta = path.with_name(path.name + ".metadata")
            if self.sha256(meta) is None:
                self.problems.append(f"{project}: {e.path}.metadata is missing")
            elif self.sha256(meta) != e.metadata_sha256:
                self.problems.append(f"{project}: {e.path}.metadata: sha256 does not match")
            elif digest == e.sha256 and _wheel_metadata(path) != meta.read_bytes():
                self.problems.append(f"{project}: {e.path}.metadata differs from the wheel's")
        self.check_strays()

    def check_strays(self) -> None:
        """Files in the store and the trees that no catalog entry accounts for."""
        known = {e.path for _, e in self.wh.all_entries()}
        files = sorted(self.wh.files_dir.rglob("*")) if self.wh.files_dir.is_dir() else []
        for f in files:
            if f.is_dir() or self._temp(f):
                continue
            rel = str(f.relative_to(self.wh.root))
            if f.name.endswith(".whl"):
                if rel not in known:
                    self.problems.append(f"{rel} is in no catalog")
            elif f.name.endswith(".whl.metadata"):
                if rel.removesuffix(".metadata") not in known:
                    self.problems.append(f"{rel} belongs to no published wheel")
            else:
                self.problems.append(f"{rel} is a stray file in the store")
        for accel in indexed_accelerators(self.wh):
            for d in sorted(simple_dir(self.wh, accel).iterdir()):
                for f in sorted(d.iterdir()) if d.is_dir() else []:
                    if not self._temp(f) and f.name not in ("index.html", "index.json"):
                        self.problems.append(f"{f.relative_to(self.wh.root)} is a stray file")
        for journal in self.wh.pending(interrupted=True):
            self.problems.append(f"a publish was interrupted and not finished ({journal.name})")

    def _temp(self, f: Path) -> bool:
        """A temp file: a writer's at work (skipped), or one a killed writer left (noted)."""
        if leftover_temp(f):
            self.leftovers.append(str(f.relative_to(self.wh.root)))
            return True
        return f.name.startswith(".") and f.name.endswith(TEMP_SUFFIX)

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
        if not projects and not base.is_dir():
            return  # an index nothing was published to yet: made when served, not missing
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
    leftovers: tuple[str, ...] = ()  # temp files of killed writers (harmless; --repair)
    recovered: tuple[str, ...] = ()  # publishes a killed run left half done, finished first

    def summary(self) -> str:
        return f"{self.pages} pages, {self.files} files and {self.hashes} sha256 hashes checked"


def check(wh: Wheelhouse) -> CheckResult:
    """Every problem that would make an installer fail or see something other than the store.

    Links must resolve inside the wheelhouse, hashes must match the bytes, each page must be
    exactly what the catalog renders to (a stale or hand-edited page is a problem too), and
    every file in the store must be one the catalog lists. A publish that a killed builder
    left half done (its journal) is finished first, as the next build would.
    """
    recovered: list[str] = []
    if wh.pending():
        with contextlib.suppress(WheelhouseError):  # read-only: the journals are reported
            recovered = recover(wh)
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
        leftovers=tuple(checker.leftovers),
        recovered=tuple(recovered),
    )
