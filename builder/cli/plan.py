"""`prewheel plan`: which pins have no wheel for my targets?"""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .. import summary
from ..buildargs import (
    ALLOW_UNPINNED,
    CONFIG,
    JSON,
    REFRESH,
    REQUIREMENTS,
    TARGET,
    WHEELHOUSE,
)
from ..stages.plan import ACTIONS, make_plan
from ..wheelhouse import Wheelhouse
from ._common import guarded_run, load_inputs, planning
from ._options import options

_STYLE = {"build": "yellow", "download": "cyan", "cached": "green", "skip": "dim"}


@click.command("plan")
@options(REQUIREMENTS, CONFIG, TARGET, WHEELHOUSE, JSON)
@click.option("--matrix", is_flag=True, help="Print the build work as a CI job matrix (JSON).")
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="With --matrix: split each target's builds into batches of this size.",
)
@options(ALLOW_UNPINNED, REFRESH)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the plan JSON to this file.",
)
def command(
    requirements: Path,
    config_path: Path | None,
    targets: tuple[str, ...],
    wheelhouse: Path,
    as_json: bool,
    matrix: bool,
    batch_size: int | None,
    allow_unpinned: bool,
    refresh: bool,
    output: Path | None,
) -> None:
    """Resolve the closure per target and say, per package: cached, download or build."""
    config, pins, selected = load_inputs(requirements, config_path, targets)
    with (
        guarded_run(),
        planning(Console(stderr=True), len(selected), quiet=as_json or matrix) as say,
    ):
        plan = make_plan(
            selected,
            pins,
            config,
            Wheelhouse(wheelhouse),
            allow_unpinned=allow_unpinned,
            refresh=refresh,
            progress=say,
        )
    data = plan.to_json()
    if output:
        output.write_text(json.dumps(data, indent=2) + "\n")
    if matrix:
        from ..stages.matrix import matrix_from_plan

        click.echo(json.dumps(matrix_from_plan(data["items"], batch_size)))
        return
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    console = Console()
    table = Table(title=f"plan for {requirements}")
    for col in ("target", "package", "version", "action", "accel", "why"):
        table.add_column(col)
    for item in plan.items:
        table.add_row(
            item.target.name,
            item.name,
            item.version,
            Text(item.action, style=_STYLE.get(item.action, "")),
            item.accel.summary() if item.accel else "",
            item.reason,
        )
    console.print(table)
    for t in plan.skipped_targets:
        console.print(f"target {t.name} skipped: {t.missing}", style="dim", highlight=False)
    if plan.unpinned:
        note = summary.unpinned_note(str(requirements), {"unpinned": plan.unpinned})
        console.print(note, style="yellow", highlight=False)
    counts = {a: sum(1 for i in plan.items if i.action == a) for a in ACTIONS}
    console.print(", ".join(f"{n} {a}" for a, n in counts.items()))
    if allow_unpinned:
        requested = sorted({(i.name, i.version) for i in plan.items if i.requested})
        console.print("resolved pins:\n" + "\n".join(f"{n}=={v}" for n, v in requested))
