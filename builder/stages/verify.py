"""Verifying a wheel: install it into a fresh venv with no compiler reachable, then import it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from ..cmd import clean_env, run, venv
from ..errors import CommandError, StepError
from ..sandbox import Policy, interpreter_paths
from ..targets import Target
from ..wheelfile import top_level_modules

_NO_COMPILER = "#!/bin/sh\necho 'prewheel verify: no compiler may run here' >&2\nexit 1\n"
_COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "clang++", "nvcc", "ld")


def _fence(bindir: Path) -> None:
    bindir.mkdir(parents=True, exist_ok=True)
    for name in _COMPILERS:
        p = bindir / name
        p.write_text(_NO_COMPILER)
        p.chmod(0o755)


def verify_wheel(
    wheel: Path,
    *,
    name: str,
    target: Target,
    find_links: Iterable[Path],
    workdir: Path,
    log_file: Path,
    import_names: tuple[str, ...] | None,
    policy: Policy,
) -> list[str]:
    """Install `wheel` (deps from `find_links`) offline, binary-only, then import it.

    PATH holds only a fence of failing compiler commands and the venv, and CC/CXX point at
    the fence, so any attempt to compile fails loudly. Installing wheels runs no package
    code; the import does, so it runs in the sandbox (no network, the wheelhouse hidden; no
    memory limit: CUDA libraries reserve more address space than they use). Returns the
    modules imported.
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
    links: list[str] = []
    for d in dict.fromkeys([wheel.parent, *find_links]):
        links += ["--find-links", str(d)]
    argv: list[str | os.PathLike[str]] = [
        *target.interpreter.pip(py),
        "install",
        "--no-index",
        "--only-binary=:all:",
        "--no-cache-dir",
        *links,
        str(wheel),
    ]
    try:
        run(argv, step="verify-install", log_file=log_file, env=env, cwd=workdir, timeout=600)
    except CommandError as exc:
        raise StepError(
            f"{wheel.name} does not install without a compiler: see the log",
            step="verify",
            log=exc.log,
            tail=exc.tail,
        ) from exc
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
            [py, "-I", "-c", script, *modules],
            step="verify-import",
            log_file=log_file,
            cwd=workdir,
            timeout=300,
            sandbox=policy.box(workdir, env=own, readable=readable, limit_memory=False),
        )
    except CommandError as exc:
        raise StepError(
            f"{name}: import of {', '.join(modules)} failed after install",
            step="verify",
            log=exc.log,
            tail=exc.tail,
            hint="if the module name differs from the wheel contents, set "
            f"[packages.{name}] import_names in the config",
        ) from exc
    return modules
