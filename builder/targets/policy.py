"""Platform policies: every manylinux name, alias and glibc version prewheel reads or writes.

`manylinux2014`, `manylinux_2_17`, `manylinux2014_x86_64` and `manylinux_2_17_x86_64` are one
policy; the rest of prewheel asks this module instead of parsing such names itself.
"""

from __future__ import annotations

import functools
import json
import platform
import re
from importlib.resources import files
from typing import Any

ARCH = platform.machine() or "x86_64"
# The legacy names PEP 600 keeps, by the glibc they stand for.
LEGACY = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
_LEGACY_BY_MINOR = {minor: name for name, (_, minor) in LEGACY.items()}
_PEP600 = re.compile(r"(many|musl)linux_(\d+)_(\d+)")


def host_glibc() -> tuple[int, int]:
    """This machine's glibc (2.17 when it cannot tell, as on musl)."""
    name, ver = platform.libc_ver()
    if name != "glibc" or not ver:
        return (2, 17)
    major, minor = ver.split(".")[:2]
    return int(major), int(minor)


def base(policy: str) -> str:
    """`manylinux_2_17_x86_64` -> `manylinux_2_17`; aliases and bases pass through."""
    return re.sub(rf"_{ARCH}$", "", policy)


def normalize(policy: str) -> str:
    """`manylinux2014`, `manylinux_2_17`, `manylinux2014_x86_64` -> `manylinux_2_17_x86_64`;
    `auto` stays `auto`."""
    if policy == "auto":
        return policy
    b = base(policy)
    if b in LEGACY:
        major, minor = LEGACY[b]
        return f"manylinux_{major}_{minor}_{ARCH}"
    if _PEP600.fullmatch(b):
        return f"{b}_{ARCH}"
    return policy


def glibc_of(policy: str) -> tuple[int, int] | None:
    """The glibc a manylinux policy (any spelling, platform tag or name) stands for."""
    b = base(policy)
    if b in LEGACY:
        return LEGACY[b]
    m = _PEP600.fullmatch(b)
    if m and m.group(1) == "many":
        return int(m.group(2)), int(m.group(3))
    return None


def platforms(policy: str) -> list[str]:
    """Platform tags a target accepts: its policy and every older manylinux, newest first
    (`auto`: up to this host's glibc)."""
    if policy == "auto":
        major, minor = host_glibc()
    else:
        found = glibc_of(policy)
        if found is None:
            return [policy]
        major, minor = found
    out: list[str] = []
    for m in range(minor, 4, -1):
        out.append(f"manylinux_{major}_{m}_{ARCH}")
        legacy = _LEGACY_BY_MINOR.get(m)
        if legacy:
            out.append(f"{legacy}_{ARCH}")
    return out


def platform_tag(glibc: tuple[int, int]) -> str:
    return f"manylinux_{glibc[0]}_{glibc[1]}_{ARCH}"


@functools.lru_cache(maxsize=1)
def auditwheel_policies() -> dict[str, dict[str, Any]]:
    """auditwheel's own policy table, by name and by alias (`manylinux2014`)."""
    raw = json.loads(files("auditwheel.policy").joinpath("manylinux-policy.json").read_text())
    out: dict[str, dict[str, Any]] = {}
    for pol in raw:
        for name in (pol["name"], *pol["aliases"]):
            out[name] = pol
    return out


def allowed_versions(policy: str) -> dict[str, set[str]] | None:
    """Symbol versions `policy` allows, per prefix (GLIBC, GLIBCXX, CXXABI, GCC, ...)."""
    pol = auditwheel_policies().get(base(policy))
    if pol is None:
        return None
    return {k: set(v) for k, v in pol["symbol_versions"].get(ARCH, {}).items()}


def by_age() -> list[str]:
    """auditwheel's manylinux policies, oldest first, as platform tags."""
    names = {p["name"] for p in auditwheel_policies().values() if glibc_of(p["name"])}
    return [f"{n}_{ARCH}" for n in sorted(names, key=lambda n: glibc_of(n) or (0, 0))]
