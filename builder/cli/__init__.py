"""The `prewheel` command: parse, call the `builder` library, print, exit.

Each subcommand lives in its own module; errors are caught once, here.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from typing import Any

import click

from .. import __version__, log
from ..errors import EXIT_INTERRUPTED, EXIT_TERMINATED, Interrupted, PrewheelError

# Subcommand modules; each defines a click command named `command`.
_SUBCOMMANDS = (
    "plan",
    "build",
    "serve",
    "push",
    "targets",
    "show",
    "index",
    "dockerfile",
    "lint_dockerfile",
    "doctor",
    "audit_image",
)


class _Group(click.Group):
    """Subcommands are imported when used: a no-op `prewheel build` must start fast."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        found = {
            name.replace("_", "-")
            for name in _SUBCOMMANDS
            if importlib.util.find_spec(f"{__name__}.{name}") is not None
        }
        return sorted(found | set(super().list_commands(ctx)))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        module = cmd_name.replace("-", "_")
        if cmd is None and module in _SUBCOMMANDS:
            try:
                mod = importlib.import_module(f"{__name__}.{module}")
            except ModuleNotFoundError as exc:  # a subcommand not written yet
                if exc.name != f"{__name__}.{module}":
                    raise
                return None
            cmd = mod.command
            self.add_command(cmd)
        return cmd

    def invoke(self, ctx: click.Context) -> Any:
        debug = ctx.params.get("debug") or os.environ.get("PREWHEEL_DEBUG")
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as exc:
            code = exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
            what = "terminated (SIGTERM)" if code == EXIT_TERMINATED else "interrupted"
            click.secho(
                f"{what}: every build was stopped; nothing was published after the signal",
                fg="yellow",
                err=True,
            )
            sys.exit(code)
        except PrewheelError as exc:
            if debug:
                raise
            click.secho(f"error: {exc.message}", fg="red", err=True)
            said = exc.message
            cause = exc.__cause__
            while cause is not None:
                if str(cause) not in said:  # a message that quotes its cause says it once
                    click.echo(f"  caused by: {type(cause).__name__}: {cause}", err=True)
                    said += str(cause)
                cause = cause.__cause__
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prewheel")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
def main(debug: bool) -> None:
    """Prebuild manylinux wheels for pinned requirements, per target, and serve them.

    \b
    Typical use:
      prewheel plan  -r requirements.txt      which pins have no wheel for my targets?
      prewheel build -r requirements.txt      fetch, build, repair, verify, publish
      prewheel serve                          http://127.0.0.1:8080/cpu/simple/
    """
    log.configure(debug)
