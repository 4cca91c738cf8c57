"""Verifying a wheel as the runtime will use it: installed with no compiler reachable, with
the target's whole closure at the plan's pins, then imported, then its smoke test run.

The installer is uv where prewheel's environment has it (`uv venv` and `uv pip install`
take about a tenth of what `python -m venv` and pip take, and verify runs once per wheel),
else pip. uv decides on its own which wheel tags an interpreter accepts; pip decides with
`packaging.tags`. So that nothing uv accepts and pip would refuse passes, every
distribution installed must then have a wheel file among those offered whose file name's
tags are in `packaging.tags` as the target interpreter computes them (pip's rule),
whichever installer ran.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import packaging
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from .. import tools
from ..cmd import clean_env, probe, run, tail, venv
from ..config import Smoke
from ..errors import CommandError, StepError, ToolMissingError
from ..sandbox import Policy, Sandbox, interpreter_paths
from ..targets import Target
from ..threads import once
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


Installer = Literal["uv", "pip"]


def choose_installer(setting: str, *, uv_found: bool) -> Installer:
    """The installer `[build] verify_installer` asks for: "auto" is uv when prewheel's
    environment has it, else pip (`install` says how to get uv when "uv" finds none)."""
    if setting == "pip" or (setting == "auto" and not uv_found):
        return "pip"
    return "uv"


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
    installer: Installer = "pip",
    cache: Path | None = None,
) -> VerifyVenv:
    """Install `wheel` into a fresh venv, offline and binary-only, its requirements from
    `find_links` at the versions `constraints` (pip's constraints file text) pins, with
    `installer`; then check that pip would have taken every wheel installed.

    PATH holds only a fence of failing compiler commands and the venv, and CC/CXX point at
    the fence, so any attempt to compile fails loudly. Installing wheels runs no package
    code; the import and the smoke test do, so they run in the sandbox (no memory limit:
    CUDA libraries reserve more address space than they use). uv unpacks each wheel once
    into `cache` (one per run): the next verify of the run that installs the same
    dependency does not unpack it again. Under bubblewrap the venv is read-only to the
    package code, so uv links its files from the cache instead of copying them (setuptools'
    thousand files: 0.1-0.2 s less) and nothing the import does reaches the cache; in the
    weaker sandboxes the venv stays writable, so uv copies.
    """
    assert target.interpreter is not None
    fence = workdir / "fence"
    _fence(fence)
    env_dir = workdir / "venv"
    try:
        uv = tools.require(tools.UV) if installer == "uv" else None
    except ToolMissingError as exc:
        raise StepError(
            f"{exc.message}; {exc.hint}",
            step="verify",
            log=str(log_file),
            hint='or set [build] verify_installer = "pip"',
        ) from exc
    if uv is not None:
        from .build import uv_venv

        py = uv_venv(uv, target.interpreter.path, env_dir, log_file=log_file, step="verify")
    else:
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
    argv: list[str | os.PathLike[str]]
    read_only = policy.isolation.read_only
    if uv is not None:
        linked = "hardlink" if read_only and cache is not None else "copy"
        argv = [uv, "pip", "install", "--no-config", "--python", py, "--offline", "--no-index",
                "--no-build", "--link-mode", linked,
                *(["--cache-dir", str(cache)] if cache is not None else ["--no-cache"]),
                "--constraint", pins, *links, str(wheel)]  # fmt: skip
    else:
        argv = [*target.interpreter.pip(py), "install", "--no-index", "--only-binary=:all:",
                "--no-cache-dir", "--constraint", pins, *links, str(wheel)]  # fmt: skip
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
    refused = refused_wheels(
        installed_dists(env_dir),
        wheel_files(wheel, [wheel.parent, *find_links]),
        interpreter_tags(target.interpreter.path),
    )
    if refused:
        _log(log_file, "prewheel verify: pip would refuse: " + "; ".join(refused))
        raise StepError(
            f"{wheel.name}: installed, but pip on the target interpreter would not install "
            f"{', '.join(refused)} (no wheel of it has a tag the interpreter supports)",
            step="verify",
            log=str(log_file),
            check="install",
            hint="a wheel tag the target interpreter does not support (packaging.tags): "
            "check the policy and the wheel's name",
        )
    box = policy.box(workdir, env=own, readable=readable, limit_memory=False)
    if read_only:
        # Over its own place: the import and the smoke test run beside it, not in it.
        box = replace(box, mounted=((env_dir.resolve(), env_dir.resolve()),))
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
    return import_and_smoke(
        env, wheel, name=name, import_names=import_names, smoke=None, log_file=log_file
    )[0]


# Printed between the imports and a smoke test run in the same process: what failed after it
# is the smoke test's.
_SMOKE_STARTS = "prewheel: the smoke test starts"


def import_and_smoke(
    env: VerifyVenv,
    wheel: Path,
    *,
    name: str,
    import_names: tuple[str, ...] | None,
    smoke: Smoke | None,
    log_file: Path,
) -> tuple[list[str], bool]:
    """Import the wheel's top-level modules (or the configured ones), then, where `smoke` is
    Python code, run it in the same interpreter from an empty directory (one sandboxed
    process instead of two: 0.1 s less a wheel). The modules imported, and whether the smoke
    test ran (a command, or no module to import: `smoke_test` runs it on its own)."""
    modules = list(import_names) if import_names else top_level_modules(wheel)
    if not modules:
        return [], False
    code = smoke.code if smoke is not None else None
    script = (
        "import importlib, json, sys\n"
        f"for m in {json.dumps(modules)}:\n"
        "    importlib.import_module(m)\n"
        "print('imported', ', '.join(sys.argv[1:]), flush=True)\n"
    )
    if code:
        script += (
            f"print({_SMOKE_STARTS!r}, flush=True)\n"
            "del sys.argv[1:]\n"
            f"exec(compile({code!r}, '<smoke test>', 'exec'), {{'__name__': '__main__'}})\n"
        )
    try:
        done = run(
            [env.python, "-I", "-c", script, *modules],
            step="verify-import",
            log_file=log_file,
            cwd=_smoke_dir(env) if code else env.workdir,
            timeout=300 + (SMOKE_TIMEOUT if code else 0),
            check=False,
            sandbox=env.sandbox,
        )
    except CommandError as exc:  # past its time limit, or it could not start
        output, error = exc.tail, exc
    else:
        if done.returncode == 0:
            return modules, bool(code)
        # Its whole output says whether the smoke test had started: one that prints a lot
        # would push that line out of the error's tail.
        output = done.stdout
        error = CommandError(
            f"verify-import failed (exit {done.returncode}), see {log_file}",
            step="verify-import",
            log=str(log_file),
            tail=tail(output),
        )
    if smoke is not None and code and _SMOKE_STARTS in output:
        raise _smoke_failed(error, smoke, name) from error
    why = exception_line(error.tail)
    raise StepError(
        f"{name}: import of {', '.join(modules)} failed after install: {why}",
        step="verify",
        log=error.log,
        tail=error.tail,
        check="import",
        hint="if the module name differs from the wheel contents, set "
        f"[packages.{name}] import_names in the config"
        if _not_found(why, modules)
        else None,
    ) from error


def _not_found(line: str, modules: list[str]) -> bool:
    """Whether `line` says one of `modules` itself (not something it imports) is missing."""
    found = re.match(r"ModuleNotFoundError: No module named '([\w.]+)'", line)
    return found is not None and any(m == found[1] or m.startswith(found[1] + ".") for m in modules)


def _smoke_dir(env: VerifyVenv) -> Path:
    cwd = env.workdir / "smoke"
    cwd.mkdir(parents=True, exist_ok=True)
    return cwd


def smoke_test(env: VerifyVenv, smoke: Smoke, *, name: str, log_file: Path) -> None:
    """Run the package's smoke test in the verify venv, from an empty directory; it must exit
    0 within SMOKE_TIMEOUT seconds."""
    argv: list[str | os.PathLike[str]]
    argv = [env.python, "-I", "-c", smoke.code] if smoke.code else list(smoke.command)
    try:
        run(
            argv,
            step="smoke",
            log_file=log_file,
            cwd=_smoke_dir(env),
            timeout=SMOKE_TIMEOUT,
            sandbox=env.sandbox,
        )
    except CommandError as exc:
        raise _smoke_failed(exc, smoke, name) from exc


def _smoke_failed(exc: CommandError, smoke: Smoke, name: str) -> StepError:
    return StepError(
        f"{name}: the smoke test ({smoke.source}) failed after install and import: "
        f"{exception_line(exc.tail)}",
        step="smoke",
        log=exc.log,
        tail=exc.tail,
        check="smoke",
        hint=f"a runtime constraint ([packages.{name}] requires = [...]), a newer "
        "release, or a fix of the smoke test itself",
    )


def exception_line(output: str) -> str:
    """The line of `output` that names the exception (`ValueError: ...`), else its last."""
    lines = [ln.strip() for ln in output.strip().splitlines() if ln.strip()]
    found = [ln for ln in lines if re.match(r"[\w.]*(Error|Exception|Exit)\b", ln)]
    return (found or lines or ["no output"])[-1]


def _log(log_file: Path, line: str) -> None:
    with log_file.open("a", encoding="utf-8") as f:
        f.write(line + "\n")


def installed_dists(env_dir: Path) -> list[tuple[str, str]]:
    """The (name, version) of every distribution installed in a venv, from its
    `.dist-info` directory's name: what an installer put there."""
    out: list[tuple[str, str]] = []
    for di in sorted(env_dir.glob("lib/python*/site-packages/*.dist-info")):
        name, _, version = di.name.removesuffix(".dist-info").partition("-")
        out.append((name, version))
    return out


def refused_wheels(
    installed: Iterable[tuple[str, str]],
    filenames: Iterable[str],
    accepted: frozenset[str] | None,
) -> list[str]:
    """The installed distributions pip would not have installed from these wheel files:
    none of the files of that name and version has a tag `accepted` holds (pip decides by
    the file name's tags, so this does too). None: the interpreter's tags are unknown."""
    if accepted is None:
        return ["the target interpreter's tags (packaging.tags) could not be computed"]
    files: dict[tuple[str, Version], list[str]] = {}
    for fn in filenames:
        try:
            name, version, _, tag_set = parse_wheel_filename(fn)
        except InvalidWheelFilename:
            continue
        if {str(t) for t in tag_set} & accepted:
            files.setdefault((name, version), []).append(fn)
    out: list[str] = []
    for raw_name, raw_version in installed:
        try:
            key = (canonicalize_name(raw_name), Version(raw_version))
        except InvalidVersion:
            key = None
        if key is None or key not in files:
            out.append(f"{raw_name} {raw_version}")
    return out


def wheel_files(wheel: Path, find_links: Iterable[Path]) -> list[str]:
    """The names of the wheel files an install could take from: `wheel` and every `.whl`
    in the find-links directories."""
    out = [wheel.name]
    for d in dict.fromkeys(find_links):
        out += [p.name for p in d.glob("*.whl")]
    return out


@once
def interpreter_tags(python: Path) -> frozenset[str] | None:
    """Every tag `python` accepts, as pip computes them on this host: pip's own copy of
    `packaging.tags` (the interpreter's pip, else the pip of prewheel's environment, which
    `Interpreter.pip` runs for an interpreter without one), `sys_tags()` run by that
    interpreter. None when it cannot be computed."""
    where = str(Path(packaging.__file__).parent.parent)
    script = (
        "import json, sys\n"
        f"sys.path.append({where!r})\n"
        "try:\n"
        "    from pip._vendor.packaging import tags\n"
        "except Exception:\n"
        "    from packaging import tags\n"
        "print(json.dumps([str(t) for t in tags.sys_tags()]))\n"
    )
    out = probe([python, "-I", "-c", script], env=clean_env(), timeout=60)
    if out is None:
        return None
    return frozenset(json.loads(out))
