"""Builds ahead of the plan: a target's top-level sdists, started before its closure is resolved.

Resolving needs each sdist's metadata, and an sdist without a wheel gives it only through its
build hooks, run in a build environment of their own: every sdist was prepared twice, once to
resolve and once to build, and no build started before the resolution ended. A build ahead
is the build step of its cache key run early (`plan.start_ahead` asks for it); the resolver
reads its wheel's metadata instead, and the plan's build of the same key takes the wheel and
publishes it (its record's `started` and `build_finished` are the build's slot, its
duration the build's and the repair's). The repair is done ahead too, in the build's slot
once its wheel is handed to the resolver (`steps.repair_ahead`), so that it fills the cores
while the other builds and the resolution run, instead of all coming after the resolution;
not where the plan's checks come first (an accelerator's key, a wheel that links CUDA). So
are the checks (ISA, ABI, install, import, smoke: `steps.check_ahead`) of a wheel that
requires nothing, which installs alone whatever the closure; the plan's verification of the
others installs them with the closure. A wheel the plan does not take (its key turned out
different) is dropped.

Nothing of a build ahead reaches the wheelhouse's content before the plan takes it: the
sdist and the log live in the run's scratch directory, so input the plan refuses publishes
and records nothing (only the shared wheel cache may keep the build dependencies it
fetched). The build's lock on its key is taken at once and held until the plan's build
takes it over: another builder sharing the wheelhouse still builds each key once.
"""

from __future__ import annotations

import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from .. import locks, scratch
from ..archive import native_bytes
from ..atomic import atomic_copy
from ..cmd import check_stop
from ..errors import PrewheelError, WheelhouseWriteError, moved_log
from ..log import working_on
from ..records import CacheKey, utcnow
from ..stages.fetch import fetch
from ..stages.plan import PlanItem
from .steps import (
    Checked,
    Early,
    Run,
    Tagged,
    check_ahead,
    compile_sdist,
    discard,
    repair_ahead,
    verify_dir,
    warm,
)

if TYPE_CHECKING:
    from ..stages.build import BuildResult


THREADS = 32  # builds ahead at once: each waits for a `--jobs` slot, most of them asleep
UNWEIGHED = 1 << 62  # the weight a build ahead is expected with before its sdist is read

# What a build ahead's slot does after the build: the repair (or what failed it) and the
# checks; None for what it leaves to the plan.
After = tuple[Tagged | PrewheelError | None, Checked | None]


@dataclass(frozen=True)
class _Started:
    """A build ahead, as its thread sets it: the wheel once built (the resolver reads it),
    then what its slot did after (`After`)."""

    built: Future[BuildResult] = field(default_factory=Future)
    after: Future[After] = field(default_factory=Future)


class Ahead:
    """The builds ahead of one run, by cache key (`only`: of these packages, `--package`)."""

    def __init__(self, only: frozenset[str] | None = None) -> None:
        self.only = only
        self._lock = threading.Lock()
        self._started: dict[str, _Started] = {}
        self._held: dict[str, locks.Taken] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._queued = 0  # started, not yet in a slot (fetching, waiting for one)
        self._compiling = 0

    def for_plan(self, run: Run) -> Planned:
        """What the plan starts builds ahead with, in `run`."""
        return Planned(ahead=self, run=run)

    def start(self, run: Run, items: list[PlanItem]) -> list[Future[BuildResult]]:
        """Start building `items` (once per key): each one's wheel, when it comes; not for
        one left to the plan (`_claim`). Each is expected by the slots before any starts:
        its weight is known once its sdist is here, and until it asks for a slot a lighter
        build waits for it (`Slots`), so the longest builds take the first slots whichever
        sdist came first."""
        out: list[Future[BuildResult]] = []
        jobs: list[tuple[PlanItem, CacheKey, _Started]] = []
        with self._lock:
            for item in items:
                claimed = self._claim(run, item)
                if isinstance(claimed, Future):
                    out.append(claimed)
                elif claimed is not None:
                    run.slots.expect(claimed.key, UNWEIGHED)
                    started = self._started[claimed.key] = _Started()
                    self._queued += 1
                    jobs.append((item, claimed, started))
                    out.append(started.built)
            if jobs and self._pool is None:  # each waits for a slot: `Slots` orders them
                self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="ahead")
        for item, key, started in jobs:
            assert self._pool is not None
            context = contextvars.copy_context()
            self._pool.submit(context.run, self._build, run, item, key, started)
        return out

    def _claim(self, run: Run, item: PlanItem) -> CacheKey | Future[BuildResult] | None:
        """`item`'s key with its lock taken, to build it ahead; the build already started
        under it; or None when it is left to the plan: a package `--package` leaves out, a
        failure kept under its key, another builder on it, or a `--cache-from` index that
        may hold it."""
        key = item.key
        if item.action != "build" or key is None or item.file is None or run.cache_from:
            return None
        if self.only is not None and item.name not in self.only:
            return None
        if key.key in self._started:
            return self._started[key.key].built
        prev = run.wh.read_record(key.key)
        if prev is not None and prev.result == "failed" and not run.retry_failed:
            return None
        try:
            held = run.wh.take_lock(f"build-{key.key}")
        except OSError:  # a wheelhouse that cannot be written: the plan's build says so
            return None
        if not held.taken or run.wh.staged(key.key) is not None:
            held.give_up()
            return None
        self._held[key.key] = held
        return key

    def idle(self, run: Run) -> bool:
        """Whether the builds ahead leave a slot free: none of them waits for one, and fewer
        compile than there are slots. Until then the resolver waits for their wheels; after,
        the free slot is better spent resolving the rest from their hooks than idle."""
        with self._lock:
            return self._queued == 0 and self._compiling < run.slots.n

    def holding(self, key: CacheKey) -> locks.Taken | None:
        """The lock on `key` a build ahead took, handed over (leaving its block releases
        it)."""
        with self._lock:
            return self._held.pop(key.key, None)

    def take(
        self, run: Run, item: PlanItem, key: CacheKey, log_file: Path
    ) -> Early | PrewheelError | None:
        """The build ahead under `key`, waited for (and its repair): its wheel, or what
        failed it, its log copied to `log_file` (the plan's build goes on writing there);
        None when there is none, or its wheel is not the one `item` needs (`fits`: built
        again)."""
        with self._lock:
            started = self._started.pop(key.key, None)
        if started is None:
            return None
        future, repair = started.built, started.after
        run.slots.withdraw(key.key)  # no build of its own to wait for: others may go
        outcome: BuildResult | PrewheelError
        try:
            outcome = future.result()
        except PrewheelError as exc:
            outcome = exc
        tagged, checked = repair.result()
        early = _log_file(run, key)
        if early.is_file():
            atomic_copy(early, log_file)  # a full disk: WheelhouseWriteError, no part left
            early.unlink()
        for error in (outcome, tagged, checked.found if checked else None):
            if isinstance(error, PrewheelError):
                moved_log(error, str(early), str(log_file))
        if isinstance(outcome, PrewheelError):
            return outcome
        if not fits(outcome, item):
            return None
        return Early(built=outcome, tagged=tagged, checked=checked)

    def close(self) -> None:
        """Wait for the builds ahead still running (before the run's scratch directory goes)
        and give up every lock not taken over: a lock file a build ahead made is removed,
        so a run that stops on bad input leaves no lock behind."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            held, self._held = list(self._held.values()), {}
            for started in self._started.values():
                started.built.cancel()  # a build the shutdown cancelled never sets its own
                started.after.cancel()
        for lock in held:
            lock.give_up()

    def _build(
        self,
        run: Run,
        item: PlanItem,
        key: CacheKey,
        started: _Started,
    ) -> None:
        """Build `item` in a slot, hand its wheel to `started.built` (the resolver reads
        it), then repair and check it in the same slot (`started.after`)."""
        assert item.file is not None
        in_slot = False
        try:
            with working_on(item.name):
                check_stop()
                warm(item.target)
                kept = scratch.kept_files() or run.work / "ahead"
                sdist = fetch(item.file, item.hashes, kept)[0]
                heavy = run.config.package(item.name).heavy
                count = run.slots.acquire(heavy, weight=native_bytes(sdist), key=key.key)
                with self._lock:
                    self._queued -= 1
                    self._compiling += 1
                    in_slot = True
                try:
                    began = utcnow()
                    work = run.work / "ahead" / key.short
                    result = compile_sdist(run, item, key, work, _log_file(run, key), sdist)
                    result = replace(result, started=began, finished=utcnow())
                    started.built.set_result(result)
                    after = _after(run, item, key, work, result)
                finally:
                    run.slots.release(count)
                # What the plan will not read: the venv once checked, removed before the
                # plan may take the rest (else its verification would make it anew in the
                # same place); the build's environment and tree once repaired, after (the
                # plan's verification need not wait for them).
                tagged, checked = after
                if checked is not None:
                    discard(verify_dir(run, key, item.target))
                started.after.set_result(after)
                if isinstance(tagged, Tagged):
                    discard(work / "env", work / "src")
        except BaseException as exc:  # the plan's build raises it, or (repair) repairs again
            if not started.built.done():
                started.built.set_exception(exc)
            if not started.after.done():
                started.after.set_result((None, None))
            if not isinstance(exc, Exception):
                raise
        finally:
            if not in_slot:
                run.slots.withdraw(key.key)  # it will not ask: none waits for it
            with self._lock:
                if in_slot:
                    self._compiling -= 1
                else:
                    self._queued -= 1


@dataclass(frozen=True, kw_only=True)
class Planned:
    """The builds ahead as the plan sees them (`plan.BuildAhead`), in one run."""

    ahead: Ahead
    run: Run

    def start(self, items: list[PlanItem]) -> list[Future[BuildResult]]:
        return self.ahead.start(self.run, items)

    def idle(self) -> bool:
        return self.ahead.idle(self.run)


def fits(built: BuildResult, item: PlanItem) -> bool:
    """Whether a wheel built ahead is the one the plan's build would make: every build
    requirement it installed that the target's closure pins is at that pin."""
    deps = {canonicalize_name(n): v for n, v in built.build_deps.items()}
    return all(deps.get(canonicalize_name(n), v) == v for n, v in item.runtime_pins)


def _after(run: Run, item: PlanItem, key: CacheKey, work: Path, built: BuildResult) -> After:
    """The repair of a wheel built ahead, or what failed it (the plan's build reports it
    as its own), and its checks where they need nothing the plan decides; None for what
    is left to the plan."""
    try:
        tagged = repair_ahead(run, item, key, work, _log_file(run, key), built)
    except WheelhouseWriteError:
        raise
    except PrewheelError as exc:
        return exc, None
    if tagged is None:
        return None, None
    return tagged, check_ahead(run, item, key, tagged, _log_file(run, key))


def _log_file(run: Run, key: CacheKey) -> Path:
    return run.work / "ahead" / f"{key.short}.log"
