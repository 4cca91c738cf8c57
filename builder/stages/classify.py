"""Whether a package is accelerator-specific, decided from its sdist before it is built.

The cache key depends on the answer (one neutral build shared by every index, or one build
per accelerator), so it is settled in the plan, from evidence a user can read:

- CUDA sources in the archive (`.cu`, `.cuh`);
- build scripts that look for a toolkit or use one (`nvcc`, `CUDA_HOME`, `CUDAExtension`,
  `torch.utils.cpp_extension`, CMake `enable_language(CUDA)` / `find_package(CUDAToolkit)` /
  `project(... CUDA)`, meson's `cuda`, `FORCE_CUDA`, ...);
- a framework it builds against that differs between accelerators (torch 2.5.1+cpu for cpu,
  2.5.1+cu130 for cu130: `plan` finds that from the closures);
- the config: `[packages.X] accel_specific = true` or `false` has the last word on the sdist's
  evidence.

The archive is read in memory, never unpacked. What a scan found is cached per sdist sha256
(`wheelhouse/cache/sdist-scan/`), so a warm plan reads nothing. After the build, a neutral
wheel that links CUDA all the same is the second check (`stages.accel`).
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from .. import scratch
from ..errors import PrewheelError
from ..records import AccelDecision
from ..upstream import UpstreamFile
from ..wheelhouse import Wheelhouse, atomic_write_json
from .fetch import fetch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SCAN_VERSION = 1  # bump when the patterns change: cached scans are then read again
CUDA_SOURCE_SUFFIXES = (".cu", ".cuh")
BUILD_SCRIPTS = frozenset(
    {
        "setup.py",
        "setup.cfg",
        "pyproject.toml",
        "CMakeLists.txt",
        "meson.build",
        "meson.options",
        "meson_options.txt",
        "build.py",
        "SConstruct",
    }
)
# Directories whose contents are not built into the wheel (or not by this package).
_NOT_BUILT = frozenset({"test", "tests", "testing", "example", "examples", "doc", "docs"})
_VENDORED = frozenset({"third_party", "thirdparty", "3rdparty", "vendor", "external", "extern"})
_MAX_SCRIPT = 2 << 20

# (what the evidence says, pattern) for build scripts.
TOOLKIT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (label, re.compile(rx, re.DOTALL))
    for label, rx in (
        ("nvcc", r"\bnvcc\b"),
        ("CUDA_HOME", r"\bCUDA_HOME\b"),
        ("CUDA_PATH", r"\bCUDA_PATH\b"),
        ("CUDA_ROOT", r"\bCUDA_ROOT\b|\bCUDA_TOOLKIT_ROOT_DIR\b|\bCUDAToolkit_ROOT\b"),
        ("CUDAExtension", r"\bCUDAExtension\b"),
        ("torch.utils.cpp_extension", r"torch\.utils\.cpp_extension|from\s+torch\.utils\s+"
         r"import\s+[^\n]*\bcpp_extension\b"),
        ("FORCE_CUDA", r"\bFORCE_CUDA\b"),
        ("WITH_CUDA", r"\bWITH_CUDA\b"),
        ("enable_language(CUDA)", r"enable_language\s*\(\s*CUDA\b"),
        ("find_package(CUDAToolkit)", r"find_package\s*\(\s*CUDAToolkit\b"),
        ("find_package(CUDA)", r"find_package\s*\(\s*CUDA\b"),
        ("project(... CUDA)", r"\bproject\s*\([^)]*\bCUDA\b"),
        ("CMAKE_CUDA_*", r"\bCMAKE_CUDA_\w+"),
        ("meson cuda", r"(?:add_languages|dependency)\s*\(\s*['\"]cuda['\"]"),
    )
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class SdistScan:
    """What an sdist says about CUDA, and what it builds against."""

    cuda_sources: tuple[str, ...]  # paths inside the project, sorted
    toolkit_use: tuple[str, ...]  # "setup.py: CUDA_HOME", ...
    build_requires: tuple[str, ...]  # [build-system] requires, as written
    error: str | None = None  # why the archive could not be read

    @property
    def evidence(self) -> tuple[str, ...]:
        shown = list(self.cuda_sources[:3])
        if len(self.cuda_sources) > 3:
            shown.append(f"{len(self.cuda_sources) - 3} more .cu/.cuh")
        return (*shown, *self.toolkit_use)

    def to_json(self) -> dict[str, Any]:
        return {
            "scan_version": SCAN_VERSION,
            "cuda_sources": list(self.cuda_sources),
            "toolkit_use": list(self.toolkit_use),
            "build_requires": list(self.build_requires),
            "error": self.error,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SdistScan | None:
        if d.get("scan_version") != SCAN_VERSION:
            return None
        return cls(
            cuda_sources=tuple(d["cuda_sources"]),
            toolkit_use=tuple(d["toolkit_use"]),
            build_requires=tuple(d["build_requires"]),
            error=d.get("error"),
        )


# -- the decisions (pure) ---------------------------------------------------------------------


def decide(
    scan: SdistScan | None,
    *,
    override: bool | None,
    framework_split: tuple[str, ...] = (),
) -> AccelDecision:
    """Accelerator-specific when the config says so, else when the sdist has CUDA sources or
    toolkit lookups, or builds against a framework that differs between accelerators.
    `accel_specific = false` in the config overrides the sdist (the DT_NEEDED check after the
    build still holds)."""
    evidence = (*(scan.evidence if scan else ()), *framework_split)
    if override is not None:
        said = "accel_specific = " + ("true" if override else "false")
        return AccelDecision(specific=override, by="config", evidence=(said, *evidence))
    if scan is not None and scan.evidence:
        return AccelDecision(specific=True, by="sdist", evidence=evidence)
    if framework_split:
        return AccelDecision(specific=True, by="framework", evidence=framework_split)
    if scan is not None and scan.error:
        return AccelDecision(specific=False, by="none", evidence=(f"not read: {scan.error}",))
    return AccelDecision(specific=False, by="none")


def requirement_names(requirements: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for req in requirements:
        try:
            out.append(canonicalize_name(Requirement(req).name))
        except InvalidRequirement:
            continue
    return out


# Build tools, not frameworks: pinning them to a runtime pin would break modern builds for
# the sake of an old package that needs pkg_resources at run time.
BUILD_TOOLS = frozenset({"setuptools", "wheel", "pip"})


def framework_pins(
    build_requires: tuple[str, ...], closure: Mapping[str, str]
) -> tuple[tuple[str, str], ...]:
    """The build requirements that are also in the runtime closure, at its versions."""
    names = sorted(set(requirement_names(build_requires)) - BUILD_TOOLS)
    return tuple((n, closure[n]) for n in names if n in closure)


def framework_split(
    pins: tuple[tuple[str, str], ...], by_accel: Mapping[str, Mapping[str, str]]
) -> tuple[str, ...]:
    """Evidence that a package builds against a framework that differs between
    accelerators: `by_accel[name][accel]` is what each accelerator's closure holds (a version,
    or a version and file hashes)."""
    out = []
    for name, _ in pins:
        seen = by_accel.get(name, {})
        if len(set(seen.values())) > 1:
            others = ", ".join(f"{v.split(' ')[0]} for {a}" for a, v in sorted(seen.items()))
            out.append(f"builds against {name}: {others}")
    return tuple(out)


# -- reading an sdist (I/O) -------------------------------------------------------------------


def _members(path: Path) -> Iterator[tuple[str, int, Any]]:
    """(path inside the project, size, opener) for each regular file of the archive."""
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir():
                    yield info.filename, info.file_size, lambda i=info: zf.read(i)
        return
    with tarfile.open(path) as tf:
        for member in tf:
            if member.isfile():

                def read(m: tarfile.TarInfo = member) -> bytes:
                    fh = tf.extractfile(m)
                    return fh.read() if fh else b""

                yield member.name, member.size, read


def _strip_comments(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))


def scan_archive(path: Path) -> SdistScan:
    """Scan an sdist in memory: CUDA sources, toolkit lookups in its build scripts, and its
    static build requirements."""
    sources: list[str] = []
    use: dict[str, None] = {}
    requires: tuple[str, ...] = ()
    try:
        for name, size, read in _members(path):
            parts = PurePosixPath(name).parts[1:]  # below the top-level directory
            if not parts:
                continue
            rel = "/".join(parts)
            dirs = {p.lower() for p in parts[:-1]}
            if dirs & _NOT_BUILT:
                continue
            if rel.endswith(CUDA_SOURCE_SUFFIXES):
                sources.append(rel)
                continue
            base = parts[-1]
            top_level = len(parts) == 1
            script = base in BUILD_SCRIPTS or base.endswith(".cmake")
            if not (script or (top_level and base.endswith(".py"))) or size > _MAX_SCRIPT:
                continue
            if dirs & _VENDORED and not top_level:
                continue
            text = read().decode("utf-8", "replace")
            if rel == "pyproject.toml":
                requires = _build_requires(text)
            body = _strip_comments(text)
            for label, rx in TOOLKIT_PATTERNS:
                if rx.search(body):
                    use.setdefault(f"{rel}: {label}")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        return SdistScan(cuda_sources=(), toolkit_use=(), build_requires=(), error=str(exc))
    return SdistScan(
        cuda_sources=tuple(sorted(sources)), toolkit_use=tuple(use), build_requires=requires
    )


def _build_requires(text: str) -> tuple[str, ...]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return ()
    reqs = data.get("build-system", {}).get("requires", [])
    return tuple(r for r in reqs if isinstance(r, str)) if isinstance(reqs, list) else ()


class SourceScanner:
    """Scans sdists for the plan: fetched into `wheelhouse/sources` (the build reuses them),
    scanned once per sha256, remembered in `wheelhouse/cache/sdist-scan/`. With `keep`
    false (`prewheel plan` where no wheelhouse exists yet: a plan creates none; a build
    ahead of the plan, `plan_waves`), each sdist is fetched into the run's kept files (the
    build takes it from there) or else a temporary directory, and its scan kept in memory
    only."""

    def __init__(self, wh: Wheelhouse, *, keep: bool = True) -> None:
        self.wh = wh
        self.keep = keep
        self._seen: dict[str, SdistScan] = {}

    def _cache(self, digest: str) -> Path:
        return self.wh.root / "cache" / "sdist-scan" / f"{digest}.json"

    def __call__(self, sdist: UpstreamFile, hashes: frozenset[str]) -> tuple[str, SdistScan]:
        """The sdist's sha256 and its scan. A file that cannot be fetched is scanned as
        unreadable (the build's own fetch then fails that package with the same error)."""
        digest = sdist.sha256
        if digest is not None:
            if digest in self._seen:
                return digest, self._seen[digest]
            cached = self._read(digest)
            if cached is not None:
                self._seen[digest] = cached
                return digest, cached
        with tempfile.TemporaryDirectory(prefix="prewheel-sdist-") as tmp:
            try:
                into = self.wh.root / "sources" if self.keep else scratch.kept_files()
                path, digest = fetch(sdist, hashes, into or Path(tmp))
            except PrewheelError as exc:
                if digest is None:
                    raise
                unread = SdistScan(
                    cuda_sources=(), toolkit_use=(), build_requires=(), error=exc.message
                )
                return digest, unread
            scan = scan_archive(path)
        self._seen[digest] = scan
        if self.keep:
            atomic_write_json(self._cache(digest), scan.to_json())
        return digest, scan

    def _read(self, digest: str) -> SdistScan | None:
        try:
            return SdistScan.from_json(json.loads(self._cache(digest).read_text("utf-8")))
        except (OSError, ValueError, KeyError):
            return None
