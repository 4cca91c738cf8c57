"""The compilers a build runs: small wrapper scripts first on its PATH and in CC/CXX.

Two reasons to stand between a build and its compiler:

- **The ISA baseline.** Packages compile with `-march=native` (annoy, hnswlib): their wheels
  carry the build machine's AVX2/AVX-512 and die with SIGILL on older CPUs. Each wrapper
  drops every `-march=`, `-mtune=native` and `-mcpu=native` it is given and puts the
  target's baseline first (as feature flags, which gcc 10, gcc 12, clang and zig all take;
  gcc 10 has no `-march=x86-64-v2`). A package's own explicit `-mavx2` (a file compiled for
  run-time dispatch) stays: the scan after the build (`stages.isa`) judges the result.
- **Older glibc without a container** (`toolchain = "zig"`): `zig cc -target
  x86_64-linux-gnu.2.17` compiles and links against the glibc the policy names, so repair
  reaches manylinux_2_17 / 2_28 on a newer host. zig finds no system headers or libraries
  by itself (`zlib.h`, `-lz`): the wrapper adds the system's include directories after
  zig's own (`-idirafter`, so zig's glibc headers win) and its library directories when it
  links. C++ gets zig's libc++, linked statically (no libstdc++ symbol versions to meet).

The wrappers are plain POSIX shell (no Python start-up per compiler call) written into the
build's own directory, which the sandbox shows; zig itself lives in prewheel's environment
(`tools.ZIG`), shown read-only like every other path on the build's PATH.
"""

from __future__ import annotations

import functools
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import tools
from ..cmd import probe
from ..targets import policy as policies

# The flags that give each psABI level's instruction set, for gcc, clang and zig alike.
_V2 = ("-msse3", "-mssse3", "-msse4.1", "-msse4.2", "-mpopcnt", "-mcx16", "-msahf")
_V3 = ("-mavx", "-mavx2", "-mbmi", "-mbmi2", "-mf16c", "-mfma", "-mlzcnt", "-mmovbe", "-mxsave")
_V4 = ("-mavx512f", "-mavx512bw", "-mavx512cd", "-mavx512dq", "-mavx512vl")
ISA_FLAGS: Mapping[str, tuple[str, ...]] = {
    "x86-64": (),
    "x86-64-v2": _V2,
    "x86-64-v3": (*_V2, *_V3),
    "x86-64-v4": (*_V2, *_V3, *_V4),
}
C_NAMES = ("cc", "gcc", "clang", "x86_64-linux-gnu-gcc")
CXX_NAMES = ("c++", "g++", "clang++", "x86_64-linux-gnu-g++")
# Where the system's headers and libraries are, for zig (which searches only its own).
SYSTEM_INCLUDE = ("/usr/local/include", "/usr/include/x86_64-linux-gnu", "/usr/include")
SYSTEM_LIB = ("/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib")
# zig's glibc when the policy does not name one (auto): the oldest manylinux it supports.
ZIG_DEFAULT_GLIBC = (2, 17)


# What a wrapper drops of a package's own flags: -march (the baseline replaces it), the
# native tuning; zig also rejects gcc's -mtune names (`generic`), and takes -mcpu as its own.
# Debian's and Ubuntu's Pythons link extensions with -Wl,-Bsymbolic-functions (their
# LDSHARED), which zig's linker rejects ("unsupported linker arg"); without it calls between
# the extension's own functions may go through the PLT, nothing more.
HOST_DROPS = "-march=*|-mtune=native|-mcpu=native"
ZIG_DROPS = "-march=*|-mtune=*|-mcpu=*|-Wl,-Bsymbolic-functions"


def baseline_flags(isa: str) -> tuple[str, ...]:
    """The flags a compile for `isa` starts with: generic tuning, the level's features."""
    return ("-march=x86-64", "-mtune=generic", *ISA_FLAGS[isa])


def zig_cpu(isa: str) -> str:
    """zig's name of a level's CPU model: `x86-64-v2` -> `-mcpu=x86_64_v2` (zig reads
    -march=x86-64-v2 as a CPU named `x86` with features)."""
    return "-mcpu=" + isa.replace("-", "_")


def zig_target(policy: str) -> str:
    """`manylinux_2_28_x86_64` -> `x86_64-linux-gnu.2.28`: glibc as the policy names it
    (`auto` and the legacy aliases as their glibc; below 2.17, zig's oldest, 2.17)."""
    glibc = policies.glibc_of(policy) or ZIG_DEFAULT_GLIBC
    glibc = max(glibc, ZIG_DEFAULT_GLIBC)
    return f"x86_64-linux-gnu.{glibc[0]}.{glibc[1]}"


@functools.cache
def zig_version(zig: Path) -> str:
    return (probe([zig, "version"]) or "?").strip()


def key_line(toolchain: str, policy: str) -> str:
    """What the cache key holds of the toolchain: `host` (the host compiler's version line
    is its own input), or zig's version and target. Raises ToolMissingError without zig."""
    if toolchain != "zig":
        return toolchain
    return f"zig {zig_version(tools.require(tools.ZIG))} {zig_target(policy)}"


def wrapper_script(
    real: Sequence[str],
    *,
    first: Sequence[str],
    link: Sequence[str] = (),
    drops: str = HOST_DROPS,
) -> str:
    """A POSIX shell script that runs `real` with `first`, then its own arguments without
    those matching `drops` (a shell `case` pattern), then (when it links) `link`."""
    quoted = " ".join(shlex.quote(a) for a in [*real, *first])
    tail = " ".join(shlex.quote(a) for a in link)
    return (
        "#!/bin/sh\n"
        "# prewheel's compiler wrapper: the target's ISA baseline in place of -march=native.\n"
        "links=1\n"
        "n=$#\n"
        'while [ "$n" -gt 0 ]; do\n'
        "  a=$1; shift; n=$((n - 1))\n"
        "  case $a in\n"
        f"    {drops}) continue ;;\n"
        "    -c|-S|-E|-M|-MM) links=0 ;;\n"
        "  esac\n"
        '  set -- "$@" "$a"\n'
        "done\n"
        + (f'if [ "$links" = 1 ]; then set -- "$@" {tail}; fi\n' if tail else "")
        + f'exec {quoted} "$@"\n'
    )


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    """What a build compiles with: the wrappers' directory, the variables that point at
    them, and the line that goes into the cache key and the build record."""

    name: str  # "host" or "zig"
    isa: str
    bin_dir: Path
    env: Mapping[str, str]
    describe: str  # "host /usr/bin/gcc-12, x86-64-v2" / "zig 0.13.0 x86_64-linux-gnu.2.17, ..."


def prepare(
    *,
    name: str,
    isa: str,
    policy: str,
    workdir: Path,
    path: str,
    package_env: Mapping[str, str],
    zig_cache: Path | None = None,
) -> Toolchain:
    """Write the wrappers for a build into `workdir/toolchain/bin`.

    `path`: the build's PATH before the wrappers go first on it (where the host's real
    compilers are looked up). `package_env`: the config's env of the package; a CC or CXX
    there is wrapped as well, and keeps its place. Raises ToolMissingError for `zig` when
    prewheel's environment has no zig."""
    bin_dir = workdir / "toolchain" / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    first = baseline_flags(isa)
    env: dict[str, str] = {}
    if name == "zig":
        zig = tools.require(tools.ZIG)
        target = zig_target(policy)
        includes = [a for d in SYSTEM_INCLUDE if Path(d).is_dir() for a in ("-idirafter", d)]
        libs = [f"-L{d}" for d in SYSTEM_LIB if Path(d).is_dir()]
        common = ["-target", target, zig_cpu(isa), "-Wno-unused-command-line-argument"]
        common += includes
        for names, mode in ((C_NAMES, "cc"), (CXX_NAMES, "c++")):
            for n in names:
                script = wrapper_script([str(zig), mode], first=common, link=libs, drops=ZIG_DROPS)
                _write(bin_dir / n, script)
        if zig_cache is not None:
            zig_cache.mkdir(parents=True, exist_ok=True)
            env["ZIG_GLOBAL_CACHE_DIR"] = str(zig_cache)
            env["ZIG_LOCAL_CACHE_DIR"] = str(zig_cache)
        describe = f"zig {zig_version(zig)} {target}, {isa}"
        env["CC"] = str(bin_dir / "cc")
        env["CXX"] = str(bin_dir / "c++")
    else:
        for n in (*C_NAMES, *CXX_NAMES):
            real = shutil.which(n, path=path)
            if real is not None:
                _write(bin_dir / n, wrapper_script([real], first=first))
        # CC and CXX name a wrapper only where one was written: a machine without a
        # compiler still builds pure sdists (and one that needs a compiler fails as before).
        for var, names in (("CC", C_NAMES), ("CXX", CXX_NAMES)):
            made = next((bin_dir / n for n in names if (bin_dir / n).exists()), None)
            if made is not None:
                env[var] = str(made)
        # The compiler's version line is the key's `compiler`; here only what was wrapped.
        real_cc = next((w for n in C_NAMES if (w := shutil.which(n, path=path))), None)
        wrapped = Path(real_cc).resolve() if real_cc else "no C compiler found"
        describe = f"host {wrapped}, {isa}"
    for var, own in (("CC", "prewheel-cc"), ("CXX", "prewheel-c++")):
        words = shlex.split(package_env.get(var, ""))
        if not words or name == "zig":  # under zig, the package's compiler is zig's
            continue
        real = shutil.which(words[0], path=path) or words[0]
        _write(bin_dir / own, wrapper_script([real], first=first))
        env[var] = shlex.join([str(bin_dir / own), *words[1:]])
    return Toolchain(name=name, isa=isa, bin_dir=bin_dir, env=env, describe=describe)


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
