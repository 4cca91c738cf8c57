"""`prewheel show PROJECT`: the build records of one project, failures with their log tail."""

from __future__ import annotations

import json
from pathlib import Path

import click
from packaging.utils import canonicalize_name
from rich.text import Text

from ..cmd import tail
from ..errors import PrewheelError
from ..records import BuildRecord
from ..summary import size
from ..wheelhouse import CatalogEntry, Wheelhouse
from ._options import json_option, wheelhouse_option


def project_records(wh: Wheelhouse, project: str) -> list[BuildRecord]:
    """One record per build, oldest first.

    A pure wheel's record is stored twice (under its cache key and its source key);
    it is shown once.
    """
    seen: dict[str, BuildRecord] = {}
    for rec in wh.records(project):
        seen.setdefault(rec.cache_key, rec)
    return sorted(seen.values(), key=lambda r: r.started)


def log_tail(wh: Wheelhouse, record: BuildRecord, lines: int) -> str:
    """The end of the build's log file, or the tail kept in the record if the log is gone."""
    if record.log:
        try:
            return tail((wh.root / record.log).read_text(errors="replace"), lines)
        except OSError:
            pass
    return tail(record.tail, lines)


def _row(rec: BuildRecord) -> list[str | Text]:
    ok = rec.result == "ok"
    result = Text(rec.result, style="green" if ok else "red")
    if not ok and rec.step:
        result.append(f" ({rec.step})")
    return [
        rec.version,
        ", ".join(rec.targets or [rec.target]),
        result,
        rec.started[:19].replace("T", " "),
        f"{rec.duration:.1f}s" if rec.duration is not None else "-",
        rec.cache_key[:12],
        _reproduced(rec),
    ]


def _reproduced(rec: BuildRecord) -> Text:
    """`yes`, `no`, or `-` (never checked: `build --check-reproducible`)."""
    if rec.reproduction is None:
        return Text("-", style="dim")
    if rec.reproduction.identical:
        return Text("yes", style="green")
    return Text("no", style="red")


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
            item = rec.to_json()
            if rec.result != "ok":
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


def _sbom_line(rec: BuildRecord) -> str:
    from ..stages.sbom import summary

    counts = summary(rec.sbom or {})
    grafted = ", ".join(g.library for g in rec.grafted)
    return (
        f"{rec.sbom_member} ({counts.get('build-dependency', 0)} build dependencies, "
        f"{counts.get('grafted-library', 0)} grafted libraries{': ' + grafted if grafted else ''})"
    )


def _print(
    wh: Wheelhouse,
    name: str,
    records: list[BuildRecord],
    files: list[CatalogEntry],
    tail_lines: int,
) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if records:
        table = Table(title=f"{name}: build records in {wh.root}")
        cols = ("version", "targets", "result", "started (UTC)", "time", "key", "reproduced")
        for col in cols:
            table.add_column(col, no_wrap=col in ("started (UTC)", "key"), overflow="fold")
        for rec in records:
            table.add_row(*_row(rec))
        console.print(table)
    else:
        console.print(f"{name}: no build records (every file was downloaded)")
    for rec in records:
        head = Text(rec.version, style="bold")
        head.append(f" key {rec.cache_key} on {rec.host or '?'}; log {wh.root / rec.log}")
        console.print(head, highlight=False)
        console.print(
            "  tools: " + ", ".join(f"{k} {v}" for k, v in sorted(rec.tools.items())),
            highlight=False,
            markup=False,
        )
        if rec.wheel:
            console.print(f"  wheel: {rec.wheel}", highlight=False, markup=False)
        if rec.checks:
            console.print(f"  checks passed: {', '.join(rec.checks)}", highlight=False)
        if rec.reproduction is not None:
            console.print(f"  {rec.reproduction.summary()}", highlight=False, markup=False)
        if rec.sbom_member:
            console.print(f"  sbom: {_sbom_line(rec)}", highlight=False, markup=False)
        if rec.sizes:
            strip = rec.sizes.strip_saved
            console.print(
                f"  sizes: wheel {size(rec.sizes.wheel)}, shared objects "
                f"{size(rec.sizes.shared_objects)}"
                + (f", strip took off {size(strip)}" if strip is not None else ", not stripped"),
                highlight=False,
            )
        if rec.relisted:
            first = f", first as {rec.relisted_from}" if rec.relisted_from else ""
            console.print(
                f"  listed again {rec.relisted} (settings went back){first}",
                highlight=False,
                markup=False,
            )
        if rec.build_deps:
            console.print(
                "  build deps: "
                + ", ".join(f"{k}=={v}" for k, v in sorted(rec.build_deps.items())),
                highlight=False,
                markup=False,
            )
        for accel_line in _accel_lines(rec):
            console.print(accel_line, highlight=False, markup=False)
        if rec.result != "ok":
            line = Text("  ")
            line.append("error", style="red")
            line.append(f": {rec.error or ''}")
            console.print(line, highlight=False)
            text = log_tail(wh, rec, tail_lines)
            if text:
                console.print(f"  [dim]--- last {tail_lines} lines of the log ---[/]")
                console.print(text, markup=False, highlight=False)
    if files:
        console.print(f"published files ({len(files)}):", highlight=False)
        for f in files:
            console.print(f"  {f.filename}  {f.origin}  {f.upload_time}", highlight=False)


def _accel_lines(rec: BuildRecord) -> list[str]:
    """Whether it was built per accelerator and why, what of CUDA its build could reach,
    and the GPU code its wheel carries."""
    out = []
    if rec.accel_decision:
        out.append(f"  accelerator: {rec.accel_decision.summary()}")
    env = rec.build_env
    if env is not None:
        reach = f"toolkit {env.toolkit}" if env.toolkit else "no CUDA toolkit"
        hidden = f"; hidden: {', '.join(env.hidden)}" if env.hidden else ""
        out.append(f"  build environment: {env.accel}, {reach}{hidden}")
    for code in rec.device_code:
        sass = " ".join(f"sm_{a.replace('.', '')}" for a in code.sass)
        ptx = " ".join(f"compute_{a.replace('.', '')}" for a in code.ptx)
        out.append(f"  GPU code in {code.path}: {sass} {ptx}".rstrip())
    return out
