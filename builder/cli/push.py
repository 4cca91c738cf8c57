"""`prewheel push`: upload the wheelhouse to devpi-server, one index per accelerator."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..devpi.client import DevpiClient, client_config
from ..devpi.push import PushReport, push_wheelhouse
from ..errors import EXIT_FAILED, PushError
from ..wheelhouse import Wheelhouse
from ._options import config_option, json_option, quiet_option, target_option, wheelhouse_option


def _accels_of_targets(config_path: Path | None, patterns: tuple[str, ...]) -> list[str]:
    from ..config import load_config
    from ..targets import resolve_targets, select_targets

    chosen = select_targets(resolve_targets(load_config(config_path)), patterns)
    if not chosen:
        raise PushError(f"no configured target matches {', '.join(patterns)}")
    return sorted({t.accel for t in chosen})


def _summary(report: PushReport) -> None:
    for item, remote in report.conflicts:
        click.secho(
            f"refused: {item.filename} — {item.index} already holds a different file under this "
            f"name (server sha256 {remote[:12]}..., local {item.sha256[:12]}...)",
            fg="red",
            err=True,
        )
    for item, got in report.verify_failures:
        click.secho(
            f"verify failed: {item.filename} on {item.index}: server sha256 "
            f"{got or 'missing'}, local {item.sha256}",
            fg="red",
            err=True,
        )
    for warning in report.warnings:
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    click.echo(
        f"pushed to {report.server}: {len(report.uploaded)} uploaded, "
        f"{len(report.skipped)} already there, {len(report.records)} build record(s) attached, "
        f"{len(report.conflicts)} refused; indexes created: {', '.join(report.created) or 'none'}"
    )
    if report.ok and report.index_urls:
        for accel, url in report.index_urls.items():
            for name, text in client_config(url).items():
                click.echo(f"\n# {name} ({accel})\n{text}", nl=False)


@click.command("push")
@click.option(
    "--devpi",
    "devpi_url",
    required=True,
    metavar="URL",
    help="devpi-server root URL, e.g. http://devpi:3141/",
)
@click.option("--user", required=True, metavar="NAME", help="devpi user; indexes are NAME/<accel>.")
@click.option(
    "--password-env",
    required=True,
    metavar="VAR",
    help="Environment variable holding the password (never pass it on the command line).",
)
@click.option(
    "--bases",
    default="",
    metavar="IDX[,IDX]",
    help="Bases for indexes this command creates (default: none).",
)
@click.option(
    "--accel",
    "accels",
    multiple=True,
    metavar="NAME",
    help="Only these accelerators' indexes (repeatable). Default: all.",
)
@wheelhouse_option
@config_option
@target_option
@json_option
@quiet_option
def command(
    devpi_url: str,
    user: str,
    password_env: str,
    bases: str,
    accels: tuple[str, ...],
    wheelhouse: Path,
    config_path: Path | None,
    targets: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Upload every wheel the devpi indexes NAME/<accel> lack, then verify their sha256.

    Indexes are created when missing. Identical files are skipped; a different file under an
    existing name is refused (exit 1). Bad credentials, an unreachable server or a missing
    permission stop before anything is uploaded (exit 2).
    """
    password = os.environ.get(password_env)
    if password is None:
        raise PushError(
            f"environment variable {password_env} is not set",
            hint=f"export {password_env}=... before running push",
        )
    wh = Wheelhouse(wheelhouse)
    if not wh.root.is_dir():
        raise PushError(f"no wheelhouse at {wh.root}", hint="run prewheel build first")
    wanted = sorted(set(accels) | set(_accels_of_targets(config_path, targets) if targets else ()))
    client = DevpiClient(devpi_url)
    client.check_server()
    client.login(user, password)

    def on_event(msg: str) -> None:
        if not as_json and not quiet:
            click.echo(msg, err=True)

    report = push_wheelhouse(
        wh,
        client,
        user=user,
        accels=wanted or None,
        bases=tuple(b for b in bases.split(",") if b),
        on_event=on_event,
    )
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        _summary(report)
    if not report.ok:
        sys.exit(EXIT_FAILED)
