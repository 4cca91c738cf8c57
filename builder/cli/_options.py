"""Options shared by several subcommands, so they read the same everywhere."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def wheelhouse_option(f: F) -> F:
    return click.option(
        "--wheelhouse",
        "wheelhouse",
        type=click.Path(file_okay=False, path_type=Path),
        default=lambda: os.environ.get("PREWHEEL_WHEELHOUSE", "wheelhouse"),
        show_default="./wheelhouse, or $PREWHEEL_WHEELHOUSE",
        help="The wheelhouse directory.",
    )(f)


def config_option(f: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Configuration file (default: config/prewheel.toml if present, else built-ins).",
    )(f)


def target_option(f: F) -> F:
    return click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="NAME",
        help="Only these targets (name or glob; repeatable). Default: all configured.",
    )(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")(f)


def quiet_option(f: F) -> F:
    return click.option("-q", "--quiet", is_flag=True, help="Plain lines only, no live display.")(f)


def plan_inputs(f: F) -> F:
    """What `plan` and `build` both read: requirements, config, targets, wheelhouse."""
    f = config_option(target_option(wheelhouse_option(f)))
    return click.option(
        "-r",
        "--requirements",
        type=click.Path(dir_okay=False, path_type=Path),
        required=True,
        help="requirements.txt (pinned) or pylock.toml.",
    )(f)
