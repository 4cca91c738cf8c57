"""`prewheel audit-image`: where an image archive's bytes go, gated like `dive --ci`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..docker.archive import read_archive
from ..docker.audit import CATEGORIES, Audit, audit
from ..docker.rules import EFFICIENCY, WASTED_BYTES, WASTED_PERCENT, configure
from ._options import json_option


def _human(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # pragma: no cover


@click.command("audit-image")
@click.argument("image", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
@click.option(
    "--ci",
    "ci_defaults",
    is_flag=True,
    help="Gate like `dive --ci`: read ./.dive-ci if present, and apply Dive's defaults "
    "(efficiency 0.9, user-wasted 0.1) to rules not set.",
)
@click.option(
    "--ci-config",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="A Dive .dive-ci file whose rules to apply (options given here win over it).",
)
@click.option("--min-efficiency", metavar="RATIO", help="Fail below this efficiency (0.9 or 90%).")
@click.option(
    "--max-wasted-bytes", metavar="SIZE", help="Fail above this many wasted bytes (20MB, 1GiB)."
)
@click.option(
    "--max-wasted-percent",
    metavar="RATIO",
    help="Fail when wasted bytes exceed this share of the bytes above the base layer (0.1 or 10%).",
)
@click.option(
    "--deny",
    multiple=True,
    type=click.Choice([*CATEGORIES, "all"]),
    help="Fail when the final image holds this (repeatable): " + ", ".join(CATEGORIES) + ".",
)
@click.option(
    "--top", type=click.IntRange(1), default=5, show_default=True, help="Paths listed per finding."
)
def command(
    image: Path,
    as_json: bool,
    ci_defaults: bool,
    ci_config: Path | None,
    min_efficiency: str | None,
    max_wasted_bytes: str | None,
    max_wasted_percent: str | None,
    deny: tuple[str, ...],
    top: int,
) -> None:
    """Audit a `docker save` or OCI image archive (IMAGE.tar, or - for stdin).

    \b
    Per layer: bytes added, and bytes of lower layers overwritten or deleted (still
    shipped, seen by no container). Dive's efficiency and wasted bytes, the same
    numbers `dive` reports. And what Dive does not show: compilers, headers, -dev
    packages, pip/apt caches, __pycache__, .a files, build trees and archives left
    in the final image.

    \b
    Exit 0: every rule passed; 1: a rule failed or a denied finding is present;
    2: the archive or a rule cannot be read.
    """
    dive_ci = ci_config or (
        Path(".dive-ci") if ci_defaults and Path(".dive-ci").is_file() else None
    )
    rules = configure(
        {
            EFFICIENCY: min_efficiency,
            WASTED_BYTES: max_wasted_bytes,
            WASTED_PERCENT: max_wasted_percent,
        },
        dive_ci,
        ci_defaults=ci_defaults,
    )
    denied = CATEGORIES if "all" in deny else deny
    result = audit(read_archive(image), rules=rules, denied=denied, top=top)
    if as_json:
        click.echo(json.dumps(result.to_json(top), indent=2))
    else:
        _render(result)
    sys.exit(1 if result.failures else 0)


def _render(result: Audit) -> None:
    img = result.image
    name = ", ".join(img.tags) or img.archive
    click.secho(
        f"{name} ({img.archive}, {img.format}): {len(result.layers)} layers, "
        f"{_human(result.dive.size)}",
        bold=True,
    )
    for note in img.notes:
        click.echo(f"note: {note}")
    click.echo(f"  {'#':>2}  {'size':>9}  {'added':>9}  {'overwrote':>9}  {'deleted':>9}  command")
    for s in result.layers:
        command = (s.command or "-") if len(s.command) <= 70 else s.command[:67] + "..."
        click.echo(
            f"  {s.index:>2}  {_human(s.size):>9}  {_human(s.added):>9}  "
            f"{_human(s.overwritten):>9}  {_human(s.deleted):>9}  {command}"
        )
    d = result.dive
    pct = d.user_wasted_percent
    pct_text = (
        f"{pct:.4%}" if pct == pct and pct != float("inf") else "n/a (no bytes above the base)"
    )
    click.echo(
        f"Dive: efficiency {d.efficiency:.4%}, wasted {d.wasted_bytes:,} bytes "
        f"({_human(d.wasted_bytes)}), user-wasted {pct_text}"
    )
    for x in d.inefficiencies[:5]:
        click.echo(f"  {x.count} copies, {_human(x.size):>9}  {x.path}")
    click.echo(
        f"hidden by later layers (overwritten or deleted, still shipped): "
        f"{result.hidden_bytes:,} bytes ({_human(result.hidden_bytes)})"
    )
    if not result.findings:
        click.echo("in the final image: no compiler, header, -dev package, cache or build leftover")
    for f in result.findings:
        denied = click.style(" (denied)", fg="red") if f.category in result.denied else ""
        examples = ", ".join(f"{p} ({_human(b)})" for p, b in f.examples)
        click.echo(f"  {f.category:<13} {f.count} ({_human(f.bytes)}){denied}: {examples}")
    for v in result.verdicts:
        color = {"pass": "green", "fail": "red", "disabled": "blue"}[v.status]
        click.echo(
            click.style(f"{v.status.upper():<8}", fg=color)
            + f" {v.rule.name} {v.rule.value} ({v.rule.source}): {v.message}"
        )
    if result.verdicts or result.denied:
        if result.failures:
            click.secho(f"FAIL: {'; '.join(result.failures)}", fg="red", bold=True)
        else:
            click.secho("PASS", fg="green", bold=True)
