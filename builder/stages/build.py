"""Building one sdist into a wheel: PEP 517, isolated, with the target's interpreter.

The isolated environment is made by us (a venv of the target interpreter) so that the
build requirements are resolved by pip with a report (their versions go into the build
record), honour the configured constraints, and the backend itself can run with the
network off.
"""

from __future__ import annotations

import contextvars
import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from build import BuildBackendException, BuildException, ProjectBuilder
from pyproject_hooks import BuildBackendWarning

from ..archive import unpack_sdist
from ..cmd import clean_env, run, tail, venv
from ..config import Config, PackageConfig
from ..errors import CommandError, CommandTimeout, StepError
from ..sandbox import Policy, interpreter_paths
from ..targets import Target

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


def cuda_env(target: Target) -> dict[str, str]:
    """The environment a CUDA target builds in: the toolkit first on PATH, its home under
    every name build systems read, and the architecture list in the forms PyTorch
    (`TORCH_CUDA_ARCH_LIST="8.0;9.0;12.0+PTX"`) and CMake (`80-real;90-real;120`) use."""
    if target.toolkit is None:
        return {}
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
        "CUDACXX": str(target.toolkit.nvcc),
        "PATH": f"{home}/bin:{os.environ.get('PATH', '')}",
        "TORCH_CUDA_ARCH_LIST": ";".join(archs),
        "CMAKE_CUDA_ARCHITECTURES": ";".join(cmake),
        "CUDAARCHS": ";".join(cmake),
    }


def has_native_sources(src: Path) -> bool:
    suffixes = {".c", ".cc", ".cpp", ".cxx", ".pyx", ".cu", ".rs", ".f90", ".f"}
    return any(p.suffix in suffixes for p in src.rglob("*") if ".git" not in p.parts)


def build_wheel(
    *,
    sdist: Path,
    target: Target,
    config: Config,
    pkg: PackageConfig,
    workdir: Path,
    log_file: Path,
    accel_env: bool,
    policy: Policy,
) -> BuildResult:
    """Build `sdist` for `target` in `workdir`; raise StepError with the log on failure.

    The build dependencies are installed first (wheels only: no package code runs), with the
    network; the backend's hooks then run in the sandbox of `policy`, with the network off,
    only `workdir` writable and the build's own environment.
    """
    assert target.interpreter is not None
    limit = pkg.timeout or config.build_timeout
    deadline = time.monotonic() + limit
    src = unpack_sdist(sdist, workdir / "src")
    if pkg.patches and shutil.which("patch") is None:
        raise StepError(
            "the config has patches for this package, but `patch` is not installed",
            step="patch",
            hint="install it (Debian: apt-get install patch)",
        )
    for patch in pkg.patches:  # from the config; part of the cache key
        run(
            ["patch", "-p1", "--forward", "--batch", "-i", patch],
            step="patch",
            log_file=log_file,
            cwd=src,
            timeout=60,
        )
    env_dir = workdir / "env"
    env_python = venv(target.interpreter.path, env_dir, step="build-env", log_file=log_file)
    build_vars = {**pkg.env, **(cuda_env(target) if accel_env else {})}
    build_vars["VIRTUAL_ENV"] = str(env_dir)
    path = build_vars.get("PATH", os.environ.get("PATH", os.defpath))
    build_vars["PATH"] = f"{env_dir / 'bin'}:{path}"
    readable = interpreter_paths(target.interpreter.path)
    if accel_env and target.toolkit is not None:
        readable.append(target.toolkit.cuda_home)
    box = policy.box(workdir, env=build_vars, readable=readable)
    deps: dict[str, str] = {}
    interp = target.interpreter

    def install(reqs: Sequence[str], tag: str) -> None:
        if not reqs:
            return
        report = workdir / f"build-deps-{tag}.json"
        argv: list[str | os.PathLike[str]] = [
            *interp.pip(env_python),
            "install",
            "--quiet",
            "--index-url",
            config.upstream,
            "--report",
            report,
            "--only-binary",
            ":all:",
            *reqs,
        ]
        if config.build_constraints:
            argv += ["-c", str(Path(config.build_constraints).resolve())]
        run(
            argv,
            step="build-deps",
            log_file=log_file,
            env=clean_env(),
            timeout=max(1.0, deadline - time.monotonic()),
        )
        for item in json.loads(report.read_text())["install"]:
            deps[item["metadata"]["name"]] = item["metadata"]["version"]

    def runner(
        cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
    ) -> None:
        # The hook's own directories (pyproject_hooks' control dir) are writable too.
        dirs = tuple(Path(a) for a in cmd[1:] if os.path.isdir(a))  # noqa: PTH112
        run(
            list(cmd),
            step="build",
            log_file=log_file,
            cwd=Path(cwd) if cwd else None,
            timeout=max(1.0, deadline - time.monotonic()),
            sandbox=replace(box, env={**box.env, **(extra_environ or {})}, writable=dirs),
        )

    settings = dict(pkg.config_settings) or None
    _build_log.set(log_file)
    try:
        builder = ProjectBuilder(src, python_executable=str(env_python), runner=runner)
        install([*builder.build_system_requires, *pkg.build_requires], "system")
        extra = builder.get_requires_for_build("wheel", settings)
        install(sorted(extra - set(builder.build_system_requires)), "backend")
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
            raise inner from exc
        raise StepError(
            f"build backend failed: {exc}", step="build", log=str(log_file), tail=_tail_of(log_file)
        ) from exc
    except BuildException as exc:
        raise StepError(f"cannot build: {exc}", step="build", log=str(log_file)) from exc
    return BuildResult(wheel=out, build_deps=deps, has_native_sources=has_native_sources(src))


def _tail_of(log_file: Path) -> str:
    try:
        return tail(log_file.read_text(errors="replace"))
    except FileNotFoundError:
        return ""
