"""Running the steps of a plan: what runs at once, what waits, and what becomes of failures.

Downloads run in a pool beside the builds; builds from different sources run side by side
within `--jobs` (a heavy one alone), each build's fetch, build, repair and tag one after the
other while other packages are at other steps; a wheel whose requirements are all there is
verified and published as soon as it is built and the downloads are in, the rest once every
build is done. One failing package never stops the
others, and nothing reaches the wheelhouse before it is verified.

The items come in waves (one per interpreter, as the plan resolves them): a wave's builds
start at once, while later targets still resolve; a build whose source an earlier wave
builds waits for that build (a pure or abi3 wheel serves it). The cached and skipped items,
the downloads and the verifications wait for the whole plan: a verification installs the
target's whole closure, and a wheel is verified early only when nothing it needs is built
in the run, which only the whole plan says.
"""

from __future__ import annotations

import contextlib
import contextvars
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Any

from .. import scratch
from ..archive import native_bytes
from ..cmd import check_stop, request_stop
from ..errors import Interrupted, PrewheelError
from ..log import working_on
from ..records import AccelDecision
from ..stages.accel import LinksCuda
from ..stages.plan import PlanItem
from ..threads import in_threads
from ..wheelfile import is_abi3, is_pure, requires_names
from . import grouping, steps
from .grouping import Group
from .report import ItemResult

FETCHES = 8  # sdists fetched at once before a wave's builds
Built = tuple[Group, steps.Candidate, bool]  # items, their candidate, shared with others
Sources = tuple[tuple[Group, ...], ...]  # a wave's builds: the groups of each source
Planned = Callable[[tuple[PlanItem, ...]], None]


def _nothing(_: tuple[PlanItem, ...]) -> None:
    pass


@contextlib.contextmanager
def _stop_on_error() -> Iterator[None]:
    """Whatever ends the run (a signal, a wheelhouse that cannot be written) stops every
    other step at once, before the pools wait for them."""
    try:
        yield
    except BaseException as exc:
        request_stop(exc.signum if isinstance(exc, Interrupted) else signal.SIGTERM)
        raise


class Scheduler:
    def __init__(
        self,
        run: steps.Run,
        waves: Iterable[tuple[PlanItem, ...]],
        jobs: int,
        *,
        planned: Planned = _nothing,
    ) -> None:
        """`waves`: the plan's items as they are planned; `planned` hears the whole plan's
        items once the last wave is in, before anything but builds has started."""
        self.run = run
        self.waves = waves
        self.jobs = jobs
        self.planned = planned
        self.results: list[ItemResult] = []
        self._lock = threading.Lock()
        self._downloads: list[Future[None]] = []
        self._writable = False

    def _finish(self, results: list[ItemResult]) -> None:
        with self._lock:
            self.results += results
        for r in results:
            self.run.reporter.finished(r)

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.jobs * 2, thread_name_prefix="prewheel")

    @staticmethod
    def _submit(
        pool: ThreadPoolExecutor, package: str, fn: Callable[..., Any], *args: Any
    ) -> Future[Any]:
        """Run `fn` in the pool, its log lines tagged with `package`, in a copy of this
        context (the stamp's recorder goes along)."""

        def tagged() -> Any:
            check_stop()  # queued work does not start once the run is told to stop
            with working_on(package):
                return fn(*args)

        return pool.submit(contextvars.copy_context().run, tagged)

    def execute(self) -> list[ItemResult]:
        publisher = self.run.publisher
        with self._pool() as downloads, _stop_on_error():
            with self._pool() as pool, self._pool() as verify_pool:
                building, items = self._start_builds(pool)
                self.planned(items)
                work = grouping.group(
                    items, lambda i: publisher.superseded(i.key, i.cached_file, i.target.accel)
                )
                self._before_work(work.downloads)
                self._finish(list(work.done))
                for entry, group in work.relists:
                    with working_on(group[0].name):
                        self._finish(steps.relist(self.run, entry, group))
                # Downloads run beside the builds; a verification waits for them (it installs
                # the whole closure at its pins), a build does not.
                self._downloads = [
                    self._submit(downloads, g[0].name, self._download, g) for g in work.downloads
                ]
                self._verify_built(building, work, verify_pool)
            self._await_downloads()
        return self.results

    def _before_work(self, work: Iterable[object]) -> None:
        """Before the first build or download: a clear error when the wheelhouse cannot be
        written (not a failure per package), and what killed runs left removed."""
        if not self._writable and any(True for _ in work):
            self.run.wh.check_writable()
            scratch.clean_stale()
            self._writable = True

    def _start_builds(
        self, pool: ThreadPoolExecutor
    ) -> tuple[list[Future[list[Built]]], tuple[PlanItem, ...]]:
        """Every wave's builds started as the wave comes; all the items, once all came."""
        building: list[Future[list[Built]]] = []
        firsts: dict[str, Future[steps.Candidate | None]] = {}
        items: list[PlanItem] = []
        for wave in self.waves:
            items += wave
            sources = grouping.builds(wave)
            self._before_work(sources)
            for groups, weight in self._longest_first(sources):
                key = groups[0][0].key
                assert key is not None
                first = firsts.get(key.source_key)
                mine: Future[steps.Candidate | None] | None = None
                if first is None:
                    mine = firsts[key.source_key] = Future()
                    if weight is not None:
                        self.run.slots.expect(key.key, weight)
                building.append(
                    self._submit(pool, groups[0][0].name, self._build_source, groups, first, mine)
                )
        return building, tuple(items)

    def _longest_first(self, sources: Sources) -> list[tuple[tuple[Group, ...], int | None]]:
        """A wave's builds, the one with the most native source to compile first, each with
        that weight, so the longest builds start first and the short ones fill the slots
        beside them. The sdists are fetched side by side first (each build then finds its
        own in the wheelhouse), so the order does not follow which downloads fastest. Not
        with `--cache-from` (no weight): a build found there needs no sdist."""
        if len(sources) < 2 or self.run.cache_from:
            return [(groups, None) for groups in sources]

        def weight(groups: tuple[Group, ...]) -> int:
            item = groups[0][0]
            with working_on(item.name):
                try:
                    return native_bytes(steps.fetch_source(self.run, item))
                except PrewheelError:
                    return 0  # its build fails at the fetch, with its log

        weights = in_threads(weight, sources, FETCHES)
        order = sorted(range(len(sources)), key=lambda i: -weights[i])
        return [(sources[i], weights[i]) for i in order]

    def _download(self, items: Group) -> None:
        self._finish(steps.download(self.run, items))

    def _await_downloads(self) -> None:
        """Wait for every download (raising what ended one: a wheelhouse that cannot be
        written, a signal)."""
        for f in self._downloads:
            f.result()

    def _verify_built(
        self,
        building: list[Future[list[Built]]],
        work: grouping.Work,
        verify_pool: ThreadPoolExecutor,
    ) -> None:
        """Verify each build as it comes (or, when it needs another build of the run, once
        every build is done), and report each result as soon as it is published: the
        progress lines come one by one, not in a batch after the last build."""
        built: list[Built] = []
        later: list[Built] = []
        builds: set[Future[Any]] = set(building)  # each: list[Built]
        verifying: set[Future[Any]] = set()  # each: list[ItemResult]

        def verify(entry: Built, others: list[Built]) -> None:
            verifying.add(self._submit(verify_pool, entry[0][0].name, self._verify, entry, others))

        while builds or verifying:
            done, _ = wait(builds | verifying, return_when=FIRST_COMPLETED)
            for f in done:
                if f in verifying:
                    verifying.discard(f)
                    self._finish(f.result())
                    continue
                builds.discard(f)
                for entry in f.result():
                    built.append(entry)
                    if grouping.verify_now(requires_names(entry[1].wheel), work.building):
                        verify(entry, list(built))
                    else:
                        later.append(entry)
                if not builds:
                    for entry in later:
                        verify(entry, built)
                    later = []

    def _verify(self, entry: Built, built: list[Built]) -> list[ItemResult]:
        self._await_downloads()
        items, cand, shared = entry
        files = self.run.wh.files_dir
        links = set(files.iterdir()) if files.is_dir() else set()
        links |= {c.wheel.parent for _, c, _ in built}
        return steps.verify_and_publish(self.run, items, cand, sorted(links), shared=shared)

    def _build_source(
        self,
        groups: tuple[Group, ...],
        first: Future[steps.Candidate | None] | None,
        mine: Future[steps.Candidate | None] | None,
    ) -> list[Built]:
        """Builds from one source: the first builds (`mine` says what it made); if its wheel
        is pure, it serves all; if it is abi3, it serves every other Python whose tags accept
        it. Groups of a later wave wait for the first build of an earlier one (`first`)."""
        out: list[Built] = []
        rest = groups
        if first is None:
            assert mine is not None
            own = groups[0][0].key
            assert own is not None
            try:
                out = self._build_group(groups[0])
            except BaseException as exc:
                mine.set_exception(exc)
                raise
            finally:  # a build that ended before asking for a slot is not waited for
                self.run.slots.withdraw(own.key)
            made = out[0][1] if len(out) == 1 else None
            mine.set_result(made)
            rest = groups[1:]
        else:
            made = first.result()
        for items in rest:
            key = items[0].key
            assert key is not None
            if made is not None and is_pure(made.wheel):
                out.append((items, made, True))  # listed again after verification
            elif (
                made is not None
                and is_abi3(made.wheel)
                and grouping.abi3_serves(made.key, made.wheel.name, key, items[0].target)
            ):
                out.append((items, made, True))
            else:
                out += self._build_group(items)
        return out

    def _build_group(self, items: Group) -> list[Built]:
        """Build `items`; if the accelerator-neutral build links CUDA, build per accelerator:
        the cpu items reuse the neutral build (it had no CUDA environment either), each CUDA
        accelerator builds again with its own toolkit, arch list and repair excludes."""
        key = items[0].key
        assert key is not None
        try:
            result = steps.build(self.run, items, key)
        except LinksCuda as linked:
            out: list[Built] = []
            for its in grouping.by_accelerator(items):
                per_accel = its[0].accel_key
                assert per_accel is not None
                found = AccelDecision(
                    specific=True,
                    by="links-cuda",
                    evidence=tuple(f"linked {lib}" for lib in linked.libraries),
                )
                rekeyed = tuple(
                    replace(it, key=per_accel, accel_key=None, accel=found) for it in its
                )
                prebuilt = linked.built if its[0].target.accel == "cpu" else None
                result = steps.build(self.run, rekeyed, per_accel, prebuilt=prebuilt)
                if isinstance(result, steps.Candidate):
                    out.append((rekeyed, result, False))
                else:
                    self._finish(result)
            return out
        if isinstance(result, steps.Candidate):
            return [(items, result, False)]
        self._finish(result)
        return []
