"""Which x86-64 instructions a wheel's extensions use, against the target's ISA baseline.

Packages that compile with `-march=native` (annoy, hnswlib) produce wheels that crash with
SIGILL on older CPUs, and auditwheel does not notice. The compiler wrapper
(`stages.toolchain`) takes `-march=native` away; this scan is the check after the build that
nothing above the baseline got in some other way (a hard-coded `-mavx2`, a
`target("avx2")` attribute, inline assembly).

The instructions are decoded with iced-x86 (a decoder on PyPI that knows the CPUID feature
of every instruction), so prewheel needs no binutils, and each feature is placed in the
psABI level that first guarantees it (x86-64-v2: SSE3..SSE4.2, POPCNT, CMPXCHG16B; v3: AVX,
AVX2, BMI1/2, FMA, F16C, LZCNT, MOVBE, XSAVE; v4: AVX-512 F/BW/CD/DQ/VL), or above every
level (the other AVX-512 subsets, VNNI, AES, SHA...). Features of the original x86-64
(SSE2, CMOV...) and those that run as NOPs on older CPUs (`endbr64`) are never counted.

Code that dispatches at run time (cpuid checks, ifunc resolvers, numpy-style multi-
versioning) legitimately holds instructions above the baseline; the scan reports what tells
of that (a `cpuid` instruction, an ifunc, `__cpu_indicator_init`), but only the package's
`isa_dispatch = true` turns a finding into a recorded note: a decoder cannot prove that
every path to an AVX2 instruction passes a cpuid check.
"""

from __future__ import annotations

import bisect
import functools
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..compat import ISA_LEVELS
from ..errors import StepError
from ..wheelfile import is_shared_object

# The CPUID features each psABI level adds (iced-x86's names), lowest level first.
LEVEL_FEATURES: Mapping[str, frozenset[str]] = {
    "x86-64-v2": frozenset({"SSE3", "SSSE3", "SSE4_1", "SSE4_2", "POPCNT", "CMPXCHG16B"}),
    "x86-64-v3": frozenset(
        {"AVX", "AVX2", "BMI1", "BMI2", "F16C", "FMA", "LZCNT", "MOVBE", "XSAVE"}
    ),
    "x86-64-v4": frozenset({"AVX512F", "AVX512BW", "AVX512CD", "AVX512DQ", "AVX512VL"}),
}
ABOVE_ALL = "above x86-64-v4"
# Features no psABI level guarantees, that compilers emit for -march=native or intrinsics.
BEYOND_LEVELS = frozenset(
    {
        "AVX512ER", "AVX512PF", "AVX512_4FMAPS", "AVX512_4VNNIW", "AVX512_BF16",
        "AVX512_BITALG", "AVX512_FP16", "AVX512_IFMA", "AVX512_VBMI", "AVX512_VBMI2",
        "AVX512_VNNI", "AVX512_VP2INTERSECT", "AVX512_VPOPCNTDQ", "AVX_IFMA",
        "AVX_NE_CONVERT", "AVX_VNNI", "AVX_VNNI_INT8", "AVX_VNNI_INT16", "AMX_BF16",
        "AMX_COMPLEX", "AMX_FP16", "AMX_INT8", "AMX_TILE", "FMA4", "XOP", "SSE4A", "TBM",
        "GFNI", "VAES", "VPCLMULQDQ", "AES", "PCLMULQDQ", "SHA", "SHA512", "SM3", "SM4",
        "ADX", "RDRAND", "RDSEED", "CLFLUSHOPT", "CLWB", "PREFETCHWT1", "D3NOW", "D3NOWEXT",
    }
)  # fmt: skip
# How a feature is named to a user: the instruction classes people know.
CLASS_NAMES: Mapping[str, str] = {
    "SSE3": "SSE3", "SSSE3": "SSSE3", "SSE4_1": "SSE4.1", "SSE4_2": "SSE4.2",
    "POPCNT": "POPCNT", "CMPXCHG16B": "CMPXCHG16B", "AVX": "AVX", "AVX2": "AVX2",
    "FMA": "FMA", "BMI1": "BMI1", "BMI2": "BMI2", "F16C": "F16C", "LZCNT": "LZCNT",
    "MOVBE": "MOVBE", "XSAVE": "XSAVE", "AVX512F": "AVX-512F", "AVX512BW": "AVX-512BW",
    "AVX512CD": "AVX-512CD", "AVX512DQ": "AVX-512DQ", "AVX512VL": "AVX-512VL",
}  # fmt: skip
# Instructions that run on every x86-64 CPU although a decoder files them under a newer
# feature: `tzcnt` is `rep bsf`, which older CPUs execute as `bsf` (the same result for a
# non-zero operand); gcc and clang emit it for generic targets on purpose.
BACKWARD_COMPATIBLE = frozenset({"TZCNT"})
# Symbols that tell of run-time dispatch: GCC's CPU model, used by target_clones,
# __builtin_cpu_supports and function multi-versioning.
DISPATCH_SYMBOLS = frozenset({"__cpu_indicator_init", "__cpu_model", "__cpu_features2"})


def level_of(feature: str) -> str | None:
    """The psABI level that first guarantees `feature`; ABOVE_ALL for a feature no level
    guarantees; None for one every x86-64 CPU has (or that runs as a NOP)."""
    for level, features in LEVEL_FEATURES.items():
        if feature in features:
            return level
    return ABOVE_ALL if feature in BEYOND_LEVELS else None


def above(feature: str, baseline: str) -> bool:
    """Whether `feature` may be missing on a CPU of `baseline`."""
    level = level_of(feature)
    if level is None:
        return False
    if level == ABOVE_ALL:
        return True
    return ISA_LEVELS.index(level) > ISA_LEVELS.index(baseline)


def class_name(feature: str) -> str:
    return CLASS_NAMES.get(feature) or feature.replace("AVX512", "AVX-512").replace("_", "-")


@dataclass(frozen=True, kw_only=True)
class Use:
    """How one object uses one feature: how many instructions, and the first of them."""

    feature: str
    count: int
    first: str  # "vfmadd231ps at 0x1139 in dot"


@dataclass(frozen=True, kw_only=True)
class ObjectScan:
    """One shared object's features above the baseline, and what tells of dispatch."""

    path: str  # inside the wheel
    uses: tuple[Use, ...]
    dispatch: tuple[str, ...] = ()  # "cpuid instruction", "ifunc foo", a symbol name

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(class_name(u.feature) for u in self.uses)

    def describe(self, baseline: str) -> str:
        """`pkg/_x.so: AVX2, FMA (x86-64-v3; 41 instructions, first vfmadd... in dot)`."""
        by_level: dict[str, list[Use]] = {}
        for use in self.uses:
            by_level.setdefault(level_of(use.feature) or "", []).append(use)
        parts = []
        for level, uses in by_level.items():
            names = ", ".join(class_name(u.feature) for u in uses)
            count = sum(u.count for u in uses)
            parts.append(f"{names} ({level}; {count} instructions, first {uses[0].first})")
        return f"{self.path}: {'; '.join(parts)} above the baseline {baseline}"

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "classes": list(self.classes),
            "uses": [{"feature": u.feature, "count": u.count, "first": u.first} for u in self.uses],
            "dispatch": list(self.dispatch),
        }


@dataclass(frozen=True, kw_only=True)
class WheelScan:
    baseline: str
    objects: tuple[ObjectScan, ...] = field(default=())  # only those with findings

    @property
    def clean(self) -> bool:
        return not self.objects


@functools.cache
def _features_of_code(code: int) -> tuple[str, ...]:
    """The feature names of one iced-x86 `Code` (every instruction form has one)."""
    import iced_x86

    names = _feature_names()
    probe = iced_x86.Instruction.create(code)  # type: ignore[arg-type]  # Code is an int
    return tuple(names[f] for f in probe.cpuid_features())


@functools.cache
def _feature_names() -> dict[int, str]:
    import iced_x86

    return {
        getattr(iced_x86.CpuidFeature, n): n
        for n in dir(iced_x86.CpuidFeature)
        if n.isupper() and isinstance(getattr(iced_x86.CpuidFeature, n), int)
    }


def scan_object(data: bytes, path: str, baseline: str) -> ObjectScan:
    """Decode every executable section of the ELF object `data` (linearly: compilers put
    no data in .text on x86-64) and collect the features above `baseline`."""
    import io

    import iced_x86
    from elftools.elf.elffile import ELFFile

    elf = ELFFile(io.BytesIO(data))
    symbols = _function_symbols(elf)
    starts = [s[0] for s in symbols]
    counts: dict[str, int] = {}
    first: dict[str, str] = {}
    dispatch: list[str] = []
    cpuid = iced_x86.Mnemonic.CPUID
    compatible = {getattr(iced_x86.Mnemonic, n) for n in BACKWARD_COMPATIBLE}
    formatter = iced_x86.Formatter(iced_x86.FormatterSyntax.GAS)
    seen: dict[int, tuple[str, ...]] = {}
    for section in elf.iter_sections():
        if not section["sh_flags"] & 0x4 or section["sh_type"] != "SHT_PROGBITS":  # EXECINSTR
            continue
        decoder = iced_x86.Decoder(64, section.data(), ip=section["sh_addr"])
        for instr in decoder:
            code = instr.code
            found = seen.get(code)
            if found is None:
                found = tuple(f for f in _features_of_code(code) if above(f, baseline))
                if instr.mnemonic in compatible:
                    found = ()
                seen[code] = found
            if instr.mnemonic == cpuid and "cpuid instruction" not in dispatch:
                dispatch.append("cpuid instruction")
            for feature in found:
                counts[feature] = counts.get(feature, 0) + 1
                if feature not in first:
                    where = _symbol_at(symbols, starts, instr.ip)
                    text = formatter.format(instr).split(" ")[0]
                    first[feature] = f"{text} at {instr.ip:#x}" + (f" in {where}" if where else "")
    dispatch += _dispatch_symbols(elf)
    order = sorted(counts, key=lambda f: (_rank(f), f))
    uses = tuple(Use(feature=f, count=counts[f], first=first[f]) for f in order)
    return ObjectScan(path=path, uses=uses, dispatch=tuple(dispatch))


def _rank(feature: str) -> int:
    level = level_of(feature)
    return len(ISA_LEVELS) if level == ABOVE_ALL or level is None else ISA_LEVELS.index(level)


def _function_symbols(elf: Any) -> list[tuple[int, int, str]]:
    """(start, size, name) of the functions, sorted: from .symtab, else .dynsym."""
    out: list[tuple[int, int, str]] = []
    for name in (".symtab", ".dynsym"):
        table = elf.get_section_by_name(name)
        if table is None:
            continue
        for sym in table.iter_symbols():
            if sym["st_info"]["type"] in ("STT_FUNC", "STT_LOOS") and sym["st_value"]:
                out.append((sym["st_value"], sym["st_size"], sym.name))
        if out:
            break
    return sorted(out)


def _symbol_at(symbols: list[tuple[int, int, str]], starts: list[int], addr: int) -> str | None:
    i = bisect.bisect_right(starts, addr) - 1
    if i < 0:
        return None
    start, size, name = symbols[i]
    return name if addr < start + max(size, 1) else None


def _dispatch_symbols(elf: Any) -> list[str]:
    out: list[str] = []
    for name in (".symtab", ".dynsym"):
        table = elf.get_section_by_name(name)
        if table is None:
            continue
        for sym in table.iter_symbols():
            if sym["st_info"]["type"] == "STT_LOOS":  # STT_GNU_IFUNC
                out.append(f"ifunc {sym.name}")
            elif sym.name in DISPATCH_SYMBOLS:
                out.append(sym.name)
    return list(dict.fromkeys(out))


def scan_wheel(wheel: Path, baseline: str) -> WheelScan:
    """Scan the shared objects the build made (not those auditwheel grafted from the system
    into `<pkg>.libs/`: they are the system's, and often dispatch themselves)."""
    found: list[ObjectScan] = []
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            if not is_shared_object(name) or ".libs/" in name:
                continue
            scan = scan_object(zf.read(name), name, baseline)
            if scan.uses:
                found.append(scan)
    return WheelScan(baseline=baseline, objects=tuple(found))


def check(scan: WheelScan, *, package: str, dispatch_allowed: bool, log: str) -> tuple[str, ...]:
    """The notes to record for a wheel that passes; StepError (check "isa") for one that
    does not: each object above the baseline named with its instruction classes."""
    if scan.clean:
        return ()
    lines = [o.describe(scan.baseline) for o in scan.objects]
    if dispatch_allowed:
        return tuple(f"{line} (allowed: isa_dispatch = true)" for line in lines)
    evidence = sorted({d for o in scan.objects for d in o.dispatch})
    told = f"it checks the CPU at run time ({', '.join(evidence[:3])}): " if evidence else ""
    raise StepError(
        "instructions above the ISA baseline: " + "; ".join(lines),
        step="isa",
        log=log,
        check="isa",
        hint=f"{told}if every use is behind a run-time CPU check, set [packages.{package}] "
        "isa_dispatch = true; otherwise remove the flag or attribute that enables them (the "
        "package's own switch, or its env in [packages.NAME]), or raise the target's isa",
    )


def summary(objects: Iterable[ObjectScan]) -> dict[str, list[str]]:
    """{object: [instruction classes]}, for a build record."""
    return {o.path: list(o.classes) for o in objects}
