"""The compatibility data prewheel ships (`builder/data/*.toml`), read into typed records.

Which driver a CUDA release needs, which CUDA builds a torch release has, which glibc a base
image carries: these are facts about other projects' releases. They change on those projects'
schedules, so they live in data files that say where each fact comes from, and this module is
their one reader. `targets.images`, `docker.dockerfile` and `doctor` all ask it, so a new
Ubuntu release or CUDA version is one edit in one file.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from .errors import PrewheelError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

Version = tuple[int, ...]
# The psABI micro-architecture levels, oldest first (builder.doctor.isa reads cpuinfo for them).
ISA_LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")


class CompatDataError(PrewheelError):
    """A shipped data file is malformed: a bug in prewheel, named by file and key."""


def parse_version(text: str) -> Version:
    """`"570.124.06"` -> (570, 124, 6); `"12.8"` -> (12, 8). Driver and CUDA versions compare
    as integer tuples, never as strings ("570.26" is older than "570.124.06")."""
    if not re.fullmatch(r"\d+(\.\d+)*", text):
        raise ValueError(f"not a version: {text!r}")
    return tuple(int(p) for p in text.split("."))


def show(version: Version) -> str:
    return ".".join(map(str, version))


def cuda_of(variant: str) -> Version | None:
    """`cu128` -> (12, 8); `cu130` -> (13, 0); anything else (`cpu`) -> None."""
    m = re.fullmatch(r"cu(\d+)(\d)", variant)
    return (int(m.group(1)), int(m.group(2))) if m else None


def variant_of(cuda: Version) -> str:
    """(12, 8) -> `cu128`: the way PyTorch (and prewheel's accelerators) name a CUDA build."""
    return f"cu{cuda[0]}{cuda[1]}"


@dataclass(frozen=True, kw_only=True)
class CudaToolkit:
    version: Version  # (12, 8)
    driver: str  # the oldest Linux x86_64 driver for its GA release, as NVIDIA writes it
    archs: tuple[str, ...]  # compute capabilities its nvcc compiles SASS for, oldest first

    @property
    def variant(self) -> str:
        return variant_of(self.version)


@dataclass(frozen=True, kw_only=True)
class OsRelease:
    key: str  # as nvidia/cuda tags name it: ubuntu24.04, ubi9; debian12
    name: str
    glibc: Version
    python: str  # the python3 its package manager installs
    package_manager: str
    isa: str = "x86-64"  # the oldest psABI level its binaries run on


@dataclass(frozen=True, kw_only=True)
class CudaImageOs:
    """An operating system nvidia/cuda publishes runtime images on, for a range of CUDA."""

    os: str
    first: Version
    last: Version | None  # None: still published

    def has(self, cuda: Version) -> bool:
        return cuda[:2] >= self.first and (self.last is None or cuda[:2] <= self.last)


@dataclass(frozen=True, kw_only=True)
class TorchRelease:
    minor: str  # "2.5": every 2.5.x release
    variants: tuple[str, ...]  # cpu, cu118, ...
    pypi: str | None  # the CUDA build the plain PyPI wheel is, where recorded


@dataclass(frozen=True, kw_only=True)
class TensorflowRelease:
    minor: str
    cuda: Version
    cudnn: Version


@dataclass(frozen=True, kw_only=True)
class GpuModel:
    pattern: re.Pattern[str]
    cc: str


@dataclass(frozen=True, kw_only=True)
class Compat:
    toolkits: Mapping[Version, CudaToolkit]
    minor_compat: Mapping[int, str]  # CUDA major -> the oldest driver for every X.y
    os: Mapping[str, OsRelease]
    cuda_image_tag: str
    cuda_images: tuple[CudaImageOs, ...]
    python_tag: str
    python_os: str  # the Debian release under python:X.Y-slim
    python_variants: Mapping[str, str]  # codename -> os key
    manylinux: tuple[tuple[str, Version], ...]  # (image pattern, glibc), oldest first
    torch_index: str
    torch: Mapping[str, TorchRelease]
    tensorflow: Mapping[str, TensorflowRelease]
    gpus: tuple[GpuModel, ...]

    def toolkit(self, cuda: Version) -> CudaToolkit | None:
        return self.toolkits.get(cuda[:2])

    def gpu_cc(self, name: str) -> str | None:
        """The compute capability of a GPU by its product name, from the table."""
        return next((g.cc for g in self.gpus if g.pattern.search(name)), None)

    def torch_release(self, version: str) -> TorchRelease | None:
        return self.torch.get(_minor(version))

    def tensorflow_release(self, version: str) -> TensorflowRelease | None:
        return self.tensorflow.get(_minor(version))


def _minor(version: str) -> str:
    return ".".join(re.split(r"[.+]", version)[:2])


def _read(name: str) -> dict[str, Any]:
    text = files("builder").joinpath("data").joinpath(name).read_text(encoding="utf-8")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CompatDataError(f"builder/data/{name}: not valid TOML: {exc}") from exc


def _field(table: Mapping[str, Any], key: str, where: str, kind: type = str) -> Any:
    if key not in table or not isinstance(table[key], kind):
        raise CompatDataError(f"{where}.{key}: expected a {kind.__name__}, got {table.get(key)!r}")
    return table[key]


def _version(table: Mapping[str, Any], key: str, where: str) -> Version:
    try:
        return parse_version(_field(table, key, where))
    except ValueError as exc:
        raise CompatDataError(f"{where}.{key}: {exc}") from exc


def _driver(table: Mapping[str, Any], where: str) -> str:
    """A driver version kept as written ("525.60.13": its zeros matter to people), checked."""
    _version(table, "driver", where)
    return str(table["driver"])


@functools.cache
def load() -> Compat:
    """Every data file, parsed and checked once per process."""
    cuda, frameworks, images, gpus = (
        _read(n) for n in ("cuda.toml", "frameworks.toml", "images.toml", "gpus.toml")
    )
    toolkits = {}
    for key, tbl in cuda["toolkit"].items():
        where = f"cuda.toml toolkit.{key}"
        version = parse_version(key)
        toolkits[version] = CudaToolkit(
            version=version,
            driver=_driver(tbl, where),
            archs=tuple(_field(tbl, "archs", where, list)),
        )
    minor = {
        int(major): _driver({"driver": drv}, f"cuda.toml minor_version_compatibility.{major}")
        for major, drv in cuda["minor_version_compatibility"].items()
    }
    oses = {}
    for key, tbl in images["os"].items():
        where = f"images.toml os.{key}"
        oses[key] = OsRelease(
            key=key,
            name=_field(tbl, "name", where),
            glibc=_version(tbl, "glibc", where),
            python=_field(tbl, "python", where),
            package_manager=_field(tbl, "package_manager", where),
            isa=tbl.get("isa", "x86-64"),
        )
    cuda_images = tuple(
        CudaImageOs(
            os=os_key,
            first=_version(rng, "first", f"images.toml cuda_runtime.os.{os_key}"),
            last=_version(rng, "last", f"images.toml cuda_runtime.os.{os_key}")
            if "last" in rng
            else None,
        )
        for os_key, rng in images["cuda_runtime"]["os"].items()
    )
    torch = {
        minor_key: TorchRelease(
            minor=minor_key, variants=tuple(tbl["variants"]), pypi=tbl.get("pypi")
        )
        for minor_key, tbl in frameworks["torch"]["versions"].items()
    }
    tensorflow = {
        minor_key: TensorflowRelease(
            minor=minor_key,
            cuda=_version(tbl, "cuda", f"frameworks.toml tensorflow.versions.{minor_key}"),
            cudnn=_version(tbl, "cudnn", f"frameworks.toml tensorflow.versions.{minor_key}"),
        )
        for minor_key, tbl in frameworks["tensorflow"]["versions"].items()
    }
    return Compat(
        toolkits=dict(sorted(toolkits.items())),
        minor_compat=minor,
        os=oses,
        cuda_image_tag=images["cuda_runtime"]["tag"],
        cuda_images=cuda_images,
        python_tag=images["python"]["tag"],
        python_os=images["python"]["os"],
        python_variants=dict(images["python"]["variants"]),
        manylinux=tuple(
            (m["image"], _version(m, "glibc", "images.toml manylinux")) for m in images["manylinux"]
        ),
        torch_index=frameworks["torch"]["index"],
        torch=torch,
        tensorflow=tensorflow,
        gpus=tuple(
            GpuModel(pattern=re.compile(g["pattern"], re.IGNORECASE), cc=g["cc"])
            for g in gpus["gpu"]
        ),
    )
