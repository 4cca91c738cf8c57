"""The configured targets, with what was found for each, and choosing among them."""

from __future__ import annotations

import re
from dataclasses import replace
from fnmatch import fnmatchcase

from ..config import CUDA_EXCLUDES, Config, TargetSpec
from ..threads import in_threads
from . import policy
from .cuda import check_arch_list, default_arch_list, find_toolkit, nvcc_archs
from .interpreters import abi_guess, expand_python, find_interpreter
from .model import Interpreter, Target, Toolkit, cuda_version_of, target_name


def resolve_targets(config: Config) -> list[Target]:
    """Every configured target, with what was found for it or why it is missing.

    Finding a target runs its interpreter (and nvcc) to ask what it is: tens of milliseconds
    each, before anything else of a run can start, so the targets are found side by side
    (each in a copy of this context: the no-op stamp's recorder watches what they read)."""
    specs = [
        replace(raw_spec, python=python, policy=policy.normalize(raw_spec.policy))
        for raw_spec in config.targets
        for python in expand_python(raw_spec.python)
    ]
    found = in_threads(lambda s: _resolve(s, config), specs, 8)
    out: dict[str, Target] = {}
    for target in found:
        out.setdefault(target.name, target)
    return list(out.values())


def _resolve(spec: TargetSpec, config: Config) -> Target:
    interp: Interpreter | None = None
    missing: str | None = f"no CPython {spec.python} found"
    if not re.fullmatch(r"\d\.\d+\+", spec.python):
        interp, missing = find_interpreter(spec.python)
    toolkit: Toolkit | None = None
    acc = config.accel(spec.accel)
    # The driver is never grafted, on any target: it belongs to the host.
    excludes: tuple[str, ...] = tuple(dict.fromkeys(("libcuda.so.1", *acc.exclude)))
    arch_list: tuple[str, ...] = ()
    if spec.accel != "cpu":
        excludes = tuple(dict.fromkeys(CUDA_EXCLUDES + acc.exclude))
        toolkit, why = find_toolkit(spec.accel, acc.cuda_home)
        missing = missing or why
        supported = nvcc_archs(str(toolkit.nvcc)) if toolkit else ()
        arch_list = acc.arch_list or default_arch_list(cuda_version_of(spec.accel) or "", supported)
        if toolkit is not None and acc.arch_list:
            missing = missing or check_arch_list(acc.arch_list, supported, toolkit.nvcc)
    abi = interp.abi if interp else abi_guess(spec.python)
    return Target(
        name=target_name(abi, spec.accel, spec.policy),
        spec=spec,
        interpreter=interp,
        toolkit=toolkit,
        arch_list=arch_list,
        repair_excludes=excludes,
        missing=missing,
    )


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
