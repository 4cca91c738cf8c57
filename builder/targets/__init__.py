"""Targets: (Python ABI x accelerator x platform policy), and what was found for each.

`model` holds the types; `policy` every manylinux name; `interpreters`, `cuda` and
`compilers` find what a target builds with; `select` resolves the configured matrix;
`images` and `describe` say what a target runs on and how it looks to a user.
"""

from __future__ import annotations

from .cuda import default_arch_list, find_toolkit
from .describe import describe
from .images import python_image, runtime_image
from .interpreters import discover_interpreters, find_interpreter
from .model import Interpreter, Target, Toolkit, target_name
from .policy import ARCH, host_glibc
from .policy import normalize as normalize_policy
from .select import resolve_targets, select_targets

__all__ = [
    "ARCH",
    "Interpreter",
    "Target",
    "Toolkit",
    "default_arch_list",
    "describe",
    "discover_interpreters",
    "find_interpreter",
    "find_toolkit",
    "host_glibc",
    "normalize_policy",
    "python_image",
    "resolve_targets",
    "runtime_image",
    "select_targets",
    "target_name",
]
