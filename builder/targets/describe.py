"""A target described for people and scripts (`prewheel targets`)."""

from __future__ import annotations

from .compilers import c_compiler
from .images import python_image, runtime_image
from .model import Target


def describe(target: Target) -> dict[str, object]:
    return {
        "name": target.name,
        "python": target.spec.python,
        "interpreter": str(target.interpreter.path) if target.interpreter else None,
        "python_version": ".".join(map(str, target.interpreter.version))
        if target.interpreter
        else None,
        "abi": target.interpreter.abi if target.interpreter else None,
        "accel": target.accel,
        "cuda_version": target.cuda_version,
        "toolkit": {
            "cuda_home": str(target.toolkit.cuda_home),
            "nvcc": str(target.toolkit.nvcc),
            "version": target.toolkit.version,
        }
        if target.toolkit
        else None,
        "compiler": c_compiler(),
        "isa": target.isa,
        "toolchain": target.toolchain,
        "arch_list": list(target.arch_list),
        "policy": target.policy,
        "platform_ceiling": target.platform_ceiling,
        "repair_excludes": list(target.repair_excludes),
        "runtime_image": runtime_image(target),
        "python_image": python_image(target),
        "available": target.missing is None,
        "missing": target.missing,
    }
