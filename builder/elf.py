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
    for name, data in wheel_objects(wheel):
        try:
            out.append(read_elf(name, data))
        except ELFError:
            continue
    return out


def wheel_objects(wheel: Path) -> Iterator[tuple[str, bytes]]:
    """(path inside the wheel, bytes) of every file in `wheel` that starts like an ELF file."""
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir() or info.filename.endswith((".py", ".pyc", ".txt", ".json")):
                continue
            with zf.open(info) as fh:
                if fh.read(4) != _ELF_MAGIC:
                    continue
            yield info.filename, zf.read(info)


@dataclass(frozen=True, kw_only=True)
class DynamicSymbols:
    """What a shared object takes from others and gives them, by name (dynamic table only:
    what the loader sees, stripped or not)."""

    undefined: frozenset[str]  # strong: the load fails when nothing provides one
    defined: frozenset[str]  # exported (global or weak, default visibility)


def dynamic_symbols(data: bytes) -> DynamicSymbols:
    """The dynamic symbols of one ELF object. Raises ELFError on a malformed one."""
    elf = ELFFile(io.BytesIO(data))
    undefined: set[str] = set()
    defined: set[str] = set()
    dynsym = elf.get_section_by_name(".dynsym")
    if isinstance(dynsym, SymbolTableSection):
        for sym in dynsym.iter_symbols():
            bind = sym["st_info"]["bind"]
            if not sym.name or bind not in ("STB_GLOBAL", "STB_WEAK", "STB_GNU_UNIQUE"):
                continue
            if sym["st_shndx"] == "SHN_UNDEF":
                if bind != "STB_WEAK":
                    undefined.add(sym.name)
            elif sym["st_other"]["visibility"] in ("STV_DEFAULT", "STV_PROTECTED"):
                defined.add(sym.name)
    return DynamicSymbols(undefined=frozenset(undefined), defined=frozenset(defined))


def read_only_strings(data: bytes, *, limit: int = 200) -> Iterator[str]:
    """The printable NUL-terminated strings (up to `limit` characters) in an object's
    read-only data: where a C compiler puts string literals such as format strings."""
    elf = ELFFile(io.BytesIO(data))
    for section in elf.iter_sections():
        if section.name != ".rodata" and not section.name.startswith(".rodata."):
            continue
        if section["sh_type"] == "SHT_NOBITS":
            continue
        for raw in section.data().split(b"\0"):
            if 0 < len(raw) <= limit and raw.isascii() and raw.decode().isprintable():
                yield raw.decode()


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
