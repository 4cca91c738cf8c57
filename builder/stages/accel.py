"""Which packages vary by accelerator.

A package is built once per (Python, policy) and listed in every accelerator's index, unless
the config marks it `accel_specific` or its built wheel links a CUDA library. That second case
is found after the build, from the wheel's DT_NEEDED: the neutral build is then recorded as
CUDA-linked (so later plans key the package per accelerator straight away) and the package is
built again per accelerator, each build published to its own index only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..records import CacheKey
from ..wheelhouse import Wheelhouse

if TYPE_CHECKING:  # the build library and pyelftools load only when a build runs
    from .. import elf
    from .build import BuildResult


class LinksCuda(Exception):
    """An accelerator-neutral build linked CUDA libraries: build it per accelerator."""

    def __init__(self, libraries: tuple[str, ...], built: BuildResult) -> None:
        super().__init__(", ".join(libraries))
        self.libraries = libraries
        self.built = built


def cuda_links(elves: list[elf.ElfInfo]) -> tuple[str, ...]:
    """The CUDA libraries a built wheel's shared objects link."""
    from .. import elf

    return tuple(elf.cuda_libraries(elves))


def linked_before(wh: Wheelhouse, neutral: CacheKey) -> bool:
    """Whether an earlier neutral build under `neutral` was found to link CUDA."""
    rec = wh.read_record(neutral.key)
    return rec is not None and rec.result == "accel-specific"
