"""A program, not a module: `cmd.run` starts every command through it, so that nothing the
command starts outlives it.

    python -I -S _contain.py --ppid PID [--as BYTES] -- COMMAND...

Killing a process group does not reach a descendant that called `setsid`, and a descendant
that still holds the output file keeps writing after its build "ended". This launcher is the
child subreaper of everything the command starts (orphans are re-parented to it, whatever
session they moved to); when the command exits, or when this launcher is told to stop
(SIGTERM, SIGINT, SIGHUP), or when prewheel dies (the parent-death signal, so a `kill -9` of
prewheel leaves no orphans either), it SIGKILLs every remaining descendant, reaps them and
exits with the command's status. `--as` sets RLIMIT_AS, the memory limit every process of the
command inherits.

It runs with prewheel's own interpreter, the standard library only, and imports nothing from
`builder`, so it starts in milliseconds: every command pays for its start (about 36 in a cold
build of four sdists), so it imports only built-in modules and ctypes (`_signal`, not
`signal`, whose enums and `contextlib` cost more than the rest of the start).
"""

from __future__ import annotations

# `_signal`: the same functions and numbers as `signal`, without its enums (no stub for mypy;
# `typing.TYPE_CHECKING` would cost the start more than `signal` itself).
import _signal as signal  # type: ignore[import-not-found]
import ctypes
import errno
import os
import resource
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def descendants(root: int) -> set[int]:
    """Every live process below `root`, read from /proc (parent links)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_all() -> None:
    """SIGKILL every descendant until none is left, reaping as they die."""
    me = os.getpid()
    for _ in range(200):
        alive = descendants(me)
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        reap(block=False)
        if descendants(me):
            os.sched_yield()


def reap(*, block: bool) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _stop(signum: int, _frame: object) -> None:
    kill_all()
    reap(block=False)
    os._exit(128 + signum)


def main(argv: list[str]) -> int:
    ppid, memory = 0, 0
    while argv and argv[0] != "--":
        opt, value = argv[0], argv[1]
        argv = argv[2:]
        if opt == "--ppid":
            ppid = int(value)
        elif opt == "--as":
            memory = int(value)
        else:
            print(f"_contain: unknown option {opt}", file=sys.stderr)
            return 2
    command = argv[1:]
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if ppid and os.getppid() != ppid:  # prewheel died before the line above took effect
        return 143
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _stop)
    pid = os.fork()
    if pid == 0:
        try:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, signal.SIG_DFL)
            if memory:
                resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            os.execvp(command[0], command)
        except OSError as exc:
            os.write(2, f"cannot run {command[0]}: {exc.strerror}\n".encode())
        os._exit(127)
    while True:
        try:
            done, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno == errno.ECHILD:
                return 1
            raise
        if done == pid:
            break
    kill_all()
    reap(block=False)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
