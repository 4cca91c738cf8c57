"""Publishing: a verified wheel into the store, its index pages, its build record; at the end
of a run the status page and `targets.json`. Everything that makes the wheelhouse say
something new goes through here, so every reader (pip, nginx, `show`, devpi push) sees the
same state.

Each write is atomic and journaled (see `wheelhouse`): a reader sees a wheel with its pages
and metadata, or not at all. Nothing is published once the run was told to stop.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from packaging.utils import parse_wheel_filename

from .. import index
from ..cmd import check_stop
from ..index.pages import listed
from ..index.status_page import write_status
from ..index.targets_json import write_targets_json
from ..log import get_logger
from ..records import BuildRecord, CacheKey
from ..targets import Target
from ..wheelfile import check_wheel, is_pure
from ..wheelhouse import CatalogEntry, Wheelhouse
from .accel import CPU, cpu_listing_error

log = get_logger("publish")


class Publisher:
    def __init__(self, wh: Wheelhouse) -> None:
        self.wh = wh

    def _pages(self, project: str) -> None:
        index.update_project(self.wh, project)

    def start(self, accelerators: Iterable[str]) -> None:
        """Before a run: the store's directories, what killed runs left half done finished
        (their journals) or removed (their temp files), and every accelerator it builds for."""
        self.wh.ensure()
        for line in index.recover(self.wh):
            log.warning("%s", line)
        for leftover in self.wh.leftovers():
            leftover.unlink(missing_ok=True)
        self.wh.register_accelerators(sorted(set(accelerators)))

    def wheel(
        self,
        wheel: Path,
        *,
        origin: str,
        accels: tuple[str, ...] | None,
        cache_key: str | None = None,
        sha256: str | None = None,
        cuda_libs: tuple[str, ...] | None = None,
    ) -> CatalogEntry:
        """Check `wheel` (members, RECORD), store it and rewrite its project's pages. A wheel
        that would be listed in the cpu index (`accels` None: every index) must need and carry
        no CUDA library: `cuda_libs` says which it does, when the caller read them already."""
        check_stop()
        check_wheel(wheel)
        if accels is None or CPU in accels:
            if cuda_libs is None:
                from .. import elf  # pyelftools loads only when a wheel is published

                cuda_libs = () if is_pure(wheel) else tuple(elf.wheel_cuda(wheel))
            if cuda_libs:
                raise cpu_listing_error(
                    wheel.name, cuda_libs, [a for a in accels or () if a != CPU]
                )
        return self.wh.publish(
            wheel,
            origin=origin,
            accels=accels,
            cache_key=cache_key,
            sha256=sha256,
            pages=self._pages,
        )

    def record(self, key: str, record: BuildRecord) -> None:
        check_stop()
        self.wh.write_record(key, record)

    def finish(self, targets: Iterable[Target]) -> None:
        """After a run: `targets.json` and the status page (for nginx or S3 serving the tree
        as it is). A no-op run leaves both byte for byte as they were."""
        write_targets_json(self.wh, targets)
        write_status(self.wh)

    # -- cached builds the index no longer lists ---------------------------------------------

    def superseded(
        self, key: CacheKey | None, cached_file: str | None, accel: str
    ) -> CatalogEntry | None:
        """The cached build `cached_file`, when the `accel` index lists another build of its
        version and tags; None when it is the one listed.

        When a config goes back to settings built before, the wheel for them is in the
        wheelhouse, but the build under the settings in between was published later, so the
        index lists that one.
        """
        if key is None or cached_file is None:
            return None
        entries = self.wh.entries(parse_wheel_filename(cached_file)[0])
        mine = next((e for e in entries if e.filename == cached_file), None)
        if mine is None or not mine.listed_in(accel) or mine in listed(entries, accel):
            return None
        return mine

    def relist(self, key: CacheKey, entry: CatalogEntry) -> str:
        """List `entry` again (the catalog chooses it; no build, no verify, no new file), and
        say so in its build records. Returns its file name."""
        check_stop()
        self.wh.relist(entry.filename, pages=self._pages)
        for k in (key.key, key.source_key):
            rec = self.wh.read_record(k)
            if rec is not None and rec.wheel == entry.filename:
                self.record(k, rec.listed_again())
        return entry.filename
