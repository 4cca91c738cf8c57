"""The plan as a CI job matrix: one job per target, or per target x batch of packages.

The same JSON feeds GitHub Actions (`strategy.matrix: ${{ fromJSON(...) }}`, which reads the
`include` list) and GitLab (`parallel:matrix`, which takes the `include` list as it is in a
generated child pipeline). Both want flat maps of strings, so every value here is a string,
and there is no other top-level key: GitHub would turn one into an extra matrix dimension.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from packaging.utils import canonicalize_name

from ..errors import ConfigError

# GitLab refuses more than 200 jobs in one parallel:matrix; GitHub allows 256.
MAX_JOBS = 200
WORK_ACTIONS = ("build", "download")


def _batches(names: list[str], size: int | None) -> list[list[str]]:
    if size is None or size <= 0 or len(names) <= size:
        return [names]
    return [names[i : i + size] for i in range(0, len(names), size)]


def matrix_from_plan(items: list[Mapping[str, Any]], batch_size: int | None) -> dict[str, Any]:
    """`{"include": [...]}` with one entry per target that has work, or per target x batch.

    `items` are the plan's items (`prewheel plan --json`, key "items"): dicts with `target`,
    `name`, `version`, `action`. Targets whose items are all `cached` (or skipped) get no job.
    Builds are split into batches of `batch_size` packages; downloads, which are cheap, go
    with the first batch. Each entry has:

    - `target`: the target name, for `prewheel build --target`;
    - `accel`: its accelerator (the devpi index the job pushes to);
    - `packages`: space-separated project names of this entry's work;
    - `builds` / `downloads`: how many of each, as strings;
    - `batch`: "i/n"; `name`: a job label.
    """
    by_target: dict[str, dict[str, Any]] = {}
    for item in items:
        action = item.get("action")
        target = str(item["target"])
        slot = by_target.setdefault(
            target,
            {"accel": str(item.get("accel") or _accel_of(target)), "build": {}, "download": {}},
        )
        if action in WORK_ACTIONS:
            slot[action][canonicalize_name(str(item["name"]))] = str(item["version"])
    include: list[dict[str, str]] = []
    for target, slot in by_target.items():
        builds, downloads = sorted(slot["build"]), sorted(slot["download"])
        if not builds and not downloads:
            continue
        batches = _batches(builds, batch_size)
        for i, batch in enumerate(batches, 1):
            extra = downloads if i == 1 else []
            include.append(
                {
                    "target": target,
                    "accel": slot["accel"],
                    "packages": " ".join(sorted(batch + extra)),
                    "builds": str(len(batch)),
                    "downloads": str(len(extra)),
                    "batch": f"{i}/{len(batches)}",
                    "name": target if len(batches) == 1 else f"{target} {i}/{len(batches)}",
                }
            )
    if len(include) > MAX_JOBS:
        raise ConfigError(
            [
                f"{len(include)} jobs exceed the {MAX_JOBS} a CI matrix accepts; "
                "use a larger batch size, or none (one job per target)"
            ],
            source="matrix",
        )
    return {"include": include}


def _accel_of(target: str) -> str:
    """The accelerator part of a target name (`cp312-cu128-manylinux_2_28_x86_64`)."""
    parts = target.split("-")
    return parts[1] if len(parts) >= 3 else "cpu"
