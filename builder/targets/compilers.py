"""The C compiler builds use: which one, and the version line that goes into cache keys."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping

from .. import stamp
from ..cmd import probe
from ..threads import once


@once
def version_line(exe: str) -> str | None:
    """The first line of `exe --version` (`gcc (Debian 12.2.0-14) 12.2.0`)."""
    out = probe([exe, "--version"])
    return (out.splitlines() or [""])[0].strip() if out else None


def c_compiler(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """The C compiler a build with `env` uses ($CC there, else here, else cc): its path and
    version line; None when there is none."""
    cc = ((env or {}).get("CC") or os.environ.get("CC") or "cc").split()[0]
    stamp.watch_which(cc)
    path = shutil.which(cc)
    if path is None:
        return None
    return {"path": path, "version": version_line(path) or ""}


def compiler_version(env: Mapping[str, str]) -> str | None:
    """The version line of the compiler a build with `env` uses: a new compiler changes the
    bytes, so it is part of the cache key."""
    found = c_compiler(env)
    return found["version"] or None if found else None
