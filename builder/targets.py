"""Targets: (Python ABI x accelerator x platform policy), with the interpreter and toolkit found."""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from packaging import tags

from .config import CUDA_EXCLUDES, Config, TargetSpec

ARCH = platform.machine() or "x86_64"
_PROBE = (
    "import importlib.util, json, platform, sys, sysconfig;"
    "print(json.dumps({'version': list(sys.version_info[:3]),"
    " 'implementation': sys.implementation.name,"
    " 'gil_disabled': bool(sysconfig.get_config_var('Py_GIL_DISABLED')),"
    " 'has_pip': importlib.util.find_spec('pip') is not None,"
    " 'libc': platform.libc_ver(), 'executable': sys.executable}))"
)
DEFAULT_ARCH_LIST = ("7.5", "8.0", "8.6", "8.9", "9.0", "10.0", "12.0+PTX")


@dataclass(frozen=True, kw_only=True)
class Interpreter:
    path: Path
    version: tuple[int, int, int]
    implementation: str
    gil_disabled: bool
    has_pip: bool = True

    def pip(self, python: Path | None = None) -> list[str]:
        """Run pip for `python` (a venv of this interpreter; default: itself).

        Uses this interpreter's own pip where it has one, else ours with `--python`.
        """
        if self.has_pip:
            return [str(self.path), "-m", "pip", *(["--python", str(python)] if python else [])]
        return [sys.executable, "-m", "pip", "--python", str(python or self.path)]

    @property
    def abi(self) -> str:
        return f"cp{self.version[0]}{self.version[1]}" + ("t" if self.gil_disabled else "")

    @property
    def short(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"


@dataclass(frozen=True, kw_only=True)
class Toolkit:
    cuda_home: Path
    nvcc: Path
    version: str  # as nvcc reports it, e.g. "13.0"


@dataclass(frozen=True, kw_only=True)
class Target:
    name: str
    spec: TargetSpec
    interpreter: Interpreter | None
    toolkit: Toolkit | None
    arch_list: tuple[str, ...]
    repair_excludes: tuple[str, ...]
    missing: str | None  # why this target cannot be built, or None

    @property
    def accel(self) -> str:
        return self.spec.accel

    @property
    def policy(self) -> str:
        return self.spec.policy

    @property
    def cuda_version(self) -> str | None:
        return _cuda_version_of(self.accel)

    def tag_set(self) -> list[tags.Tag]:
        """Every tag a wheel may carry to install on this target, most preferred first."""
        assert self.interpreter is not None
        interp = self.interpreter
        platforms = policy_platforms(self.policy)
        pyver = interp.version[:2]
        out = list(tags.cpython_tags(pyver, abis=[interp.abi], platforms=platforms))
        out += list(
            tags.compatible_tags(pyver, interpreter=f"cp{pyver[0]}{pyver[1]}", platforms=platforms)
        )
        return out

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "python": self.spec.python,
            "interpreter": str(self.interpreter.path) if self.interpreter else None,
            "python_version": ".".join(map(str, self.interpreter.version))
            if self.interpreter
            else None,
            "abi": self.interpreter.abi if self.interpreter else None,
            "accel": self.accel,
            "cuda_version": self.cuda_version,
            "toolkit": {
                "cuda_home": str(self.toolkit.cuda_home),
                "nvcc": str(self.toolkit.nvcc),
                "version": self.toolkit.version,
            }
            if self.toolkit
            else None,
            "arch_list": list(self.arch_list),
            "policy": self.policy,
            "runtime_image": runtime_image(self),
            "available": self.missing is None,
            "missing": self.missing,
        }


def host_glibc() -> tuple[int, int]:
    name, ver = platform.libc_ver()
    if name != "glibc" or not ver:
        return (2, 17)
    major, minor = ver.split(".")[:2]
    return int(major), int(minor)


def policy_platforms(policy: str) -> list[str]:
    """Platform tags a target accepts: its policy and every older manylinux, newest first."""
    if policy == "auto":
        major, minor = host_glibc()
    else:
        m = re.fullmatch(r"manylinux_(\d+)_(\d+)_\w+", policy)
        if not m:
            aliases = {"manylinux2014": 17, "manylinux2010": 12, "manylinux1": 5}
            base = policy.split("_x86_64")[0].split("_aarch64")[0]
            if base not in aliases:
                return [policy]
            major, minor = 2, aliases[base]
        else:
            major, minor = int(m.group(1)), int(m.group(2))
    plats: list[str] = []
    for m_ in range(minor, 4, -1):
        plats.append(f"manylinux_{major}_{m_}_{ARCH}")
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}.get(m_)
        if legacy:
            plats.append(f"{legacy}_{ARCH}")
    return plats


def target_name(interp_abi: str, accel: str, policy: str) -> str:
    pol = policy if policy == "auto" or policy.endswith(ARCH) else f"{policy}_{ARCH}"
    return f"{interp_abi}-{accel}-{pol}"


def _cuda_version_of(accel: str) -> str | None:
    if accel == "cpu":
        return None
    digits = accel[2:]
    return f"{digits[:-1]}.{digits[-1]}"


@functools.lru_cache(maxsize=None)
def probe_interpreter(path: str) -> Interpreter | None:
    try:
        out = subprocess.run(
            [path, "-c", _PROBE], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        info = json.loads(out)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return None
    if info["implementation"] != "cpython":
        return None
    return Interpreter(
        path=Path(path),
        version=tuple(info["version"]),  # type: ignore[arg-type]
        implementation=info["implementation"],
        gil_disabled=info["gil_disabled"],
        has_pip=info["has_pip"],
    )


def _version_key(p: Path) -> tuple[int, ...]:
    return tuple(int(x) if x.isdigit() else -1 for x in re.split(r"[.]", p.parent.parent.name))


def interpreter_candidates(python: str) -> list[Path]:
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
    if versions.is_dir():
        found = [
            d / "bin" / "python"
            for d in versions.iterdir()
            if re.fullmatch(rf"{major}\.{minor}\.\d+{t}", d.name)
        ]
        cands += sorted(found, key=_version_key, reverse=True)
    on_path = shutil.which(f"python{major}.{minor}{t}")
    if on_path:
        cands.append(Path(on_path))
    return cands


def find_interpreter(python: str) -> tuple[Interpreter | None, str | None]:
    cands = interpreter_candidates(python)
    if not cands:
        return None, f"'{python}' is not a Python version (3.12, 3.13t), a path, or 'current'"
    for cand in cands:
        if cand.is_file() and os.access(cand, os.X_OK):
            interp = probe_interpreter(str(cand))
            if interp is not None and (
                python in ("current",) or "/" in python or interp.short == python.rstrip("t")
            ):
                return interp, None
    return None, f"no interpreter for Python {python} (looked in: {', '.join(map(str, cands))})"


def find_toolkit(accel: str, cuda_home: str | None) -> tuple[Toolkit | None, str | None]:
    want = _cuda_version_of(accel)
    homes = (
        [Path(cuda_home)]
        if cuda_home
        else [
            Path(f"/usr/local/cuda-{want}"),
            Path("/usr/local/cuda"),
        ]
    )
    for home in homes:
        nvcc = home / "bin" / "nvcc"
        if not nvcc.is_file():
            continue
        version = nvcc_version(str(nvcc))
        if version is None:
            continue
        if version != want:
            if cuda_home:
                return None, f"nvcc at {nvcc} is CUDA {version}, but {accel} needs CUDA {want}"
            continue
        return Toolkit(cuda_home=home, nvcc=nvcc, version=version), None
    return None, f"no CUDA {want} toolkit found (looked in: {', '.join(map(str, homes))})"


@functools.lru_cache(maxsize=None)
def nvcc_version(nvcc: str) -> str | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


def resolve_targets(config: Config) -> list[Target]:
    """Every configured target, with what was found for it or why it is missing."""
    out: dict[str, Target] = {}
    for spec in config.targets:
        interp, missing = find_interpreter(spec.python)
        toolkit = None
        acc = config.accel(spec.accel)
        if spec.accel != "cpu" and missing is None:
            toolkit, missing = find_toolkit(spec.accel, acc.cuda_home)
        abi = interp.abi if interp else _abi_guess(spec.python)
        name = target_name(abi, spec.accel, spec.policy)
        excludes: tuple[str, ...] = ()
        arch_list: tuple[str, ...] = ()
        if spec.accel != "cpu":
            excludes = tuple(dict.fromkeys(CUDA_EXCLUDES + acc.exclude))
            arch_list = acc.arch_list or DEFAULT_ARCH_LIST
        out.setdefault(
            name,
            Target(
                name=name,
                spec=spec,
                interpreter=interp,
                toolkit=toolkit,
                arch_list=arch_list,
                repair_excludes=excludes,
                missing=missing,
            ),
        )
    return list(out.values())


def _abi_guess(python: str) -> str:
    m = re.fullmatch(r"(\d)\.(\d+)(t?)", python)
    return f"cp{m.group(1)}{m.group(2)}{m.group(3)}" if m else "py-" + Path(python).name


def select_targets(targets: list[Target], patterns: tuple[str, ...]) -> list[Target]:
    """Targets matching any name or glob in `patterns`; all when none is given."""
    if not patterns:
        return targets
    return [t for t in targets if any(fnmatchcase(t.name, p) for p in patterns)]


def runtime_image(target: Target) -> str:
    py = target.interpreter.short if target.interpreter else target.spec.python
    if target.accel == "cpu":
        return f"python:{py}-slim"
    return f"nvidia/cuda:{target.cuda_version}.0-runtime-ubuntu24.04"
