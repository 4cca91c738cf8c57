"""Every subprocess goes through `run`: logged, captured to a log file, timed out, contained,
typed errors; package code through `run(..., sandbox=...)`.

Every command starts behind `_contain.py`, the subreaper of everything it starts: when the
command ends, times out or is stopped, and when prewheel itself dies (even by `kill -9`),
nothing it started is left running, including descendants that moved to a session of their
own. Output goes to a file, never a pipe, so a descendant that keeps the output open cannot
make prewheel wait for an end of file.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Protocol

from . import scratch
from .errors import CommandCancelled, CommandError, CommandTimeout, Interrupted
from .log import get_logger


class Confinement(Protocol):
    """How a command of package code runs (`sandbox.Sandbox` is one): the environment it
    gets, the launcher it runs behind, its memory limit, and a word for the log."""

    @property
    def memory(self) -> int | None: ...

    @property
    def mode(self) -> str: ...

    def environment(self) -> dict[str, str]: ...

    def wrap(self, argv: Sequence[str], cwd: Path | None) -> list[str]: ...


log = get_logger("cmd")

TAIL_LINES = 40
CONTAIN = Path(__file__).resolve().parent / "_contain.py"
SPARE = Path(__file__).resolve().parent / "_spare.py"
SPARES_KEPT = 4  # the most `spare` processes waiting at once (the oldest goes)
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL of a command's tree
CANCEL_POLL = 0.05  # seconds between looks at a command's `cancel`
OUTPUT_KEPT = 1 << 20  # the most output `run` returns (the log file has all of it)

# Children still running, so a stop can end every process tree at once.
_active: set[subprocess.Popen[bytes]] = set()
_active_lock = threading.Lock()
_stop = threading.Event()
_stop_signal = [0]
# `python -m MODULE` started ahead, by (MODULE, tag), oldest first: `spare`.
_spares: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
# Held while a publication becomes visible (`publishing`); a stop waits for it to end, so a
# publication is either visible before the stop or not at all.
_publish_lock = threading.RLock()


def request_stop(signum: int) -> None:
    """Stop the run: no command starts from now on, nothing is published, and every running
    command is ended (SIGTERM to each tree at once, SIGKILL after `KILL_GRACE` seconds). Safe in
    a signal handler: the lock it waits for is held for a few file writes, and is re-entrant
    for the thread that holds it."""
    with _publish_lock:
        _stop_signal[0] = _stop_signal[0] or signum
        _stop.set()
    threading.Thread(target=stop_all, name="prewheel-stop", daemon=True).start()


def stopping() -> bool:
    return _stop.is_set()


def check_stop() -> None:
    """Raise `Interrupted` once a stop was requested: called before each new piece of work
    and before anything is published."""
    if _stop.is_set():
        raise Interrupted(_stop_signal[0] or signal.SIGINT)


@contextlib.contextmanager
def publishing() -> Iterator[None]:
    """The few writes that make a publication visible (a catalog entry and its pages): they
    start only while the run is not told to stop (else `Interrupted`), and a stop requested
    meanwhile takes effect after them."""
    with _publish_lock:
        check_stop()
        yield


def reset_stop() -> None:
    """Forget a stop (tests that run several builds in one process)."""
    _stop.clear()
    _stop_signal[0] = 0


def stop_all() -> None:
    """End every running child's process tree: SIGTERM to all at once, then SIGKILL to those
    still there after `KILL_GRACE` seconds."""
    with _active_lock:
        procs = list(_active)
    for proc in procs:
        _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + KILL_GRACE
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _contain(memory: int | None = None) -> list[str]:
    """The launcher every command starts behind (`_contain.py`: nothing the command starts
    outlives it, or prewheel); with `memory`, the command's address space limit in bytes."""
    launcher = [sys.executable, "-I", "-S", str(CONTAIN), "--ppid", str(os.getpid())]
    return [*launcher, "--as", str(memory)] if memory else launcher


def spare(module: str, imports: Sequence[str], *, tag: str, env: Mapping[str, str]) -> None:
    """`python -m module` of prewheel's interpreter, started ahead for the command that
    `run(..., spare=tag)` will run: it imports `imports` now, in `env`, then waits to be told
    its arguments (`_spare.py`). A command not run leaves it waiting until the run ends
    (`drop_spares`), another is started for the same tag, or `SPARES_KEPT` newer ones are."""
    if stopping():
        return
    argv = [sys.executable, "-I", str(SPARE), module, *imports]
    try:
        proc = subprocess.Popen(
            [*_contain(), "--", *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=dict(env),
            start_new_session=True,
        )
    except OSError:
        return  # the command starts as any other
    with _active_lock:
        _active.add(proc)
        old = [p for p in [_spares.pop((module, tag), None)] if p is not None]
        _spares[(module, tag)] = proc
        while len(_spares) > SPARES_KEPT:
            old.append(_spares.pop(next(iter(_spares))))
    for gone in old:
        _end_spare(gone)


def drop_spares() -> None:
    """End every `spare` still waiting (a run's end)."""
    with _active_lock:
        waiting = list(_spares.values())
        _spares.clear()
    for proc in waiting:
        _end_spare(proc)


def _end_spare(proc: subprocess.Popen[bytes]) -> None:
    """A spare not needed: its end of input makes it exit."""
    with contextlib.suppress(OSError):
        assert proc.stdin is not None
        proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE)
    if proc.poll() is None:
        _kill_group(proc)
    with _active_lock:
        _active.discard(proc)


def _take_spare(
    args: Sequence[str],
    tag: str,
    env: Mapping[str, str] | None,
    cwd: Path | None,
    out: IO[bytes],
) -> subprocess.Popen[bytes] | None:
    """The spare of `tag` for `args` (`python -m MODULE ...` of prewheel's interpreter),
    told to run it with its output appended to `out`; None where there is none (or it is
    gone), and the command starts as any other."""
    if len(args) < 3 or args[0] != sys.executable or args[1] != "-m":
        return None
    with _active_lock:
        proc = _spares.pop((args[2], tag), None)
    if proc is None:
        return None
    told = {
        "args": list(args[3:]),
        "env": dict(env if env is not None else os.environ),
        "cwd": str(cwd) if cwd is not None else None,
        "output": f"/proc/{os.getpid()}/fd/{out.fileno()}",
    }
    try:
        assert proc.stdin is not None
        proc.stdin.write(json.dumps(told).encode() + b"\n")
        proc.stdin.close()
    except OSError:
        _end_spare(proc)
        return None
    return proc


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    step: str,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    check: bool = True,
    sandbox: Confinement | None = None,
    cancel: threading.Event | None = None,
    spare: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv`, appending its output to `log_file`; raise CommandError on failure.

    With `sandbox`, the command is package code: it runs in that sandbox, with the sandbox's
    environment (`env` must be None) and memory limit. Once `cancel` is set, the command's
    tree is ended and `CommandCancelled` raised. With `spare`, a `python -m` command runs
    in the process `spare(..., tag=spare)` started ahead for it, where there is one.
    """
    args = [os.fspath(a) for a in argv]
    memory = None
    if sandbox is not None:
        assert env is None, "a sandboxed command gets the sandbox's environment"
        env = sandbox.environment()
        memory = sandbox.memory
        full = sandbox.wrap(args, cwd)
        pretty = f"(sandbox: {sandbox.mode}) {shlex.join(args)}"
    else:
        full = args
        pretty = shlex.join(args)
    log.debug("$ %s", pretty)
    check_stop()
    started = time.monotonic()
    out, offset = _output(log_file, pretty)
    with out:
        taken = None
        if spare is not None and sandbox is None:
            taken = _take_spare(args, spare, env, cwd, out)
        try:
            proc = taken or subprocess.Popen(
                [*_contain(memory), "--", *full],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandError(f"{step}: cannot start {args[0]}: {exc}", step=step) from exc
        with _active_lock:
            _active.add(proc)
        timed_out = cancelled = False
        try:
            if _stop.is_set():  # asked to stop while it started
                _kill_group(proc)
            cancelled = _wait(proc, timeout, cancel)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
        except BaseException:
            _kill_group(proc)
            raise
        finally:
            with _active_lock:
                _active.discard(proc)
        elapsed = time.monotonic() - started
        text = _read_back(out, offset)
        if log_file is not None:
            out.write(f"[exit {proc.returncode} after {elapsed:.1f}s]\n\n".encode())
    check_stop()  # a command ended by a stop is not a failure of its package
    result = subprocess.CompletedProcess(args, proc.returncode, text, "")
    if cancelled:
        raise CommandCancelled(f"{step}: {args[0]} was stopped, its answer not needed", step=step)
    if timed_out:
        raise CommandTimeout(
            f"{step} timed out after {timeout:.0f}s: {args[0]}",
            step=step,
            log=str(log_file) if log_file else None,
            tail=tail(text),
            hint="raise the time limit ([build] timeout, or [packages.NAME] timeout) if the "
            "package is just slow",
        )
    if check and proc.returncode != 0:
        raise CommandError(
            f"{step} failed (exit {proc.returncode})"
            + (f", see {log_file}" if log_file else f": {pretty}"),
            step=step,
            log=str(log_file) if log_file else None,
            tail=tail(text),
        )
    return result


def _wait(
    proc: subprocess.Popen[bytes], timeout: float | None, cancel: threading.Event | None
) -> bool:
    """Wait for `proc` (`TimeoutExpired` past `timeout`); True when `cancel` ended it first."""
    if cancel is None:
        proc.wait(timeout=timeout)
        return False
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            proc.wait(timeout=CANCEL_POLL)
            return False
        except subprocess.TimeoutExpired:
            if cancel.is_set():
                _kill_group(proc)
                return True
            if deadline is not None and time.monotonic() > deadline:
                raise


def _output(log_file: Path | None, pretty: str) -> tuple[IO[bytes], int]:
    """Where the command writes: the log file (appended, after a `$ command` line), or an
    anonymous temp file; and the offset its output starts at."""
    if log_file is None:
        return tempfile.TemporaryFile(), 0
    log_file.parent.mkdir(parents=True, exist_ok=True)
    fh = log_file.open("a+b")
    fh.write(f"$ {pretty}\n".encode())
    fh.flush()
    return fh, fh.tell()


def _read_back(fh: IO[bytes], offset: int) -> str:
    """What the command wrote (its last `OUTPUT_KEPT` bytes)."""
    fh.flush()
    end = os.fstat(fh.fileno()).st_size
    start = max(offset, end - OUTPUT_KEPT)
    fh.seek(start)
    data = fh.read(end - start)
    fh.seek(0, os.SEEK_END)
    return data.decode("utf-8", "replace")


def probe(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
    ok_codes: tuple[int, ...] = (0,),
) -> str | None:
    """The standard output of a short query (`nvcc --version`, a JSON report), or None when
    the program is missing, fails (an exit status not in `ok_codes`) or runs out of time.
    Its standard error is dropped: a query's answer is what it prints, not the log lines it
    writes beside it."""
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
    return proc.stdout if proc.returncode in ok_codes else None


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


def _signal_group(proc: subprocess.Popen[bytes], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signum)


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


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a command's tree: its launcher kills every descendant on SIGTERM at once."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for prewheel's own tools (pip installing wheels, auditwheel): no user
    pip configuration leaks in. Package code gets the sandbox's fixed environment instead."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env.pop("PYTHONPATH", None)
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    run_dir = scratch.current()
    if run_dir is not None:  # what a killed child leaves goes where the next run finds it
        env["TMPDIR"] = str(run_dir)
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    if extra:
        env.update(extra)
    return env


def uv_env() -> dict[str, str]:
    """`clean_env` for uv: the certificate bundle pip is told to trust (an intercepting
    proxy's) trusted by uv too."""
    cert = os.environ.get("PIP_CERT")
    return clean_env({"SSL_CERT_FILE": cert} if cert else None)
