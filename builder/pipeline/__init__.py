"""Executing a plan: every item through download, or build, repair, verify and publish.

`grouping` decides which items share work, `steps` runs one group through the stages,
`scheduler` runs the steps side by side within `--jobs`, `report` is what comes out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from .. import scratch
from ..cmd import drop_spares
from ..config import Config
from ..stages.plan import BuildAhead, Plan, PlanItem, Wave, sandbox_policy
from ..stages.publish import Publisher
from ..stages.sharedenv import SharedEnvs
from ..targets import Target
from ..wheelhouse import Wheelhouse
from .ahead import Ahead
from .report import BuildReport, ItemResult, Reporter, SilentReporter
from .scheduler import Scheduler
from .steps import Run, Slots

__all__ = ["BuildReport", "ItemResult", "Reporter", "execute_waves"]


def execute_waves(
    waves: Callable[[BuildAhead], Iterable[Wave]],
    whole: Callable[[list[PlanItem]], Plan],
    targets: Sequence[Target],
    config: Config,
    wh: Wheelhouse,
    *,
    jobs: int = 0,
    reporter: Reporter | None = None,
    retry_failed: bool = False,
    cache_from: tuple[str, ...] = (),
    requirements: str | None = None,
    check_reproducible: bool = False,
    planned: Callable[[Plan], None] | None = None,
    only: frozenset[str] | None = None,
) -> BuildReport:
    """Run the plan as its waves come (`plan.plan_waves`: a wave's builds start while later
    targets still resolve) and publish what it makes: the complete report of the run.
    `waves` makes the waves with what starts a build ahead of the plan (of the packages
    `only` names, when it names any: `--package`).

    `whole` makes the plan of all the waves' items (`plan.assemble`); `planned` hears it
    when the last wave is in. `jobs` (0: the CPU count) bounds builds and verifications at
    once. `check_reproducible`: every wheel built is built a second time and compared. At
    the end the wheelhouse's status page and `targets.json` describe what it now holds.
    """
    started = time.monotonic()
    publisher = Publisher(wh)
    n = max(1, jobs or os.cpu_count() or 1)
    closures: dict[str, Mapping[str, str]] = {}  # each target's, filled as its wave comes
    done: list[Plan] = []

    def planned_all(items: tuple[PlanItem, ...]) -> None:
        plan = whole(list(items))
        closures.update(plan.closures)
        done.append(plan)
        if planned is not None:
            planned(plan)

    def ready_on_first(waves: Iterable[Wave]) -> Iterator[tuple[PlanItem, ...]]:
        """The waves' items, the store made ready when the first comes: input the plan
        refuses (unpinned, missing upstream) leaves the wheelhouse as it was."""
        ready = False
        for wave in waves:
            if not ready:
                publisher.start(t.accel for t in targets if t.missing is None)
                ready = True
            closures.update(wave.closures)  # a build's `checks_key` reads them
            yield wave.items
        if not ready:
            publisher.start(t.accel for t in targets if t.missing is None)

    with scratch.session() as work:
        ahead = Ahead(only)
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
            closures=closures,
            ahead=ahead,
            envs=SharedEnvs(work / "envs"),
        )
        try:
            planning = ready_on_first(waves(ahead.for_plan(run)))
            results = Scheduler(run, planning, n, planned=planned_all).execute()
        finally:
            ahead.close()
            drop_spares()  # a repair not run (a failed build) leaves its process waiting
    (plan,) = done
    publisher.finish(plan.targets)
    return BuildReport(
        results=results,
        duration=time.monotonic() - started,
        skipped_targets=plan.skipped_targets,
        unpinned=plan.unpinned,
        requirements=requirements,
    )
