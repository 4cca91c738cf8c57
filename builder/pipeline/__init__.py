"""Executing a plan: every item through download, or build, repair, verify and publish.

`grouping` decides which items share work, `steps` runs one group through the stages,
`scheduler` runs the steps side by side within `--jobs`, `report` is what comes out.
"""

from __future__ import annotations

import os
import time

from .. import scratch
from ..config import Config
from ..stages.plan import Plan, sandbox_policy
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
    retry_failed: bool = False,
    cache_from: tuple[str, ...] = (),
    requirements: str | None = None,
    check_reproducible: bool = False,
) -> BuildReport:
    """Run `plan` and publish what it makes: the complete report of the run.

    `jobs` (0: the CPU count) bounds builds and verifications at once.
    `check_reproducible`: every wheel built is built a second time and compared. At the end the
    wheelhouse's status page and `targets.json` describe what it now holds.
    """
    started = time.monotonic()
    if any(i.action in ("build", "download") for i in plan.items):
        wh.check_writable()  # a clear error before any work, not a failure per package
        scratch.clean_stale()  # what killed runs left
    publisher = Publisher(wh)
    n = max(1, jobs or os.cpu_count() or 1)
    with scratch.session() as work:
        publisher.start(i.target.accel for i in plan.items)
        run = Run(
            config=config,
            wh=wh,
            publisher=publisher,
            reporter=reporter or SilentReporter(),
            work=work,
            slots=Slots(n),
            policy=sandbox_policy(config, wh),
            run_id=f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}",
            cache_from=cache_from,
            retry_failed=retry_failed,
            check_reproducible=check_reproducible,
            closures=plan.closures,
        )
        results = Scheduler(run, plan.items, n).execute()
    publisher.finish(plan.targets)
    return BuildReport(
        results=results,
        duration=time.monotonic() - started,
        skipped_targets=plan.skipped_targets,
        unpinned=plan.unpinned,
        requirements=requirements,
    )
