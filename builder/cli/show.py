"""`prewheel show PROJECT`: the build records of one project, failures with their log tail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from packaging.utils import canonicalize_name

from ..cmd import tail
from ..errors import PrewheelError
from ..wheelhouse import Wheelhouse
from ._options import json_option, wheelhouse_option


def project_records(wh: Wheelhouse, project: str) -> list[dict[str, Any]]:
    """One record per build, oldest first.

    A pure wheel's record is stored twice (under its cache key and its source key);
    it is shown once.
    """
    seen: dict[str, dict[str, Any]] = {}
    for rec in wh.records(project):
        seen.setdefault(str(rec.get("cache_key")), rec)
    return sorted(seen.values(), key=lambda r: str(r.get("started", "")))


def log_tail(wh: Wheelhouse, record: dict[str, Any], lines: int) -> str:
    """The end of the build's log file, or the tail kept in the record if the log is gone."""
    rel = record.get("log")
    if rel:
        try:
            return tail((wh.root / rel).read_text(errors="replace"), lines)
        except OSError:
            pass
    return tail(str(record.get("tail") or ""), lines)


def escape(text: str) -> str:
    from rich.markup import escape as _escape

    return _escape(text)


def _row(rec: dict[str, Any]) -> list[str]:
    ok = rec.get("result") == "ok"
    result = "[green]ok[/]" if ok else f"[red]{rec.get('result', '?')}[/]"
    if not ok and rec.get("step"):
        result += f" ({rec['step']})"
    duration = rec.get("duration")
    return [
        str(rec.get("version", "")),
        ", ".join(rec.get("targets") or [str(rec.get("target", ""))]),
        result,
        str(rec.get("started", ""))[:19].replace("T", " "),
        f"{duration:.1f}s" if isinstance(duration, (int, float)) else "-",
        str(rec.get("cache_key", ""))[:12],
    ]


@click.command("show")
@click.argument("project")
@wheelhouse_option
@json_option
@click.option(
    "--tail",
    "tail_lines",
    type=int,
    default=20,
    show_default=True,
    metavar="N",
    help="Lines of each failed build's log to print.",
)
def command(project: str, wheelhouse: Path, as_json: bool, tail_lines: int) -> None:
    """Print PROJECT's build records: key, inputs, tools, times, host, log and result."""
    wh = Wheelhouse(wheelhouse)
    name = canonicalize_name(project)
    records = project_records(wh, name)
    files = wh.entries(name)
    if not records and not files:
        raise PrewheelError(
            f"{name}: no build record and no published file in {wheelhouse}",
            hint="check the name and --wheelhouse; records appear after `prewheel build`",
        )
    if as_json:
        out = []
        for rec in records:
            item = dict(rec)
            if rec.get("result") != "ok":
                item["log_tail"] = log_tail(wh, rec, tail_lines)
            out.append(item)
        click.echo(
            json.dumps(
                {"project": name, "records": out, "files": [f.to_json() for f in files]},
                indent=2,
            )
        )
        return
    _print(wh, name, records, files, tail_lines)


def _print(
    wh: Wheelhouse, name: str, records: list[dict[str, Any]], files: list[Any], tail_lines: int
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if records:
        table = Table(title=f"{name}: build records in {wh.root}")
        for col in ("version", "targets", "result", "started (UTC)", "time", "key"):
            table.add_column(col, no_wrap=col in ("started (UTC)", "key"), overflow="fold")
        for rec in records:
            table.add_row(*_row(rec))
        console.print(table)
    else:
        console.print(f"{name}: no build records (every file was downloaded)")
    for rec in records:
        tools = rec.get("tools") or {}
        deps = rec.get("build_deps") or {}
        console.print(
            f"[bold]{escape(str(rec.get('version')))}[/] key {rec.get('cache_key')} "
            f"on {escape(str(rec.get('host', '?')))}; "
            f"log {escape(str(wh.root / str(rec.get('log', ''))))}",
            highlight=False,
        )
        console.print(
            "  tools: " + ", ".join(f"{k} {v}" for k, v in sorted(tools.items())),
            highlight=False,
            markup=False,
        )
        if rec.get("wheel"):
            console.print(f"  wheel: {rec['wheel']}", highlight=False, markup=False)
        if rec.get("relisted_from"):
            console.print(
                f"  listed again {rec.get('relisted')} (settings went back), first as "
                f"{rec['relisted_from']}",
                highlight=False,
                markup=False,
            )
        if deps:
            console.print(
                "  build deps: " + ", ".join(f"{k}=={v}" for k, v in sorted(deps.items())),
                highlight=False,
                markup=False,
            )
        if rec.get("result") != "ok":
            console.print(f"  [red]error[/]: {escape(str(rec.get('error', '')))}", highlight=False)
            text = log_tail(wh, rec, tail_lines)
            if text:
                console.print(f"  [dim]--- last {tail_lines} lines of the log ---[/]")
                console.print(text, markup=False, highlight=False)
    if files:
        console.print(f"published files ({len(files)}):", highlight=False)
        for f in files:
            console.print(f"  {f.filename}  {f.origin}  {f.upload_time}", highlight=False)
