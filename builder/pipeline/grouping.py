"""How a plan's items become work: decisions only, no I/O, so they are tested in
milliseconds (tests/test_grouping.py).

Items that share a file or a key share the work: one download per URL, one build per cache
key, and builds from one source tried in order so that a pure or abi3 wheel built first can
serve the other targets.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from packaging.utils import NormalizedName

from ..records import CacheKey
from ..stages.plan import PlanItem
from ..targets import Target
from ..wheelhouse import CatalogEntry
from .report import ItemResult

Group = tuple[PlanItem, ...]


@dataclass(frozen=True, kw_only=True)
class Work:
    done: tuple[ItemResult, ...]  # cached and skipped items: nothing to do
    relists: tuple[tuple[CatalogEntry, Group], ...]  # cached builds the index no longer lists
    downloads: tuple[Group, ...]  # one per URL
    builds: tuple[tuple[Group, ...], ...]  # per source key, one group per cache key

    @property
    def building(self) -> frozenset[NormalizedName]:
        """The projects this run builds."""
        return frozenset(g[0].name for groups in self.builds for g in groups)


def group(
    items: tuple[PlanItem, ...], superseded: Callable[[PlanItem], CatalogEntry | None]
) -> Work:
    done: list[ItemResult] = []
    relists: dict[str, tuple[CatalogEntry, list[PlanItem]]] = {}
    downloads: dict[str, list[PlanItem]] = {}
    builds: dict[str, list[PlanItem]] = {}
    for item in items:
        if item.action == "cached" and (entry := superseded(item)) is not None:
            relists.setdefault(entry.filename, (entry, []))[1].append(item)
        elif item.action == "cached":
            done.append(ItemResult(item=item, status="cached", wheel=item.cached_file))
        elif item.action == "skip":
            done.append(ItemResult(item=item, status="skipped", error=item.reason))
        elif item.action == "download":
            assert item.file is not None
            downloads.setdefault(item.file.url, []).append(item)
        else:
            assert item.key is not None
            builds.setdefault(item.key.key, []).append(item)
    return Work(
        done=tuple(done),
        relists=tuple((e, tuple(its)) for e, its in relists.values()),
        downloads=tuple(tuple(g) for g in downloads.values()),
        builds=_by_source(builds.values()),
    )


def builds(items: tuple[PlanItem, ...]) -> tuple[tuple[Group, ...], ...]:
    """The builds of `items` alone (`Work.builds`): what a wave of the plan starts."""
    same_key: dict[str, list[PlanItem]] = {}
    for item in items:
        if item.action == "build":
            assert item.key is not None
            same_key.setdefault(item.key.key, []).append(item)
    return _by_source(same_key.values())


def _by_source(same_key: Iterable[list[PlanItem]]) -> tuple[tuple[Group, ...], ...]:
    by_source: dict[str, list[Group]] = {}
    for group in same_key:
        key = group[0].key
        assert key is not None
        by_source.setdefault(key.source_key, []).append(tuple(group))
    return tuple(tuple(groups) for groups in by_source.values())


def by_accelerator(items: Group) -> list[Group]:
    """Items split by accelerator, cpu first: a build found to link CUDA is built per one."""
    split: dict[str, list[PlanItem]] = {}
    for it in items:
        split.setdefault(it.target.accel, []).append(it)
    return [tuple(split[a]) for a in sorted(split)]


def abi3_serves(built: CacheKey, wheel: str, key: CacheKey, target: Target) -> bool:
    """Whether an abi3 wheel built under `built` serves a target keyed `key`: same
    accelerator, policy and repair options (the rest of the key is the shared source), and
    tags the target accepts."""
    a, b = built.inputs, key.inputs
    same = (a.accel, a.policy, a.repair) == (b.accel, b.policy, b.repair)
    return same and target.accepts(wheel)


def verify_now(requires: set[str] | None, building: frozenset[str]) -> bool:
    """A wheel is verified as soon as it is built when nothing it needs is built in this run
    (and its requirements could be read); otherwise it waits until every build is done."""
    return requires is not None and not (requires & building)
