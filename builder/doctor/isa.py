"""The x86-64 micro-architecture level of a CPU, from its /proc/cpuinfo flags.

The levels are the x86-64 psABI's ("System V Application Binary Interface, AMD64
Architecture Processor Supplement", section "Micro-Architecture Levels"), the same ones
glibc's loader reports (`ld.so --help`) and compilers target (`-march=x86-64-v3`). A wheel or
base image built for a level above the CPU's dies with SIGILL, so the doctor names the level.
Each psABI feature is listed under the flag name Linux prints for it: SSE3 is `pni`, LZCNT is
`abm`, and OSXSAVE, which Linux does not print, is stood for by `xsave`; LAHF-SAHF is
`lahf_lm`, CMPXCHG16B `cx16`, SCE `syscall`.
"""

from __future__ import annotations

from collections.abc import Iterable

LEVEL_FLAGS: tuple[tuple[str, frozenset[str]], ...] = (
    ("x86-64", frozenset({"cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"})),
    (
        "x86-64-v2",
        frozenset({"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}),
    ),
    (
        "x86-64-v3",
        frozenset({"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}),
    ),
    ("x86-64-v4", frozenset({"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"})),
)


def isa_level(flags: Iterable[str]) -> tuple[str | None, tuple[str, ...]]:
    """The highest level whose features (and every lower level's) are all in `flags`, and
    the flags missing for the next level; (None, missing) below the baseline."""
    have = set(flags)
    level: str | None = None
    for name, needs in LEVEL_FLAGS:
        missing = needs - have
        if missing:
            return level, tuple(sorted(missing))
        level = name
    return level, ()


def cpuinfo_flags(text: str) -> tuple[frozenset[str], str | None, str]:
    """The x86 flags every processor in a /proc/cpuinfo has, its model name, and the
    architecture the file's layout tells ("x86_64" with `flags`, "aarch64" with `Features`,
    else "unknown")."""
    flag_sets: list[set[str]] = []
    model: str | None = None
    arch = "unknown"
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "flags":
            flag_sets.append(set(value.split()))
            arch = "x86_64"
        elif key == "Features" and arch == "unknown":
            arch = "aarch64"
        elif key == "model name" and model is None:
            model = value.strip()
    flags = frozenset(set.intersection(*flag_sets)) if flag_sets else frozenset()
    return flags, model, arch
