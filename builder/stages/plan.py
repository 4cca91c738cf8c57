"""The plan: per (target, package) of the resolved closure, `cached`, `download`, `build` or
`skip`, and for a build the cache key it is built under, settled here once.

Every target is resolved at once; the plan comes in waves, one per interpreter (the targets
of one interpreter are planned together: whether a package varies by accelerator is read
from all their closures), in the order of the targets, each as soon as its closures are
resolved, so that `build` can start a wave's builds while later targets still resolve."""

from __future__ import annotations

import contextvars
import functools
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.tags import Tag
from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename
from packaging.version import Version

from ..config import Config
from ..errors import PrewheelError, RequirementsError, ResolutionError
from ..records import AccelDecision, CacheKey
from ..requirements import Pin, unpinned
from ..targets import Target
from ..threads import in_threads
from ..upstream import UpstreamFile
from ..wheelhouse import Wheelhouse
from . import accel, classify, constraints
from .classify import SdistScan, SourceScanner
from .closures import PAGE_THREADS, Closure, resolve_cached, sandbox_policy, upstream_files
from .keys import compute

if TYPE_CHECKING:  # the build library loads only when something is built
    from .build import BuildResult

__all__ = ["Closure", "resolve_cached", "sandbox_policy", "upstream_files"]

Action: TypeAlias = Literal["cached", "download", "build", "skip"]
ACTIONS: tuple[Action, ...] = ("cached", "download", "build", "skip")
Progress: TypeAlias = Callable[[str], None]
# An sdist's sha256 and what it says about CUDA (classify.SourceScanner; a fake in tests).
Scanner: TypeAlias = Callable[[UpstreamFile, frozenset[str]], tuple[str, SdistScan]]
# How long a resolution waits for the builds ahead of it at most; those still running are
# read from their sdists' metadata hooks as before, and the plan's build still takes them.
AHEAD_WAIT = 30.0
AHEAD_POLL = 0.05


def _quiet(_: str) -> None:
    pass


class BuildAhead(Protocol):
    """Builds started before their target's closure is resolved (the pipeline's `Ahead`)."""

    def start(self, items: list[PlanItem]) -> list[Future[BuildResult]]:
        """Build `items` now: each one's wheel, when it comes; none for one left to the
        plan."""

    def idle(self) -> bool:
        """Whether the builds started leave a `--jobs` slot free (none waits for one)."""


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
    # Builds: whether the package is built per accelerator, and why (stages.classify).
    accel: AccelDecision | None = None
    # Downloads: the file came from the accelerator's own upstream (listed there only).
    own_upstream: bool = False
    # Builds: the runtime closure's pins (build tools left out), which build requirements
    # are installed at.
    runtime_pins: tuple[tuple[str, str], ...] = ()

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
            "accel_specific": self.key.accel_specific if self.key else None,
            "accel_decision": self.accel.to_json() if self.accel else None,
            "framework": dict(self.key.inputs.framework) if self.key else None,
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    items: tuple[PlanItem, ...]
    targets: tuple[Target, ...]  # every target planned for, the skipped ones too
    skipped_targets: tuple[Target, ...]
    # Closure members the input does not pin: while there are any, every run resolves again.
    unpinned: tuple[str, ...] = ()
    # Per target name, its whole closure {name: version}: what verify installs with. Kept
    # whole when `only_building` narrows the items.
    closures: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def only_building(self, names: set[str]) -> Plan:
        """The plan with builds limited to `names` (downloads and cached items stay)."""
        return replace(self, items=_only_building(self.items, names))

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


def check_upstream(pins: list[Pin], upstreams: tuple[str, ...]) -> None:
    """Every direct pin must exist upstream: a clear error now beats pip's later."""
    problems = []
    upstream = " + ".join(upstreams)
    for pin in pins:
        files = upstream_files(upstreams, pin.name)
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


@functools.lru_cache(maxsize=16)
def _ranks(tags: tuple[Tag, ...]) -> dict[Tag, int]:
    # A target's tags number in the thousands (every manylinux glibc version): ranked once
    # per target, not once per member of its closure.
    return {t: i for i, t in enumerate(tags)}


def best_wheel(files: list[UpstreamFile], target_tags: list[Tag]) -> UpstreamFile | None:
    """The wheel whose best tag ranks highest in the target's tag priority."""
    rank = _ranks(tuple(target_tags))
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


def keys_for(
    *,
    name: str,
    version: str,
    sdist_sha256: str,
    target: Target,
    config: Config,
    wh: Wheelhouse,
    decision: AccelDecision | None = None,
    framework: tuple[tuple[str, str], ...] = (),
) -> tuple[CacheKey, CacheKey | None, AccelDecision]:
    """The key to build under and, when that one is accelerator-neutral, the per-accelerator
    key to build under should the wheel link CUDA; and the decision, as it stands. A package
    an earlier neutral build of the same inputs found linking CUDA is keyed per accelerator
    straight away."""
    decision = decision or AccelDecision(specific=False, by="none")

    def key(per_accel: bool) -> CacheKey:
        return compute(
            name=name,
            version=version,
            sdist_sha256=sdist_sha256,
            target=target,
            config=config,
            per_accel=per_accel,
            framework=framework,
        )

    first = key(per_accel=decision.specific)
    if first.accel_specific:
        return first, None, decision
    per_accel = key(per_accel=True)
    linked = accel.linked_before(wh, first)
    if linked is not None:
        found = AccelDecision(specific=True, by="links-cuda", evidence=linked)
        return per_accel, None, found
    return first, per_accel, decision


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
    scan: Scanner | None = None,
    closure: Mapping[str, str] | None = None,
    by_accel: Mapping[str, Mapping[str, str]] | None = None,
) -> PlanItem:
    """What to do for one package of one target's closure. A build reads its sdist
    (`scan`) to decide whether it is accelerator-specific, and pins the build requirements
    that are also in the target's `closure`; `by_accel` says what each accelerator's
    closure holds of each project (a framework that differs makes the package specific)."""
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
    if pkg.accels and not any(fnmatchcase(target.accel, a) for a in pkg.accels):
        return PlanItem(action="skip", reason=f"config: only for {', '.join(pkg.accels)}", **base)
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
                action="download",
                reason="upstream wheel fits the target",
                file=wheel,
                own_upstream=config.own_upstream(target.accel),
                **base,
            )
    sdists = [f for f in files if f.is_sdist]
    if not sdists:
        where = " + ".join(config.upstreams(target.accel))
        raise ResolutionError(
            f"{name}=={version}: no wheel for {target.name} and no sdist on {where}"
        )
    sdist = next((f for f in sdists if f.filename.endswith(".tar.gz")), sdists[0])
    why = "forced by config" if pkg.force_build else "no wheel fits the target"
    digest, found = (scan or SourceScanner(wh))(sdist, hashes)
    framework = classify.framework_pins((*found.build_requires, *pkg.build_requires), closure or {})
    decision = classify.decide(
        found,
        override=pkg.accel_specific,
        framework_split=classify.framework_split(framework, by_accel or {}),
    )
    runtime_pins = tuple(
        (n, v) for n, v in sorted((closure or {}).items()) if n not in classify.BUILD_TOOLS
    )
    key, accel_key, decision = keys_for(
        name=name,
        version=version,
        sdist_sha256=digest,
        target=target,
        config=config,
        wh=wh,
        decision=decision,
        framework=framework,
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
            accel=decision,
            runtime_pins=runtime_pins,
            **base,
        )
    return PlanItem(
        action="build",
        reason=why,
        file=sdist,
        key=key,
        accel_key=accel_key,
        accel=decision,
        runtime_pins=runtime_pins,
        **base,
    )


def cached_build(wh: Wheelhouse, key: CacheKey, target: Target) -> str | None:
    """The wheelhouse file built under `key`, or a pure wheel from the same source (unless
    it failed this target's checks: a failure under `key` itself); its stored bytes checked
    against the catalog (a stat, or the sha256 when that differs)."""
    for k in (key.key, key.source_key):
        rec = wh.read_record(k)
        if rec is not None and rec.result == "failed" and k == key.key:
            return None  # the build (or its failure, cached) decides
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
    resolved: Closure | None = None,
    scan: Scanner | None = None,
    by_accel: Mapping[str, Mapping[str, str]] | None = None,
) -> list[PlanItem]:
    closure, files = resolved or resolve_cached(
        target, pins, config, wh, refresh=refresh, progress=progress
    )
    constraints.check(target, {r.name: r.version for r in closure}, config, pins)
    pin_hashes = {p.name: p.hashes for p in pins}
    versions: dict[str, str] = {canonicalize_name(r.name): r.version for r in closure}
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
            scan=scan or SourceScanner(wh),
            closure=versions,
            by_accel=by_accel,
        )
        for r in closure
    ]


def closures_by_accel(
    closures: Mapping[Target, Closure],
) -> dict[str, dict[str, dict[str, str]]]:
    """Per interpreter: what each accelerator's closure holds of each project, as a version
    and the sha256 of its files (two indexes can serve one version with different bytes).
    Targets of one interpreter differ only in accelerator and policy, so a project that
    differs here differs because of the accelerator's own upstream."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for target, (closure, files) in closures.items():
        assert target.interpreter is not None
        per = out.setdefault(str(target.interpreter.path), {})
        for r in closure:
            hashes = ",".join(sorted(f.sha256 or f.url for f in files.get(r.name, ())))
            digest = hashlib.sha256(hashes.encode()).hexdigest()[:12]
            per.setdefault(canonicalize_name(r.name), {})[target.accel] = f"{r.version} {digest}"
    return out


@dataclass(frozen=True, kw_only=True)
class Wave:
    """The items of the targets of one interpreter, planned as soon as their closures are
    resolved (in the order of the targets)."""

    items: tuple[PlanItem, ...]
    # Per target name, its whole closure {name: version} (kept when the builds are narrowed).
    closures: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def only_building(self, names: set[str]) -> Wave:
        """The wave with builds limited to `names` (`Plan.only_building`)."""
        return replace(self, items=_only_building(self.items, names))


def _only_building(items: tuple[PlanItem, ...], names: set[str]) -> tuple[PlanItem, ...]:
    return tuple(i for i in items if i.action != "build" or i.name in names)


def plan_waves(
    targets: list[Target],
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    *,
    allow_unpinned: bool = False,
    refresh: bool = False,
    progress: Progress = _quiet,
    keep_sources: bool | None = None,
    ahead: BuildAhead | None = None,
) -> Iterator[Wave]:
    """The plan for `targets`, wave by wave; `progress` hears what is being resolved (it
    takes seconds). Each sdist to build is read to decide whether it is accelerator-specific:
    kept in the wheelhouse (`keep_sources`; by default when one exists) for the build to
    reuse, as are the resolutions (`closures`). A resolution that fails raises when its wave
    is due (the first target's error first), naming a pin upstream lacks if one does.

    With `ahead`, a resolution of the first interpreter's targets starts the builds of their
    top-level sdists (`start_ahead`) and, where it needs package code run, reads their
    wheels instead."""
    check_pins(pins, allow_unpinned=allow_unpinned)
    usable = [t for t in targets if t.missing is None]
    keep = wh.root.is_dir() if keep_sources is None else keep_sources
    by_interpreter: dict[str, list[Target]] = {}
    for t in usable:
        assert t.interpreter is not None
        by_interpreter.setdefault(str(t.interpreter.path), []).append(t)
    scanner = SourceScanner(wh, keep=keep)
    first = next(iter(by_interpreter.values()), [])
    early = SourceScanner(wh, keep=False)  # nothing reaches the wheelhouse before the plan

    def built(t: Target) -> Callable[[], Waiting] | None:
        if ahead is None or t not in first:
            return None
        return functools.partial(start_ahead, t, pins, config, wh, ahead, early, len(first))

    pool = ThreadPoolExecutor(max_workers=max(1, len(usable)), thread_name_prefix="resolve")
    try:
        # Each resolver waits on the index and its own subprocess most of the time.
        resolving: dict[Target, Future[Closure]] = {
            t: pool.submit(
                contextvars.copy_context().run,
                resolve_cached,
                t,
                pins,
                config,
                wh,
                refresh=refresh,
                progress=progress,
                write=keep,
                ahead=built(t),
            )
            for t in usable
        }
        for interp, group in by_interpreter.items():
            try:
                closures = {t: resolving[t].result() for t in group}
            except ResolutionError:
                for upstreams in dict.fromkeys(config.upstreams(t.accel) for t in usable):
                    check_upstream(pins, upstreams)  # names a missing pin, if one is
                raise
            by_accel = closures_by_accel(closures)[interp]
            items = [
                item
                for t in group
                for item in plan_target(
                    t, pins, config, wh, resolved=closures[t], scan=scanner, by_accel=by_accel
                )
            ]
            yield Wave(items=tuple(items), closures=closures_of(items))
    finally:
        # A run that stops (an error, a signal) does not wait for the other resolutions.
        pool.shutdown(wait=False, cancel_futures=True)


def start_ahead(
    target: Target,
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    ahead: BuildAhead,
    scan: Scanner,
    sharing: int,
) -> Waiting:
    """Start building `target`'s top-level sdists before its closure is resolved (planned
    in a thread of their own, beside the resolver's first attempt); what it returns waits
    for their wheels, for the resolver to read their metadata instead of running each
    sdist's metadata hooks in a build environment of its own: no sdist is prepared twice,
    and the builds start seconds sooner. It waits `AHEAD_WAIT` seconds at most (a long
    build does not hold the rest of the plan back), and where a slot is free while some
    still compile the resolver races them (`Waiting`); a build that fails is not read.

    Only exact pins without markers, planned as the whole plan would (`plan_item`), with the
    other pins standing in for the closure: a build requirement that is also pinned is a
    framework installed at its pin, as it will be in the closure. Where accelerators
    (`sharing` targets of one interpreter) may hold a framework at different builds, the
    plan decides: a guess would be a build thrown away."""
    pinned: dict[str, str] = {
        canonicalize_name(p.name): p.version for p in pins if p.version and not p.marker
    }
    upstreams = config.upstreams(target.accel)

    def item(pin: Pin) -> PlanItem | None:
        assert pin.version is not None
        try:
            found = upstream_files(upstreams, pin.name) or []
            mine = [f for f in found if f.version == Version(pin.version)]
            planned = plan_item(target, canonicalize_name(pin.name), pin.version, pin.hashes,
                                config, wh, files=mine, requested=True, scan=scan,
                                closure=pinned)  # fmt: skip
        except PrewheelError:
            return None  # the plan says what is wrong with it
        if planned.action != "build" or planned.key is None:
            return None
        if sharing > 1 and planned.key.inputs.framework:
            return None
        return planned

    def start() -> list[Future[BuildResult]]:
        if constraints.conflicts(target, pinned, config, pins):
            return []  # the pins break a `requires`: bad input, whatever the closure holds
        mine = [p for p in pins if canonicalize_name(p.name) in pinned]
        items = [i for i in in_threads(item, mine, PAGE_THREADS) if i is not None]
        return ahead.start(items)

    if target.toolchain == "zig":  # its builds share a cache in the wheelhouse
        return Waiting(None, ahead)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ahead-plan")
    started = pool.submit(contextvars.copy_context().run, start)
    pool.shutdown(wait=False)  # the thread ends with `start`
    return Waiting(started, ahead)


class Waiting:
    """The resolver's side of the builds ahead (`resolve.AheadWheels`): their wheels, waited
    for. A build that fails is not read."""

    def __init__(self, started: Future[list[Future[BuildResult]]] | None, ahead: BuildAhead):
        self._started = started
        self._ahead = ahead

    def _builds(self) -> list[Future[BuildResult]]:
        return self._started.result() if self._started is not None else []

    def _wait(self, stop: Callable[[int], bool]) -> bool:
        """Wait for the builds until every one is done or `stop` (given how many are left)
        says enough; whether every one is."""
        pending = {f for f in self._builds() if not f.done()}
        while pending and not stop(len(pending)):
            pending = wait(pending, timeout=AHEAD_POLL)[1]
        return not pending

    def ready(self, each: Callable[[Path], None] | None = None) -> list[Path]:
        """The wheels built by the time every build is done, or a slot is free while some
        still compile (the resolver then races them, `resolve._racing`), or `AHEAD_WAIT` has
        passed; `each` hears every wheel as it is built, while this waits."""
        n = len(self._builds())
        deadline = time.monotonic() + AHEAD_WAIT
        told: set[Path] = set()

        def enough(left: int) -> bool:
            for wheel in self.built():
                if each is not None and wheel not in told:
                    told.add(wheel)
                    each(wheel)
            return time.monotonic() >= deadline or (left < n and self._ahead.idle())

        self._wait(enough)
        return self.built()

    def built(self) -> list[Path]:
        done = [f for f in self._builds() if f.done() and not f.cancelled()]
        return [f.result().wheel for f in done if f.exception() is None]

    def pending(self) -> bool:
        return not all(f.done() for f in self._builds())

    def wait_all(self, until: threading.Event) -> bool:
        return self._wait(lambda _: until.is_set())


def assemble(targets: list[Target], pins: list[Pin], items: list[PlanItem]) -> Plan:
    """The whole plan from its waves' items: in the order of the targets."""
    pinned = {p.name for p in pins if p.version}
    order = {t.name: k for k, t in enumerate(targets)}
    ordered = sorted(items, key=lambda i: order[i.target.name])  # stable: closure order kept
    usable = [t for t in targets if t.missing is None]
    return Plan(
        items=tuple(ordered),
        targets=tuple(targets),
        skipped_targets=tuple(t for t in targets if t.missing),
        unpinned=tuple(sorted({i.name for i in ordered} - pinned)),
        closures={t.name: closures_of(ordered).get(t.name, {}) for t in usable},
    )


def closures_of(items: Iterable[PlanItem]) -> dict[str, dict[str, str]]:
    """Per target name, its closure as the items say: {name: version}."""
    out: dict[str, dict[str, str]] = {}
    for i in items:
        out.setdefault(i.target.name, {})[i.name] = i.version
    return out


def make_plan(
    targets: list[Target],
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    *,
    allow_unpinned: bool = False,
    refresh: bool = False,
    progress: Progress = _quiet,
    keep_sources: bool | None = None,
) -> Plan:
    """The whole plan for `targets` at once (`plan_waves`, every wave waited for)."""
    waves = plan_waves(
        targets,
        pins,
        config,
        wh,
        allow_unpinned=allow_unpinned,
        refresh=refresh,
        progress=progress,
        keep_sources=keep_sources,
    )
    return assemble(targets, pins, [i for w in waves for i in w.items])
