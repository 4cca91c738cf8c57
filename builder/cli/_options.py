"""click options made from the table in `buildargs`, so they read the same everywhere and
the no-op stamp knows every option `build` has."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from ..buildargs import BUILD_OPTIONS, CONFIG, JSON, QUIET, TARGET, WHEELHOUSE, Option

F = TypeVar("F", bound=Callable[..., Any])


def _click_option(opt: Option) -> Callable[[F], F]:
    kw: dict[str, Any] = {"help": opt.help, "multiple": opt.multiple, "required": opt.required}
    if opt.metavar:
        kw["metavar"] = opt.metavar
    if opt.kind == "flag":
        if len(opt.names) == 2 and opt.names[1].startswith("--no-"):
            decls = [f"{opt.names[0]}/{opt.names[1]}", opt.dest]
            return click.option(*decls, default=opt.default, show_default=True, **kw)
        return click.option(*opt.names, opt.dest, is_flag=True, **kw)
    if opt.kind == "file":
        kw["type"] = click.Path(dir_okay=False, path_type=Path)
    elif opt.kind == "dir":
        kw["type"] = click.Path(file_okay=False, path_type=Path)
    elif opt.kind == "int":
        kw["type"] = int
    if opt is WHEELHOUSE:
        kw["default"] = lambda: os.environ.get("PREWHEEL_WHEELHOUSE", "wheelhouse")
        kw["show_default"] = "./wheelhouse, or $PREWHEEL_WHEELHOUSE"
    return click.option(*opt.names, opt.dest, **kw)


def options(*opts: Option) -> Callable[[F], F]:
    """Decorate a command with `opts`, in the order given (as --help lists them)."""

    def decorate(f: F) -> F:
        for opt in reversed(opts):
            f = _click_option(opt)(f)
        return f

    return decorate


build_options = options(*BUILD_OPTIONS)
wheelhouse_option = _click_option(WHEELHOUSE)
config_option = _click_option(CONFIG)
target_option = _click_option(TARGET)
json_option = _click_option(JSON)
quiet_option = _click_option(QUIET)
