"""`targets.json` at the wheelhouse root: every target the indexes serve, for humans and for
tools that pick a runtime base image or an index URL per target."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..records import utcnow
from ..targets import Target, python_image, runtime_image
from ..wheelhouse import Wheelhouse, atomic_write_json

SCHEMA_VERSION = 1


def target_entry(target: Target) -> dict[str, Any]:
    interp = target.interpreter
    return {
        "name": target.name,
        "python": interp.short if interp else target.spec.python,
        "python_version": ".".join(map(str, interp.version)) if interp else None,
        "abi": interp.abi if interp else None,
        "accelerator": target.accel,
        "cuda_version": target.cuda_version,
        "toolkit_version": target.toolkit.version if target.toolkit else None,
        "policy": target.policy,
        "platform_ceiling": target.platform_ceiling,
        "isa": target.isa,
        "toolchain": target.toolchain,
        "arch_list": list(target.arch_list),
        "repair_excludes": list(target.repair_excludes),
        "runtime_image": runtime_image(target),
        "python_image": python_image(target),
        "index": f"/{target.accel}/simple/",
        "available": target.missing is None,
        "missing": target.missing,
    }


def read_targets_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data


def write_targets_json(wh: Wheelhouse, targets: Iterable[Target]) -> Path:
    """Write (merge) `targets.json`: this run's targets replace their old entries, targets
    built by earlier runs with other `--target` selections stay listed."""
    path = wh.root / "targets.json"
    current = read_targets_json(path)
    old = current.get("targets", [])
    merged: dict[str, dict[str, Any]] = {e["name"]: e for e in old if isinstance(e, dict)}
    for target in targets:
        merged[target.name] = target_entry(target)
    body = {
        "version": SCHEMA_VERSION,
        "accelerators": sorted({e["accelerator"] for e in merged.values()}),
        "targets": [merged[n] for n in sorted(merged)],
    }
    current.pop("updated", None)
    if current != body:  # a no-op run leaves the wheelhouse byte for byte as it was
        atomic_write_json(path, {**body, "updated": utcnow()})
    return path
