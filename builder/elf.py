"""What the shared objects inside a wheel link against: DT_NEEDED and versioned symbols.

Read with pyelftools (auditwheel's own ELF reader), straight from the zip, so a built wheel
can be checked before and after repair without unpacking it on disk.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.dynamic import DynamicSection
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection
from elftools.elf.sections import SymbolTableSection

_ELF_MAGIC = b"\x7fELF"

# Libraries that make a wheel CUDA-specific when linked. The driver (`libcuda.so.1`) and
# every runtime / math library of the toolkit, cuDNN and NCCL.
CUDA_LIBRARY_PATTERNS = (
    "libcuda.so*",
    "libcudart*.so*",
    "libcublas*.so*",
    "libcufft*.so*",
    "libcurand*.so*",
    "libcusparse*.so*",
    "libcusolver*.so*",
    "libcupti*.so*",
    "libnvrtc*.so*",
    "libnvJitLink*.so*",
    "libnpp*.so*",
    "libnvjpeg*.so*",
    "libcudnn*.so*",
    "libnccl*.so*",
    "libnvToolsExt*.so*",
)


@dataclass(frozen=True, kw_only=True)
class ElfInfo:
    """One shared object in a wheel."""

    path: str  # inside the wheel
    needed: tuple[str, ...]  # DT_NEEDED, in order
    # (library, version, symbol) for every versioned undefined symbol, e.g.
    # ("libc.so.6", "GLIBC_2.34", "pthread_create")
    versioned: tuple[tuple[str, str, str], ...]


def wheel_elves(wheel: Path) -> list[ElfInfo]:
    """Every ELF file in `wheel`, read in memory."""
    out: list[ElfInfo] = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith((".py", ".pyc", ".txt", ".json")):
                continue
            with zf.open(info) as fh:
                if fh.read(4) != _ELF_MAGIC:
                    continue
            data = zf.read(info)
            try:
                out.append(read_elf(info.filename, data))
            except ELFError:
                continue
    return out


def read_elf(name: str, data: bytes) -> ElfInfo:
    elf = ELFFile(io.BytesIO(data))
    needed: list[str] = []
    dyn = elf.get_section_by_name(".dynamic")
    if isinstance(dyn, DynamicSection):
        for tag in dyn.iter_tags():
            kind = tag.entry.d_tag
            if kind == "DT_NEEDED":
                needed.append(str(getattr(tag, "needed", "")))
    return ElfInfo(
        path=name,
        needed=tuple(needed),
        versioned=tuple(_versioned_symbols(elf)),
    )


def _versioned_symbols(elf: ELFFile) -> Iterator[tuple[str, str, str]]:
    verneed = elf.get_section_by_name(".gnu.version_r")
    versym = elf.get_section_by_name(".gnu.version")
    dynsym = elf.get_section_by_name(".dynsym")
    if not isinstance(verneed, GNUVerNeedSection):
        return
    # version index -> (library, version name)
    index: dict[int, tuple[str, str]] = {}
    for need, auxes in verneed.iter_versions():
        for aux in auxes:
            index[aux.entry["vna_other"]] = (str(need.name), str(aux.name))
    seen: set[tuple[str, str, str]] = set()
    if isinstance(versym, GNUVerSymSection) and isinstance(dynsym, SymbolTableSection):
        for i, sym in enumerate(dynsym.iter_symbols()):
            if sym["st_shndx"] != "SHN_UNDEF" or not sym.name:
                continue
            ndx = versym.get_symbol(i)["ndx"]
            if isinstance(ndx, int) and (ndx & 0x7FFF) in index:
                lib, ver = index[ndx & 0x7FFF]
                seen.add((lib, ver, sym.name))
    # Versions required with no symbol found for them still count.
    named = {(lib, ver) for lib, ver, _ in seen}
    for lib, ver in index.values():
        if (lib, ver) not in named:
            seen.add((lib, ver, ""))
    yield from sorted(seen)


def matches_any(library: str, patterns: Iterable[str]) -> bool:
    return any(fnmatchcase(library, p) for p in patterns)


def cuda_libraries(elves: Iterable[ElfInfo]) -> list[str]:
    """The CUDA libraries the wheel's own objects link (grafted copies count by their name)."""
    found: set[str] = set()
    for elf in elves:
        for lib in elf.needed:
            base = _ungrafted(lib)
            if matches_any(base, CUDA_LIBRARY_PATTERNS):
                found.add(base)
        if matches_any(_ungrafted(Path(elf.path).name), CUDA_LIBRARY_PATTERNS):
            found.add(_ungrafted(Path(elf.path).name))
    return sorted(found)


def _ungrafted(name: str) -> str:
    """`libcudart-1a2b3c4d.so.13` (auditwheel's grafted name) -> `libcudart.so.13`."""
    return re.sub(r"-[0-9a-f]{8}(\.so)", r"\1", name)


def external_needed(elves: Iterable[ElfInfo]) -> list[str]:
    """Libraries needed but not shipped in the wheel itself."""
    elves = list(elves)
    shipped = {Path(e.path).name for e in elves}
    return sorted({lib for e in elves for lib in e.needed if lib not in shipped})


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", version))


def glibc_floor(elves: Iterable[ElfInfo]) -> tuple[int, int] | None:
    """The newest GLIBC_x.y version any object requires: the oldest glibc it runs on."""
    best: tuple[int, ...] | None = None
    for elf in elves:
        for _, ver, _ in elf.versioned:
            if ver.startswith("GLIBC_") and ver[6:7].isdigit():
                key = _version_key(ver[6:])
                if best is None or key > best:
                    best = key
    if best is None:
        return None
    return best[0], best[1] if len(best) > 1 else 0
