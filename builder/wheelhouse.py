"""The wheelhouse: content-addressed files, a catalog per project, build records.

Everything is written atomically (temp file in the same directory, fsync, rename), so a
crash or Ctrl-C never leaves a partial wheel, record or catalog behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from packaging.metadata import Metadata
from packaging.utils import canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .errors import WheelhouseError
from .records import BuildRecord, utcnow
from .wheelfile import read_metadata

CHUNK = 1 << 20


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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_open(path: Path) -> Iterator[BinaryIO]:
    """A file that appears at `path` whole when the block ends, or not at all.

    Written under a temp name in the same directory, fsynced, then renamed: readers see the
    old file or the new one, never a part, whatever interrupts the writer.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_open(path) as fh:
        fh.write(data)


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomic write, skipped when the bytes are already there (keeps mtime and ETag)."""
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)
    return True


def sorted_versions(entries: Iterable[CatalogEntry]) -> list[str]:
    """The distinct versions of `entries`, oldest first (unparsable ones before the rest)."""

    def key(version: str) -> tuple[int, Version | str]:
        try:
            return (1, Version(version))
        except InvalidVersion:
            return (0, version)

    return sorted({e.version for e in entries}, key=key)


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


def atomic_copy(src: Path, dst: Path) -> None:
    with atomic_open(dst) as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out, CHUNK)


class Wheelhouse:
    """The store. Publishing is serialized by a lock; reading is lock-free."""

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()
        self._lock = threading.Lock()

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

    def ensure(self) -> None:
        for d in (self.files_dir, self.catalog_dir, self.builds_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)

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
        with self._lock:
            current = set(json.loads(state.read_text())) if state.is_file() else set()
            if not set(accels) <= current:
                atomic_write_json(state, sorted(current | set(accels)))

    def _write_catalog(self, project: str, entries: list[CatalogEntry]) -> None:
        atomic_write_json(
            self.catalog_dir / f"{project}.json",
            {"project": project, "files": [e.to_json() for e in entries]},
        )

    # -- publishing ------------------------------------------------------------

    def publish(
        self,
        wheel: Path,
        *,
        origin: str,
        accels: tuple[str, ...] | None,
        cache_key: str | None = None,
        sha256: str | None = None,
    ) -> CatalogEntry:
        """Store `wheel` (bytes, then .metadata, then catalog), each step atomic.

        A wheel already present under the same name with other bytes is refused: installers
        treat a file name as immutable.
        """
        digest = sha256 or sha256_file(wheel)
        name, version, _, _ = parse_wheel_filename(wheel.name)
        project = canonicalize_name(name)
        rel = f"files/{digest[:2]}/{wheel.name}"
        dest = self.root / rel
        meta_bytes = read_metadata(wheel)
        meta = Metadata.from_email(meta_bytes, validate=False)
        with self._lock:
            entries = self.entries(project)
            old = next((e for e in entries if e.filename == wheel.name), None)
            if old is not None and old.sha256 != digest:
                raise WheelhouseError(
                    f"{wheel.name} is already published with sha256 {old.sha256[:12]}..., "
                    f"refusing different bytes ({digest[:12]}...)",
                    hint="a changed build must get a new build tag",
                )
            if not dest.is_file() or sha256_file(dest) != digest:
                atomic_copy(wheel, dest)
            atomic_write_bytes(dest.with_name(dest.name + ".metadata"), meta_bytes)
            merged_accels = accels
            if old is not None:
                if old.accels is None or accels is None:
                    merged_accels = None
                else:
                    merged_accels = tuple(sorted(set(old.accels) | set(accels)))
            entry = CatalogEntry(
                filename=wheel.name,
                path=rel,
                sha256=digest,
                size=dest.stat().st_size,
                version=str(version),
                requires_python=str(meta.requires_python) if meta.requires_python else None,
                metadata_sha256=hashlib.sha256(meta_bytes).hexdigest(),
                upload_time=old.upload_time if old else utcnow(),
                accels=merged_accels,
                origin=old.origin if old else origin,
                cache_key=cache_key or (old.cache_key if old else None),
            )
            if old != entry:
                rest = [e for e in entries if e.filename != wheel.name]
                self._write_catalog(project, sorted([*rest, entry], key=lambda e: e.filename))
            return entry

    def has_file(self, filename: str, sha256: str | None = None) -> CatalogEntry | None:
        entry = self.find(filename)
        if entry is None or not (self.root / entry.path).is_file():
            return None
        if sha256 is not None and entry.sha256 != sha256:
            return None
        return entry

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
