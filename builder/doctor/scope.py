"""Which targets the doctor judges: the configured ones, or an accelerator named outright.

On a GPU host the builder's config is often not at hand, so `--target cu128` (or `cpu`) asks
about that accelerator for the running Python, with the default arch list of its CUDA.
"""

from __future__ import annotations

from dataclasses import replace

from ..config import Config, TargetSpec
from ..errors import TargetError
from ..targets import Target, resolve_targets, select_targets

_ACCEL_HINT = (
    "name a configured target (`prewheel targets`), a glob, or an accelerator (cpu, cu128)"
)


def doctor_targets(config: Config, patterns: tuple[str, ...]) -> list[Target]:
    configured = resolve_targets(config)
    if not patterns:
        return configured
    chosen = select_targets(configured, patterns)
    for pattern in patterns:
        if select_targets(configured, (pattern,)):
            continue
        if pattern == "cpu" or (pattern.startswith("cu") and pattern[2:].isdigit()):
            spec = TargetSpec(python="current", accel=pattern, policy="auto")
            chosen += resolve_targets(replace(config, targets=(spec,)))
            continue
        known = ", ".join(t.name for t in configured) or "none"
        raise TargetError(
            f"no target matches {pattern!r}; known targets: {known}", hint=_ACCEL_HINT
        )
    return list({t.name: t for t in chosen}.values())
