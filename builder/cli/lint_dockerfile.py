"""`prewheel lint-dockerfile`: report what keeps a runtime image big, line by line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..docker.lint import lint
from ..errors import PrewheelError
from ._options import json_option


@click.command("lint-dockerfile")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@json_option
def command(file: Path, as_json: bool) -> None:
    """Check a Dockerfile for the habits that shrink runtime images.

    \b
    Reports, each with its line: pip without --no-cache-dir; apt without
    --no-install-recommends or without removing its lists in the same RUN;
    unpinned pip installs; an Alpine base for a Python app; compilers or
    -dev packages in the final stage; pip installs that may build sdists in the
    final stage; no .dockerignore beside the file; consecutive RUNs that could
    be one. Exit 0: clean; 1: findings; 2: the file is missing or does not parse.
    """
    stdin = str(file) == "-"
    try:
        text = sys.stdin.read() if stdin else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PrewheelError(f"{file}: cannot read: {exc}") from exc
    name = "<stdin>" if stdin else str(file)
    findings = lint(text, path=None if stdin else file)
    if as_json:
        click.echo(json.dumps([f.to_json(name) for f in findings], indent=2))
    else:
        for f in findings:
            click.echo(f"{name}:{f.line}: [{f.rule}] {f.message}")
        if findings:
            click.echo(f"{len(findings)} finding(s)", err=True)
    if findings:
        sys.exit(1)
