"""Every subprocess goes through `run`: logged, captured to a log file, timed out, typed errors."""

from __future__ import annotations

import functools
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import CommandError, CommandTimeout
from .log import get_logger

log = get_logger("cmd")

TAIL_LINES = 40

# Children still running, so an interrupt can stop every process tree at once.
_active: set[subprocess.Popen[str]] = set()
_active_lock = threading.Lock()


def stop_all() -> None:
    """Kill every running child's process group (used on Ctrl-C)."""
    with _active_lock:
        procs = list(_active)
    for proc in procs:
        _kill_group(proc)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    step: str,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`, appending its output to `log_file`; raise CommandError on failure.

    The child gets its own process group so a timeout or Ctrl-C kills the whole tree
    (compilers started by a build backend included), leaving no orphans.
    """
    args = [os.fspath(a) for a in argv]
    pretty = shlex.join(args)
    log.debug("$ %s", pretty)
    started = time.monotonic()
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env) if env is not None else None,
        cwd=cwd,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    with _active_lock:
        _active.add(proc)
    timed_out = False
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
        out, _ = proc.communicate()
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    finally:
        with _active_lock:
            _active.discard(proc)
    elapsed = time.monotonic() - started
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write(f"$ {pretty}\n{out}")
            fh.write(f"[exit {proc.returncode} after {elapsed:.1f}s]\n\n")
    result = subprocess.CompletedProcess(args, proc.returncode, out, "")
    if timed_out:
        raise CommandTimeout(
            f"{step} timed out after {timeout:.0f}s: {args[0]}",
            step=step,
            log=str(log_file) if log_file else None,
            tail=tail(out),
            hint="raise the time limit ([build] timeout, or [packages.NAME] timeout) if the "
            "package is just slow",
        )
    if check and proc.returncode != 0:
        raise CommandError(
            f"{step} failed (exit {proc.returncode})"
            + (f", see {log_file}" if log_file else f": {pretty}"),
            step=step,
            log=str(log_file) if log_file else None,
            tail=tail(out),
        )
    return result


def probe(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> str | None:
    """The standard output of a short query (`nvcc --version`, a JSON report), or None when
    the program is missing, fails or runs out of time. Its standard error is dropped: a
    query's answer is what it prints, not the log lines it writes beside it."""
    args = [os.fspath(a) for a in argv]
    log.debug("$ %s", shlex.join(args))
    try:
        proc = subprocess.run(
            args,
            capture_output=True,
            input="",  # end of input at once (a pipe: no file to open, nothing to wait for)
            text=True,
            errors="replace",
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
            start_new_session=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def venv(
    python: str | os.PathLike[str],
    dest: Path,
    *,
    step: str,
    log_file: Path | None,
    timeout: float = 120,
) -> Path:
    """A fresh venv of `python` at `dest`, without pip (pip comes from the interpreter that
    makes it); returns the venv's python."""
    run(
        [python, "-m", "venv", "--without-pip", dest], step=step, log_file=log_file, timeout=timeout
    )
    return dest / "bin" / "python"


@functools.cache
def offline_prefix() -> tuple[str, ...]:
    """`unshare --net --` where it works (root, or a kernel that allows user namespaces): a
    command behind it has no network, not even loopback. Empty where it does not."""
    exe = shutil.which("unshare")
    if exe is None or probe([exe, "--net", "true"], timeout=10) is None:
        return ()
    return (exe, "--net", "--")


# Mounts an empty read-only tmpfs over each directory named before `--`, then runs the rest.
_HIDE_SCRIPT = (
    'while [ "$#" -gt 0 ]; do d=$1; shift; [ "$d" = -- ] && break; '
    'mount -t tmpfs -o ro,nosuid,nodev,size=4k,mode=755 prewheel-hidden "$d" || exit 125; '
    'done; exec "$@"'
)


@functools.cache
def _can_hide(offline: bool) -> bool:
    exe = shutil.which("unshare")
    if exe is None:
        return False
    with tempfile.TemporaryDirectory(prefix="prewheel-hide-") as tmp:
        net = ["--net"] if offline else []
        argv = [exe, "--mount", *net, "--", "/bin/sh", "-c", _HIDE_SCRIPT, "sh", tmp, "--"]
        return probe([*argv, "true"], timeout=10) is not None


def hiding_prefix(dirs: Sequence[str], *, offline: bool) -> tuple[str, ...] | None:
    """`unshare --mount [--net]` and a mount of an empty read-only tmpfs over each of
    `dirs`: a command behind it sees them empty (and, `offline`, has no network). None
    where the kernel does not allow a mount namespace here."""
    if not _can_hide(offline):
        return None
    exe = shutil.which("unshare")
    assert exe is not None
    net = ("--net",) if offline else ()
    return (exe, "--mount", *net, "--", "/bin/sh", "-c", _HIDE_SCRIPT, "sh", *dirs, "--")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for pip and builds: no user pip configuration leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.pop("PYTHONPATH", None)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    if extra:
        env.update(extra)
    return env
