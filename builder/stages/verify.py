"""Verifying a wheel as the runtime will use it: installed with no compiler reachable, with
the target's whole closure at the plan's pins, then imported, then its smoke test run."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..cmd import clean_env, run, venv
from ..config import Smoke
from ..errors import CommandError, StepError
from ..sandbox import Policy, Sandbox, interpreter_paths
from ..targets import Target
from ..wheelfile import top_level_modules

SMOKE_TIMEOUT = 300.0

_NO_COMPILER = "#!/bin/sh\necho 'prewheel verify: no compiler may run here' >&2\nexit 1\n"
_COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "nvcc", "ld")


def _fence(bindir: Path) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name in _COMPILERS:
        p = bindir / name
        p.write_text(_NO_COMPILER)
        p.chmod(0o755)


@dataclass(frozen=True, kw_only=True)
class VerifyVenv:
    """A venv the wheel was installed into, and the sandbox its code runs in (the import,
    the smoke test): no network, the wheelhouse hidden, compilers fenced off."""

    python: Path
    sandbox: Sandbox
    workdir: Path


def install(
    wheel: Path,
    *,
    target: Target,
    find_links: Iterable[Path],
    constraints: str,
    workdir: Path,
    log_file: Path,
    policy: Policy,
) -> VerifyVenv:
    """Install `wheel` into a fresh venv, offline and binary-only, its requirements from
    `find_links` at the versions `constraints` (pip's constraints file text) pins.

    PATH holds only a fence of failing compiler commands and the venv, and CC/CXX point at
    the fence, so any attempt to compile fails loudly. Installing wheels runs no package
    code; the import and the smoke test do, so they run in the sandbox (no memory limit:
    CUDA libraries reserve more address space than they use).
    """
    assert target.interpreter is not None
    fence = workdir / "fence"
    _fence(fence)
    env_dir = workdir / "venv"
    py = venv(target.interpreter.path, env_dir, step="verify", log_file=log_file)
    own = {
        "PATH": f"{fence}:{env_dir / 'bin'}",
        "CC": str(fence / "cc"),
        "CXX": str(fence / "c++"),
        "LDSHARED": str(fence / "cc"),
        "PYTHONNOUSERSITE": "1",
    }
    env = clean_env(own)
    readable = interpreter_paths(target.interpreter.path)
    if target.toolkit is not None:
        # Excluded CUDA runtime libraries come from the runtime image there; here, from the
        # toolkit, so the import does not depend on this host's ldconfig cache.
        home = target.toolkit.cuda_home
        libdirs = [str(d) for d in (home / "lib64", home / "lib") if d.is_dir()]
        old = os.environ.get("LD_LIBRARY_PATH")
        env["LD_LIBRARY_PATH"] = own["LD_LIBRARY_PATH"] = ":".join(
            [*libdirs, *([old] if old else [])]
        )
        readable.append(home)
    pins = workdir / "constraints.txt"
    pins.write_text(constraints, encoding="utf-8")
    links: list[str] = []
    for d in dict.fromkeys([wheel.parent, *find_links]):
        links += ["--find-links", str(d)]
    argv: list[str | os.PathLike[str]] = [
        *target.interpreter.pip(py),
        "install",
        "--no-index",
        "--only-binary=:all:",
        "--no-cache-dir",
        "--constraint",
        pins,
        *links,
        str(wheel),
    ]
    try:
        run(argv, step="verify-install", log_file=log_file, env=env, cwd=workdir, timeout=600)
    except CommandError as exc:
        raise StepError(
            f"{wheel.name} does not install without a compiler at the plan's pins: see the log",
            step="verify",
            log=exc.log,
            tail=exc.tail,
            check="install",
        ) from exc
    box = policy.box(workdir, env=own, readable=readable, limit_memory=False)
    return VerifyVenv(python=py, sandbox=box, workdir=workdir)


def import_modules(
    env: VerifyVenv,
    wheel: Path,
    *,
    name: str,
    import_names: tuple[str, ...] | None,
    log_file: Path,
) -> list[str]:
    """Import the wheel's top-level modules (or the configured ones): the modules imported."""
    modules = list(import_names) if import_names else top_level_modules(wheel)
    if not modules:
        return []
    script = (
        "import importlib, json, sys\n"
        f"for m in {json.dumps(modules)}:\n"
        "    importlib.import_module(m)\n"
        "print('imported', ', '.join(sys.argv[1:]))\n"
    )
    try:
        run(
            [env.python, "-I", "-c", script, *modules],
            step="verify-import",
            log_file=log_file,
            cwd=env.workdir,
            timeout=300,
            sandbox=env.sandbox,
        )
    except CommandError as exc:
        raise StepError(
            f"{name}: import of {', '.join(modules)} failed after install",
            step="verify",
            log=exc.log,
            tail=exc.tail,
            check="import",
            hint="if the module name differs from the wheel contents, set "
            f"[packages.{name}] import_names in the config",
        ) from exc
    return modules


def smoke_test(env: VerifyVenv, smoke: Smoke, *, name: str, log_file: Path) -> None:
    """Run the package's smoke test in the verify venv, from an empty directory; it must exit
    0 within SMOKE_TIMEOUT seconds."""
    cwd = env.workdir / "smoke"
    cwd.mkdir(parents=True, exist_ok=True)
    argv: list[str | os.PathLike[str]]
    argv = [env.python, "-I", "-c", smoke.code] if smoke.code else list(smoke.command)
    try:
        run(
            argv,
            step="smoke",
            log_file=log_file,
            cwd=cwd,
            timeout=SMOKE_TIMEOUT,
            sandbox=env.sandbox,
        )
    except CommandError as exc:
        raise StepError(
            f"{name}: the smoke test ({smoke.source}) failed after install and import: "
            f"{exception_line(exc.tail)}",
            step="smoke",
            log=exc.log,
            tail=exc.tail,
            check="smoke",
            hint=f"a runtime constraint ([packages.{name}] requires = [...]), a newer "
            "release, or a fix of the smoke test itself",
        ) from exc


def exception_line(output: str) -> str:
    """The line of `output` that names the exception (`ValueError: ...`), else its last."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception|Exit)\b", ln)]
    return (found or lines or ["no output"])[-1]
