"""`prewheel index`: rebuild the static tree, or check it against the bytes on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .. import index as index_lib
from ..errors import EXIT_FAILED
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
@json_option
def check(wheelhouse: Path, urls: tuple[str, ...], no_download: bool, as_json: bool) -> None:
    """Check that every link resolves and every hash matches; exit 1 listing the problems."""
    counts: dict[str, int] = {}
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
    if as_json:
        click.echo(json.dumps({"ok": not problems, "problems": problems, **counts}, indent=2))
    elif problems:
        for p in problems:
            click.echo(f"problem: {p}", err=True)
        click.echo(
            f"{len(problems)} problem(s) in {', '.join(urls) or wheelhouse} ({what})", err=True
        )
    else:
        click.echo(f"index OK: {', '.join(urls) or wheelhouse}: {what}")
    if problems:
        sys.exit(EXIT_FAILED)
