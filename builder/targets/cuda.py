"""CUDA toolkits: where each variant's toolkit is, its nvcc's version and architectures."""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path

from .. import stamp
from ..cmd import probe
from .model import Toolkit, cuda_version_of

# Default CUDA architectures per toolkit (as PyTorch builds its wheels): real code for each,
# plus PTX for the newest, so GPUs newer than the toolkit still run it by JIT.
DEFAULT_ARCH_LISTS: dict[tuple[int, int], tuple[str, ...]] = {
    (11, 8): ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0+PTX"),
    (12, 0): ("5.0", "6.0", "7.0", "7.5", "8.0", "8.6", "9.0+PTX"),
    (12, 8): ("7.5", "8.0", "8.6", "9.0", "10.0", "12.0+PTX"),
    (13, 0): ("7.5", "8.0", "8.6", "9.0", "10.0", "11.0", "12.0+PTX"),
}
DEFAULT_ARCH_LIST = DEFAULT_ARCH_LISTS[(13, 0)]


def toolkit_homes(accel: str, cuda_home: str | None) -> list[Path]:
    """Where the toolkit for `accel` may be: the configured home, else the usual places."""
    if cuda_home:
        return [Path(cuda_home)]
    want = cuda_version_of(accel)
    homes = [Path(f"/usr/local/cuda-{want}")]
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            homes.append(Path(os.environ[var]))
    homes.append(Path("/usr/local/cuda"))
    stamp.watch_which("nvcc")
    on_path = shutil.which("nvcc")
    if on_path:
        homes.append(Path(on_path).resolve().parent.parent)
    return list(dict.fromkeys(homes))


def find_toolkit(accel: str, cuda_home: str | None) -> tuple[Toolkit | None, str | None]:
    """The CUDA toolkit whose nvcc reports the variant's version (13.0 for cu130).

    A configured `cuda_home` whose nvcc reports another version is an error naming both.
    """
    want = cuda_version_of(accel)
    seen: list[str] = []
    for home in toolkit_homes(accel, cuda_home):
        nvcc = home / "bin" / "nvcc"
        stamp.watch_path(nvcc)
        if not nvcc.is_file():
            seen.append(f"{home} (no bin/nvcc)")
            continue
        version = nvcc_version(str(nvcc))
        if version is None:
            seen.append(f"{nvcc} (does not report a version)")
            continue
        if version != want:
            if cuda_home:
                return None, (
                    f"nvcc version mismatch: {nvcc} is CUDA {version}, but {accel} needs "
                    f"CUDA {want} (fix accel.{accel}.cuda_home)"
                )
            seen.append(f"{nvcc} is CUDA {version}")
            continue
        return Toolkit(cuda_home=home, nvcc=nvcc, version=version), None
    return None, f"no CUDA {want} toolkit for {accel} (looked at: {'; '.join(seen)})"


@functools.cache
def _nvcc_banner(nvcc: str) -> str:
    return probe([nvcc, "--version"]) or ""


def nvcc_version(nvcc: str) -> str | None:
    """The release nvcc reports (`13.0`)."""
    m = re.search(r"release (\d+\.\d+)", _nvcc_banner(nvcc))
    return m.group(1) if m else None


def toolkit_version(nvcc: Path, fallback: str) -> str:
    """nvcc's full version as it reports itself (`13.0.88`), not the release a config names."""
    m = re.search(r"\bV(\d+(?:\.\d+)+)", _nvcc_banner(str(nvcc)))
    return m.group(1) if m else fallback


@functools.cache
def nvcc_archs(nvcc: str) -> tuple[str, ...]:
    """The architectures nvcc can compile for, as "8.0", "12.0" (empty when it cannot say)."""
    out = probe([nvcc, "--list-gpu-arch"]) or ""
    found = [m.group(1) for m in re.finditer(r"compute_(\d+)", out)]
    return tuple(f"{int(n[:-1])}.{n[-1]}" for n in found)


def default_arch_list(cuda_version: str, supported: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The default list for a toolkit version, kept to what its nvcc supports, with PTX for
    the newest architecture."""
    ver = tuple(int(x) for x in cuda_version.split("."))
    base = DEFAULT_ARCH_LIST
    for since, archs in sorted(DEFAULT_ARCH_LISTS.items()):
        if ver >= since:
            base = archs
    plain = [a.replace("+PTX", "") for a in base]
    if supported:
        plain = [a for a in plain if a in supported] or [supported[-1]]
    plain.sort(key=_arch_key)
    return (*plain[:-1], plain[-1] + "+PTX")


def _arch_key(arch: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", arch))


def check_arch_list(
    arch_list: tuple[str, ...], supported: tuple[str, ...], nvcc: Path
) -> str | None:
    """Why `arch_list` cannot be built with this nvcc, or None."""
    bad = []
    for arch in arch_list:
        m = re.fullmatch(r"(\d+\.\d+)([a-f]?)(\+PTX)?", arch)
        if not m:
            bad.append(f"'{arch}' (expected like 8.0, 9.0a or 12.0+PTX)")
        elif supported and m.group(1) not in supported:
            bad.append(f"{arch} (not supported by {nvcc}, which knows {', '.join(supported)})")
    return f"arch_list: {'; '.join(bad)}" if bad else None
