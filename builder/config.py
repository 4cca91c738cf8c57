"""The configuration file, loaded into frozen models that reject unknown keys.

Every problem is collected and reported at once, each with its place
(`packages.annoy.evn: unknown key, did you mean 'env'?`).
"""

from __future__ import annotations

import difflib
import functools
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name

from . import stamp
from .compat import ISA_LEVELS
from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PYPI_SIMPLE = "https://pypi.org/simple/"
WERROR_IMPLICIT = "-Werror=implicit-function-declaration"
DEFAULT_CONFIG = Path("config/prewheel.toml")
DEFAULT_BUILD_TIMEOUT = 1800.0
DEFAULT_MEMORY = "8G"  # RLIMIT_AS per process of package code
SANDBOX_SETTINGS = ("auto", "bwrap", "netns", "none")
# The ISA baseline a target gets unless it names one (builder.compat.ISA_LEVELS), and the
# toolchains a target may build with: the host's compilers, or zig for an older glibc.
DEFAULT_ISA = "x86-64-v2"
TOOLCHAINS = ("host", "zig")

# Libraries a CUDA runtime image or the nvidia-* wheels provide; never grafted.
CUDA_EXCLUDES = (
    "libcuda.so.1",
    "libcudart.so.*",
    "libcublas.so.*",
    "libcublasLt.so.*",
    "libcufft.so.*",
    "libcurand.so.*",
    "libcusparse.so.*",
    "libcusolver.so.*",
    "libnvrtc.so.*",
    "libnvJitLink.so.*",
    "libcudnn*.so.*",
    "libnccl.so.*",
    "libnvToolsExt.so.*",
)


@dataclass(frozen=True, kw_only=True)
class AccelConfig:
    name: str
    cuda_home: str | None = None
    arch_list: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    # This accelerator's own index (a PyTorch-style per-CUDA index), in place of
    # [index] upstream, and indexes searched beside it.
    upstream: str | None = None
    extra_upstreams: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Smoke:
    """A smoke test: Python code run with the verify venv's interpreter, or a command run with
    the venv's scripts first on PATH. Either must exit 0."""

    code: str | None = None
    command: tuple[str, ...] = ()
    source: str  # where it was set: the config's key, or the recipe file

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "command": list(self.command), "source": self.source}


@dataclass(frozen=True, kw_only=True)
class PackageConfig:
    name: str
    env: Mapping[str, str] = field(default_factory=dict)
    config_settings: Mapping[str, str] = field(default_factory=dict)
    build_requires: tuple[str, ...] = ()
    python: SpecifierSet | None = None
    skip: str | None = None
    heavy: bool = False
    accel_specific: bool | None = None  # None: decided from the sdist (stages.classify)
    accels: tuple[str, ...] = ()  # only for these accelerators (a CUDA-only package: cu*)
    force_build: bool = False
    import_names: tuple[str, ...] | None = None
    timeout: float | None = None
    patches: tuple[str, ...] = ()  # absolute paths of unified diffs, applied with patch -p1
    # Checks beyond import: a smoke test (None: the shipped recipe, if any; False: none),
    # runtime constraints on the closure, the ABI checks and -Werror=implicit-function-...
    smoke: Smoke | Literal[False] | None = None
    requires: tuple[str, ...] = ()
    abi_check: bool = True
    werror_implicit: bool = True
    strip: bool | None = None  # None: [build] strip decides
    # The package dispatches at run time (cpuid checks, multi-versioning): instructions above
    # the target's ISA baseline are recorded, not a failure.
    isa_dispatch: bool = False


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """One requested target, before its interpreter is looked for."""

    python: str
    accel: str
    policy: str
    isa: str = DEFAULT_ISA  # the oldest x86-64 psABI level its wheels must run on
    toolchain: str = "host"  # one of TOOLCHAINS


@dataclass(frozen=True, kw_only=True)
class Config:
    source: str
    upstream: str = PYPI_SIMPLE
    resolver: str = "uv"  # one of RESOLVERS: uv's resolver, or pip's (the reference)
    build_timeout: float = DEFAULT_BUILD_TIMEOUT
    jobs: int = 0
    strip: bool = True
    smoke_recipes: bool = True
    build_constraints: str | None = None
    memory: int | None = None  # bytes of address space per process of package code
    sandbox: str = "auto"  # one of SANDBOX_SETTINGS
    verify_installer: str = "auto"  # one of VERIFY_INSTALLERS
    targets: tuple[TargetSpec, ...] = ()
    accels: Mapping[str, AccelConfig] = field(default_factory=dict)
    packages: Mapping[str, PackageConfig] = field(default_factory=dict)

    def package(self, name: str) -> PackageConfig:
        key = canonicalize_name(name)
        return self.packages.get(key) or PackageConfig(name=key)

    def accel(self, name: str) -> AccelConfig:
        return self.accels.get(name) or AccelConfig(name=name)

    def upstreams(self, accel: str) -> tuple[str, ...]:
        """The indexes a target of `accel` resolves and fetches from: the accelerator's own
        upstream (else [index] upstream) first, then its extra ones."""
        acc = self.accel(accel)
        return (acc.upstream or self.upstream, *acc.extra_upstreams)

    def own_upstream(self, accel: str) -> bool:
        """Whether `accel` resolves against indexes of its own (what it downloads from there
        is listed in its own index only)."""
        return self.upstreams(accel) != (self.upstream,)

    def strips(self, name: str) -> bool:
        """Whether `name` is built without debug info and repaired with `--strip`."""
        own = self.package(name).strip
        return self.strip if own is None else own

    def build_flags(self, name: str) -> tuple[str, ...]:
        """The compiler flags prewheel appends to CFLAGS (and, but for the C-only one, to
        CXXFLAGS) for `name`: no debug info when stripped, and undeclared functions (a C API
        the target Python removed) as errors at build time instead of at import."""
        flags = ["-g0"] if self.strips(name) else []
        if self.package(name).werror_implicit:
            flags.append(WERROR_IMPLICIT)
        return tuple(flags)

    def smoke_for(self, name: str) -> Smoke | None:
        """The package's smoke test: the config's, else the shipped recipe (unless turned off
        with `smoke = false` or `[build] smoke_recipes = false`)."""
        own = self.package(name).smoke
        if own is False:
            return None
        if own is not None:
            return own
        if not self.smoke_recipes:
            return None
        return smoke_recipes().get(canonicalize_name(name))

    @property
    def resolve_timeout(self) -> float:
        """The time limit of resolving: it prepares the metadata of any package of the
        closure (running its setup.py), so the largest limit any package is given."""
        return max([self.build_timeout, *(p.timeout for p in self.packages.values() if p.timeout)])


_TOP_KEYS = ("index", "build", "targets", "target", "accel", "packages")
_INDEX_KEYS = ("upstream", "resolver")
# The resolvers of `[index] resolver`: uv's (seconds) and pip's (the reference answer).
RESOLVERS = ("uv", "pip")
_BUILD_KEYS = (
    "timeout",
    "jobs",
    "strip",
    "smoke_recipes",
    "constraints",
    "memory",
    "sandbox",
    "verify_installer",
)
# Who installs into verify's venv: uv when prewheel's environment has it, uv, or pip.
VERIFY_INSTALLERS = ("auto", "uv", "pip")
_MATRIX_KEYS = ("python", "accel", "policy", "isa", "toolchain")
_ACCEL_KEYS = ("cuda_home", "arch_list", "exclude", "upstream", "extra_upstreams")
_PACKAGE_KEYS = (
    "env",
    "config_settings",
    "build_requires",
    "python",
    "skip",
    "heavy",
    "accel_specific",
    "accels",
    "force_build",
    "import_names",
    "timeout",
    "patches",
    "smoke",
    "requires",
    "abi_check",
    "werror_implicit",
    "strip",
    "isa_dispatch",
)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, msg: str) -> None:
        self.items.append(f"{where}: {msg}")

    def unknown_keys(self, table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f", did you mean '{close[0]}'?" if close else f" (valid: {', '.join(allowed)})"
                )
                self.add(f"{where}.{key}" if where else key, f"unknown key{hint}")

    def table(self, value: Any, where: str) -> Mapping[str, Any]:
        if isinstance(value, Mapping):
            return value
        self.add(where, f"expected a table, got {type(value).__name__}")
        return {}

    def str_list(self, value: Any, where: str) -> tuple[str, ...]:
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self.add(where, "expected a string or a list of strings")
        return ()

    def str_map(self, value: Any, where: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for k, v in self.table(value, where).items():
            if isinstance(v, (str, int, float, bool)):
                out[str(k)] = str(v)
            else:
                self.add(f"{where}.{k}", "expected a string")
        return out

    def positive(self, value: Any, where: str) -> float | None:
        """A number of seconds (or a count) that must be above zero."""
        number = self.typed(value, (int, float), where)
        if number is not None and number <= 0:
            self.add(where, f"must be greater than 0, got {number!r}")
            return None
        return float(number) if number is not None else None

    def requirements(self, value: Any, where: str) -> tuple[str, ...]:
        reqs = self.str_list(value, where)
        for i, req in enumerate(reqs):
            try:
                Requirement(req)
            except InvalidRequirement as exc:
                self.add(f"{where}[{i}]", f"not a requirement: {req!r} ({exc})")
        return reqs

    def typed(self, value: Any, kind: type | tuple[type, ...], where: str) -> Any:
        if isinstance(value, kind) and not (kind is not bool and isinstance(value, bool)):
            return value
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        self.add(where, f"expected {names}, got {value!r}")
        return None


def default_config() -> Config:
    """Built-in defaults: the running interpreter, `cpu`, the lowest policy auditwheel reaches."""
    return Config(
        source="<defaults>",
        memory=parse_size(DEFAULT_MEMORY),
        targets=(TargetSpec(python="current", accel="cpu", policy="auto"),),
    )


def load_config(path: Path | None) -> Config:
    """Load `path`, or `config/prewheel.toml` if present, or the built-in defaults."""
    data = stamp.watch_file(path or DEFAULT_CONFIG)
    if path is None:
        if data is None:
            return default_config()
        path = DEFAULT_CONFIG
    if data is None:
        raise ConfigError(["file not found"], source=str(path))
    try:
        raw = tomllib.loads(data.decode("utf-8-sig"))  # a byte-order mark is no TOML error
    except UnicodeDecodeError as exc:
        raise ConfigError([f"not UTF-8 text ({exc.reason})"], source=str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"not valid TOML: {exc}"], source=str(path)) from exc
    return parse_config(raw, source=str(path))


def parse_config(raw: Mapping[str, Any], *, source: str) -> Config:
    p = _Problems()
    p.unknown_keys(raw, _TOP_KEYS, "")

    index = p.table(raw.get("index", {}), "index")
    p.unknown_keys(index, _INDEX_KEYS, "index")
    upstream = p.typed(index.get("upstream", PYPI_SIMPLE), str, "index.upstream") or PYPI_SIMPLE
    if not upstream.endswith("/"):
        upstream += "/"
    resolver = p.typed(index.get("resolver", "uv"), str, "index.resolver") or "uv"
    if resolver not in RESOLVERS:
        close = difflib.get_close_matches(resolver, RESOLVERS, n=1)
        hint = f", did you mean '{close[0]}'?" if close else ""
        p.add("index.resolver", f"'{resolver}' is not one of {', '.join(RESOLVERS)}{hint}")

    build = p.table(raw.get("build", {}), "build")
    p.unknown_keys(build, _BUILD_KEYS, "build")
    timeout = p.positive(build.get("timeout", DEFAULT_BUILD_TIMEOUT), "build.timeout")
    jobs = p.typed(build.get("jobs", 0), int, "build.jobs")
    if jobs is not None and jobs < 0:
        p.add("build.jobs", f"must be 0 (the number of CPUs) or more, got {jobs}")
        jobs = 0
    strip = p.typed(build.get("strip", True), bool, "build.strip")
    recipes = p.typed(build.get("smoke_recipes", True), bool, "build.smoke_recipes")
    constraints = build.get("constraints")
    if constraints is not None:
        constraints = p.typed(constraints, str, "build.constraints")

    memory = _memory(build.get("memory", DEFAULT_MEMORY), p)
    sandbox = p.typed(build.get("sandbox", "auto"), str, "build.sandbox") or "auto"
    if sandbox not in SANDBOX_SETTINGS:
        close = difflib.get_close_matches(sandbox, SANDBOX_SETTINGS, n=1)
        hint = f", did you mean '{close[0]}'?" if close else ""
        p.add("build.sandbox", f"'{sandbox}' is not one of {', '.join(SANDBOX_SETTINGS)}{hint}")

    installer = p.typed(build.get("verify_installer", "auto"), str, "build.verify_installer")
    if installer is not None and installer not in VERIFY_INSTALLERS:
        close = difflib.get_close_matches(installer, VERIFY_INSTALLERS, n=1)
        hint = f", did you mean '{close[0]}'?" if close else ""
        p.add(
            "build.verify_installer",
            f"'{installer}' is not one of {', '.join(VERIFY_INSTALLERS)}{hint}",
        )

    targets = _parse_targets(raw, p)
    accels = _parse_accels(raw, p)
    base = Path(source).parent if Path(source).is_file() else Path.cwd()
    packages = _parse_packages(raw, p, base)

    if p.items:
        raise ConfigError(p.items, source=source)
    return Config(
        source=source,
        upstream=upstream,
        resolver=resolver,
        build_timeout=float(timeout or DEFAULT_BUILD_TIMEOUT),
        jobs=jobs or 0,
        strip=strip is not False,
        smoke_recipes=recipes is not False,
        build_constraints=constraints,
        memory=memory,
        sandbox=sandbox,
        verify_installer=installer or "auto",
        targets=targets,
        accels=accels,
        packages=packages,
    )


def _memory(value: Any, p: _Problems) -> int | None:
    """`[build] memory`: "4G", "512M", bytes, or 0 / "none" for no limit."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        p.add("build.memory", f"expected a size like '4G' or a number of bytes, got {value!r}")
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        p.add("build.memory", str(exc))
        return None


def parse_size(value: str | int) -> int | None:
    """`"4G"`, `"512M"`, `"1.5G"`, a number of bytes; `0` or `"none"`: no limit (None)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"must be 0 (no limit) or more, got {value}")
        return value or None
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    if text in ("", "0", "NONE", "UNLIMITED"):
        return None
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    scale = units.get(text[-1], 1)
    try:
        amount = float(text[:-1] if text[-1] in units else text)
    except ValueError:
        raise ValueError(f"not a size: {value!r} (e.g. '4G', '512M', or 'none')") from None
    if amount <= 0:
        raise ValueError(f"must be greater than 0, or 'none': {value!r}")
    return int(amount * scale)


def _parse_targets(raw: Mapping[str, Any], p: _Problems) -> tuple[TargetSpec, ...]:
    specs: list[TargetSpec] = []
    matrix = p.table(raw.get("targets", {}), "targets")
    p.unknown_keys(matrix, _MATRIX_KEYS, "targets")
    if matrix or "target" not in raw:
        pythons = p.str_list(matrix.get("python", ["current"]), "targets.python")
        accels = p.str_list(matrix.get("accel", ["cpu"]), "targets.accel")
        policies = p.str_list(matrix.get("policy", ["auto"]), "targets.policy")
        isa = _choice(matrix.get("isa", DEFAULT_ISA), ISA_LEVELS, "targets.isa", p)
        chain = _choice(matrix.get("toolchain", "host"), TOOLCHAINS, "targets.toolchain", p)
        specs += [
            TargetSpec(python=py, accel=acc, policy=pol, isa=isa, toolchain=chain)
            for py in pythons
            for acc in accels
            for pol in policies
        ]
    explicit = raw.get("target", [])
    if not isinstance(explicit, list):
        p.add("target", "expected an array of tables ([[target]])")
        explicit = []
    for i, entry in enumerate(explicit):
        where = f"target[{i}]"
        tbl = p.table(entry, where)
        p.unknown_keys(tbl, _MATRIX_KEYS, where)
        py = p.typed(tbl.get("python", "current"), str, f"{where}.python")
        acc = p.typed(tbl.get("accel", "cpu"), str, f"{where}.accel")
        pol = p.typed(tbl.get("policy", "auto"), str, f"{where}.policy")
        isa = _choice(tbl.get("isa", DEFAULT_ISA), ISA_LEVELS, f"{where}.isa", p)
        chain = _choice(tbl.get("toolchain", "host"), TOOLCHAINS, f"{where}.toolchain", p)
        if py and acc and pol:
            specs.append(TargetSpec(python=py, accel=acc, policy=pol, isa=isa, toolchain=chain))
    for i, spec in enumerate(specs):
        if not _valid_accel(spec.accel):
            p.add(
                f"targets[{i}].accel", f"'{spec.accel}' is not 'cpu' or a CUDA variant like 'cu128'"
            )
        if spec.policy != "auto" and not spec.policy.startswith(("manylinux", "musllinux")):
            p.add(f"targets[{i}].policy", f"'{spec.policy}' is not 'auto' or a manylinux policy")
        if spec.toolchain == "zig" and spec.accel != "cpu":
            p.add(
                f"targets[{i}].toolchain",
                f"zig builds cpu targets only, not {spec.accel} (nvcc cannot use zig as its host "
                "compiler): build CUDA targets with the host toolchain or in a builder container",
            )
    # A target's name is (python, accel, policy): two that differ only in isa or toolchain
    # would publish different wheels under one name.
    named: dict[tuple[str, str, str], int] = {}
    for i, spec in enumerate(dict.fromkeys(specs)):
        first = named.setdefault((spec.python, spec.accel, spec.policy), i)
        if first != i:
            p.add(
                f"targets[{i}]",
                f"the same python, accel and policy as targets[{first}] with another isa or "
                "toolchain: give each its own policy or python, or keep one",
            )
    return tuple(dict.fromkeys(specs))


def _choice(value: Any, allowed: tuple[str, ...], where: str, p: _Problems) -> str:
    """One of `allowed` (the first, the default, after an error)."""
    if isinstance(value, str) and value in allowed:
        return value
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f", did you mean '{close[0]}'?" if close else ""
    p.add(where, f"{value!r} is not one of {', '.join(allowed)}{hint}")
    return allowed[0]  # not used: the error stops the load


def _valid_accel(name: str) -> bool:
    return name == "cpu" or (name.startswith("cu") and name[2:].isdigit() and len(name) >= 4)


def _parse_accels(raw: Mapping[str, Any], p: _Problems) -> dict[str, AccelConfig]:
    out: dict[str, AccelConfig] = {}
    for name, value in p.table(raw.get("accel", {}), "accel").items():
        where = f"accel.{name}"
        tbl = p.table(value, where)
        p.unknown_keys(tbl, _ACCEL_KEYS, where)
        if not _valid_accel(name):
            p.add(where, "accelerator names are 'cpu' or CUDA variants like 'cu128'")
        cuda_home = tbl.get("cuda_home")
        upstream = tbl.get("upstream")
        if upstream is not None:
            upstream = _index_url(
                p.typed(upstream, str, f"{where}.upstream"), f"{where}.upstream", p
            )
        extra = p.str_list(tbl.get("extra_upstreams", []), f"{where}.extra_upstreams")
        out[name] = AccelConfig(
            name=name,
            cuda_home=p.typed(cuda_home, str, f"{where}.cuda_home") if cuda_home else None,
            arch_list=p.str_list(tbl.get("arch_list", []), f"{where}.arch_list"),
            exclude=p.str_list(tbl.get("exclude", []), f"{where}.exclude"),
            upstream=upstream,
            extra_upstreams=tuple(
                u
                for i, e in enumerate(extra)
                if (u := _index_url(e, f"{where}.extra_upstreams[{i}]", p)) is not None
            ),
        )
    return out


def _accel_names(value: Any, where: str, p: _Problems) -> tuple[str, ...]:
    """Accelerator names or globs (`cu*`)."""
    names = p.str_list(value, where)
    for i, name in enumerate(names):
        if not (_valid_accel(name) or name in ("cu*", "*")):
            p.add(f"{where}[{i}]", f"'{name}' is not 'cpu', a CUDA variant like 'cu130', or 'cu*'")
    return names


def _index_url(value: str | None, where: str, p: _Problems) -> str | None:
    """A simple-index URL, with its trailing slash."""
    if value is None:
        return None
    if not value.startswith(("http://", "https://", "file://")):
        p.add(where, f"expected an http(s):// or file:// index URL, got {value!r}")
        return None
    return value if value.endswith("/") else value + "/"


def _patches(value: Any, where: str, p: _Problems, base: Path) -> tuple[str, ...]:
    """Patch files, relative to the config file's directory; each must exist."""
    out = []
    for i, name in enumerate(p.str_list(value, where)):
        path = (base / name).resolve()
        if stamp.watch_file(path) is None:
            p.add(f"{where}[{i}]", f"no such file: {path}")
        out.append(str(path))
    return tuple(out)


def _parse_packages(raw: Mapping[str, Any], p: _Problems, base: Path) -> dict[str, PackageConfig]:
    out: dict[str, PackageConfig] = {}
    for name, value in p.table(raw.get("packages", {}), "packages").items():
        where = f"packages.{name}"
        tbl = p.table(value, where)
        p.unknown_keys(tbl, _PACKAGE_KEYS, where)
        if canonicalize_name(name) in out:
            p.add(where, f"the same package as another entry ({canonicalize_name(name)})")
        spec = None
        if "python" in tbl:
            try:
                spec = SpecifierSet(str(tbl["python"]))
            except InvalidSpecifier:
                p.add(f"{where}.python", f"not a version specifier: {tbl['python']!r}")
        skip = tbl.get("skip")
        timeout = tbl.get("timeout")
        imports = tbl.get("import_names")
        out[canonicalize_name(name)] = PackageConfig(
            name=canonicalize_name(name),
            env=p.str_map(tbl.get("env", {}), f"{where}.env"),
            config_settings=p.str_map(tbl.get("config_settings", {}), f"{where}.config_settings"),
            build_requires=p.requirements(tbl.get("build_requires", []), f"{where}.build_requires"),
            python=spec,
            skip=p.typed(skip, str, f"{where}.skip") if skip is not None else None,
            heavy=bool(p.typed(tbl.get("heavy", False), bool, f"{where}.heavy")),
            accel_specific=(
                p.typed(tbl["accel_specific"], bool, f"{where}.accel_specific")
                if "accel_specific" in tbl
                else None
            ),
            accels=_accel_names(tbl.get("accels", []), f"{where}.accels", p),
            force_build=bool(p.typed(tbl.get("force_build", False), bool, f"{where}.force_build")),
            import_names=(
                p.str_list(imports, f"{where}.import_names") if imports is not None else None
            ),
            timeout=p.positive(timeout, f"{where}.timeout") if timeout is not None else None,
            patches=_patches(tbl.get("patches", []), f"{where}.patches", p, base),
            smoke=(
                _smoke(tbl["smoke"], f"{where}.smoke", p, source=f"[{where}] smoke")
                if "smoke" in tbl
                else None
            ),
            requires=_requires(tbl.get("requires", []), f"{where}.requires", p),
            abi_check=p.typed(tbl.get("abi_check", True), bool, f"{where}.abi_check") is not False,
            werror_implicit=p.typed(
                tbl.get("werror_implicit", True), bool, f"{where}.werror_implicit"
            )
            is not False,
            strip=p.typed(tbl["strip"], bool, f"{where}.strip") if "strip" in tbl else None,
            isa_dispatch=p.typed(tbl.get("isa_dispatch", False), bool, f"{where}.isa_dispatch")
            is True,
        )
    return out


def _smoke(value: Any, where: str, p: _Problems, *, source: str) -> Smoke | Literal[False] | None:
    """`"python code"`, `["command", "arg"]`, or `false` (no smoke test, not even a recipe)."""
    if value is False:
        return False
    if isinstance(value, str) and value.strip():
        try:
            compile(value, where, "exec")
        except SyntaxError as exc:
            p.add(where, f"not valid Python (line {exc.lineno}: {exc.msg})")
            return None
        return Smoke(code=value, source=source)
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return Smoke(command=tuple(value), source=source)
    p.add(where, "expected Python code (a string), a command (a list of strings), or false")
    return None


SMOKE_RECIPES = "data/smoke.toml"  # inside the builder package


@functools.cache
def smoke_recipes() -> dict[str, Smoke]:
    """The smoke tests shipped for well-known packages (`builder/data/smoke.toml`), checked
    like the config: a broken recipe is a bug in prewheel, reported as such."""
    text = resources.files("builder").joinpath(SMOKE_RECIPES).read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    p = _Problems()
    out: dict[str, Smoke] = {}
    for name, table in raw.items():
        tbl = p.table(table, name)
        p.unknown_keys(tbl, ("code", "command", "why"), name)
        if "code" in tbl and "command" in tbl:
            p.add(name, "a recipe has code or a command, not both")
        key = "code" if "code" in tbl else "command"
        found = _smoke(
            tbl.get(key), f"{SMOKE_RECIPES}: {name}", p, source=f"prewheel's recipe for {name}"
        )
        if isinstance(found, Smoke):
            out[canonicalize_name(name)] = found
    if p.items:
        raise ConfigError(p.items, source=f"builder/{SMOKE_RECIPES}")
    return out


def _requires(value: Any, where: str, p: _Problems) -> tuple[str, ...]:
    """Runtime constraints: requirements with a version specifier, no URL."""
    reqs = p.requirements(value, where)
    for i, text in enumerate(reqs):
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue  # reported by p.requirements
        if req.url or not req.specifier:
            p.add(f"{where}[{i}]", f"expected a name and a version range (numpy<2), got {text!r}")
    return reqs
