"""`prewheel targets`: every configured target, what was found for it, or why not."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ..config import load_config
from ..targets import describe, resolve_targets
from ._options import config_option, json_option


@click.command("targets")
@config_option
@json_option
def command(config_path: Path | None, as_json: bool) -> None:
    """List the configured targets with the interpreter and toolkit found."""
    config = load_config(config_path)
    found = [describe(t) for t in resolve_targets(config)]
    if as_json:
        click.echo(json.dumps({"config": config.source, "targets": found}, indent=2))
        return
    table = Table(title=f"targets ({config.source})")
    for col in ("target", "interpreter", "toolkit", "isa, toolchain", "runtime image", "status"):
        table.add_column(col)
    for t in found:
        tk = t["toolkit"]
        table.add_row(
            str(t["name"]),
            str(t["interpreter"] or "-"),
            f"CUDA {tk['version']} ({tk['cuda_home']})" if isinstance(tk, dict) else "-",
            f"{t['isa']}, {t['toolchain']}",
            str(t["runtime_image"]),
            "[green]ok[/]" if t["available"] else f"[yellow]missing: {t['missing']}[/]",
        )
    Console().print(table)
