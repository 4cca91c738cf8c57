"""What `plan` and `build` share: loading config, requirements and targets."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..config import Config, load_config
from ..errors import TargetError
from ..requirements import Pin, read_requirements
from ..targets import Target, resolve_targets, select_targets


def load_inputs(
    requirements: Path,
    config_path: Path | None,
    patterns: tuple[str, ...],
) -> tuple[Config, list[Pin], list[Target]]:
    config = load_config(config_path)
    pins = read_requirements(requirements)
    all_targets = resolve_targets(config)
    targets = select_targets(all_targets, patterns)
    if not targets:
        known = ", ".join(t.name for t in all_targets) or "none"
        raise TargetError(f"no target matches {', '.join(patterns)}; known targets: {known}")
    if all(t.missing for t in targets):
        reasons = "; ".join(f"{t.name}: {t.missing}" for t in targets)
        raise TargetError(f"no usable target: {reasons}")
    return config, pins, targets


@contextlib.contextmanager
def planning(console: Console, targets: int, *, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A spinner while the closure is resolved (pip may build sdist metadata: seconds),
    saying which target and which step; yields the function that updates it."""
    if quiet or not console.is_terminal:
        yield lambda _: None
        return
    with console.status(f"planning {targets} target(s)...") as status:
        yield lambda text: status.update(Text(f"{text}..."))
