"""The cache key: a digest of everything that can change a built wheel's bytes."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from . import RECIPE_VERSION, noop
from .config import Config
from .targets import ARCH, Target

# The part of the key a pure wheel does not depend on is called the source key: a pure
# wheel built for one Python serves every Python its metadata allows.
_TARGET_FIELDS = ("interpreter", "policy", "arch", "accel", "toolkit", "arch_list", "compiler")


@dataclass(frozen=True, kw_only=True)
class CacheKey:
    key: str
    source_key: str
    inputs: dict[str, Any]

    @property
    def short(self) -> str:
        return self.key[:12]


def _digest(data: dict[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def repair_options(target: Target, config: Config) -> dict[str, Any]:
    return {
        "plat": target.policy,
        "strip": config.strip,
        "exclude": sorted(target.repair_excludes),
    }


@functools.cache
def _version_line(exe: str) -> str | None:
    try:
        out = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def _file_sha256(path: str, *, missing_ok: bool = False) -> str | None:
    data = noop.watch_file(path)
    if data is None:
        if missing_ok:
            return None
        raise FileNotFoundError(path)
    return hashlib.sha256(data).hexdigest()


def toolkit_version(nvcc: Path, fallback: str) -> str:
    """nvcc's full version as it reports itself (`13.0.88`), not the release a config names."""
    out = _version_line(str(nvcc)) or ""
    m = re.search(r"\bV(\d+(?:\.\d+)+)", out)
    return m.group(1) if m else fallback


def compiler_version(env: dict[str, str]) -> str | None:
    """The first line of `$CC --version` (`cc` by default): a new compiler changes the bytes."""
    cc = env.get("CC") or os.environ.get("CC") or "cc"
    noop.watch_which(cc.split()[0])
    exe = shutil.which(cc.split()[0])
    if exe is None:
        return None
    out = _version_line(exe)
    return out.splitlines()[0].strip() if out else None


def compute(
    *,
    name: str,
    version: str,
    sdist_sha256: str,
    target: Target,
    config: Config,
    per_accel: bool = False,
) -> CacheKey:
    """The key for building `name` for `target`. Accelerator-neutral (accel "any") unless the
    package is accelerator-specific (config, or `per_accel` once a build was found to link
    CUDA): then each accelerator, cpu included, has its own key and its own index entry."""
    assert target.interpreter is not None
    pkg = config.package(name)
    per_accel = per_accel or pkg.accel_specific
    constraints = None
    if config.build_constraints:
        constraints = _file_sha256(config.build_constraints, missing_ok=True)
    inputs: dict[str, Any] = {
        "recipe": RECIPE_VERSION,
        "name": name,
        "version": version,
        "sdist_sha256": sdist_sha256,
        "env": dict(sorted(pkg.env.items())),
        "config_settings": dict(sorted(pkg.config_settings.items())),
        "build_requires": sorted(pkg.build_requires),
        "build_constraints_sha256": constraints,
        "patches_sha256": [_file_sha256(p) for p in pkg.patches],
        "auditwheel": dist_version("auditwheel"),
        "repair": repair_options(target, config),
        "interpreter": {
            "implementation": target.interpreter.implementation,
            "version": ".".join(map(str, target.interpreter.version)),
            "abi": target.interpreter.abi,
        },
        "policy": target.policy,
        "arch": ARCH,
        "accel": target.accel if per_accel else "any",
        "toolkit": (
            toolkit_version(target.toolkit.nvcc, target.toolkit.version)
            if per_accel and target.toolkit
            else None
        ),
        "arch_list": list(target.arch_list) if per_accel and target.toolkit else None,
        "compiler": compiler_version(dict(pkg.env)),
    }
    if not per_accel:
        # Repair options for an accelerator-neutral build are the cpu ones.
        inputs["repair"] = {**inputs["repair"], "exclude": []}
    source = {k: v for k, v in inputs.items() if k not in _TARGET_FIELDS and k != "repair"}
    return CacheKey(key=_digest(inputs), source_key="src-" + _digest(source), inputs=inputs)


def build_tag(key: CacheKey, when: float) -> str:
    """A wheel build tag that sorts newer for later builds and names the key."""
    return f"{int(when)}_{key.short}"
