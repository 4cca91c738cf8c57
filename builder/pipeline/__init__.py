"""Executing a plan: every item through download, or build, repair, verify and publish.

`grouping` decides which items share work, `steps` runs one group through the stages,
`scheduler` runs the steps side by side within `--jobs`, `report` is what comes out.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from ..cmd import stop_all
from ..config import Config
from ..stages.plan import Plan
from ..stages.publish import Publisher
from ..wheelhouse import Wheelhouse
from .report import BuildReport, ItemResult, Reporter, SilentReporter
from .scheduler import Scheduler
from .steps import Run, Slots

__all__ = ["BuildReport", "ItemResult", "Reporter", "execute"]


def execute(
    plan: Plan,
    config: Config,
    wh: Wheelhouse,
    *,
    jobs: int = 0,
    reporter: Reporter | None = None,
    retry_failed: bool = True,
    cache_from: tuple[str, ...] = (),
    requirements: str | None = None,
) -> BuildReport:
    """Run `plan` and publish what it makes: the complete report of the run.

    `jobs` (0: the CPU count) bounds builds and verifications at once. At the end the
    wheelhouse's status page and `targets.json` describe what it now holds.
    """
    started = time.monotonic()
    publisher = Publisher(wh)
    publisher.start(i.target.accel for i in plan.items)
    scratch = Path(tempfile.mkdtemp(prefix="prewheel-"))
    n = max(1, jobs or os.cpu_count() or 1)
    run = Run(
        config=config,
        wh=wh,
        publisher=publisher,
        reporter=reporter or SilentReporter(),
        work=scratch,
        slots=Slots(n),
        cache_from=cache_from,
        retry_failed=retry_failed,
        closures=plan.closures,
    )
    try:
        results = Scheduler(run, plan.items, n).execute()
    except KeyboardInterrupt:
        stop_all()
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    publisher.finish(plan.targets)
    return BuildReport(
        results=results,
        duration=time.monotonic() - started,
        skipped_targets=plan.skipped_targets,
        unpinned=plan.unpinned,
        requirements=requirements,
    )
