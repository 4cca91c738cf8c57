"""The checks after a build that keep each accelerator's index true to its name.

Whether a package varies by accelerator is decided before the build (`stages.classify`).
After the build, three things are checked here:

- a neutral build that links a CUDA library all the same (DT_NEEDED) is recorded as
  CUDA-linked, so later plans key the package per accelerator straight away, and the package
  is built again per accelerator, each build published to its own index only;
- nothing that needs or bundles a CUDA library is listed in the cpu index;
- a CUDA build carries device code for every configured architecture (SASS for each, PTX
  for the `+PTX` ones), and an sdist with CUDA sources did not silently build for the CPU.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import StepError
from ..records import CacheKey, DeviceCode
from ..wheelhouse import Wheelhouse

if TYPE_CHECKING:  # the build library and pyelftools load only when a build runs
    from .. import elf
    from .build import BuildResult

CPU = "cpu"


class LinksCuda(Exception):
    """An accelerator-neutral build linked CUDA libraries: build it per accelerator."""

    def __init__(self, libraries: tuple[str, ...], built: BuildResult) -> None:
        super().__init__(", ".join(libraries))
        self.libraries = libraries
        self.built = built


def cuda_links(elves: list[elf.ElfInfo]) -> tuple[str, ...]:
    """The CUDA libraries a built wheel's shared objects link (or carry)."""
    from .. import elf

    return tuple(elf.cuda_libraries(elves))


def linked_before(wh: Wheelhouse, neutral: CacheKey) -> tuple[str, ...] | None:
    """The CUDA libraries an earlier neutral build under `neutral` was found to link, or
    None when none was."""
    rec = wh.read_record(neutral.key)
    if rec is None or rec.result != "accel-specific":
        return None
    return tuple(f"linked {lib}" for lib in rec.links_cuda) or ("linked CUDA",)


def cpu_listing_error(wheel: str, libraries: Iterable[str], accels: Iterable[str]) -> StepError:
    libs = ", ".join(libraries)
    return StepError(
        f"{wheel} needs or carries CUDA libraries ({libs}): it is not listed in the cpu index "
        f"(the cpu index never holds CUDA); it serves {', '.join(accels) or 'no other index'}",
        step="publish",
        hint="give the cpu accelerator an upstream with CPU builds ([accel.cpu] upstream, "
        "e.g. PyTorch's https://download.pytorch.org/whl/cpu/), or skip the package for cpu",
    )


def device_code(elves: list[elf.ElfInfo]) -> tuple[DeviceCode, ...]:
    """What GPU code each shared object carries, for the build record."""
    return tuple(DeviceCode(path=e.path, sass=e.sass, ptx=e.ptx) for e in elves if e.sass or e.ptx)


def _arch(entry: str) -> tuple[str, bool]:
    """`"9.0a+PTX"` -> (`"9.0a"`, True)."""
    return entry.removesuffix("+PTX"), entry.endswith("+PTX")


def missing_archs(code: tuple[DeviceCode, ...], arch_list: tuple[str, ...]) -> list[str]:
    """For each object with device code: the configured architectures it lacks
    (`"_ext.so: sm_80, compute_120"`). SASS is needed for every entry, PTX for `+PTX` ones."""
    out = []
    for obj in code:
        lacking = []
        for entry in arch_list:
            arch, ptx = _arch(entry)
            if arch not in obj.sass:
                lacking.append("sm_" + _number(arch))
            if ptx and arch not in obj.ptx:
                lacking.append("compute_" + _number(arch))
        if lacking:
            out.append(f"{obj.path}: {', '.join(lacking)}")
    return out


def _number(arch: str) -> str:
    m = re.fullmatch(r"(\d+)\.(\d+)([a-z]?)", arch)
    return f"{m.group(1)}{m.group(2)}{m.group(3)}" if m else arch


def check_device_code(
    *,
    wheel: str,
    accel: str,
    code: tuple[DeviceCode, ...],
    arch_list: tuple[str, ...],
    links: tuple[str, ...],
    cuda_sources: bool,
) -> str | None:
    """Why a CUDA build must not be published, or None. A configured architecture missing
    from an object's device code fails; so does a wheel with no device code and no CUDA
    library from an sdist with CUDA sources (it built for the CPU: its build did not find
    the toolkit, or decided against it)."""
    if not code and not links:
        if cuda_sources:
            return (
                f"{wheel} carries no GPU code and links no CUDA library although the sdist has "
                f"CUDA sources: the {accel} build fell back to a CPU-only build"
            )
        return None
    missing = missing_archs(code, arch_list)
    if missing:
        return (
            f"{wheel} lacks configured CUDA architectures ({'; '.join(missing)}); "
            f"arch list {' '.join(arch_list)}"
        )
    return None


ARCH_HINT = (
    "the build did not honour TORCH_CUDA_ARCH_LIST / CMAKE_CUDA_ARCHITECTURES: pass the list "
    "in the package's own variable ([packages.NAME] env), or set [accel.{accel}] arch_list "
    "to what it builds"
)
