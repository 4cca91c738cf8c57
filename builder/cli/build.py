"""`prewheel build`: execute the plan and publish verified wheels."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click
from packaging.utils import canonicalize_name
from rich.console import Console

from .. import noop
from ..pipeline import execute
from ..plan import make_plan
from ..status_page import write_status
from ..targets_json import write_targets_json
from ..wheelhouse import Wheelhouse
from ._common import load_inputs, planning, unpinned_note
from ._options import json_option, plan_inputs, quiet_option
from ._progress import Progress, print_summary

log = logging.getLogger(__name__)


@click.command("build")
@plan_inputs
@click.option(
    "-j",
    "--jobs",
    type=int,
    default=None,
    help="Builds at once (default: build.jobs in the config, else the CPU count).",
)
@click.option("--allow-unpinned", is_flag=True, help="Let the resolver pin loose requirements.")
@click.option(
    "--retry-failed/--no-retry-failed",
    default=True,
    show_default=True,
    help="Build again what failed under the same cache key last time.",
)
@click.option(
    "--cache-from",
    "cache_from",
    multiple=True,
    metavar="URL",
    help="A devpi or prewheel index to take wheels of the same cache key from, instead of "
    "building (repeatable).",
)
@click.option("--refresh", is_flag=True, help="Resolve again even when a locked closure is cached.")
@click.option(
    "--package",
    "packages",
    multiple=True,
    metavar="NAME",
    help="Build only these packages (a CI batch from `plan --matrix`); downloads still run, "
    "so the batch's built dependencies must be in the same batch or already published.",
)
@json_option
@quiet_option
def command(
    requirements: Path,
    config_path: Path | None,
    targets: tuple[str, ...],
    wheelhouse: Path,
    jobs: int | None,
    allow_unpinned: bool,
    retry_failed: bool,
    cache_from: tuple[str, ...],
    refresh: bool,
    packages: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Fetch, build, repair, verify and publish every wheel the targets need.

    A run that finds nothing to do stamps what it consulted; the next run with the same
    arguments is answered from that stamp while nothing in it has changed
    (PREWHEEL_DEBUG=1 says why not; PREWHEEL_FAST=0 always runs the full build).

    Exit status: 0 all done; 1 some packages failed (the rest were published);
    2 bad input or configuration (nothing was changed).
    """
    console = Console(stderr=as_json, quiet=False)
    noop.begin(wheelhouse)
    config, pins, selected = load_inputs(requirements, config_path, targets)
    wh = Wheelhouse(wheelhouse)
    with planning(console, len(selected), quiet=quiet or as_json) as say:
        plan = make_plan(
            selected,
            pins,
            config,
            wh,
            allow_unpinned=allow_unpinned,
            refresh=refresh,
            progress=say,
        )
    if packages:
        plan = plan.only_building({canonicalize_name(p) for p in packages})
    for t in plan.skipped_targets:
        console.print(f"[yellow]target {t.name} skipped: {t.missing}[/]", highlight=False)
    with Progress(len(plan.items), quiet=quiet or as_json, console=console) as progress:
        report = execute(
            plan,
            config,
            wh,
            jobs=jobs or config.jobs,
            reporter=progress,
            retry_failed=retry_failed,
            cache_from=cache_from,
        )
    write_targets_json(wh, selected)
    write_status(wh)  # status.html, for nginx or S3 serving the tree as it is
    data = report.to_json()
    data["skipped_targets"] = [
        {"target": t.name, "reason": t.missing} for t in plan.skipped_targets
    ]
    data["unpinned"] = list(plan.unpinned)
    data["fast_path"] = False
    if all(r.status in ("cached", "skipped") for r in report.results):
        why_not = noop.save(wheelhouse, data)
        log.debug("no-op stamp %s", f"not written: {why_not}" if why_not else "written")
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_summary(report, console)
        for t in plan.skipped_targets:
            console.print(f"[yellow]skipped target {t.name}: {t.missing}[/]", highlight=False)
        if plan.unpinned:
            console.print(f"[yellow]{unpinned_note(requirements, plan.unpinned)}[/]")
    if report.failed:
        sys.exit(report.exit_code)
