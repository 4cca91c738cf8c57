"""Runtime constraints: what a closure must satisfy beyond pip's own resolution.

`[packages.fasttext] requires = ["numpy<2"]` says that fasttext works only with numpy 1,
though its metadata does not say so. The plan checks every target's closure against the
`requires` of the packages in it, before anything is built (a conflict is bad input: exit 2,
naming both pins); verify installs each wheel with the target's pins and these constraints,
so what it tests is exactly what the plan chose.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..config import Config
from ..errors import ConstraintError
from ..requirements import Pin
from ..targets import ARCH, Interpreter, Target


def marker_environment(interp: Interpreter) -> dict[str, str]:
    """PEP 508 marker values for the target's interpreter (not the one running prewheel)."""
    return {
        "implementation_name": interp.implementation,
        "platform_python_implementation": "CPython",
        "python_version": interp.short,
        "python_full_version": ".".join(map(str, interp.version)),
        "platform_machine": ARCH,
        "platform_system": "Linux",
        "sys_platform": "linux",
        "os_name": "posix",
        "platform_release": platform.release(),
        "extra": "",
    }


def applicable(
    config: Config, closure: Mapping[str, str], interp: Interpreter
) -> list[tuple[str, Requirement]]:
    """(owner, requirement) for every `requires` entry of a package in the closure whose
    marker holds for the target."""
    env = marker_environment(interp)
    out = []
    for owner in sorted(closure):
        for text in config.package(owner).requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(env):
                out.append((owner, req))
    return out


def conflicts(
    target: Target, closure: Mapping[str, str], config: Config, pins: Sequence[Pin]
) -> list[str]:
    """Each `requires` entry the closure's pins break, with both pins and where each is set."""
    assert target.interpreter is not None
    where: dict[str, str] = {canonicalize_name(p.name): p.where for p in pins if p.version}
    out = []
    for owner, req in applicable(config, closure, target.interpreter):
        dep = canonicalize_name(req.name)
        version = closure.get(dep)
        if version is None or req.specifier.contains(version, prereleases=True):
            continue
        owner_at = where.get(owner) or "resolved"
        dep_at = where.get(dep) or "resolved by pip, not pinned in the requirements"
        out.append(
            f"{owner}=={closure[owner]} ({owner_at}) requires {req} ([packages.{owner}] "
            f"requires in {config.source}), but the closure for {target.name} pins "
            f"{dep}=={version} ({dep_at})"
        )
    return out


def check(target: Target, closure: Mapping[str, str], config: Config, pins: Sequence[Pin]) -> None:
    """Raise ConstraintError naming every conflict of this target's closure."""
    found = conflicts(target, closure, config, pins)
    if found:
        raise ConstraintError(
            f"{len(found)} runtime constraint(s) broken:\n  " + "\n  ".join(found),
            hint="pin a version the constraint allows in the requirements, or change the "
            "package's `requires` in the config",
        )


def constraints_file(target: Target, closure: Mapping[str, str], config: Config) -> str:
    """The pip constraints verify installs with: every closure member at the plan's pin, and
    the `requires` that apply (markers kept, extras dropped: pip refuses them here)."""
    assert target.interpreter is not None
    lines = [f"{name}=={version}" for name, version in sorted(closure.items())]
    for owner, req in applicable(config, closure, target.interpreter):
        marker = f"; {req.marker}" if req.marker else ""
        lines.append(f"{req.name}{req.specifier}{marker}  # [packages.{owner}] requires")
    return "\n".join(lines) + "\n"
