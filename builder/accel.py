"""Which packages vary by accelerator.

A package is built once per (Python, policy) and listed in every accelerator's index, unless
the config marks it `accel_specific` or its built wheel links a CUDA library. That second case
is found after the build, from the wheel's DT_NEEDED: the neutral build is then recorded as
CUDA-linked (so later plans key the package per accelerator straight away) and the package is
built again per accelerator, each build published to its own index only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cachekey import CacheKey, compute
from .config import Config
from .targets import Target
from .wheelfile import is_pure
from .wheelhouse import Wheelhouse, utcnow

if TYPE_CHECKING:  # the build library and pyelftools load only when a build runs
    from .build import BuildResult


class LinksCuda(Exception):
    """An accelerator-neutral build linked CUDA libraries: build it per accelerator."""

    def __init__(self, libraries: list[str], built: BuildResult) -> None:
        super().__init__(", ".join(libraries))
        self.libraries = libraries
        self.built = built


def cuda_links(wheel: Path) -> list[str]:
    """The CUDA libraries a built wheel's objects link (empty for pure wheels)."""
    if is_pure(wheel):
        return []
    from . import elf

    return elf.cuda_libraries(elf.wheel_elves(wheel))


def links_cuda(wh: Wheelhouse, neutral: CacheKey) -> list[str]:
    """What an earlier neutral build under `neutral` was found to link, if it linked CUDA."""
    rec = wh.read_record(neutral.key)
    if rec and rec.get("result") == "accel-specific":
        return list(rec.get("links_cuda") or ())
    return []


def mark_links_cuda(
    wh: Wheelhouse, neutral: CacheKey, libraries: list[str], record: dict[str, Any]
) -> None:
    wh.write_record(
        neutral.key,
        {
            **record,
            "result": "accel-specific",
            "links_cuda": libraries,
            "finished": utcnow(),
            "note": "the accelerator-neutral build linked CUDA; it is built per accelerator",
        },
    )


def key_for(
    *,
    name: str,
    version: str,
    sdist_sha256: str,
    target: Target,
    config: Config,
    wh: Wheelhouse,
) -> CacheKey:
    """The cache key to build under: the neutral one, or the per-accelerator one when an
    earlier neutral build of the same inputs was found to link CUDA."""
    key = compute(
        name=name, version=version, sdist_sha256=sdist_sha256, target=target, config=config
    )
    if key.inputs["accel"] == "any" and links_cuda(wh, key):
        return compute(
            name=name,
            version=version,
            sdist_sha256=sdist_sha256,
            target=target,
            config=config,
            per_accel=True,
        )
    return key
