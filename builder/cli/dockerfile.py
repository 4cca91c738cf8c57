"""`prewheel dockerfile`: print the runtime stage for one target."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

from ..config import load_config
from ..docker.dockerfile import RuntimeSpec, find_target, render, warnings
from ..targets import resolve_targets
from ._options import config_option


@click.command("dockerfile")
@config_option
@click.option(
    "--target",
    "target_name",
    required=True,
    metavar="NAME",
    help="The target whose wheels the image installs (see `prewheel targets`).",
)
@click.option(
    "--index-url",
    metavar="URL",
    default=None,
    help="Install from this index (default http://prewheel:8080/<accel>/simple/); "
    "a build arg, INDEX_URL, overrides it at build time.",
)
@click.option(
    "--from-wheelhouse",
    "wheelhouse",
    metavar="DIR",
    default=None,
    help="Install from this wheelhouse, a path inside the build context, through a "
    "BuildKit bind mount (builds with --network=none).",
)
@click.option(
    "-r",
    "--requirements",
    default="requirements.txt",
    show_default=True,
    metavar="FILE",
    help="Requirements file, a path inside the build context.",
)
@click.option(
    "--app",
    metavar="PATH",
    default=None,
    help="Copy this path of the build context to /app, as the last layer.",
)
@click.option(
    "--cmd",
    "command",
    metavar="COMMAND",
    default=None,
    help='The image\'s command, as a shell would split it (default "python").',
)
@click.option(
    "--base",
    metavar="IMAGE",
    default=None,
    help="Start from this image (it must have python3.X) instead of the default "
    "slim or CUDA runtime image.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the Dockerfile here instead of printing it.",
)
def command(
    config_path: Path | None,
    target_name: str,
    index_url: str | None,
    wheelhouse: str | None,
    requirements: str,
    app: str | None,
    command: str | None,
    base: str | None,
    output: Path | None,
) -> None:
    """Print a runtime Dockerfile for one target: prebuilt wheels only, no compiler.

    \b
    Examples:
      prewheel dockerfile --target cp312-cpu-auto --app src/ > Dockerfile
      prewheel dockerfile --target cp312-cpu-auto --from-wheelhouse wheelhouse > Dockerfile
    """
    if index_url and wheelhouse:
        raise click.UsageError("give --index-url or --from-wheelhouse, not both")
    target = find_target(resolve_targets(load_config(config_path)), target_name)
    spec = RuntimeSpec(
        target=target,
        index_url=index_url,
        wheelhouse=wheelhouse,
        requirements=requirements,
        app=app,
        command=tuple(shlex.split(command)) if command else (),
        base=base,
    )
    text = render(spec)
    for warning in warnings(spec):
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if output is None:
        click.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
