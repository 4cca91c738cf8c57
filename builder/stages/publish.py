"""Publishing: a verified wheel into the store, its index pages, its build record; at the end
of a run the status page and `targets.json`. Everything that makes the wheelhouse say
something new goes through here, so every reader (pip, nginx, `show`, devpi push) sees the
same state.

Each write is atomic (see `wheelhouse`): a reader sees a wheel with its pages and metadata,
or not at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from packaging.utils import parse_wheel_filename

from .. import index
from ..index.status_page import write_status
from ..index.targets_json import write_targets_json
from ..records import BuildRecord, CacheKey
from ..targets import Target
from ..wheelfile import is_pure, set_build_tag
from ..wheelhouse import CatalogEntry, Wheelhouse
from .accel import CPU, cpu_listing_error
from .keys import build_tag


class Publisher:
    def __init__(self, wh: Wheelhouse) -> None:
        self.wh = wh

    def start(self, accelerators: Iterable[str]) -> None:
        """Before a run: the store's directories, and every accelerator it builds for."""
        self.wh.ensure()
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
        """Store `wheel` and rewrite its project's index pages. A wheel that would be listed
        in the cpu index (`accels` None: every index) must need and carry no CUDA library:
        `cuda_libs` says which it does, when the caller read them already."""
        if accels is None or CPU in accels:
            if cuda_libs is None:
                from .. import elf  # pyelftools loads only when a wheel is published

                cuda_libs = () if is_pure(wheel) else tuple(elf.wheel_cuda(wheel))
            if cuda_libs:
                raise cpu_listing_error(
                    wheel.name, cuda_libs, [a for a in accels or () if a != CPU]
                )
        entry = self.wh.publish(
            wheel, origin=origin, accels=accels, cache_key=cache_key, sha256=sha256
        )
        index.update_project(self.wh, parse_wheel_filename(entry.filename)[0])
        return entry

    def record(self, key: str, record: BuildRecord) -> None:
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
        """The cached build `cached_file`, when the `accel` index lists a newer build of its
        version and tags; None when it is the one listed.

        When a config goes back to settings built before, the wheel for them is in the
        wheelhouse, but a build under the settings in between has a higher build tag, so
        the index serves that one.
        """
        if key is None or cached_file is None:
            return None
        entries = self.wh.entries(parse_wheel_filename(cached_file)[0])
        mine = next((e for e in entries if e.filename == cached_file), None)
        if mine is None or not mine.listed_in(accel):
            return None
        _, version, build, tags = parse_wheel_filename(mine.filename)
        for e in entries:
            _, v, b, t = parse_wheel_filename(e.filename)
            if v == version and t == tags and b > build and e.listed_in(accel):
                return mine
        return None

    def relist(self, key: CacheKey, entry: CatalogEntry, work: Path) -> str:
        """Publish `entry` again with a build tag newer than every other build of its version
        and tags (no build, no verify), and point its build records at the new name. Returns
        the new file name."""
        name, version, _, tags = parse_wheel_filename(entry.filename)
        newest = max(
            b
            for _, v, b, t in (parse_wheel_filename(e.filename) for e in self.wh.entries(name))
            if v == version and t == tags
        )
        # Newer than the newest even within the same second: the build tag sorts by number.
        when = max(time.time(), float(newest[0] + 1) if newest else 0.0)
        work.mkdir(parents=True, exist_ok=True)
        tagged = set_build_tag(self.wh.root / entry.path, build_tag(key, when), work)
        published = self.wheel(
            tagged, origin="built", accels=entry.accels, cache_key=entry.cache_key
        )
        for k in (key.key, key.source_key):
            rec = self.wh.read_record(k)
            if rec is not None and rec.wheel == entry.filename:
                self.record(k, rec.listed_again(wheel=published.filename, sha256=published.sha256))
        return published.filename
