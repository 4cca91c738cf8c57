"""The wheelhouse: content-addressed files, a catalog per project, build records.

Everything is written atomically (`atomic`: temp file in the same directory, fsync, rename),
so a crash or Ctrl-C never leaves a partial wheel, record or catalog behind. Every read-modify-write
(catalog, records, accelerators) holds a cross-process lock (`locks`), so builders sharing a
wheelhouse never lose each other's entries. A publish that changes files, catalog and index
pages writes a journal first (`.pending/`); if its writer dies half way, the next run (or
`index check`) finishes it, so what is served always matches the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from packaging.metadata import Metadata
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from . import locks, scratch
from .atomic import (  # re-exported: the store's writers
    CHUNK,
    TEMP_SUFFIX,
    atomic_copy,
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    leftover_temp,
    sha256_file,
    write_error,
    write_if_changed,
)
from .cmd import check_stop, publishing
from .errors import Interrupted, WheelhouseError, WheelhouseWriteError
from .log import get_logger
from .records import BuildRecord, utcnow
from .wheelfile import read_metadata

log = get_logger("wheelhouse")


@dataclass(frozen=True, kw_only=True)
class CatalogEntry:
    """One published wheel, as the index lists it."""

    filename: str
    path: str  # relative to the wheelhouse root: files/<sha[:2]>/<filename>
    sha256: str
    size: int
    version: str
    requires_python: str | None
    metadata_sha256: str
    upload_time: str  # ISO 8601, UTC, "Z"
    accels: tuple[str, ...] | None  # None: listed in every accelerator's index
    origin: str  # "built" or "downloaded"
    cache_key: str | None = None
    yanked: str | bool = False
    # When publishing (or listing again) last chose this build: among builds of one version
    # and tags, the index lists the one chosen last.
    listed: str | None = None
    # The stored file's mtime when it was published: a cheap check that it is unchanged.
    mtime_ns: int | None = None

    @property
    def chosen(self) -> str:
        return self.listed or self.upload_time

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["accels"] = list(self.accels) if self.accels is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CatalogEntry:
        accels = d.get("accels")
        return cls(**{**d, "accels": tuple(accels) if accels is not None else None})

    def listed_in(self, accel: str) -> bool:
        return self.accels is None or accel in self.accels


def sorted_versions(entries: Iterable[CatalogEntry]) -> list[str]:
    """The distinct versions of `entries`, oldest first (unparsable ones before the rest)."""

    def key(version: str) -> tuple[int, Version | str]:
        try:
            return (1, Version(version))
        except InvalidVersion:
            return (0, version)

    return sorted({e.version for e in entries}, key=key)


Pages = Callable[[str], None]  # rewrites a project's index pages from its catalog


def _no_pages(project: str) -> None:
    pass


class Wheelhouse:
    """The store. Writers hold cross-process locks; reading is lock-free (every file is
    replaced atomically)."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    @property
    def files_dir(self) -> Path:
        return self.root / "files"

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def builds_dir(self) -> Path:
        return self.root / "builds"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def pending_dir(self) -> Path:
        return self.root / ".pending"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def wheel_cache(self) -> Path:
        """uv's wheel cache of the build environments: every build's, this run's and later."""
        return self.root / "cache" / "uv"

    @property
    def zig_cache(self) -> Path:
        """zig's cache, shared by the zig builds of the wheelhouse."""
        return self.root / "cache" / "zig"

    def lock(self, name: str) -> contextlib.AbstractContextManager[None]:
        """The cross-process lock `name` (`catalog-<project>`, `records`, `build-<key>`)."""
        return locks.hold(self.root / ".locks" / f"{name}.lock")

    def take_lock(self, name: str) -> locks.Taken:
        """The lock `name` taken now if no one holds it (`taken` says), held until released."""
        return locks.Taken(self.root / ".locks" / f"{name}.lock")

    def ensure(self) -> None:
        for d in (self.files_dir, self.catalog_dir, self.builds_dir, self.logs_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise write_error(d, exc) from None

    def check_writable(self) -> None:
        """Raise `WheelhouseWriteError` (one line naming the path) unless a file can be
        created in the wheelhouse: asked before any work that will publish."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".writable."):
                pass
        except OSError as exc:
            raise WheelhouseWriteError(
                f"the wheelhouse {self.root} is not writable: {exc.strerror or exc}"
            ) from None

    # -- catalog ---------------------------------------------------------------

    def projects(self) -> list[str]:
        if not self.catalog_dir.is_dir():
            return []
        return sorted(p.stem for p in self.catalog_dir.glob("*.json"))

    def entries(self, project: str) -> list[CatalogEntry]:
        path = self.catalog_dir / f"{canonicalize_name(project)}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except json.JSONDecodeError as exc:
            raise WheelhouseError(f"{path}: damaged catalog ({exc})") from exc
        return [CatalogEntry.from_json(d) for d in data["files"]]

    def all_entries(self) -> Iterator[tuple[str, CatalogEntry]]:
        for project in self.projects():
            for e in self.entries(project):
                yield project, e

    def find(self, filename: str) -> CatalogEntry | None:
        project = canonicalize_name(parse_wheel_filename(filename)[0])
        return next((e for e in self.entries(project) if e.filename == filename), None)

    def accelerators(self, entries: Iterable[CatalogEntry] | None = None) -> list[str]:
        """Accelerators with an index: those ever published to, and `cpu`. `entries` are
        the catalog entries to look at, when the caller has them (default: all)."""
        known = {"cpu"}
        state = self.root / "accelerators.json"
        if state.is_file():
            known |= set(json.loads(state.read_text(encoding="utf-8")))
        for e in (e for _, e in self.all_entries()) if entries is None else entries:
            known |= set(e.accels or ())
        return sorted(known)

    def register_accelerators(self, accels: list[str]) -> None:
        state = self.root / "accelerators.json"
        if state.is_file() and set(accels) <= set(json.loads(state.read_text())):
            return  # nothing to add: nothing to lock or write (a read-only no-op run too)
        with self.lock("accelerators"):
            current = set(json.loads(state.read_text())) if state.is_file() else set()
            if not set(accels) <= current:
                atomic_write_json(state, sorted(current | set(accels)))

    def _write_catalog(self, project: str, entries: list[CatalogEntry]) -> None:
        atomic_write_json(
            self.catalog_dir / f"{project}.json",
            {"project": project, "files": [e.to_json() for e in entries]},
        )

    def _put_entry(self, project: str, entry: CatalogEntry) -> None:
        """`entry` into the catalog of `project` (replacing one of its file name)."""
        rest = [e for e in self.entries(project) if e.filename != entry.filename]
        self._write_catalog(project, sorted([*rest, entry], key=lambda e: e.filename))

    # -- publishing ------------------------------------------------------------

    def publish(
        self,
        wheel: Path,
        *,
        origin: str,
        accels: tuple[str, ...] | None,
        cache_key: str | None = None,
        sha256: str | None = None,
        pages: Pages = _no_pages,
    ) -> CatalogEntry:
        """Store `wheel` (bytes, then .metadata, then catalog, then `pages`), and make it the
        build its version and tags list (`listed`). A journal covers the whole publish.

        A wheel already present under the same name with other bytes is refused: installers
        treat a file name as immutable. A stored file that no longer matches its catalog entry
        (damaged on disk) is replaced.
        """
        digest = sha256 or sha256_file(wheel)
        name, version, _, _ = parse_wheel_filename(wheel.name)
        project = canonicalize_name(name)
        rel = f"files/{digest[:2]}/{wheel.name}"
        meta_bytes = read_metadata(wheel)
        meta = Metadata.from_email(meta_bytes, validate=False)
        with self.lock(f"catalog-{project}"):
            check_stop()  # once a run is told to stop, nothing more is published
            old = next((e for e in self.entries(project) if e.filename == wheel.name), None)
            if old is not None and old.sha256 != digest:
                if self.intact(old, remember=False):
                    raise WheelhouseError(
                        f"{wheel.name} is already published with sha256 {old.sha256[:12]}..., "
                        f"refusing different bytes ({digest[:12]}...)",
                        hint="a changed build must get a new build tag",
                    )
                log.warning("%s: the stored file was damaged; replacing it", old.path)
                old = None
            merged_accels = accels
            if old is not None:
                if old.accels is None or accels is None:
                    merged_accels = None
                else:
                    merged_accels = tuple(sorted(set(old.accels) | set(accels)))
            now = utcnow()
            entry = CatalogEntry(
                filename=wheel.name,
                path=rel,
                sha256=digest,
                size=wheel.stat().st_size,
                version=str(version),
                requires_python=str(meta.requires_python) if meta.requires_python else None,
                metadata_sha256=hashlib.sha256(meta_bytes).hexdigest(),
                upload_time=old.upload_time if old else now,
                accels=merged_accels,
                origin=old.origin if old else origin,
                cache_key=cache_key or (old.cache_key if old else None),
                listed=now,
            )
            return self._commit(project, entry, wheel, pages)

    def relist(self, filename: str, pages: Pages = _no_pages) -> CatalogEntry:
        """Make a stored build the one its version and tags list again (no new file)."""
        project = canonicalize_name(parse_wheel_filename(filename)[0])
        with self.lock(f"catalog-{project}"):
            check_stop()
            entry = next((e for e in self.entries(project) if e.filename == filename), None)
            if entry is None:
                raise WheelhouseError(f"{filename} is not in the catalog")
            return self._commit(project, replace(entry, listed=utcnow()), None, pages)

    def remove_entry(self, project: str, filename: str) -> None:
        """Drop `filename` from the catalog of `project` (`index check --repair`)."""
        with self.lock(f"catalog-{project}"):
            entries = self.entries(project)
            kept = [e for e in entries if e.filename != filename]
            if len(kept) != len(entries):
                self._write_catalog(project, kept)

    def _commit(
        self, project: str, entry: CatalogEntry, source: Path | None, pages: Pages
    ) -> CatalogEntry:
        """Journal, bytes and metadata, then catalog and pages (visible), journal removed:
        under the catalog lock, each step atomic; `recover` finishes what a killed writer
        began. A stop before the visible step undoes the publish: its journal, and the file
        when this publish stored it."""
        journal = self.pending_dir / f"{project}.pw{os.getpid()}.{entry.sha256[:12]}.json"
        atomic_write_json(
            journal,
            {"owner": scratch.owner_token(), "project": project, "entry": entry.to_json()},
        )
        dest = self.root / entry.path
        stored = source is not None and not dest.exists()
        try:
            if source is not None and not (dest.is_file() and sha256_file(dest) == entry.sha256):
                atomic_copy(source, dest)
            entry = self._finish(project, entry, pages)
        except Interrupted:
            if stored:
                dest.unlink(missing_ok=True)
                dest.with_name(dest.name + ".metadata").unlink(missing_ok=True)
            journal.unlink(missing_ok=True)
            raise
        journal.unlink(missing_ok=True)
        return entry

    def _finish(self, project: str, entry: CatalogEntry, pages: Pages) -> CatalogEntry:
        """The metadata file of a stored wheel, then (visible) its catalog entry and pages."""
        dest = self.root / entry.path
        meta = dest.with_name(dest.name + ".metadata")
        meta_bytes = read_metadata(dest)
        if not meta.is_file() or meta.read_bytes() != meta_bytes:
            atomic_write_bytes(meta, meta_bytes)
        entry = replace(entry, mtime_ns=dest.stat().st_mtime_ns, size=dest.stat().st_size)
        with publishing():
            if entry not in self.entries(project):
                self._put_entry(project, entry)
            pages(project)
        return entry

    def pending(self, *, interrupted: bool = False) -> list[Path]:
        """Journals of publishes that have not finished (their writer may still run);
        `interrupted`: only those whose writer is gone."""
        if not self.pending_dir.is_dir():
            return []
        found = sorted(self.pending_dir.glob("*.json"))
        return [j for j in found if not interrupted or not self._writer_alive(j)]

    @staticmethod
    def _writer_alive(journal: Path) -> bool:
        try:
            return scratch.alive(str(json.loads(journal.read_text())["owner"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def recover(self, pages: Pages) -> list[str]:
        """Finish the publishes that killed writers began: the file is there and whole, so
        its catalog entry and pages are written; or it is not, so nothing was published.
        Returns what was done, one line each."""
        done = []
        for journal in self.pending():
            try:
                data = json.loads(journal.read_text())
                entry = CatalogEntry.from_json(data["entry"])
                project, owner = str(data["project"]), str(data["owner"])
            except (OSError, ValueError, KeyError, TypeError):
                journal.unlink(missing_ok=True)
                continue
            if scratch.alive(owner):
                continue
            with self.lock(f"catalog-{project}"):
                if not journal.is_file():
                    continue  # finished by another recovery meanwhile
                dest = self.root / entry.path
                if dest.is_file() and sha256_file(dest) == entry.sha256:
                    self._finish(project, entry, pages)
                    done.append(f"finished the interrupted publish of {entry.filename}")
                else:
                    done.append(f"dropped the interrupted publish of {entry.filename}")
                journal.unlink(missing_ok=True)
        return done

    # -- the cheap check of a stored file ------------------------------------------

    def intact(self, entry: CatalogEntry, *, remember: bool = True) -> bool:
        """Whether the stored file is what the catalog says: size and mtime as published
        (a stat), else its sha256 (and the mtime is remembered when it matches)."""
        path = self.root / entry.path
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_size != entry.size:
            return False
        if entry.mtime_ns is not None and st.st_mtime_ns == entry.mtime_ns:
            return True
        if sha256_file(path) != entry.sha256:
            return False
        if remember:
            with contextlib.suppress(WheelhouseError):  # a read-only wheelhouse stays as it is
                self._remember_mtime(entry, st.st_mtime_ns)
        return True

    def _remember_mtime(self, entry: CatalogEntry, mtime_ns: int) -> None:
        project = canonicalize_name(parse_wheel_filename(entry.filename)[0])
        with self.lock(f"catalog-{project}"):
            cur = next((e for e in self.entries(project) if e.filename == entry.filename), None)
            if cur is not None and cur.sha256 == entry.sha256 and cur.mtime_ns != mtime_ns:
                self._put_entry(project, replace(cur, mtime_ns=mtime_ns))

    def has_file(self, filename: str, sha256: str | None = None) -> CatalogEntry | None:
        """The catalog entry of `filename` when its stored bytes are intact (and match
        `sha256`, when given); None otherwise: a damaged file is never called cached."""
        entry = self.find(filename)
        if entry is None or (sha256 is not None and entry.sha256 != sha256):
            return None
        return entry if self.intact(entry) else None

    def built_under(self, project: str, cache_key: str) -> CatalogEntry | None:
        """A published, intact wheel built under `cache_key` (its record may be missing:
        a builder killed between publishing and writing the record)."""
        for e in self.entries(project):
            if e.cache_key == cache_key and self.intact(e):
                return e
        return None

    # -- build records ---------------------------------------------------------

    def record_path(self, cache_key: str) -> Path:
        return self.builds_dir / f"{cache_key}.json"

    def read_record(self, cache_key: str) -> BuildRecord | None:
        """The record written under `cache_key`; None when there is none or it cannot be read
        (a damaged record is a build that has to run again, never an error)."""
        try:
            return BuildRecord.from_json(json.loads(self.record_path(cache_key).read_text()))
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            return None

    def write_record(self, cache_key: str, record: BuildRecord) -> None:
        """Write the record of `cache_key`, except over the record of a published build
        with something that is not one (a second builder's failure never hides it)."""
        with self.lock("records"):
            if record.result != "ok":
                cur = self.read_record(cache_key)
                if (
                    cur is not None
                    and cur.result == "ok"
                    and cur.wheel is not None
                    and self.has_file(cur.wheel, cur.sha256) is not None
                ):
                    log.info("%s: kept the record of the published build", cache_key[:12])
                    return
            atomic_write_json(self.record_path(cache_key), record.to_json())

    def records(self, project: str | None = None) -> list[BuildRecord]:
        out: list[BuildRecord] = []
        if not self.builds_dir.is_dir():
            return out
        want = canonicalize_name(project) if project else None
        for p in sorted(self.builds_dir.glob("*.json")):
            rec = self.read_record(p.stem)
            if rec is not None and (want is None or canonicalize_name(rec.name) == want):
                out.append(rec)
        return out

    # -- staging: a build made, not yet published ------------------------------------

    def stage(self, cache_key: str, wheel: Path, record: BuildRecord) -> None:
        """Keep a built wheel and its record where another builder waiting for the same key
        finds it (it verifies and publishes that wheel instead of building it again)."""
        d = self.staging_dir / cache_key
        atomic_copy(wheel, d / wheel.name)
        atomic_write_json(d / "record.json", record.to_json())

    def staged(self, cache_key: str) -> tuple[Path, BuildRecord] | None:
        """The wheel and record `stage` kept for `cache_key`, if any."""
        d = self.staging_dir / cache_key
        try:
            record = BuildRecord.from_json(json.loads((d / "record.json").read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        wheels = sorted(d.glob("*.whl"))
        return (wheels[0], record) if len(wheels) == 1 else None

    def unstage(self, cache_key: str) -> None:
        shutil.rmtree(self.staging_dir / cache_key, ignore_errors=True)

    # -- what killed writers leave ---------------------------------------------------

    def leftovers(self) -> list[Path]:
        """Temp files of writers that are gone: anywhere in the wheelhouse but the caches
        the tools keep there (uv's and zig's: their temp files are theirs). Another builder
        on the wheelhouse makes and removes directories meanwhile (uv's `.tmp*` in its
        cache): one gone before it is read is skipped (`os.walk` ignores it), not an error
        that ends the run."""
        if not self.root.is_dir():
            return []
        skip = {self.wheel_cache, self.zig_cache}
        found: list[Path] = []
        for top, dirs, files in os.walk(self.root):
            here = Path(top)
            dirs[:] = [d for d in dirs if here / d not in skip]
            found += (p for f in files if leftover_temp(p := here / f))
        return sorted(found)


__all__ = [
    "CHUNK",
    "TEMP_SUFFIX",
    "CatalogEntry",
    "Wheelhouse",
    "atomic_copy",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "leftover_temp",
    "sha256_file",
    "sorted_versions",
    "write_error",
    "write_if_changed",
]
