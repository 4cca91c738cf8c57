"""What `plan` and `build` share: loading config, requirements and targets."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.text import Text

from .. import scratch
from ..cmd import request_stop
from ..config import Config, load_config
from ..errors import Interrupted, TargetError
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


def _on_signal(signum: int, frame: FrameType | None) -> None:
    request_stop(signum)  # every child's tree ends now; nothing is published from here on
    raise Interrupted(signum)


@contextlib.contextmanager
def guarded_run() -> Iterator[None]:
    """A run that executes package code: SIGTERM and SIGINT stop it (no new work, every
    child's process tree ended within seconds, nothing published after the signal, exit 143
    or 130), and everything temporary lives in one scratch directory that is removed at the
    end, or by the next run when this one is killed."""
    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with scratch.session():
            yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
