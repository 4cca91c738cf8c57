"""Repairing a built wheel with auditwheel into a manylinux wheel the target accepts."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .cmd import clean_env, run
from .errors import CommandError, StepError
from .targets import Target
from .wheelfile import is_pure


def repair_wheel(
    wheel: Path,
    *,
    target: Target,
    excludes: tuple[str, ...],
    strip: bool,
    outdir: Path,
    log_file: Path,
) -> Path:
    """`auditwheel repair` to the target's policy; pure wheels pass through untouched."""
    if is_pure(wheel):
        return wheel
    outdir.mkdir(parents=True, exist_ok=True)
    argv: list[str] = [sys.executable, "-m", "auditwheel", "repair", "-w", str(outdir)]
    if target.policy != "auto":
        argv += ["--plat", target.policy]
    if strip:
        argv.append("--strip")
    for pattern in excludes:
        argv += ["--exclude", pattern]
    argv.append(str(wheel))
    try:
        run(argv, step="repair", log_file=log_file, env=clean_env(), timeout=600)
    except CommandError as exc:
        raise StepError(
            f"auditwheel cannot repair {wheel.name} to {target.policy}: {_why(wheel, log_file)}",
            step="repair",
            log=exc.log,
            tail=exc.tail,
            hint="build in Dockerfile.builder on a manylinux base image (older glibc), or "
            "choose a newer policy for this target",
        ) from None
    repaired = sorted(outdir.glob("*.whl"))
    if len(repaired) != 1:
        raise StepError(
            f"auditwheel wrote {len(repaired)} wheels for {wheel.name}",
            step="repair",
            log=str(log_file),
        )
    return repaired[0]


def _why(wheel: Path, log_file: Path) -> str:
    """Name the symbols or libraries that keep the wheel above the policy."""
    result = run(
        [sys.executable, "-m", "auditwheel", "show", str(wheel)],
        step="repair",
        log_file=log_file,
        env=clean_env(),
        timeout=300,
        check=False,
    )
    text = " ".join(result.stdout.split())
    m = re.search(r"(This constrains the platform tag to .*?)(?:The following|$)", text)
    found = m.group(1) if m else ""
    syms = re.search(r"(too-recent versioned symbols:.*?)(?:$|This constrains)", text)
    libs = re.search(
        r"(The following external shared libraries are required by the wheel:.*?)"
        r"(?:$|This)",
        text,
    )
    parts = [p.group(1).strip() for p in (syms, libs) if p] + ([found] if found else [])
    return "; ".join(parts)[:800] or text[-600:]
