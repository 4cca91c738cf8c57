"""`prewheel build`: execute the plan and publish verified wheels."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import click
from packaging.utils import canonicalize_name
from rich.console import Console

from .. import stamp
from ..pipeline import execute_waves
from ..stages.plan import BuildAhead, Plan, PlanItem, Wave, assemble, plan_waves
from ..wheelhouse import Wheelhouse
from ._common import guarded_run, load_inputs
from ._options import build_options
from ._progress import Progress, print_summary

log = logging.getLogger(__name__)


@click.command("build")
@build_options
def command(
    requirements: Path,
    config_path: Path | None,
    targets: tuple[str, ...],
    wheelhouse: Path,
    jobs: int | None,
    allow_unpinned: bool,
    retry_failed: bool,
    cache_from: tuple[str, ...],
    check_reproducible: bool,
    refresh: bool,
    packages: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Fetch, build, repair, verify and publish every wheel the targets need.

    Verify runs the ABI checks, installs with no compiler and the target's closure at the
    plan's pins, imports, and runs the package's smoke test; a wheel that fails is not
    published. A closure that breaks a package's `requires` is bad input (exit 2).

    A run that finds nothing to do stamps what it consulted; the next run with the same
    arguments is answered from that stamp while nothing in it has changed
    (PREWHEEL_DEBUG=1 says why not; PREWHEEL_FAST=0 always runs the full build).

    With --check-reproducible every wheel built is built twice; a difference is a warning
    (the wheel is still published) that names the members that differ, and the build record
    keeps it (`prewheel show`).

    Exit status: 0 all done; 1 some packages failed (the rest were published);
    2 bad input or configuration, or a wheelhouse that cannot be written (nothing was
    changed); 3 a file did not match its sha256 (nothing of that package was published);
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM): nothing was published after the
    signal, every build was stopped.
    """
    console = Console(stderr=as_json, quiet=False)
    with stamp.recording(wheelhouse) as recorder, guarded_run():
        config, pins, selected = load_inputs(requirements, config_path, targets)
        wh = Wheelhouse(wheelhouse)
        only: set[str] | None = {canonicalize_name(p) for p in packages} if packages else None
        for t in selected:
            if t.missing:
                console.print(
                    f"target {t.name} skipped: {t.missing}", style="yellow", highlight=False
                )
        with Progress(0, quiet=quiet or as_json, console=console) as progress:
            # `--package` narrows the builds the waves start, not the plan: its closures (the
            # pins verify installs at) and unpinned members are the whole plan's.
            every: list[PlanItem] = []  # each wave's items, before the narrowing

            def narrowed(ahead: BuildAhead) -> Iterator[Wave]:
                # The builds of a target start as soon as its closure is resolved (those of
                # its top-level sdists before, for the resolver to read their wheels).
                waves = plan_waves(
                    selected,
                    pins,
                    config,
                    wh,
                    allow_unpinned=allow_unpinned,
                    refresh=refresh,
                    progress=progress.note,
                    keep_sources=True,  # the build reuses the sdists the plan read
                    ahead=ahead,
                )
                for wave in waves:
                    every.extend(wave.items)
                    yield wave.only_building(only) if only is not None else wave

            def whole(_: list[PlanItem]) -> Plan:
                plan = assemble(selected, pins, every)
                return plan.only_building(only) if only is not None else plan

            report = execute_waves(
                narrowed,
                whole,
                selected,
                config,
                wh,
                jobs=jobs or config.jobs,
                reporter=progress,
                retry_failed=retry_failed,
                cache_from=cache_from,
                requirements=str(requirements),
                check_reproducible=check_reproducible,
                planned=lambda plan: progress.planned(len(plan.items)),
                only=frozenset(only) if only is not None else None,
            )
        data = report.to_json()
        if report.nothing_to_do:
            why_not = recorder.save(data)
            log.debug("no-op stamp %s", f"not written: {why_not}" if why_not else "written")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_summary(data, console)
    if report.failed:
        sys.exit(report.exit_code)
