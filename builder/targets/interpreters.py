"""Finding CPython interpreters: manylinux's /opt/python, pyenv, python3.X on PATH."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shutil
import sys
import sysconfig
from pathlib import Path
from typing import Any

from .. import stamp
from ..cmd import probe
from .model import Interpreter

_PROBE = (
    "import importlib.util, json, platform, sys, sysconfig;"
    "print(json.dumps({'version': list(sys.version_info[:3]),"
    " 'implementation': sys.implementation.name,"
    " 'gil_disabled': bool(sysconfig.get_config_var('Py_GIL_DISABLED')),"
    " 'has_pip': importlib.util.find_spec('pip') is not None,"
    " 'libc': platform.libc_ver(), 'executable': sys.executable}))"
)


def _probe_here() -> dict[str, Any]:
    """What _PROBE prints, for the interpreter running prewheel: no process to start."""
    return {
        "version": list(sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "gil_disabled": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "has_pip": importlib.util.find_spec("pip") is not None,
    }


@functools.cache
def probe_interpreter(path: str) -> Interpreter | None:
    if Path(path).absolute() == Path(sys.executable).absolute():
        info = _probe_here()
    else:
        out = probe([path, "-c", _PROBE])
        try:
            info = json.loads(out or "")
        except json.JSONDecodeError:
            return None
    if info["implementation"] != "cpython":
        return None
    return Interpreter(
        path=_itself(Path(path), info.get("executable")),
        version=(info["version"][0], info["version"][1], info["version"][2]),
        implementation=info["implementation"],
        gil_disabled=info["gil_disabled"],
        has_pip=info["has_pip"],
    )


def _itself(path: Path, executable: str | None) -> Path:
    """The interpreter `path` ran: `path` itself, or, where `path` is a script that starts
    one (a pyenv shim: it picks the version from the caller's environment and directory,
    which builds and verification do not share), the interpreter that script started."""
    if not executable or Path(executable) == path:
        return path
    real = Path(executable)
    try:
        with path.open("rb") as fh:
            script = fh.read(2) == b"#!"
    except OSError:
        return path
    return real if script and real.is_file() and os.access(real, os.X_OK) else path


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else -1 for x in re.split(r"[.]", p.parent.parent.name))


def candidates(python: str) -> list[Path]:
    """Where a Python spec ("current", "3.12", "3.13t", a path) may be found, in order."""
    if python == "current":
        return [Path(sys.executable)]
    if "/" in python:
        return [Path(python)]
    m = re.fullmatch(r"(\d)\.(\d+)(t?)", python)
    if not m:
        return []
    major, minor, t = m.groups()
    cands = [Path(f"/opt/python/cp{major}{minor}-cp{major}{minor}{t}/bin/python")]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    versions = Path(pyenv_root) / "versions"
    stamp.watch_path(versions)
    if versions.is_dir():
        found = [
            d / "bin" / "python"
            for d in versions.iterdir()
            if re.fullmatch(rf"{major}\.{minor}\.\d+{t}", d.name)
        ]
        cands += sorted(found, key=_version_key, reverse=True)
    stamp.watch_which(f"python{major}.{minor}{t}")
    on_path = shutil.which(f"python{major}.{minor}{t}")
    if on_path:
        cands.append(Path(on_path))
    return cands


def find_interpreter(python: str) -> tuple[Interpreter | None, str | None]:
    """The interpreter for a Python spec, or None and why not."""
    cands = candidates(python)
    if not cands:
        return None, f"'{python}' is not a Python version (3.12, 3.13t), a path, or 'current'"
    for cand in cands:
        stamp.watch_path(cand)
        if cand.is_file() and os.access(cand, os.X_OK):
            interp = probe_interpreter(str(cand))
            if interp is not None and (
                python in ("current",) or "/" in python or interp.short == python.rstrip("t")
            ):
                return interp, None
    return None, f"no interpreter for Python {python} (looked in: {', '.join(map(str, cands))})"


def discover_interpreters(minimum: tuple[int, int] = (3, 9)) -> list[Interpreter]:
    """Every CPython found (manylinux /opt/python, pyenv, python3.X on PATH), newest patch
    release per minor version and ABI, oldest minor first."""
    found: dict[str, Interpreter] = {}
    for minor in range(minimum[1] if minimum[0] == 3 else 0, 30):
        for t in ("", "t"):
            interp, _ = find_interpreter(f"3.{minor}{t}")
            if interp is not None and interp.version[:2] >= minimum:
                found.setdefault(interp.abi, interp)
    return sorted(found.values(), key=lambda i: (i.version, i.gil_disabled))


def expand_python(python: str) -> list[str]:
    """`3.9+` -> every version found from 3.9 on ("3.9", "3.10", ...); others unchanged."""
    m = re.fullmatch(r"(\d)\.(\d+)\+", python)
    if not m:
        return [python]
    found = discover_interpreters((int(m.group(1)), int(m.group(2))))
    return [i.short + ("t" if i.gil_disabled else "") for i in found] or [python]


def abi_guess(python: str) -> str:
    """The ABI tag a spec names when no interpreter was found for it."""
    m = re.fullmatch(r"(\d)\.(\d+)(t?)", python)
    return f"cp{m.group(1)}{m.group(2)}{m.group(3)}" if m else "py-" + Path(python).name
