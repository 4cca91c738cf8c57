"""Live progress for builds: one line per running package, a bar, plain lines off a TTY."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .. import summary
from ..pipeline.report import ItemResult
from ..stages.plan import PlanItem

_COLOUR = {
    "built": "green",
    "downloaded": "cyan",
    "cached": "green",
    "skipped": "dim",
    "failed": "red",
}


class Progress:
    """Implements the pipeline's Reporter protocol."""

    def __init__(self, total: int, *, quiet: bool, console: Console) -> None:
        self.total = total
        self.console = console
        self.live_mode = console.is_terminal and not quiet
        self.running: dict[tuple[str, str], tuple[str, float]] = {}
        self.done = 0
        self.lock = threading.Lock()
        self.live: Live | None = None
        self.planning: str | None = "planning"  # what the plan is doing, until it is whole

    def __enter__(self) -> Progress:
        if self.live_mode:
            self.live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=4,
                get_renderable=self._render,
                transient=True,
            )
            self.live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.live is not None:
            self.live.__exit__(et, ev, tb)

    def _render(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        now = time.monotonic()
        with self.lock:
            # Text, not markup: a package name, target or step is shown as it is.
            for (name, target), (step, since) in list(self.running.items()):
                grid.add_row(
                    Text(name, style="bold"), Text(target), Text(step), f"{now - since:5.1f}s"
                )
            if self.planning is not None:
                grid.add_row(Text("plan", style="bold"), Text(self.planning), "", "")
            width = 30
            filled = int(width * self.done / max(1, self.total))
            grid.add_row(
                Text("overall", style="bold"),
                "#" * filled + "-" * (width - filled),
                f"{self.done}/{self.total}",
                "",
            )
        return grid

    def note(self, text: str) -> None:
        """What the plan is doing (resolving a target, reading pages), while builds run."""
        with self.lock:
            self.planning = text

    def planned(self, total: int) -> None:
        """The whole plan is in: `total` items."""
        with self.lock:
            self.planning = None
            self.total = total

    def step(self, item: PlanItem, step: str) -> None:
        key = (item.name, item.target.name)
        with self.lock:
            since = self.running.get(key, (step, time.monotonic()))[1]
            self.running[key] = (step, since)
        if not self.live_mode:
            self.console.print(
                f"[{item.name}] {item.target.name}: {step}", highlight=False, markup=False
            )

    def finished(self, result: ItemResult) -> None:
        item = result.item
        with self.lock:
            self.running.pop((item.name, item.target.name), None)
            self.done += 1
        colour = _COLOUR.get(result.status, "")
        shown = "failed (cached)" if result.cached_failure else result.status
        line = (
            f"{escape(f'[{item.name}]')} {item.target.name}: [{colour}]{shown}[/] "
            f"{item.version} ({result.duration:.1f}s)"
        )
        if result.error:
            line += f": {escape(result.error)}"
        self.console.print(line, highlight=False)
        for w in result.warnings:
            self.console.print(
                f"[yellow]{escape(f'[{item.name}] warning: {w}')}[/]", highlight=False
            )
        if result.cached_failure:
            self.console.print(f"[dim]log: {escape(result.log or '-')}[/]", highlight=False)
        elif result.status == "failed" and result.tail:
            self.console.print(f"[dim]--- last lines of {result.log} ---[/]", highlight=False)
            self.console.print(result.tail, markup=False, highlight=False)


def print_summary(report: Mapping[str, Any], console: Console) -> None:
    """The summary of `summary`, as a rich table on a terminal and plain lines elsewhere."""
    rows = summary.rows(report)
    if console.is_terminal:
        table = Table(title="prewheel build summary")
        for col in summary.COLUMNS:
            table.add_column(col)
        for row in rows:
            colour = _COLOUR.get(row[3].split(" ")[0], "")
            table.add_row(*(Text(c, style=colour if i == 3 else "") for i, c in enumerate(row)))
        console.print(table)
    else:
        for line in summary.plain_table(rows):
            console.print(line, markup=False, highlight=False)
    console.print(summary.totals(report), markup=False, highlight=False)
    for line in summary.footer(report):
        style = "red" if line.startswith("failed ") else "yellow"
        console.print(Text(line, style=style), highlight=False)
