"""Executing a plan: fetch, build, repair, verify, publish, index; in parallel, isolated.

One failing package never stops the others; nothing reaches the wheelhouse before it is
verified; every build leaves a record and a log.
"""

from __future__ import annotations

import contextvars
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.utils import canonicalize_name, parse_wheel_filename

from . import accel
from .cachekey import CacheKey, compute
from .candidate import Candidate, build_here, from_remote, new_record, wheel_warnings
from .cmd import stop_all
from .config import Config
from .errors import PrewheelError, StepError
from .fetch import fetch
from .log import get_logger, working_on
from .plan import Plan, PlanItem, fits
from .relist import relist, superseded
from .report import BuildReport, ItemResult, Reporter
from .verify import verify_wheel
from .wheelfile import is_abi3, is_pure, requires_names
from .wheelhouse import CatalogEntry, Wheelhouse, utcnow

__all__ = ["BuildReport", "ItemResult", "Reporter", "execute"]

if TYPE_CHECKING:  # the build library and pyelftools load only when something is built
    from .build import BuildResult

log = get_logger("pipeline")


class _Slots:
    """At most `n` builds at once; a heavy build takes every slot and runs alone."""

    def __init__(self, n: int) -> None:
        self.n, self.used = n, 0
        self.cond = threading.Condition()

    def acquire(self, heavy: bool) -> int:
        need = self.n if heavy else 1
        with self.cond:
            self.cond.wait_for(lambda: self.used + need <= self.n)
            self.used += need
        return need

    def release(self, count: int) -> None:
        with self.cond:
            self.used -= count
            self.cond.notify_all()


class Executor:
    def __init__(
        self,
        plan: Plan,
        config: Config,
        wh: Wheelhouse,
        *,
        jobs: int,
        reporter: Reporter,
        retry_failed: bool = True,
        cache_from: tuple[str, ...] = (),
    ) -> None:
        self.plan, self.config, self.wh = plan, config, wh
        self.cache_from = cache_from
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.reporter = reporter
        self.retry_failed = retry_failed
        self.slots = _Slots(self.jobs)
        self.report = BuildReport()
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="prewheel-"))
        # Keys of items the index gave no hash for, by id(item): each is fetched and hashed
        # once, on the main thread, when the builds are grouped.
        self._keys: dict[int, CacheKey] = {}

    # -- helpers ------------------------------------------------------------

    def _finish(self, result: ItemResult) -> None:
        with self._lock:
            self.report.results.append(result)
        self.reporter.finished(result)

    def _pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(max_workers=self.jobs * 2, thread_name_prefix="prewheel")

    def _submit(self, pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        ctx = contextvars.copy_context()
        return pool.submit(ctx.run, fn, *args)

    def _publish(self, wheel: Path, **kw: Any) -> CatalogEntry:
        from . import index

        entry = self.wh.publish(wheel, **kw)
        index.update_project(self.wh, parse_wheel_filename(entry.filename)[0])
        return entry

    # -- the run ------------------------------------------------------------

    def run(self) -> BuildReport:
        started = time.monotonic()
        self.wh.ensure()
        self.wh.register_accelerators(sorted({i.target.accel for i in self.plan.items}))
        try:
            self._run_all()
        except KeyboardInterrupt:
            stop_all()
            raise
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self.report.duration = time.monotonic() - started
        return self.report

    def _run_all(self) -> None:
        builds: dict[str, list[PlanItem]] = {}
        downloads: dict[str, list[PlanItem]] = {}
        relists: dict[str, tuple[CatalogEntry, list[PlanItem]]] = {}
        for item in self.plan.items:
            if item.action == "cached" and (entry := superseded(self.wh, item)) is not None:
                relists.setdefault(entry.filename, (entry, []))[1].append(item)
            elif item.action in ("cached", "skip"):
                self._finish(
                    ItemResult(
                        item=item,
                        status="cached" if item.action == "cached" else "skipped",
                        wheel=item.cached_file,
                        error=item.reason if item.action == "skip" else None,
                    )
                )
            elif item.action == "download":
                assert item.file is not None
                downloads.setdefault(item.file.url, []).append(item)
            else:
                builds.setdefault(self._key(item).key, []).append(item)
        for entry, items in relists.values():
            self._relist(entry, items)
        with self._pool() as pool:
            futs = [self._submit(pool, self._download, items) for items in downloads.values()]
            for f in futs:
                f.result()
        candidates: list[tuple[list[PlanItem], Candidate]] = []
        by_source: dict[str, list[list[PlanItem]]] = {}
        for items in builds.values():
            by_source.setdefault(self._key(items[0]).source_key, []).append(items)
        # A wheel that needs nothing built in this run is verified as soon as it is built,
        # beside the other builds; the rest wait until every build is done (their
        # dependencies must be there to install).
        building = {canonicalize_name(i[0].name) for i in builds.values()}
        later: list[tuple[list[PlanItem], Candidate]] = []
        with self._pool() as pool, self._pool() as verify_pool:
            futs2 = [self._submit(pool, self._build_group, groups) for groups in by_source.values()]
            futs3 = []
            for f2 in as_completed(futs2):
                for items, cand in f2.result():
                    candidates.append((items, cand))
                    deps = requires_names(cand.wheel)
                    if deps is None or deps & building:
                        later.append((items, cand))
                    else:
                        futs3.append(
                            self._submit(
                                verify_pool, self._verify_publish, items, cand, list(candidates)
                            )
                        )
            futs3 += [
                self._submit(verify_pool, self._verify_publish, items, cand, candidates)
                for items, cand in later
            ]
            for f3 in futs3:
                f3.result()

    def _key(self, item: PlanItem) -> CacheKey:
        if item.key is not None:
            return item.key
        known = self._keys.get(id(item))
        if known is not None:
            return known
        assert item.file is not None
        # The index gave no hash: the key waits for the bytes.
        _, digest = fetch(item, self._tmp / "sources")
        key = self._keys[id(item)] = accel.key_for(
            name=item.name,
            version=item.version,
            sdist_sha256=digest,
            target=item.target,
            config=self.config,
            wh=self.wh,
        )
        return key

    # -- cached builds the index no longer lists -------------------------------

    def _relist(self, entry: CatalogEntry, items: list[PlanItem]) -> None:
        item = items[0]
        assert item.key is not None
        t0 = time.monotonic()
        with working_on(item.name):
            self.reporter.step(item, "relist")
            try:
                work = self._tmp / f"relist-{item.key.short}"
                name = relist(self.wh, item, entry, work, self._publish)
            except PrewheelError as exc:
                log.warning("cannot list %s again: %s", entry.filename, exc.message)
                name = entry.filename
        for it in items:
            self._finish(
                ItemResult(item=it, status="cached", wheel=name, duration=time.monotonic() - t0)
            )

    # -- download -----------------------------------------------------------

    def _download(self, items: list[PlanItem]) -> None:
        first = items[0]
        t0 = time.monotonic()
        with working_on(first.name):
            self.reporter.step(first, "download")
            try:
                path, digest = fetch(first, self._tmp / "downloads")
                accels = None
                if self.config.package(first.name).accel_specific:
                    accels = tuple(sorted({i.target.accel for i in items}))
                name = self._publish(
                    path, origin="downloaded", accels=accels, sha256=digest
                ).filename
                result: dict[str, Any] = {"status": "downloaded", "wheel": name}
            except PrewheelError as exc:
                result = {
                    "status": "failed",
                    "error": exc.message,
                    "step": getattr(exc, "step", "fetch"),
                    "exit_code": exc.exit_code,
                }
        for item in items:
            self._finish(ItemResult(item=item, duration=time.monotonic() - t0, **result))

    # -- build --------------------------------------------------------------

    def _build_group(self, groups: list[list[PlanItem]]) -> list[tuple[list[PlanItem], Candidate]]:
        """Builds from one source: the first builds; if its wheel is pure, it serves all; if
        it is abi3, it serves every other Python whose tags accept it."""
        out = self._build_split(groups[0])
        rest = groups[1:]
        if len(out) == 1 and is_pure(out[0][1].wheel):
            for items in rest:
                # Same pure wheel, listed again for these targets after verification.
                out.append((items, out[0][1]))
            return out
        abi3 = out[0][1] if len(out) == 1 and is_abi3(out[0][1].wheel) else None
        for items in rest:
            if abi3 is not None and self._serves(abi3, items):
                out.append((items, abi3))
            else:
                out += self._build_split(items)
        return out

    def _serves(self, cand: Candidate, items: list[PlanItem]) -> bool:
        """Whether `cand`'s abi3 wheel fits `items`: same accelerator, policy and repair
        options (the rest of the key is the shared source), and tags the target accepts."""
        key = self._key(items[0])
        same = all(key.inputs[k] == cand.key.inputs[k] for k in ("accel", "policy", "repair"))
        return same and fits(cand.wheel.name, items[0].target)

    def _build_split(self, items: list[PlanItem]) -> list[tuple[list[PlanItem], Candidate]]:
        """Build `items`; if the accelerator-neutral build links CUDA, build per accelerator.

        The cpu items reuse the neutral build (it had no CUDA environment either); each CUDA
        accelerator builds again with its own toolkit, arch list and repair excludes.
        """
        try:
            cand = self._build(items)
            return [(items, cand)] if cand is not None else []
        except accel.LinksCuda as linked:
            by_accel: dict[str, list[PlanItem]] = {}
            for it in items:
                by_accel.setdefault(it.target.accel, []).append(it)
            out = []
            for name, its in sorted(by_accel.items()):
                key = compute(
                    name=its[0].name,
                    version=its[0].version,
                    sdist_sha256=self._key(its[0]).inputs["sdist_sha256"],
                    target=its[0].target,
                    config=self.config,
                    per_accel=True,
                )
                rekeyed = [replace(it, key=key) for it in its]
                prebuilt = linked.built if name == "cpu" else None
                cand = self._build(rekeyed, prebuilt=prebuilt)
                if cand is not None:
                    out.append((rekeyed, cand))
            return out

    def _build(
        self, items: list[PlanItem], prebuilt: BuildResult | None = None
    ) -> Candidate | None:
        item = items[0]
        key = self._key(item)
        prev = self.wh.read_record(key.key)
        if prev and prev.get("result") == "failed" and not self.retry_failed:
            # Still a failure (exit 1): the wheel is missing, it was only not tried again.
            for it in items:
                self._finish(
                    ItemResult(
                        item=it,
                        status="failed",
                        step=prev.get("step"),
                        log=str(self.wh.root / prev["log"]) if prev.get("log") else None,
                        tail=prev.get("tail") or "",
                        error=f"failed before, not retried (--no-retry-failed): {prev['error']}",
                    )
                )
            return None
        log_file = self.wh.logs_dir / (
            f"{item.name}-{item.version}-{item.target.name}-{key.short}.log"
        )
        log_file.unlink(missing_ok=True)
        work = self._tmp / f"build-{key.short}"
        record = new_record(items, key, self.wh, log_file)
        remote = from_remote(self.cache_from, item, key, work, record, self.reporter)
        if remote is not None:
            return remote
        count = self.slots.acquire(self.config.package(item.name).heavy)
        # The clock starts with the build, not with the wait for a slot.
        started, t0 = time.time(), time.monotonic()
        record["started"] = utcnow()
        try:
            tagged, built = build_here(
                item,
                key,
                config=self.config,
                wh=self.wh,
                work=work,
                log_file=log_file,
                record=record,
                reporter=self.reporter,
                prebuilt=prebuilt,
                started=started,
            )
        except StepError as exc:
            self._fail(items, record, exc, t0)
            return None
        except PrewheelError as exc:
            self._fail(items, record, StepError(exc.message, step="build", log=str(log_file)), t0)
            return None
        finally:
            self.slots.release(count)
        record["build_deps"] = built.build_deps
        return Candidate(
            item=item,
            key=key,
            wheel=tagged,
            record=record,
            started=t0,
            warnings=wheel_warnings(built, tagged),
        )

    def _fail(
        self, items: list[PlanItem], record: dict[str, Any], exc: StepError, t0: float
    ) -> None:
        duration = time.monotonic() - t0
        log_rel = record["log"]
        self.wh.write_record(
            record["cache_key"],
            {
                **record,
                "result": "failed",
                "step": exc.step,
                "error": exc.message,
                "tail": exc.tail,
                "finished": utcnow(),
                "duration": round(duration, 3),
            },
        )
        for it in items:
            self._finish(
                ItemResult(
                    item=it,
                    status="failed",
                    error=exc.message,
                    step=exc.step,
                    log=str(self.wh.root / log_rel),
                    tail=exc.tail,
                    duration=duration,
                    exit_code=exc.exit_code,
                )
            )

    # -- verify and publish ---------------------------------------------------

    def _verify_publish(
        self,
        items: list[PlanItem],
        cand: Candidate,
        all_cands: list[tuple[list[PlanItem], Candidate]],
    ) -> None:
        item = items[0]
        pkg = self.config.package(item.name)
        log_file = self.wh.root / cand.record["log"]
        shared = cand.item is not item  # a pure wheel reused for another Python
        with working_on(item.name):
            self.reporter.step(item, "verify")
            links = set(self.wh.files_dir.iterdir()) if self.wh.files_dir.is_dir() else set()
            links |= {c.wheel.parent for _, c in all_cands}
            work = self._tmp / f"verify-{cand.key.short}-{item.target.name}"
            try:
                # A verification (venv, install, import) is work like a build: --jobs bounds both.
                count = self.slots.acquire(False)
                try:
                    modules = verify_wheel(
                        cand.wheel,
                        name=item.name,
                        target=item.target,
                        find_links=sorted(links),
                        workdir=work,
                        log_file=log_file,
                        import_names=pkg.import_names,
                    )
                finally:
                    self.slots.release(count)
                accels = None
                if cand.key.inputs["accel"] != "any":
                    accels = tuple(sorted({i.target.accel for i in items}))
                published = self._publish(
                    cand.wheel, origin="built", accels=accels, cache_key=cand.key.key
                )
            except PrewheelError as exc:
                err = exc if isinstance(exc, StepError) else StepError(exc.message, step="publish")
                if not shared:
                    self._fail(items, cand.record, err, cand.started)
                else:
                    for it in items:
                        self._finish(
                            ItemResult(
                                item=it,
                                status="failed",
                                error=err.message,
                                step=err.step,
                                tail=err.tail,
                                exit_code=err.exit_code,
                            )
                        )
                return
        duration = time.monotonic() - cand.started
        if not shared:
            record = {
                **cand.record,
                "result": "ok",
                "wheel": published.filename,
                "sha256": published.sha256,
                "imported": modules,
                "warnings": list(cand.warnings),
                "finished": utcnow(),
                "duration": round(duration, 3),
            }
            self.wh.write_record(cand.key.key, record)
            if is_pure(cand.wheel) or (is_abi3(cand.wheel) and cand.key.inputs["accel"] == "any"):
                # Found again by every target the wheel's tags fit (plan.cached_build).
                self.wh.write_record(cand.key.source_key, record)
        for it in items:
            self._finish(
                ItemResult(
                    item=it,
                    status="built" if not (shared or cand.remote) else "cached",
                    wheel=published.filename,
                    duration=duration,
                    warnings=cand.warnings,
                    log=str(log_file),
                )
            )


def execute(
    plan: Plan,
    config: Config,
    wh: Wheelhouse,
    *,
    jobs: int,
    reporter: Reporter,
    retry_failed: bool = True,
    cache_from: tuple[str, ...] = (),
) -> BuildReport:
    return Executor(
        plan,
        config,
        wh,
        jobs=jobs,
        reporter=reporter,
        retry_failed=retry_failed,
        cache_from=cache_from,
    ).run()
