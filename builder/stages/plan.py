"""The plan: per (target, package) of the resolved closure, `cached`, `download`, `build` or
`skip`, and for a build the cache key it is built under, settled here once."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..config import Config
from ..errors import RequirementsError, ResolutionError, WheelhouseWriteError
from ..records import CacheKey
from ..requirements import Pin, unpinned
from ..sandbox import Policy, policy
from ..targets import Target
from ..upstream import UpstreamFile, project_files
from ..wheelhouse import Wheelhouse, atomic_write_json
from . import accel
from .fetch import fetch
from .keys import compute
from .resolve import Resolved, resolve_closure

Action: TypeAlias = Literal["cached", "download", "build", "skip"]
ACTIONS: tuple[Action, ...] = ("cached", "download", "build", "skip")
Progress: TypeAlias = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True, kw_only=True)
class PlanItem:
    target: Target
    name: NormalizedName
    version: str
    action: Action
    reason: str
    file: UpstreamFile | None = None  # the wheel to download or the sdist to build
    hashes: frozenset[str] = frozenset()  # --hash pins from the requirements
    key: CacheKey | None = None  # build items (and cached builds)
    # A build keyed accelerator-neutral is built again under this key, per accelerator,
    # when its wheel turns out to link CUDA.
    accel_key: CacheKey | None = None
    cached_file: str | None = None  # cached items: the wheelhouse file name
    requested: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.name,
            "accel": self.target.accel,
            "name": self.name,
            "version": self.version,
            "action": self.action,
            "reason": self.reason,
            "file": self.file.filename if self.file else self.cached_file,
            "url": self.file.url if self.file else None,
            "sha256": self.file.sha256 if self.file else None,
            "cache_key": self.key.key if self.key else None,
            "requested": self.requested,
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    items: tuple[PlanItem, ...]
    targets: tuple[Target, ...]  # every target planned for, the skipped ones too
    skipped_targets: tuple[Target, ...]
    # Closure members the input does not pin: while there are any, every run resolves again.
    unpinned: tuple[str, ...] = ()

    def only_building(self, names: set[str]) -> Plan:
        """The plan with builds limited to `names` (downloads and cached items stay)."""
        kept = tuple(i for i in self.items if i.action != "build" or i.name in names)
        return replace(self, items=kept)

    def to_json(self) -> dict[str, Any]:
        return {
            "items": [i.to_json() for i in self.items],
            "skipped_targets": [
                {"target": t.name, "reason": t.missing} for t in self.skipped_targets
            ],
            "unpinned": list(self.unpinned),
        }


def check_pins(pins: list[Pin], *, allow_unpinned: bool) -> None:
    loose = unpinned(pins)
    if loose and not allow_unpinned:
        listing = ", ".join(f"{p.requirement} ({p.where})" for p in loose)
        raise RequirementsError(
            f"{len(loose)} requirement(s) not pinned with ==: {listing}",
            hint="pin every requirement (name==version), or pass --allow-unpinned to let the "
            "resolver choose and print the pins",
        )


def check_upstream(pins: list[Pin], upstream: str) -> None:
    """Every direct pin must exist upstream: a clear error now beats pip's later."""
    problems = []
    for pin in pins:
        files = project_files(upstream, pin.name)
        if files is None:
            problems.append(f"{pin.name} ({pin.where}): no such project on {upstream}")
            continue
        if pin.version is not None and not any(f.version == Version(pin.version) for f in files):
            versions = sorted({f.version for f in files if f.version is not None})
            shown = ", ".join(map(str, versions[-8:])) or "none"
            problems.append(
                f"{pin.name}=={pin.version} ({pin.where}): no such version on {upstream} "
                f"(latest: {shown})"
            )
    if problems:
        raise ResolutionError("not found upstream:\n  " + "\n  ".join(problems))


def _requires_python_ok(f: UpstreamFile, target: Target) -> bool:
    if not f.requires_python or target.interpreter is None:
        return True
    try:
        spec = SpecifierSet(f.requires_python)
    except InvalidSpecifier:
        return True
    return spec.contains(".".join(map(str, target.interpreter.version)), prereleases=True)


def best_wheel(files: list[UpstreamFile], target_tags: list[Tag]) -> UpstreamFile | None:
    """The wheel whose best tag ranks highest in the target's tag priority."""
    rank = {t: i for i, t in enumerate(target_tags)}
    best: tuple[int, UpstreamFile] | None = None
    for f in files:
        if not f.is_wheel:
            continue
        score = min(
            (rank[t] for t in parse_wheel_filename(f.filename)[3] if t in rank), default=None
        )
        if score is not None and (best is None or score < best[0]):
            best = (score, f)
    return best[1] if best else None


def sandbox_policy(config: Config, wh: Wheelhouse) -> Policy:
    """The sandbox of every run of package code for this config and wheelhouse."""
    return policy(config.sandbox, memory=config.memory, wheelhouse=wh.root)


# Closures resolved in this process: targets that differ only in accelerator or policy share
# an interpreter, hence a closure (markers cannot see the accelerator); resolve it once.
_RESOLVED: dict[str, tuple[list[Resolved], dict[str, list[UpstreamFile]]]] = {}


def resolve_cached(
    target: Target,
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    *,
    refresh: bool,
    progress: Progress = _quiet,
) -> tuple[list[Resolved], dict[str, list[UpstreamFile]]]:
    """The closure and each member's upstream files, from the wheelhouse cache if locked.

    A closure is cached only when every member is pinned by the input (a lock file): then
    it cannot change, and a warm run asks neither pip nor the index anything.
    """
    assert target.interpreter is not None
    key = hashlib.sha256(
        json.dumps(
            {
                # --hash pins too: a lock that changes a file's hash must not reuse the
                # cached listing that still names the old bytes.
                "pins": sorted(f"{p.requirement} {sorted(p.hashes)}" for p in pins),
                "interpreter": [str(target.interpreter.path), list(target.interpreter.version)],
                "upstream": config.upstream,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    path = wh.root / "cache" / f"resolve-{key}.json"
    if not refresh and path.is_file():
        data = json.loads(path.read_text(encoding="utf-8"))
        closure = [Resolved(**r) for r in data["closure"]]
        return closure, {
            n: [UpstreamFile.from_json(f) for f in fs] for n, fs in data["files"].items()
        }
    if not refresh and key in _RESOLVED:
        return _RESOLVED[key]
    progress(f"{target.name}: pip resolves {len(pins)} pin(s) against {config.upstream}")
    closure = resolve_closure(
        target,
        pins,
        config.upstream,
        policy=sandbox_policy(config, wh),
        timeout=config.resolve_timeout,
    )
    progress(f"{target.name}: reading the index pages of {len(closure)} project(s)")
    files = {
        r.name: [
            f
            for f in project_files(config.upstream, r.name) or ()
            if f.version == Version(r.version)
        ]
        for r in closure
    }
    fully_pinned = {r.name for r in closure} <= {p.name for p in pins if p.version}
    if fully_pinned:
        with contextlib.suppress(WheelhouseWriteError):  # read-only: resolved again next time
            atomic_write_json(
                path,
                {
                    "closure": [
                        {"name": r.name, "version": r.version, "requested": r.requested}
                        for r in closure
                    ],
                    "files": {n: [f.to_json() for f in fs] for n, fs in files.items()},
                },
            )
    _RESOLVED[key] = (closure, files)
    return closure, files


def keys_for(
    *, name: str, version: str, sdist_sha256: str, target: Target, config: Config, wh: Wheelhouse
) -> tuple[CacheKey, CacheKey | None]:
    """The key to build under and, when that one is accelerator-neutral, the per-accelerator
    key to build under should the wheel link CUDA. A package an earlier neutral build of the
    same inputs found linking CUDA is keyed per accelerator straight away."""

    def key(per_accel: bool) -> CacheKey:
        return compute(
            name=name,
            version=version,
            sdist_sha256=sdist_sha256,
            target=target,
            config=config,
            per_accel=per_accel,
        )

    neutral = key(per_accel=False)
    if neutral.accel_specific:
        return neutral, None
    per_accel = key(per_accel=True)
    if accel.linked_before(wh, neutral):
        return per_accel, None
    return neutral, per_accel


def plan_item(
    target: Target,
    name: NormalizedName,
    version: str,
    hashes: frozenset[str],
    config: Config,
    wh: Wheelhouse,
    *,
    files: list[UpstreamFile],
    requested: bool = False,
) -> PlanItem:
    """What to do for one package of one target's closure."""
    pkg = config.package(name)
    base: dict[str, Any] = {
        "target": target,
        "name": name,
        "version": version,
        "hashes": hashes,
        "requested": requested,
    }
    assert target.interpreter is not None
    if pkg.skip:
        return PlanItem(action="skip", reason=pkg.skip, **base)
    if pkg.python and not pkg.python.contains(target.interpreter.short + ".0", prereleases=True):
        return PlanItem(action="skip", reason=f"config: python {pkg.python}", **base)
    files = [f for f in files if _requires_python_ok(f, target)]
    if hashes:
        # The pins choose among the files; when none matches, the fetch refuses the bytes
        # and names the pins: a hash mismatch fails that package, wherever it is found.
        files = [f for f in files if f.sha256 is None or f.sha256 in hashes] or files
    if not pkg.force_build:
        wheel = best_wheel(files, target.tag_set())
        if wheel is not None:
            have = wh.has_file(wheel.filename, wheel.sha256)
            if have is not None:
                return PlanItem(
                    action="cached",
                    reason="wheel already in the wheelhouse",
                    file=wheel,
                    cached_file=have.filename,
                    **base,
                )
            return PlanItem(
                action="download", reason="upstream wheel fits the target", file=wheel, **base
            )
    sdists = [f for f in files if f.is_sdist]
    if not sdists:
        raise ResolutionError(
            f"{name}=={version}: no wheel for {target.name} and no sdist on {config.upstream}"
        )
    sdist = next((f for f in sdists if f.filename.endswith(".tar.gz")), sdists[0])
    why = "forced by config" if pkg.force_build else "no wheel fits the target"
    digest = sdist.sha256
    if digest is None:  # the index gave no hash: the key waits for the bytes
        _, digest = fetch(sdist, hashes, wh.root / "sources")
    key, accel_key = keys_for(
        name=name, version=version, sdist_sha256=digest, target=target, config=config, wh=wh
    )
    cached = cached_build(wh, key, target)
    if cached is not None:
        return PlanItem(
            action="cached",
            reason="built before under the same cache key",
            file=sdist,
            key=key,
            accel_key=accel_key,
            cached_file=cached,
            **base,
        )
    return PlanItem(action="build", reason=why, file=sdist, key=key, accel_key=accel_key, **base)


def cached_build(wh: Wheelhouse, key: CacheKey, target: Target) -> str | None:
    """The wheelhouse file built under `key`, or a pure wheel from the same source; its
    stored bytes checked against the catalog (a stat, or the sha256 when that differs)."""
    for k in (key.key, key.source_key):
        rec = wh.read_record(k)
        if rec is None or rec.result != "ok" or rec.wheel is None:
            continue
        if k == key.source_key and not target.accepts(rec.wheel):
            continue
        if wh.has_file(rec.wheel, rec.sha256) is not None:
            return rec.wheel
    # Published, but its record was never written (the builder was killed in between).
    found = wh.built_under(key.inputs.name, key.key)
    return found.filename if found is not None else None


def plan_target(
    target: Target,
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    *,
    refresh: bool = False,
    progress: Progress = _quiet,
) -> list[PlanItem]:
    closure, files = resolve_cached(target, pins, config, wh, refresh=refresh, progress=progress)
    pin_hashes = {p.name: p.hashes for p in pins}
    return [
        plan_item(
            target,
            canonicalize_name(r.name),
            r.version,
            pin_hashes.get(r.name, frozenset()),
            config,
            wh,
            files=files[r.name],
            requested=r.requested,
        )
        for r in closure
    ]


def make_plan(
    targets: list[Target],
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    *,
    allow_unpinned: bool = False,
    refresh: bool = False,
    progress: Progress = _quiet,
) -> Plan:
    """The plan for `targets`; `progress` hears what is being resolved (it takes seconds)."""
    check_pins(pins, allow_unpinned=allow_unpinned)
    usable = [t for t in targets if t.missing is None]
    items: list[PlanItem] = []
    for i, target in enumerate(usable):
        try:
            items += plan_target(target, pins, config, wh, refresh=refresh, progress=progress)
        except ResolutionError:
            if i == 0:
                check_upstream(pins, config.upstream)  # names a missing pin, if one is
            raise
    pinned = {p.name for p in pins if p.version}
    return Plan(
        items=tuple(items),
        targets=tuple(targets),
        skipped_targets=tuple(t for t in targets if t.missing),
        unpinned=tuple(sorted({i.name for i in items} - pinned)),
    )
