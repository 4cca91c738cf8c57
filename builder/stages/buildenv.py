"""The environment a build runs in, made in one place and recorded as it was.

A build must see exactly its target. A cpu (or accelerator-neutral) build must find no CUDA
toolkit at all: packages that compile CUDA "when found" (`WITH_CUDA = CUDA_HOME is not None`)
otherwise build a CUDA extension into the cpu index whenever the builder image happens to
have nvcc on PATH, as every `nvidia/cuda:*-devel` image does. A cuXXX build must find its own
toolkit and no other version. So the environment is made by composing steps on a frozen
value, each returning a new one and noting what it did:

    BuildEnvironment.from_host(...).without_cuda(...)        # cpu / neutral
    BuildEnvironment.from_host(...).with_toolkit(...)        # cuXXX
        .with_vars(pkg.env).with_venv(env_dir).with_toolchain(...)

The last step puts the compiler wrappers (`stages.toolchain`: the target's ISA baseline in
place of -march=native; zig for an older glibc) first on PATH and in CC/CXX.

What "no CUDA" means here:
- every CUDA variable unset (`CUDA_HOME`, `CUDA_PATH`, `CUDACXX`, `CUDNN_*`, `FORCE_CUDA`...);
- every toolkit directory taken off `PATH`, `LD_LIBRARY_PATH`, `CPATH`, `LIBRARY_PATH`,
  `C_INCLUDE_PATH`, `CPLUS_INCLUDE_PATH` (and CMake's and pkg-config's prefix paths);
- a shared `PATH` directory that holds CUDA tools beside others (`/usr/local/bin/nvcc`)
  replaced by a copy of itself without them: no fake `nvcc` is put anywhere, because build
  scripts that look for nvcc would find the fake and take the CUDA branch;
- the toolkit directories themselves (`/usr/local/cuda*`, any configured `cuda_home`)
  hidden behind empty read-only mounts in the build's own mount namespace where the kernel
  allows it, since torch's `CUDA_HOME` and CMake fall back to `/usr/local/cuda` by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..cmd import hiding_prefix
from ..records import BuildEnvRecord
from ..targets import Target
from . import toolchain as toolchains

# Variables that point a build at a toolkit, or ask it for CUDA. Prefixes, then names.
CUDA_VAR_PREFIXES = ("CUDA", "CUDNN", "NVCC", "NCCL_", "TORCH_CUDA", "CMAKE_CUDA", "TORCH_NVCC")
CUDA_VARS = ("FORCE_CUDA", "USE_CUDA", "WITH_CUDA", "CUPY_NVCC_GENERATE_CODE")
# Search paths a compiler, linker or build system reads directories from.
PATH_VARS = (
    "PATH",
    "LD_LIBRARY_PATH",
    "LIBRARY_PATH",
    "CPATH",
    "C_INCLUDE_PATH",
    "CPLUS_INCLUDE_PATH",
    "CMAKE_PREFIX_PATH",
    "PKG_CONFIG_PATH",
)
# The toolkit's own programs, as found in its bin/ (or wrappers of them elsewhere).
CUDA_TOOLS = frozenset(
    {
        "nvcc",
        "nvcc.profile",
        "ptxas",
        "nvlink",
        "fatbinary",
        "cudafe++",
        "cuobjdump",
        "nvdisasm",
        "nvprune",
        "cu++filt",
        "bin2c",
        "__nvcc_device_query",
        "cuda-gdb",
        "compute-sanitizer",
    }
)
# Directories too general to drop from a search path: the system's own.
SYSTEM_DIRS = frozenset(
    {
        "/",
        "/bin",
        "/sbin",
        "/usr",
        "/usr/bin",
        "/usr/sbin",
        "/usr/local",
        "/usr/local/bin",
        "/usr/local/sbin",
        "/usr/lib",
        "/usr/lib64",
        "/lib",
        "/lib64",
        "/usr/include",
        "/usr/local/include",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt",
    }
)
# Where toolkits are installed by name: hidden from cpu builds even when nothing points there.
TOOLKIT_GLOBS = ("/usr/local/cuda", "/usr/local/cuda-*", "/opt/cuda", "/opt/cuda-*")


def is_cuda_var(name: str) -> bool:
    return name.startswith(CUDA_VAR_PREFIXES) or name in CUDA_VARS


def _holds_cuda(d: Path) -> bool:
    """A directory that holds nvcc, the CUDA runtime library or its headers."""
    return (
        (d / "nvcc").exists() or any(d.glob("libcudart.so*")) or (d / "cuda_runtime_api.h").exists()
    )


def toolkit_root(entry: str) -> Path | None:
    """The toolkit a search-path entry belongs to (its home: the directory with bin/nvcc or
    include/cuda_runtime_api.h), resolved; None when it belongs to none. System directories
    are never a toolkit's home, even when a packaged toolkit put nvcc in /usr/bin."""
    if not entry:
        return None
    try:
        path = Path(entry).resolve()
    except OSError:
        return None
    for d in (path, *path.parents):
        if str(d) in SYSTEM_DIRS:
            continue
        if (d / "bin" / "nvcc").exists() or (d / "include" / "cuda_runtime_api.h").exists():
            return d
    return None


def installed_toolkits(extra: Iterable[str | Path] = ()) -> list[Path]:
    """Every toolkit home on this machine that a build could reach by name, resolved."""
    found: list[Path] = []
    for pattern in TOOLKIT_GLOBS:
        base = Path(pattern).parent
        for p in sorted(base.glob(Path(pattern).name)) if base.is_dir() else ():
            if p.is_dir():
                found.append(p.resolve())
    for e in extra:
        root = toolkit_root(str(e))
        if root is not None:
            found.append(root)
    return list(dict.fromkeys(found))


@dataclass(frozen=True, kw_only=True)
class BuildEnvironment:
    """A build's environment variables, the directories hidden from it, and what was done
    to make them (for the build record)."""

    env: Mapping[str, str]
    workdir: Path  # where shadow PATH directories are made
    accel: str = "none"
    toolkit: Path | None = None
    hidden: tuple[Path, ...] = ()
    unset: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    shadowed: tuple[str, ...] = ()
    # Variables set by a step: recorded with their values.
    set_vars: tuple[str, ...] = ()
    toolchain: str | None = None  # what compiles: "host gcc ..., x86-64-v2"

    @classmethod
    def from_host(cls, base: Mapping[str, str], workdir: Path) -> BuildEnvironment:
        """Start from `base` (the caller's environment, pip configuration already removed)."""
        return cls(env=dict(base), workdir=workdir)

    # -- the accelerator ----------------------------------------------------------------------

    def without_cuda(self, known_homes: Iterable[str | Path] = ()) -> BuildEnvironment:
        """No CUDA reachable: variables unset, toolkit dirs off every path, shared PATH dirs
        shadowed without CUDA tools, every toolkit home hidden."""
        homes = self._toolkits_in_reach(known_homes)
        out = self._unset_cuda_vars()
        out = out._strip_paths(lambda root: True)
        out = out._shadow_path()
        return replace(out, accel="none", toolkit=None, hidden=tuple(homes))

    def with_toolkit(
        self, target: Target, known_homes: Iterable[str | Path] = ()
    ) -> BuildEnvironment:
        """The target's toolkit and no other: every other toolkit off the paths and hidden,
        this one first on PATH, its home under every name build systems read, its
        architecture list, and FORCE_CUDA (packages that check for a GPU at build time
        would build for the CPU on a GPU-less builder otherwise)."""
        assert target.toolkit is not None
        own = target.toolkit.cuda_home.resolve()
        others = [h for h in self._toolkits_in_reach(known_homes) if h != own]
        out = self._unset_cuda_vars()._strip_paths(lambda root: root != own)
        out = out.with_vars(cuda_vars(target))
        own_bin = str(target.toolkit.cuda_home / "bin")
        rest = [e for e in out.env.get("PATH", "").split(":") if e and e != own_bin]
        out = replace(out, env={**out.env, "PATH": ":".join(rest)}).prepend("PATH", own_bin)
        return replace(
            out, accel=target.accel, toolkit=target.toolkit.cuda_home, hidden=tuple(others)
        )

    # -- general steps ------------------------------------------------------------------------

    def with_vars(self, values: Mapping[str, str]) -> BuildEnvironment:
        """Set variables (a package's configured env, a step's own)."""
        env = {**self.env, **values}
        return replace(self, env=env, set_vars=tuple(dict.fromkeys([*self.set_vars, *values])))

    def prepend(self, var: str, entry: str) -> BuildEnvironment:
        old = self.env.get(var, "")
        env = {**self.env, var: f"{entry}:{old}" if old else entry}
        return replace(self, env=env, set_vars=tuple(dict.fromkeys([*self.set_vars, var])))

    def with_venv(self, env_dir: Path) -> BuildEnvironment:
        """The isolated build venv first on PATH."""
        out = self.prepend("PATH", str(env_dir / "bin"))
        return out.with_vars({"VIRTUAL_ENV": str(env_dir)})

    def with_toolchain(self, tc: toolchains.Toolchain) -> BuildEnvironment:
        """The compiler wrappers first on PATH and in CC/CXX (and zig's cache variables)."""
        out = self.with_vars(tc.env).prepend("PATH", str(tc.bin_dir))
        return replace(out, toolchain=tc.describe)

    # -- using it -----------------------------------------------------------------------------

    def prefix(self) -> tuple[str, ...]:
        """What a build command runs behind, outside bubblewrap: the hidden directories
        hidden in a mount namespace of its own, where the kernel allows it. (The sandbox
        takes the network away; under bubblewrap it hides these directories itself.)"""
        hidden = [str(h) for h in self.hidden if h.is_dir()]
        found = hiding_prefix(hidden, offline=False) if hidden else None
        return found or ()

    def hiding(self, *, sandboxed: bool = False) -> str:
        hidden = [h for h in self.hidden if h.is_dir()]
        if not hidden:
            return "nothing to hide"
        if sandboxed:
            return "empty read-only mounts in the build's sandbox"
        if hiding_prefix([str(h) for h in hidden], offline=False) is None:
            return "not possible here (no mount namespace: run as root or allow user namespaces)"
        return "empty read-only mounts in the build's own mount namespace"

    def record(
        self, package_vars: Iterable[str] = (), *, sandboxed: bool = False
    ) -> BuildEnvRecord:
        """What the build had: the variables that matter, with their values."""
        keep = {*PATH_VARS, *self.set_vars, *package_vars}
        keep |= {k for k in self.env if is_cuda_var(k)}
        return BuildEnvRecord(
            accel=self.accel,
            toolkit=str(self.toolkit) if self.toolkit else None,
            variables={k: self.env[k] for k in sorted(keep) if k in self.env},
            unset=self.unset,
            removed=self.removed,
            shadowed=self.shadowed,
            hidden=tuple(str(h) for h in self.hidden if h.is_dir()),
            hiding=self.hiding(sandboxed=sandboxed),
            toolchain=self.toolchain,
        )

    # -- the parts ----------------------------------------------------------------------------

    def _toolkits_in_reach(self, known_homes: Iterable[str | Path]) -> list[Path]:
        """Installed toolkits, those named by the config, and those the environment points
        at (CUDA variables, search-path entries)."""
        pointed = [v for k, v in self.env.items() if is_cuda_var(k) and v.startswith("/")]
        on_paths = [e for var in PATH_VARS for e in self.env.get(var, "").split(":") if e]
        return installed_toolkits([*known_homes, *pointed, *on_paths])

    def _unset_cuda_vars(self) -> BuildEnvironment:
        gone = sorted(k for k in self.env if is_cuda_var(k))
        env = {k: v for k, v in self.env.items() if k not in gone}
        return replace(self, env=env, unset=tuple(dict.fromkeys([*self.unset, *gone])))

    def _strip_paths(self, drop: Callable[[Path], bool]) -> BuildEnvironment:
        """Take toolkit directories (those whose toolkit `drop` says) off every search path;
        off the others than PATH, a non-system directory that holds CUDA files goes too."""
        env = dict(self.env)
        removed = list(self.removed)
        for var in PATH_VARS:
            if var not in env:
                continue
            kept = []
            for entry in env[var].split(":"):
                root = toolkit_root(entry)
                # Elsewhere, a directory holding CUDA files goes too; on PATH, one holding
                # other programs beside them is shadowed instead (_shadow_path).
                loose = (
                    root is None
                    and var != "PATH"
                    and entry
                    and str(_resolved(entry)) not in SYSTEM_DIRS
                    and _holds_cuda(Path(entry))
                )
                if (root is not None and drop(root)) or (loose and drop(Path(entry))):
                    removed.append(f"{var}: {entry}")
                else:
                    kept.append(entry)
            if kept:
                env[var] = ":".join(kept)
            else:
                del env[var]
        return replace(self, env=env, removed=tuple(removed))

    def _shadow_path(self) -> BuildEnvironment:
        """Replace each PATH directory that holds CUDA tools beside other programs (a system
        directory such as /usr/local/bin with an nvcc wrapper) by a directory of links to
        everything in it but those tools."""
        if "PATH" not in self.env:
            return self
        entries = self.env["PATH"].split(":")
        shadowed = list(self.shadowed)
        out = []
        for i, entry in enumerate(entries):
            d = Path(entry)
            tools = _cuda_tools_in(d)
            if not tools:
                out.append(entry)
                continue
            copy = self.workdir / "path-shadow" / str(i)
            _link_all_but(d, copy, tools)
            out.append(str(copy))
            shadowed.append(f"{entry} (without {', '.join(sorted(tools))})")
        env = {**self.env, "PATH": ":".join(out)}
        return replace(self, env=env, shadowed=tuple(shadowed))


def _resolved(entry: str) -> Path:
    try:
        return Path(entry).resolve()
    except OSError:
        return Path(entry)


def _cuda_tools_in(d: Path) -> set[str]:
    try:
        return {p.name for p in d.iterdir() if p.name in CUDA_TOOLS}
    except OSError:
        return set()


def _link_all_but(src: Path, dest: Path, skip: set[str]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name in skip:
            continue
        link = dest / p.name
        if not link.is_symlink():
            link.symlink_to(p)


def cuda_vars(target: Target) -> dict[str, str]:
    """The variables a CUDA target builds with: its toolkit's home under every name build
    systems read, and the architecture list in the forms PyTorch
    (`TORCH_CUDA_ARCH_LIST="8.0;9.0;12.0+PTX"`) and CMake (`80-real;90-real;120`) use."""
    assert target.toolkit is not None
    home = str(target.toolkit.cuda_home)
    archs = target.arch_list
    cmake = [
        a.replace(".", "").replace("+PTX", "") + ("" if "+PTX" in a else "-real") for a in archs
    ]
    return {
        "CUDA_HOME": home,
        "CUDA_PATH": home,
        "CUDA_ROOT": home,
        "CUDA_TOOLKIT_ROOT_DIR": home,
        "CUDAToolkit_ROOT": home,
        "CUDACXX": str(target.toolkit.nvcc),
        "TORCH_CUDA_ARCH_LIST": ";".join(archs),
        "CMAKE_CUDA_ARCHITECTURES": ";".join(cmake),
        "CUDAARCHS": ";".join(cmake),
        "FORCE_CUDA": "1",
    }


def for_build(
    *,
    target: Target,
    cuda: bool,
    base: Mapping[str, str],
    package_env: Mapping[str, str],
    env_dir: Path,
    workdir: Path,
    known_homes: Sequence[str | Path] = (),
    reproducible: Mapping[str, str] | None = None,
    zig_cache: Path | None = None,
) -> BuildEnvironment:
    """The environment for one build: CUDA off, or the target's toolkit only (`cuda`), then
    what makes it reproducible (`reproducible_vars`), then the package's own variables (the
    config has the last word), then the build venv, then the target's compilers (its ISA
    baseline, its toolchain; zig keeps its cache in `zig_cache`). Raises ToolMissingError
    when the toolchain is not there."""
    env = BuildEnvironment.from_host(base, workdir)
    if cuda and target.toolkit is not None:
        env = env.with_toolkit(target, known_homes)
    else:
        env = env.without_cuda(known_homes)
    # A toolkit that shares a prefix with the build's interpreter or work directory (a conda
    # environment with nvcc) stays visible: hiding it would hide the build itself.
    needed = [
        workdir.resolve(),
        *([target.interpreter.path.resolve()] if target.interpreter else []),
    ]
    kept = tuple(h for h in env.hidden if not any(n.is_relative_to(h) for n in needed))
    env = replace(env, hidden=kept).with_vars(reproducible or {})
    env = env.with_vars(package_env).with_venv(env_dir)
    tc = toolchains.prepare(
        name=target.toolchain,
        isa=target.isa,
        policy=target.policy,
        workdir=workdir,
        path=env.env.get("PATH", os.defpath),
        package_env=package_env,
        zig_cache=zig_cache,
    )
    return env.with_toolchain(tc)


# Where a build's own directory is, for the build: the same for every build of one
# (package, version, target), wherever its work directory really is. Under bubblewrap the
# build runs there (in its private /tmp, `Sandbox.alias`); elsewhere the compilers' prefix
# maps write it in place of the real path.
FIXED_ROOT = "/tmp/prewheel-build"  # noqa: S108 (the sandbox's private /tmp)
# Where the target interpreter's prefix appears (its headers' paths in debug info, __FILE__).
FIXED_PYTHON = "/prewheel/python"


def fixed_build_path(name: str, version: str, target: str) -> str:
    """The build path of (package, version, target) as the built objects record it."""
    return f"{FIXED_ROOT}/{name}-{version}-{target}"


def prefix_maps(workdir: Path, fixed: str, python_prefix: str | None) -> list[tuple[str, str]]:
    """(real, fixed) path pairs the compilers rewrite: the work directory (as given and
    resolved, which differ under a symlinked TMPDIR) and the interpreter's prefix. The
    longest real path comes last: gcc applies the last map that matches."""
    pairs = {str(workdir): fixed, str(workdir.resolve()): fixed}
    if python_prefix:
        pairs.setdefault(python_prefix, FIXED_PYTHON)
    return sorted(pairs.items(), key=lambda p: len(p[0]))


def prefix_map_flags(maps: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """`-ffile-prefix-map` (which implies the debug and macro maps) for gcc and clang, and
    `-fdebug-prefix-map` for compilers (or drivers such as nvcc's host pass) that know only
    that one."""
    out: list[str] = []
    for real, fixed in maps:
        out += [f"-ffile-prefix-map={real}={fixed}", f"-fdebug-prefix-map={real}={fixed}"]
    return tuple(out)


def reproducible_vars(*, epoch: int, maps: Sequence[tuple[str, str]], cuda: bool) -> dict[str, str]:
    """The variables every build gets so that two builds of one sdist write the same bytes:
    SOURCE_DATE_EPOCH (from the sdist; honoured by setuptools, gcc's __DATE__/__TIME__,
    Cython, zip writers), PYTHONHASHSEED=0 (set iteration order in generated code), the
    prefix maps for nvcc's host compiler in a CUDA build. The C and C++ flags get the maps
    through CFLAGS/CXXFLAGS (`build.with_flags`). RUSTFLAGS is left alone: set, it would
    replace the rustflags of a package's own `.cargo/config.toml`."""
    out = {"SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0"}
    if cuda:
        host = (f"-Xcompiler=-ffile-prefix-map={r}={f}" for r, f in maps)
        out["NVCC_APPEND_FLAGS"] = " ".join(host)
    return out


def host_base() -> dict[str, str]:
    """What a build takes from the caller's environment: the search paths and the CUDA
    variables (for `without_cuda` and `with_toolkit` to act on); the sandbox fixes the rest,
    so no secret in the environment reaches package code."""
    return {k: v for k, v in os.environ.items() if k in PATH_VARS or is_cuda_var(k)}


def known_toolkit_homes(homes: Iterable[str | None]) -> list[str]:
    """Configured `cuda_home`s and the environment's, for hiding (missing ones dropped)."""
    out = [h for h in homes if h]
    out += [os.environ[v] for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    return out
