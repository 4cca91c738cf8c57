"""`prewheel index`: rebuild the static tree, or check it against the bytes on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import index as index_lib
from ..errors import EXIT_FAILED, WheelhouseError
from ..wheelhouse import Wheelhouse
from ._options import json_option, wheelhouse_option


@click.group("index")
def command() -> None:
    """Maintain the static PEP 503 / PEP 691 index of the wheelhouse."""


@command.command("rebuild")
@wheelhouse_option
def rebuild(wheelhouse: Path) -> None:
    """Regenerate every accelerator's index and the status page from the catalog."""
    wh = Wheelhouse(wheelhouse)
    index_lib.rebuild(wh)
    click.echo(f"rebuilt {', '.join(index_lib.indexed_accelerators(wh))} in {wheelhouse}")


@command.command("check")
@wheelhouse_option
@click.option(
    "--url",
    "urls",
    multiple=True,
    metavar="URL",
    help="Check a served index (e.g. devpi's NAME/ACCEL/+simple/) instead of the wheelhouse.",
)
@click.option(
    "--no-download", is_flag=True, help="With --url: do not download files to check their sha256."
)
@click.option(
    "--repair",
    is_flag=True,
    help="Remove or publish again what is wrong (stray files, damaged or missing wheels, "
    "stale pages), say what was done, then check again.",
)
@json_option
def check(
    wheelhouse: Path, urls: tuple[str, ...], no_download: bool, repair: bool, as_json: bool
) -> None:
    """Check that every link resolves, every hash matches and every file in the store is
    accounted for; exit 1 listing the problems (2: no wheelhouse there).

    A publish that a killed build left half done is finished first, as the next build would.
    """
    counts: dict[str, int] = {}
    repaired: list[str] = []
    notes: list[str] = []
    if urls and repair:
        raise click.UsageError("--repair works on a wheelhouse, not on --url")
    if not urls and not wheelhouse.is_dir():
        raise WheelhouseError(
            f"no wheelhouse at {wheelhouse}", hint="give its directory with --wheelhouse DIR"
        )
    if repair:
        from ..index.repair import repair as repair_wheelhouse

        repaired = repair_wheelhouse(Wheelhouse(wheelhouse))
    if urls:
        from ..devpi.remote_check import check_remote

        problems = [p for u in urls for p in check_remote(u, verify_files=not no_download)]
        what = "every project page, file name and " + (
            "served file's sha256" if not no_download else "page hash"
        )
    else:
        result = index_lib.check(Wheelhouse(wheelhouse))
        problems = result.problems
        counts = {"pages": result.pages, "files": result.files, "hashes": result.hashes}
        what = result.summary()
        notes = [f"finished: {r}" for r in result.recovered]
        if result.leftovers:
            notes.append(
                f"{len(result.leftovers)} temp file(s) left by killed writers (not served; "
                "--repair or the next build removes them)"
            )
    if as_json:
        out = {"ok": not problems, "problems": problems, "repaired": repaired, "notes": notes}
        click.echo(json.dumps({**out, **counts}, indent=2))
        if problems:
            sys.exit(EXIT_FAILED)
        return
    for line in repaired:
        click.echo(f"repair: {line}")
    for line in notes:
        click.echo(f"note: {line}", err=True)
    if problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        click.echo(
            f"{len(problems)} problem(s) in {', '.join(urls) or wheelhouse} ({what})", err=True
        )
    else:
        click.echo(f"index OK: {', '.join(urls) or wheelhouse}: {what}")
    if problems:
        sys.exit(EXIT_FAILED)
