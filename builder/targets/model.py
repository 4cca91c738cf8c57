"""What a target is: (Python ABI x accelerator x platform policy), and what was found for it."""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging import tags

from ..config import TargetSpec
from . import policy


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


def cuda_version_of(accel: str) -> str | None:
    """`cu130` -> `13.0`; None for `cpu`."""
    if accel == "cpu":
        return None
    digits = accel[2:]
    return f"{digits[:-1]}.{digits[-1]}"


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
    def isa(self) -> str:
        """The oldest x86-64 psABI level its wheels must run on (`x86-64-v2`)."""
        return self.spec.isa

    @property
    def toolchain(self) -> str:
        """`host` or `zig`."""
        return self.spec.toolchain

    @property
    def cuda_version(self) -> str | None:
        return cuda_version_of(self.accel)

    @property
    def platform_ceiling(self) -> str:
        """The newest platform tag this target accepts (`auto`: the host's glibc)."""
        return policy.platforms(self.policy)[0]

    @property
    def python(self) -> str:
        """X.Y, from the interpreter found or, when none was, from the spec."""
        return self.interpreter.short if self.interpreter else self.spec.python

    def tag_set(self) -> list[tags.Tag]:
        """Every tag a wheel may carry to install on this target, most preferred first.
        Computed once per target (a few hundred, asked for every package): do not mutate."""
        return _tag_set(self)

    def accepts(self, wheel_filename: str) -> bool:
        """Whether a wheel of this file name installs on this target."""
        from packaging.utils import parse_wheel_filename

        return bool(set(parse_wheel_filename(wheel_filename)[3]) & _tag_frozenset(self))


@functools.cache
def _tag_set(target: Target) -> list[tags.Tag]:
    assert target.interpreter is not None
    interp = target.interpreter
    platforms = policy.platforms(target.policy)
    pyver = interp.version[:2]
    out = list(tags.cpython_tags(pyver, abis=[interp.abi], platforms=platforms))
    out += list(
        tags.compatible_tags(pyver, interpreter=f"cp{pyver[0]}{pyver[1]}", platforms=platforms)
    )
    return out


@functools.cache
def _tag_frozenset(target: Target) -> frozenset[tags.Tag]:
    return frozenset(_tag_set(target))


def target_name(interp_abi: str, accel: str, policy_name: str) -> str:
    """`cp312-cu130-manylinux_2_28_x86_64`; policy `auto` stays `auto`, so a name means the
    same on every builder whatever its glibc (a plan made on one machine runs on another)."""
    return f"{interp_abi}-{accel}-{policy.normalize(policy_name)}"
