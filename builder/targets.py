"""Targets: (Python ABI x accelerator x platform policy), with the interpreter and toolkit found."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from packaging import tags

from . import noop
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
# Default CUDA architectures per toolkit (as PyTorch builds its wheels): real code for each,
# plus PTX for the newest, so GPUs newer than the toolkit still run it by JIT.
DEFAULT_ARCH_LISTS: dict[tuple[int, int], tuple[str, ...]] = {
    (11, 8): ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0+PTX"),
    (12, 0): ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0+PTX"),
    (12, 8): ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0+PTX"),
    (13, 0): ("7.5", "8.0", "8.6", "9.0", "10.0", "11.0", "12.0+PTX"),
}
DEFAULT_ARCH_LIST = DEFAULT_ARCH_LISTS[(13, 0)]


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

    @property
    def platform_ceiling(self) -> str:
        """The newest platform tag this target accepts (`auto`: the host's glibc)."""
        return policy_platforms(self.policy)[0]

    def tag_set(self) -> list[tags.Tag]:
        """Every tag a wheel may carry to install on this target, most preferred first.
        Computed once per target (a few hundred, asked for every package): do not mutate."""
        return _tag_set(self)

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
            "compiler": c_compiler(),
            "arch_list": list(self.arch_list),
            "policy": self.policy,
            "platform_ceiling": self.platform_ceiling,
            "repair_excludes": list(self.repair_excludes),
            "runtime_image": runtime_image(self),
            "python_image": python_image(self),
            "available": self.missing is None,
            "missing": self.missing,
        }


@functools.cache
def _tag_set(target: Target) -> list[tags.Tag]:
    assert target.interpreter is not None
    interp = target.interpreter
    platforms = policy_platforms(target.policy)
    pyver = interp.version[:2]
    out = list(tags.cpython_tags(pyver, abis=[interp.abi], platforms=platforms))
    out += list(
        tags.compatible_tags(pyver, interpreter=f"cp{pyver[0]}{pyver[1]}", platforms=platforms)
    )
    return out


@functools.cache
def c_compiler() -> dict[str, str] | None:
    """The C compiler builds will use ($CC, else cc) and its version line."""
    cc = (os.environ.get("CC") or "cc").split()[0]
    noop.watch_which(cc)
    path = shutil.which(cc)
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return {"path": path, "version": (out.splitlines() or [""])[0].strip()}


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


_LEGACY_POLICIES = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}


def normalize_policy(policy: str) -> str:
    """`manylinux2014`, `manylinux_2_17`, `manylinux2014_x86_64` -> `manylinux_2_17_x86_64`."""
    if policy == "auto":
        return policy
    base = policy.removesuffix(f"_{ARCH}")
    if base in _LEGACY_POLICIES:
        major, minor = _LEGACY_POLICIES[base]
        return f"manylinux_{major}_{minor}_{ARCH}"
    if re.fullmatch(r"(many|musl)linux_\d+_\d+", base):
        return f"{base}_{ARCH}"
    return policy


def target_name(interp_abi: str, accel: str, policy: str) -> str:
    """`cp312-cu130-manylinux_2_28_x86_64`; policy `auto` stays `auto`, so a name means the
    same on every builder whatever its glibc (a plan made on one machine runs on another)."""
    return f"{interp_abi}-{accel}-{normalize_policy(policy)}"


def _cuda_version_of(accel: str) -> str | None:
    if accel == "cpu":
        return None
    digits = accel[2:]
    return f"{digits[:-1]}.{digits[-1]}"


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
    try:
        if Path(path).absolute() == Path(sys.executable).absolute():
            info = _probe_here()
        else:
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
        version=(info["version"][0], info["version"][1], info["version"][2]),
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
    noop.watch_path(versions)
    if versions.is_dir():
        found = [
            d / "bin" / "python"
            for d in versions.iterdir()
            if re.fullmatch(rf"{major}\.{minor}\.\d+{t}", d.name)
        ]
        cands += sorted(found, key=_version_key, reverse=True)
    noop.watch_which(f"python{major}.{minor}{t}")
    on_path = shutil.which(f"python{major}.{minor}{t}")
    if on_path:
        cands.append(Path(on_path))
    return cands


def find_interpreter(python: str) -> tuple[Interpreter | None, str | None]:
    cands = interpreter_candidates(python)
    if not cands:
        return None, f"'{python}' is not a Python version (3.12, 3.13t), a path, or 'current'"
    for cand in cands:
        noop.watch_path(cand)
        if cand.is_file() and os.access(cand, os.X_OK):
            interp = probe_interpreter(str(cand))
            if interp is not None and (
                python in ("current",) or "/" in python or interp.short == python.rstrip("t")
            ):
                return interp, None
    return None, f"no interpreter for Python {python} (looked in: {', '.join(map(str, cands))})"


def toolkit_homes(accel: str, cuda_home: str | None) -> list[Path]:
    """Where the toolkit for `accel` may be: the configured home, else the usual places."""
    if cuda_home:
        return [Path(cuda_home)]
    want = _cuda_version_of(accel)
    homes = [Path(f"/usr/local/cuda-{want}")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            homes.append(Path(os.environ[var]))
    homes.append(Path("/usr/local/cuda"))
    noop.watch_which("nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        homes.append(Path(on_path).resolve().parent.parent)
    return list(dict.fromkeys(homes))


def find_toolkit(accel: str, cuda_home: str | None) -> tuple[Toolkit | None, str | None]:
    """The CUDA toolkit whose nvcc reports the variant's version (13.0 for cu130).

    A configured `cuda_home` whose nvcc reports another version is an error naming both.
    """
    want = _cuda_version_of(accel)
    seen: list[str] = []
    for home in toolkit_homes(accel, cuda_home):
        nvcc = home / "bin" / "nvcc"
        noop.watch_path(nvcc)
        if not nvcc.is_file():
            seen.append(f"{home} (no bin/nvcc)")
            continue
        version = nvcc_version(str(nvcc))
        if version is None:
            seen.append(f"{nvcc} (does not report a version)")
            continue
        if version != want:
            if cuda_home:
                return None, (
                    f"nvcc version mismatch: {nvcc} is CUDA {version}, but {accel} needs "
                    f"CUDA {want} (fix accel.{accel}.cuda_home)"
                )
            seen.append(f"{nvcc} is CUDA {version}")
            continue
        return Toolkit(cuda_home=home, nvcc=nvcc, version=version), None
    return None, f"no CUDA {want} toolkit for {accel} (looked at: {'; '.join(seen)})"


@functools.cache
def nvcc_version(nvcc: str) -> str | None:
    try:
        out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else None


@functools.cache
def nvcc_archs(nvcc: str) -> tuple[str, ...]:
    """The architectures nvcc can compile for, as "8.0", "12.0" (empty when it cannot say)."""
    try:
        out = subprocess.run(
            [nvcc, "--list-gpu-arch"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    found = [m.group(1) for m in re.finditer(r"compute_(\d+)", out)]
    return tuple(f"{int(n[:-1])}.{n[-1]}" for n in found)


def default_arch_list(cuda_version: str, supported: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The default list for a toolkit version, kept to what its nvcc supports, with PTX for
    the newest architecture."""
    ver = tuple(int(x) for x in cuda_version.split("."))
    base = DEFAULT_ARCH_LIST
    for since, archs in sorted(DEFAULT_ARCH_LISTS.items()):
        if ver >= since:
            base = archs
    plain = [a.replace("+PTX", "") for a in base]
    if supported:
        plain = [a for a in plain if a in supported] or [supported[-1]]
    plain.sort(key=_arch_key)
    return (*plain[:-1], plain[-1] + "+PTX")


def _arch_key(arch: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", arch))


def check_arch_list(
    arch_list: tuple[str, ...], supported: tuple[str, ...], nvcc: Path
) -> str | None:
    """Why `arch_list` cannot be built with this nvcc, or None."""
    bad = []
    for arch in arch_list:
        m = re.fullmatch(r"(\d+\.\d+)([a-f]?)(\+PTX)?", arch)
        if not m:
            bad.append(f"'{arch}' (expected like 8.0, 9.0a or 12.0+PTX)")
        elif supported and m.group(1) not in supported:
            bad.append(f"{arch} (not supported by {nvcc}, which knows {', '.join(supported)})")
    return f"arch_list: {'; '.join(bad)}" if bad else None


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


def resolve_targets(config: Config) -> list[Target]:
    """Every configured target, with what was found for it or why it is missing."""
    out: dict[str, Target] = {}
    for raw_spec in config.targets:
        for python in expand_python(raw_spec.python):
            spec = replace(raw_spec, python=python, policy=normalize_policy(raw_spec.policy))
            target = _resolve(spec, config)
            out.setdefault(target.name, target)
    return list(out.values())


def _resolve(spec: TargetSpec, config: Config) -> Target:
    interp: Interpreter | None = None
    missing: str | None = f"no CPython {spec.python} found"
    if not re.fullmatch(r"\d\.\d+\+", spec.python):
        interp, missing = find_interpreter(spec.python)
    toolkit = None
    acc = config.accel(spec.accel)
    # The driver is never grafted, on any target: it belongs to the host.
    excludes: tuple[str, ...] = tuple(dict.fromkeys(("libcuda.so.1", *acc.exclude)))
    arch_list: tuple[str, ...] = ()
    if spec.accel != "cpu":
        excludes = tuple(dict.fromkeys(CUDA_EXCLUDES + acc.exclude))
        toolkit, why = find_toolkit(spec.accel, acc.cuda_home)
        missing = missing or why
        supported = nvcc_archs(str(toolkit.nvcc)) if toolkit else ()
        arch_list = acc.arch_list or default_arch_list(
            _cuda_version_of(spec.accel) or "", supported
        )
        if toolkit is not None and acc.arch_list:
            missing = missing or check_arch_list(acc.arch_list, supported, toolkit.nvcc)
    abi = interp.abi if interp else _abi_guess(spec.python)
    return Target(
        name=target_name(abi, spec.accel, spec.policy),
        spec=spec,
        interpreter=interp,
        toolkit=toolkit,
        arch_list=arch_list,
        repair_excludes=excludes,
        missing=missing,
    )


def _abi_guess(python: str) -> str:
    m = re.fullmatch(r"(\d)\.(\d+)(t?)", python)
    return f"cp{m.group(1)}{m.group(2)}{m.group(3)}" if m else "py-" + Path(python).name


def select_targets(targets: list[Target], patterns: tuple[str, ...]) -> list[Target]:
    """Targets matching any name or glob in `patterns`; all when none is given.

    A target with policy `auto` also answers to the name with its platform ceiling on this
    host (`cp312-cpu-manylinux_2_36_x86_64`).
    """
    if not patterns:
        return targets
    return [
        t
        for t in targets
        if any(fnmatchcase(n, p) for p in patterns for n in (t.name, *_aliases(t)))
    ]


def _aliases(target: Target) -> tuple[str, ...]:
    if target.policy != "auto":
        return ()
    abi = target.name.split("-", 1)[0]
    return (f"{abi}-{target.accel}-{target.platform_ceiling}",)


# The CUDA runtime images (nvidia/cuda:<version>-runtime-<os>) per toolkit: first patch
# release, which every variant has; Ubuntu 24.04 from CUDA 12.5 on (its python3 is 3.12),
# else 22.04 (python3.10).
def runtime_image(target: Target) -> str:
    """The base image a runtime stage for this target starts from."""
    if target.accel == "cpu":
        return python_image(target)
    ver = target.cuda_version or "0.0"
    major, minor = (int(x) for x in ver.split("."))
    py = target.interpreter.short if target.interpreter else target.spec.python
    ubuntu = "ubuntu24.04" if (major, minor) >= (12, 5) and py != "3.10" else "ubuntu22.04"
    return f"nvidia/cuda:{ver}.0-runtime-{ubuntu}"


def python_image(target: Target) -> str:
    py = target.interpreter.short if target.interpreter else target.spec.python
    return f"python:{py}-slim"
