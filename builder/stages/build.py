"""Building one sdist into a wheel: PEP 517, isolated, with the target's interpreter.

The isolated environment is made by us (a venv of the target interpreter) so that the
build requirements are resolved by pip with a report (their versions go into the build
record), honour the configured constraints, and the backend itself can run with the
network off.
"""

from __future__ import annotations

import contextvars
import importlib.metadata
import json
import os
import shutil
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from build import BuildBackendException, BuildException, ProjectBuilder
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidSdistFilename, canonicalize_name, parse_sdist_filename
from packaging.version import InvalidVersion, Version
from pyproject_hooks import BuildBackendWarning

from .. import tools
from ..archive import NATIVE_SOURCES, newest_mtime, unpack_sdist
from ..cmd import clean_env, probe, run, uv_env, venv
from ..config import Config, PackageConfig
from ..errors import CommandError, CommandTimeout, PrewheelError, StepError, moved_log
from ..records import BuildEnvRecord
from ..sandbox import Policy, interpreter_paths
from ..targets import Target
from ..threads import once
from ..wheelfile import ZIP_EPOCH
from . import buildenv
from .buildfailure import tail_of, undeclared, why_it_failed
from .sharedenv import SharedEnv, SharedEnvs

# Warnings a backend emits (forwarded by pyproject_hooks into this process) belong in the
# log of the build that raised them, not on the terminal.
_build_log: contextvars.ContextVar[Path | None] = contextvars.ContextVar("build_log", default=None)
_show_warning = warnings.showwarning


def _route_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    log_file = _build_log.get()
    if log_file is None or not issubclass(category, BuildBackendWarning):
        _show_warning(message, category, filename, lineno, file, line)
        return
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write(warnings.formatwarning(message, category, filename, lineno, line))


warnings.showwarning = _route_warning


@dataclass(frozen=True, kw_only=True)
class BuildResult:
    wheel: Path
    build_deps: dict[str, str]
    has_native_sources: bool
    env: BuildEnvRecord | None = None
    cuda_sources: bool = False
    # SOURCE_DATE_EPOCH of the build: the wheel's members are dated with it too.
    epoch: int = ZIP_EPOCH
    # The fixed path the build saw its work directory at, and the real one: a RUNPATH into
    # the build tree names the fixed path, which repair reads at the real one.
    paths: tuple[str, str] | None = None
    seconds: float = 0.0  # how long it took, from unpacking the sdist to the wheel
    # Built ahead of the plan: when it took its slot and gave it back (UTC).
    started: str | None = None
    finished: str | None = None


def has_native_sources(src: Path) -> bool:
    return any(p.suffix in NATIVE_SOURCES for p in src.rglob("*") if ".git" not in p.parts)


def build_wheel(
    *,
    sdist: Path,
    target: Target,
    config: Config,
    pkg: PackageConfig,
    workdir: Path,
    log_file: Path,
    cuda: bool,
    policy: Policy,
    framework: Mapping[str, str] | None = None,
    zig_cache: Path | None = None,
    wheel_cache: Path | None = None,
    envs: SharedEnvs | None = None,
) -> BuildResult:
    """Build `sdist` for `target` in `workdir`; raise StepError with the log on failure.

    `cuda`: build with the target's toolkit (and no other); otherwise with no CUDA in reach
    (`buildenv`). `framework`: the runtime closure's pins; a build requirement among them is
    installed at that version, so an extension is compiled against what it will run with.
    The build dependencies are installed first (wheels only: no package code runs), with the
    network; the backend's hooks then run in the sandbox of `policy`, with the network off,
    only `workdir` writable and the build's own environment.

    With uv (found in prewheel's environment), `uv venv` makes the environment and `uv pip
    install` fills it from `wheel_cache`, a wheel cache shared by every build of this run and
    of later runs (in the wheelhouse, which the sandbox hides): a build dependency is
    downloaded once. Without uv, `python -m venv` and pip do it. With `envs`, under
    bubblewrap, builds whose environments would hold the same share one (`sharedenv`).
    """
    assert target.interpreter is not None
    started = time.monotonic()
    limit = pkg.timeout or config.build_timeout
    deadline = started + limit
    if pkg.patches and shutil.which("patch") is None:
        raise StepError(
            "the config has patches for this package, but `patch` is not installed",
            step="patch",
            hint="install it (Debian: apt-get install patch)",
        )

    def tree(dest: Path) -> Path:
        """The sdist unpacked at `dest`, the config's patches applied (part of the key)."""
        shutil.rmtree(dest, ignore_errors=True)
        top = unpack_sdist(sdist, dest)
        for patch in pkg.patches:
            run(
                ["patch", "-p1", "--forward", "--batch", "-i", patch],
                step="patch",
                log_file=log_file,
                cwd=top,
                timeout=60,
            )
        return top

    src = tree(workdir / "src")
    epoch = max(newest_mtime(sdist) or ZIP_EPOCH, ZIP_EPOCH)
    fixed = _fixed_path(sdist, pkg.name, target.name)
    maps = buildenv.prefix_maps(workdir, fixed, interpreter_prefix(target.interpreter.path))
    env_dir = workdir / "env"
    env_python = env_dir / "bin" / "python"
    uv = tools.find("uv")
    # Shown read-only to the build (bubblewrap): the environment may be one builds share.
    sandboxed = policy.isolation.read_only
    if not sandboxed:
        envs = None
    if envs is None:
        _new_env(uv, target.interpreter.path, env_dir, log_file)
    else:
        env_dir.mkdir(parents=True)  # where the shared one is shown
    # The sandbox fixes the environment; of the caller's, only the search paths and the
    # CUDA variables go in, for buildenv to take CUDA off them (or point them at one toolkit).
    environment = buildenv.for_build(
        target=target,
        cuda=cuda,
        base=buildenv.host_base(),
        package_env=pkg.env,
        env_dir=env_dir,
        workdir=workdir,
        known_homes=buildenv.known_toolkit_homes(a.cuda_home for a in config.accels.values()),
        reproducible=buildenv.reproducible_vars(epoch=epoch, maps=maps, cuda=cuda),
        zig_cache=zig_cache,
    )
    build_vars = dict(environment.env)
    flags = (*config.build_flags(pkg.name), *buildenv.prefix_map_flags(maps))
    build_vars.update(with_flags(build_vars, flags, interpreter_cflags(target.interpreter.path)))
    readable = interpreter_paths(target.interpreter.path)
    if environment.toolkit is not None:
        readable.append(environment.toolkit)
    # zig's cache is shared by the builds of a wheelhouse (the first C++ build fills it for
    # minutes); it lives beside the hidden wheelhouse, so it is shown writable.
    shared = [zig_cache] if zig_cache is not None and target.toolchain == "zig" else []
    box = policy.box(workdir, env=build_vars, readable=readable, writable=shared, alias=fixed)
    # bubblewrap hides the other toolkits itself; elsewhere a mount namespace of their own.
    # It also shows the build environment read-only, so its files can be hard links into the
    # shared wheel cache: the backend cannot write through them. Elsewhere they are copies.
    if sandboxed:
        box = replace(
            box, hidden=(*box.hidden, *environment.hidden), readable=(*box.readable, env_dir)
        )
    link = "hardlink" if sandboxed else "copy"
    prefix = () if sandboxed else environment.prefix()
    env_record = environment.record(pkg.env, sandboxed=sandboxed)
    _log_env(log_file, env_record)
    deps: dict[str, str] = {}
    interp = target.interpreter
    pins = workdir / "framework-pins.txt"
    pinned = "".join(f"{n}=={v}\n" for n, v in sorted((framework or {}).items()))
    pins.write_text(pinned)
    upstreams = config.upstreams(target.accel)

    def install(env_dir: Path, reqs: Sequence[str], tag: str) -> None:
        if not reqs:
            return
        env_python = env_dir / "bin" / "python"
        given = config.build_constraints
        constraints = ["-c", str(Path(given).resolve())] if given else []
        timeout = max(1.0, deadline - time.monotonic())
        if uv is not None:
            argv: list[str | os.PathLike[str]] = [
                uv, "pip", "install", "--no-config", "--python", env_python,
                *_uv_index_args(upstreams, wheel_cache, link=link),
                "--only-binary", ":all:", "-c", pins,
                *constraints, *reqs,
            ]  # fmt: skip
            run(argv, step="build-deps", log_file=log_file, env=uv_env(), timeout=timeout)
            deps.update(installed(env_dir))
            return
        report = workdir / f"build-deps-{tag}.json"
        argv = [
            *interp.pip(env_python),
            "install",
            "--quiet",
            "--index-url",
            upstreams[0],
            *(a for u in upstreams[1:] for a in ("--extra-index-url", u)),
            "--report",
            report,
            "--only-binary",
            ":all:",
            "-c",
            pins,
            *reqs,
        ]
        argv += constraints
        run(argv, step="build-deps", log_file=log_file, env=clean_env(), timeout=timeout)
        for item in json.loads(report.read_text())["install"]:
            deps[item["metadata"]["name"]] = item["metadata"]["version"]

    def hooks(src: Path, log: Path, cancel: threading.Event | None) -> ProjectBuilder:
        """The backend of the tree at `src`, each hook a sandboxed command whose output goes
        to `log` (ended once `cancel` is set)."""

        def runner(
            cmd: Sequence[str],
            cwd: str | None = None,
            extra_environ: Mapping[str, str] | None = None,
        ) -> None:
            # The hook's own directories (pyproject_hooks' control dir) are writable too.
            dirs = tuple(Path(a) for a in cmd[1:] if os.path.isdir(a))  # noqa: PTH112
            run(
                [*prefix, *cmd],
                step="build",
                log_file=log,
                cwd=Path(cwd) if cwd else None,
                timeout=max(1.0, deadline - time.monotonic()),
                sandbox=replace(
                    box, env={**box.env, **(extra_environ or {})}, writable=(*box.writable, *dirs)
                ),
                cancel=cancel,
            )

        return ProjectBuilder(src, python_executable=str(env_python), runner=runner)

    def environment_of(steps: Sequence[tuple[Sequence[str], str]]) -> None:
        """The build's environment holding `steps` (requirements, tag) installed in turn: its
        own, or the shared one shown at its place."""
        nonlocal box
        if envs is None:
            install(env_dir, *steps[-1])
            return

        def make(path: Path) -> dict[str, str]:
            deps.clear()  # `install` records what each step installed
            _new_env(uv, interp.path, path, log_file)
            for reqs, tag in steps:
                install(path, reqs, tag)
            return dict(deps)

        key = (interp.path, tuple((tuple(sorted(r)), t) for r, t in steps), pinned,
               config.build_constraints, tuple(upstreams), wheel_cache, uv is not None)  # fmt: skip
        env = envs.get(key, make, this_build)
        envs_used.append(env)
        if env.made_by != this_build:
            env.log_use(log_file)
        deps.clear()
        deps.update(env.installed)
        box = replace(box, readable=(*box.readable, env.path), mounted=((env.path, env_dir),))

    this_build = f"the build of {sdist.name} for {target.name}"
    envs_used: list[SharedEnv] = []  # the shared environments it used
    settings = dict(pkg.config_settings) or None
    _build_log.set(log_file)
    try:
        builder = hooks(src, log_file, None)
        system = [*builder.build_system_requires, *pkg.build_requires]
        environment_of([(system, "system")])
        beside = _Beside(
            workdir=workdir,
            log_file=log_file,
            hooks=hooks,
            tree=tree,
            shared=envs_used[-1] if envs_used else None,
            installed=dict(deps),
        )
        out, extra = beside.build(src, settings, system)
        if out is None:  # the backend asked for more: built again once it is installed
            environment_of([(system, "system"), (extra, "backend")])
            out = Path(builder.build("wheel", workdir / "dist", settings))
    except BuildBackendException as exc:
        inner = exc.exception
        if isinstance(inner, CommandTimeout):
            raise StepError(
                f"the build ran past its time limit of {limit:.0f}s and was stopped",
                step="build",
                log=inner.log,
                tail=inner.tail,
                hint=inner.hint,
            ) from inner
        if isinstance(inner, CommandError):
            raise undeclared(inner, log_file, pkg.name) or why_it_failed(inner) from exc
        raise StepError(
            f"build backend failed: {exc}", step="build", log=str(log_file), tail=tail_of(log_file)
        ) from exc
    except BuildException as exc:
        raise StepError(f"cannot build: {exc}", step="build", log=str(log_file)) from exc
    return BuildResult(
        wheel=out,
        build_deps=deps,
        has_native_sources=has_native_sources(src),
        env=env_record,
        cuda_sources=any(src.rglob("*.cu")),
        epoch=epoch,
        paths=(fixed, str(workdir.resolve())),
        seconds=time.monotonic() - started,
    )


@dataclass(frozen=True, kw_only=True)
class _Beside:
    """A wheel built while its backend is asked what more the build needs, instead of after.

    `get_requires_for_build_wheel` is a process of its own (a setuptools backend runs the
    whole `setup.py` in it: 0.4-0.6 s), and a frontend runs the build only once it answered.
    Its answer is nearly always "nothing more", so the build starts at once beside it. The
    question is asked of a second copy of the tree (a setuptools `egg_info` writes into the
    tree, as the build does); the build runs in the tree at its usual place, its output in a
    log of its own until it ends, then appended to the build's log. Where the backend asks
    for more, the build beside it is stopped, its tree and output wiped, and the wheel built
    again once the rest is installed: what one after the other would have given.

    In a shared environment whose bytecode is being compiled (`sharedenv`), the question
    waits for it: then it compiles nothing in memory.
    """

    workdir: Path
    log_file: Path
    hooks: Callable[[Path, Path, threading.Event | None], ProjectBuilder]
    tree: Callable[[Path], Path]
    shared: SharedEnv | None = None  # the environment, where builds share it
    installed: Mapping[str, str] = field(default_factory=dict)  # what it holds, by name

    def build(
        self, src: Path, settings: Mapping[str, Any] | None, system: Sequence[str]
    ) -> tuple[Path | None, list[str]]:
        """The wheel of the tree at `src` and nothing more asked for; or None (the tree
        unpacked anew) and what the backend asked for beyond `system`, to install before
        building again."""
        own_log = self.workdir.parent / f"{self.workdir.name}.build.log"  # not package code's
        cancel = threading.Event()
        building = self.hooks(src, own_log, cancel)
        built: Future[str] = Future()
        dist = self.workdir / "dist"

        def build() -> None:
            try:
                built.set_result(building.build("wheel", dist, settings))
            except BaseException as exc:  # handed to the caller
                built.set_exception(exc)

        context = contextvars.copy_context()
        threading.Thread(target=context.run, args=(build,), name="prewheel-build").start()
        extra: list[str] = []
        asked = self.workdir / "asked"
        try:
            if self.shared is not None:
                self.shared.wait_compiled()
            asking = self.hooks(self.tree(asked), self.log_file, None)
            more = asking.get_requires_for_build("wheel", settings) - set(system)
            extra = sorted(r for r in more if not _held(r, self.installed))
        except BaseException:
            cancel.set()
            raise
        finally:
            if extra:
                cancel.set()
            wait([built])
            self._take_log(own_log)
            shutil.rmtree(asked, ignore_errors=True)
        if extra:
            shutil.rmtree(dist, ignore_errors=True)
            self.tree(src.parent)
            with self.log_file.open("a", encoding="utf-8") as fh:
                fh.write(
                    f"prewheel: the backend asked for {', '.join(extra)}: the build beside "
                    "the question was stopped, its tree unpacked anew; built again with them\n\n"
                )
            return None, extra
        try:
            return Path(built.result()), []
        except BuildBackendException as exc:
            if isinstance(exc.exception, PrewheelError):
                moved_log(exc.exception, str(own_log), str(self.log_file))
            raise

    def _take_log(self, own_log: Path) -> None:
        """The build's output, appended to the build's log."""
        if not own_log.is_file():
            return
        with self.log_file.open("ab") as out, own_log.open("rb") as got:
            out.write(b"prewheel: the wheel's build, run beside that question:\n")
            shutil.copyfileobj(got, out)
        own_log.unlink()


def _held(requirement: str, installed: Mapping[str, str]) -> bool:
    """Whether the environment already holds what the backend asks for as `requirement`:
    named without extras or markers, at a version in its range. setuptools' question names
    `setup_requires` as the package wrote it (`setuptools_scm`), beside `[build-system]`'s
    `setuptools_scm[toml]>=3.4`: the same thing, installed, needs no second build. Anything
    else (extras, markers, what cannot be read) counts as more."""
    try:
        req = Requirement(requirement)
    except InvalidRequirement:
        return False
    if req.extras or req.marker is not None:
        return False
    versions = {canonicalize_name(n): v for n, v in installed.items()}
    have = versions.get(canonicalize_name(req.name))
    try:
        return have is not None and req.specifier.contains(Version(have), prereleases=True)
    except InvalidVersion:
        return False


def _new_env(uv: Path | None, python: Path, dest: Path, log_file: Path) -> None:
    """A fresh venv at `dest` for build dependencies: with uv where prewheel has it."""
    if uv is not None:
        uv_venv(uv, python, dest, log_file=log_file)
    else:
        venv(python, dest, step="build-env", log_file=log_file)


def uv_venv(uv: Path, python: Path, dest: Path, *, log_file: Path, step: str = "build-env") -> Path:
    """`uv venv` of `python` at `dest` (no pip in it: uv installs); returns its python."""
    run(
        [uv, "venv", "--no-config", "--quiet", "--no-python-downloads", "--python", python, dest],
        step=step,
        log_file=log_file,
        env=uv_env(),
        timeout=120,
    )
    return dest / "bin" / "python"


def _uv_index_args(upstreams: Sequence[str], cache: Path | None, *, link: str) -> list[str]:
    """The indexes as one pool (pip's rule), and the shared wheel cache. `link`: how files
    come out of the cache: "hardlink" only where package code sees the environment read-only
    (it must not reach the cache through a link), else "copy"."""
    out = ["--quiet", "--index-url", upstreams[0]]
    out += [a for u in upstreams[1:] for a in ("--extra-index-url", u)]
    out += ["--index-strategy", "unsafe-best-match", "--link-mode", link]
    if cache is not None:
        out += ["--cache-dir", str(cache)]
    return out


def installed(env_dir: Path) -> dict[str, str]:
    """The distributions installed in a venv, by name: what its build dependencies were."""
    found: dict[str, str] = {}
    for site in env_dir.glob("lib/python*/site-packages"):
        for dist in importlib.metadata.distributions(path=[str(site)]):
            found[dist.metadata["Name"]] = dist.version
    return found


def _log_env(log_file: Path, env: BuildEnvRecord) -> None:
    """The build's environment at the top of its log: what it could reach of CUDA."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"prewheel: accelerator {env.accel}, toolkit {env.toolkit or 'none'}"]
    lines += [f"prewheel: compilers: {env.toolchain}"] if env.toolchain else []
    lines += [f"prewheel: unset {', '.join(env.unset)}"] if env.unset else []
    lines += [f"prewheel: off the paths: {r}" for r in env.removed]
    lines += [f"prewheel: shadowed: {s}" for s in env.shadowed]
    if env.hidden:
        lines.append(f"prewheel: hidden ({env.hiding}): {', '.join(env.hidden)}")
    with log_file.open("a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n\n")


def with_flags(
    env: Mapping[str, str], flags: Sequence[str], interpreter_cflags: str | None
) -> dict[str, str]:
    """CFLAGS and CXXFLAGS with `flags` appended, so `-g0` comes after any `-g`.

    Appended to what `env` (the config's per-package env, else the caller's) sets; when it
    sets nothing, to the interpreter's own CFLAGS (`-DNDEBUG -g -O3 -Wall`): setuptools 75.7+
    replaces those with $CFLAGS when it is set, so a bare `-g0` would build unoptimized.
    Unknown interpreter flags: nothing is added (repair's strip still drops debug info).
    A C-only warning flag stays out of CXXFLAGS: g++ rejects it under a package's -Werror.
    """
    out: dict[str, str] = {}
    for var in ("CFLAGS", "CXXFLAGS"):
        base = env.get(var) or interpreter_cflags
        wanted = [f for f in flags if var == "CFLAGS" or not _c_only(f)]
        if wanted and base is not None:
            out[var] = " ".join([*([base] if base else []), *wanted])
    return out


@once
def interpreter_cflags(python: Path) -> str | None:
    """The CFLAGS the interpreter was built with, which setuptools compiles extensions with."""
    script = "import sysconfig; print(sysconfig.get_config_var('CFLAGS') or '')"
    out = probe([python, "-c", script])
    return None if out is None else out.strip()


def _fixed_path(sdist: Path, fallback: str, target: str) -> str:
    try:
        name, version = parse_sdist_filename(sdist.name)
    except InvalidSdistFilename:
        return buildenv.fixed_build_path(fallback, "0", target)
    return buildenv.fixed_build_path(name, str(version), target)


@once
def interpreter_prefix(python: Path) -> str | None:
    """The interpreter's installation prefix, whose header paths a build may record."""
    out = probe([python, "-c", "import sys; print(sys.base_prefix)"])
    return None if out is None else out.strip() or None


def _c_only(flag: str) -> bool:
    return flag.endswith("implicit-function-declaration")
