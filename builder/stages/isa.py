"""Finding instructions older x86-64 CPUs lack (AVX and newer) in a wheel's extensions.

Packages that compile with `-march=native` produce wheels that crash with SIGILL on older
CPUs, and auditwheel does not notice. A disassembly that touches ymm/zmm registers is the
tell. Code that dispatches at run time legitimately contains such instructions too, so this
is a warning in the build record and summary, not a failure.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from ..cmd import probe

_WIDE = re.compile(r"%([yz])mm\d+")


def wide_vector_use(wheel: Path) -> dict[str, str]:
    """Extension file -> "AVX" or "AVX-512" for each that uses 256/512-bit registers."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return {}
    found: dict[str, str] = {}
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        for name in zf.namelist():
            if not (name.endswith(".so") or ".so." in name) or ".libs/" in name:
                continue
            path = Path(zf.extract(name, tmp))
            out = probe([objdump, "-d", "--no-show-raw-insn", str(path)], timeout=120) or ""
            regs = {m.group(1) for m in _WIDE.finditer(out)}
            if "z" in regs:
                found[name] = "AVX-512"
            elif "y" in regs:
                found[name] = "AVX"
    return found


def isa_warnings(wheel: Path) -> list[str]:
    return [
        f"{name} uses {kind} instructions: built with -march=native? It may crash with "
        "SIGILL on older CPUs (set the package's own switch or CFLAGS in [packages.NAME] env)"
        for name, kind in sorted(wide_vector_use(wheel).items())
    ]
