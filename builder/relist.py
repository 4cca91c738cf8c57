"""Cached builds the index no longer lists, listed again.

When a config goes back to settings built before, the wheel for them is in the wheelhouse,
but a build under the settings in between has a higher build tag, so the index serves that
one. The cached wheel is published again under a new, newest build tag: no build, no verify.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packaging.utils import parse_wheel_filename

from .cachekey import build_tag
from .plan import PlanItem
from .wheelfile import set_build_tag
from .wheelhouse import CatalogEntry, Wheelhouse, utcnow


def superseded(wh: Wheelhouse, item: PlanItem) -> CatalogEntry | None:
    """The cached build of `item`, when the index lists a newer build of its version and
    tags for the item's accelerator; None when it is the one listed."""
    if item.key is None or item.cached_file is None:
        return None
    entries = wh.entries(item.name)
    mine = next((e for e in entries if e.filename == item.cached_file), None)
    if mine is None or not mine.listed_in(item.target.accel):
        return None
    _, version, build, tags = parse_wheel_filename(mine.filename)
    for e in entries:
        _, v, b, t = parse_wheel_filename(e.filename)
        if v == version and t == tags and b > build and e.listed_in(item.target.accel):
            return mine
    return None


def relist(
    wh: Wheelhouse,
    item: PlanItem,
    entry: CatalogEntry,
    work: Path,
    publish: Callable[..., CatalogEntry],
) -> str:
    """Publish `entry` again with a build tag newer than every other build of its version
    and tags, and point its build records at the new name. Returns the new file name."""
    assert item.key is not None
    _, version, _, tags = parse_wheel_filename(entry.filename)
    newest = max(
        b
        for _, v, b, t in (parse_wheel_filename(e.filename) for e in wh.entries(item.name))
        if v == version and t == tags
    )
    # Newer than the newest even within the same second: the build tag sorts by its number.
    when = max(time.time(), float(newest[0] + 1) if newest else 0.0)
    work.mkdir(parents=True, exist_ok=True)
    tagged = set_build_tag(wh.root / entry.path, build_tag(item.key, when), work)
    published = publish(tagged, origin="built", accels=entry.accels, cache_key=entry.cache_key)
    for k in (item.key.key, item.key.source_key):
        rec: dict[str, Any] | None = wh.read_record(k)
        if rec and rec.get("wheel") == entry.filename:
            rec.update(
                wheel=published.filename,
                sha256=published.sha256,
                relisted_from=entry.filename,
                relisted=utcnow(),
            )
            wh.write_record(k, rec)
    return published.filename
