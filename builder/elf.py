"""What the shared objects inside a wheel link against: DT_NEEDED and versioned symbols.

Read with pyelftools (auditwheel's own ELF reader), straight from the zip, so a built wheel
can be checked before and after repair without unpacking it on disk.
"""

from __future__ import annotations

import io
import re
import shutil
import struct
import tempfile
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
    # GPU code in its fatbin sections: SASS architectures ("7.5", "9.0a") and PTX ones.
    sass: tuple[str, ...] = ()
    ptx: tuple[str, ...] = ()
    # DT_RUNPATH and DT_RPATH entries, in order (`$ORIGIN` unexpanded).
    runpath: tuple[str, ...] = ()


def wheel_cuda(wheel: Path) -> list[str]:
    """The CUDA libraries a wheel's shared objects need or the wheel carries, read without
    holding a large member in memory (a downloaded torch wheel has objects of a gigabyte):
    each is spooled to a temporary file and only its dynamic section is read."""
    found: set[str] = set()
    with zipfile.ZipFile(wheel) as zf:
        for info in _elf_members(zf):
            base = ungrafted(Path(info.filename).name)
            if matches_any(base, CUDA_LIBRARY_PATTERNS):
                found.add(base)
            with zf.open(info) as src, tempfile.TemporaryFile() as tmp:
                shutil.copyfileobj(src, tmp, 1 << 20)
                tmp.seek(0)
                try:
                    needed = _needed(ELFFile(tmp))
                except ELFError:
                    continue
            found |= {
                ungrafted(n) for n in needed if matches_any(ungrafted(n), CUDA_LIBRARY_PATTERNS)
            }
    return sorted(found)


def _needed(elf: ELFFile) -> list[str]:
    dyn = elf.get_section_by_name(".dynamic")
    if not isinstance(dyn, DynamicSection):
        return []
    return [str(getattr(t, "needed", "")) for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"]


def _runpath(elf: ELFFile) -> list[str]:
    dyn = elf.get_section_by_name(".dynamic")
    if not isinstance(dyn, DynamicSection):
        return []
    out: list[str] = []
    for t in dyn.iter_tags():
        if t.entry.d_tag == "DT_RUNPATH":
            out += str(getattr(t, "runpath", "")).split(":")
        elif t.entry.d_tag == "DT_RPATH":
            out += str(getattr(t, "rpath", "")).split(":")
    return [p for p in out if p]


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
        for info in _elf_members(zf):
            yield info.filename, zf.read(info)


def _elf_members(zf: zipfile.ZipFile) -> Iterator[zipfile.ZipInfo]:
    """The members of a wheel that start like an ELF file (only their first bytes read)."""
    for info in zf.infolist():
        if info.is_dir() or info.filename.endswith((".py", ".pyc", ".txt", ".json")):
            continue
        with zf.open(info) as fh:
            if fh.read(4) == _ELF_MAGIC:
                yield info


@dataclass(frozen=True, kw_only=True)
class DynamicSymbols:
    """What a shared object takes from others and gives them, by name (dynamic table only:
    what the loader sees, stripped or not)."""

    undefined: frozenset[str]  # strong: the load fails when nothing provides one
    defined: frozenset[str]  # exported (global or weak, default visibility)


def dynamic_symbols(data: bytes) -> DynamicSymbols:
    """The dynamic symbols of one ELF object. Raises ELFError on a malformed one.

    Read with `struct` from the section headers and `.dynsym` (its string table by its
    link), not pyelftools, which parses each symbol on its own: libpython's 1,655 exports
    take it 57 ms, this 2 ms."""
    if data[:4] != _ELF_MAGIC or data[4:5] not in (b"\x01", b"\x02"):
        raise ELFError("not an ELF object")
    wide = data[4] == 2  # ELFCLASS64
    order = "<" if data[5] == 1 else ">"  # ELFDATA2LSB
    try:
        return _dynsym(data, wide, order)
    except (struct.error, IndexError, ValueError) as exc:  # ValueError: no NUL in a string
        raise ELFError(f"malformed ELF object: {exc}") from exc


_SHT_DYNSYM = 11
_STB_GLOBAL, _STB_WEAK, _STB_GNU_UNIQUE = 1, 2, 10
_STV_DEFAULT, _STV_PROTECTED = 0, 3


def _dynsym(data: bytes, wide: bool, order: str) -> DynamicSymbols:
    if wide:
        shoff, shentsize, shnum, shstrndx = struct.unpack_from(f"{order}40xQ10xHHH", data)
        header = f"{order}IIQQQQII"  # name, type, flags, addr, offset, size, link, info
        symbol = f"{order}IBBHQQ"  # name, info, other, shndx, value, size
    else:
        shoff, shentsize, shnum, shstrndx = struct.unpack_from(f"{order}32xI10xHHH", data)
        header = f"{order}IIIIIIII"
        symbol = f"{order}IIIBBH"  # name, value, size, info, other, shndx
    sections = [struct.unpack_from(header, data, shoff + i * shentsize) for i in range(shnum)]
    names = sections[shstrndx][4] if sections else 0

    def name_at(table: int, at: int) -> str:
        end = data.index(b"\0", table + at)
        return data[table + at : end].decode(errors="replace")

    undefined: set[str] = set()
    defined: set[str] = set()
    for sh_name, sh_type, _, _, offset, size, link, _ in sections:
        if sh_type != _SHT_DYNSYM or name_at(names, sh_name) != ".dynsym":
            continue
        strings = sections[link][4]
        for entry in struct.iter_unpack(symbol, data[offset : offset + size]):
            if wide:
                st_name, info, other, shndx = entry[0], entry[1], entry[2], entry[3]
            else:
                st_name, info, other, shndx = entry[0], entry[3], entry[4], entry[5]
            bind = info >> 4
            if not st_name or bind not in (_STB_GLOBAL, _STB_WEAK, _STB_GNU_UNIQUE):
                continue
            name = name_at(strings, st_name)
            if not name:
                continue
            if shndx == 0:  # SHN_UNDEF
                if bind != _STB_WEAK:
                    undefined.add(name)
            elif other & 3 in (_STV_DEFAULT, _STV_PROTECTED):
                defined.add(name)
        break
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
    needed = _needed(elf)
    sass, ptx = _device_code(elf)
    return ElfInfo(
        path=name,
        needed=tuple(needed),
        versioned=tuple(_versioned_symbols(elf)),
        sass=sass,
        ptx=ptx,
        runpath=tuple(_runpath(elf)),
    )


# -- CUDA fatbins ---------------------------------------------------------------------------
#
# nvcc puts device code in `.nv_fatbin` (`__nv_relfatbin` for relocatable device code): one or
# more fatbins, each a 16-byte header (magic 0xBA55ED50, version, header size, size of what
# follows) and entries, each with its own header: kind (1 PTX, 2 ELF/SASS), header size,
# payload size, and at offset 28 the architecture as a number (75, 90, 120) with flags at 40
# that mark arch-specific ("a") and family ("f") code. Only headers are read: compressed
# payloads need no decompression to say what they are for.

FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
_FATBIN_MAGIC = 0xBA55ED50
_KIND_PTX, _KIND_SASS = 1, 2
_FLAG_ARCH_SPECIFIC = 0x100000
_FLAG_FAMILY = 0x200000


def fatbin_archs(data: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(SASS architectures, PTX architectures) in a fatbin section's bytes, sorted."""
    sass: set[str] = set()
    ptx: set[str] = set()
    off = 0
    while off + 16 <= len(data):
        magic, _, hsize, size = struct.unpack_from("<IHHQ", data, off)
        if magic != _FATBIN_MAGIC or hsize < 16:
            nxt = data.find(struct.pack("<I", _FATBIN_MAGIC), off + 1)
            if nxt < 0:
                break
            off = nxt
            continue
        p, end = off + hsize, min(len(data), off + hsize + size)
        while p + 48 <= end:
            kind, _, ehsize, payload = struct.unpack_from("<HHIQ", data, p)
            if ehsize < 48:
                break
            number = struct.unpack_from("<I", data, p + 28)[0]
            flags = struct.unpack_from("<Q", data, p + 40)[0]
            arch = _arch_name(number, flags)
            if kind == _KIND_SASS:
                sass.add(arch)
            elif kind == _KIND_PTX:
                ptx.add(arch)
            p += ehsize + payload
        off = max(end, off + 16)
    return tuple(sorted(sass, key=_arch_key)), tuple(sorted(ptx, key=_arch_key))


def _arch_name(number: int, flags: int) -> str:
    """75 -> "7.5"; 90 with the arch-specific flag -> "9.0a"; 100 family -> "10.0f"."""
    suffix = "a" if flags & _FLAG_ARCH_SPECIFIC else "f" if flags & _FLAG_FAMILY else ""
    return f"{number // 10}.{number % 10}{suffix}"


def _arch_key(arch: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", arch))


def _device_code(elf: ELFFile) -> tuple[tuple[str, ...], tuple[str, ...]]:
    sass: set[str] = set()
    ptx: set[str] = set()
    for name in FATBIN_SECTIONS:
        sec = elf.get_section_by_name(name)
        if sec is None or sec["sh_type"] == "SHT_NOBITS":
            continue
        s, p = fatbin_archs(sec.data())
        sass.update(s)
        ptx.update(p)
    return tuple(sorted(sass, key=_arch_key)), tuple(sorted(ptx, key=_arch_key))


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
            base = ungrafted(lib)
            if matches_any(base, CUDA_LIBRARY_PATTERNS):
                found.add(base)
        if matches_any(ungrafted(Path(elf.path).name), CUDA_LIBRARY_PATTERNS):
            found.add(ungrafted(Path(elf.path).name))
    return sorted(found)


def ungrafted(name: str) -> str:
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
