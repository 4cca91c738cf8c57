"""The no-op stamp: answer a repeated `prewheel build` from what it saw last time, like ninja.

A warm `build` whose every item was cached does real work only to find out that nothing
changed: importing click, packaging and rich, reading the config and the wheelhouse, probing
compilers. That is most of its time. So a run that found nothing to do leaves a *stamp*: every
input it consulted (the bytes of the requirements, config and patch files; the stat of each
interpreter, compiler and directory it looked in), the environment, the code running it, and
the state of every file in the wheelhouse, with the report it printed. The next run with the
same arguments compares all of that first, importing nothing but the standard library's
smallest modules, and replays the report when everything is as it was. Any difference, or
anything it cannot be sure of, falls through to the full run: a stamp can only make a run
faster, never give another answer.

The full run declares what it reads with `watch_file`, `watch_path` and `watch_which`, and
anything that asks the network or a resolver (`volatile`) means its answer cannot be stamped.
Those calls go to the `Recorder` that `build` starts in a context variable (threads started
with a copied context share it); outside a recording they only read. This module imports
only the standard library's smallest modules: `check` runs before anything else.
"""

from __future__ import annotations

import contextvars
import marshal
import os
import sys

from . import buildargs

TYPE_CHECKING = False  # typing is not imported at run time: this module runs first
if TYPE_CHECKING:
    from typing import Any, TypeAlias

    Signature: TypeAlias = tuple[Any, ...] | bytes | None


STAMP_FORMAT = 1

# Variables that cannot change a build: shell bookkeeping, the test runner's own, and the
# switches of this module. Every other variable is part of the stamp.
_IGNORED_ENV = frozenset(
    ("_", "OLDPWD", "PWD", "SHLVL", "PYTEST_CURRENT_TEST", "PREWHEEL_DEBUG", "PREWHEEL_FAST")
)
# A file changed within this long before the stamp is written may change again without its
# timestamps moving (they tick coarsely): the stamp is not written then (git's "racy" rule).
_RACY_NS = 100_000_000
_COARSE_RACY_NS = 2_100_000_000  # filesystems that keep whole seconds


class Recorder:
    """What the full run consulted, with each input's signature when it was first read."""

    def __init__(self, argv: list[str] | None, wheelhouse: str) -> None:
        self.argv = argv  # the command line, when the run came through the entry point
        self.wheelhouse = wheelhouse
        self.watched: dict[tuple[str, str], Signature] = {}
        self.volatile: list[str] = []
        # The wheelhouse before anything reads it (only a run that may be stamped needs it).
        self.wheelhouse_before = _wheelhouse_state(wheelhouse) if argv is not None else None

    def save(self, report: dict[str, Any]) -> str | None:
        """After a run that found nothing to do, write its stamp. Returns why it was not
        written, or None. `report` is what the run printed with --json."""
        return _save(self, report)


_recorder: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar(
    "prewheel_stamp", default=None
)
# The command line as the entry point saw it: a stamp is keyed on it.
_command_line: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "prewheel_command_line", default=None
)


def set_command_line(argv: list[str]) -> None:
    """The entry point hands on the command line of a run the fast path did not answer."""
    if _parse(argv) is not None:
        _command_line.set(argv)


class recording:  # a class, used as `with stamp.recording(...)` like a function
    """`build` records what it consults inside this block (entered before anything reads
    the wheelhouse). `argv`: the command line a stamp is keyed on (default: the one the
    entry point handed on; None when the run did not come through it)."""

    def __init__(self, wheelhouse: str | os.PathLike[str], argv: list[str] | None = None) -> None:
        self.recorder = Recorder(
            argv if argv is not None else _command_line.get(), os.fspath(wheelhouse)
        )
        self._token: contextvars.Token[Recorder | None] | None = None

    def __enter__(self) -> Recorder:
        self._token = _recorder.set(self.recorder)
        return self.recorder

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _recorder.reset(self._token)


def _stat_sig(path: str) -> Signature:
    """Identity and change times of `path` (links followed), or None when it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _content_sig(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


_SIGNERS = {"stat": _stat_sig, "content": _content_sig}


def watch_file(path: str | os.PathLike[str]) -> bytes | None:
    """Read a file the run depends on: its bytes, or None when it cannot be read (missing,
    a directory). The run uses these bytes, so the stamp holds exactly what it used; a later
    read that differs within the same run keeps the first and makes the stamp fail."""
    key = ("content", os.path.abspath(path))
    data = _content_sig(key[1])
    rec = _recorder.get()
    if rec is not None:
        rec.watched.setdefault(key, data)
    return data


def watch_path(path: str | os.PathLike[str]) -> None:
    """The run looks at this executable or directory (exists? runnable? what is in it?)."""
    rec = _recorder.get()
    key = ("stat", os.path.abspath(path))
    if rec is not None and key not in rec.watched:
        rec.watched[key] = _stat_sig(key[1])


def watch_which(name: str) -> None:
    """The run looks `name` up on PATH: each directory (its entries) and each place the
    name could be found there (its mode, its target)."""
    if _recorder.get() is None:
        return
    if "/" in name:
        watch_path(name)
        return
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        d = d or "."
        watch_path(d)
        watch_path(os.path.join(d, name))


def volatile(reason: str) -> None:
    """The run asked something outside this machine's files (the network, a resolver): its
    answer may differ next time, so it is not stamped."""
    rec = _recorder.get()
    if rec is not None:
        rec.volatile.append(reason)


# --- what every stamp holds ---------------------------------------------------------------


def _env() -> list[tuple[str, str]]:
    return sorted((k, v) for k, v in os.environ.items() if k not in _IGNORED_ENV)


def _host() -> tuple[Any, ...]:
    glibc = os.confstr("CS_GNU_LIBC_VERSION") if "CS_GNU_LIBC_VERSION" in os.confstr_names else ""
    return (tuple(os.uname()), glibc, sys.version, sys.executable, _stat_sig(sys.executable))


def _walk(root: str, skip: frozenset[str] = frozenset()) -> list[tuple[str, Signature]]:
    """Every file under `root` with its stat signature, by path relative to `root`."""
    out: list[tuple[str, Signature]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel) if rel else root))
        except OSError:
            continue
        for e in entries:
            name = f"{rel}/{e.name}" if rel else e.name
            if name in skip or e.name == "__pycache__":
                continue
            if e.is_dir(follow_symlinks=False):
                stack.append(name)
            else:
                out.append((name, _stat_sig(e.path)))
    out.sort()
    return out


def _code() -> list[Any]:
    """The code that would run: this package's files and the import path's directories
    (installing, upgrading or removing any distribution changes one of them)."""
    pkg = os.path.dirname(os.path.abspath(__file__))
    return [_walk(pkg), [(p, _stat_sig(p or ".")) for p in sys.path]]


# The wheelhouse's own bookkeeping that a no-op run may touch: build logs, the index lock,
# the stamps themselves. Everything else in it is part of the stamp.
_WHEELHOUSE_SKIP = frozenset(("logs", ".index.lock", ".locks", "cache/noop"))


def _wheelhouse_state(wheelhouse: str) -> list[tuple[str, Signature]]:
    return _walk(wheelhouse, _WHEELHOUSE_SKIP)


# --- the command line ---------------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[list[str], str, bool] | None:
    """For an eligible `build` command line: the arguments that decide what it does, the
    wheelhouse, and whether it prints JSON. None for anything else: an option the table in
    `buildargs` does not give the fast path (--refresh, --help, anything new) takes the full
    run."""
    if not argv or argv[0] != "build":
        return None
    key: list[str] = []
    wheelhouse = os.environ.get("PREWHEEL_WHEELHOUSE", "wheelhouse")
    as_json = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        opt = buildargs.BY_NAME.get(name)
        if opt is None or opt.stamp == "never" or (eq and not opt.takes_value):
            return None
        if not opt.takes_value:
            if opt.stamp == "output":
                as_json = as_json or opt.dest == "as_json"
            else:
                key.append(name)
        else:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            if opt.stamp == "key":
                key += [name, value]
            if opt.dest == "wheelhouse":
                wheelhouse = value
        i += 1
    return key, wheelhouse, as_json


def _stamp_path(wheelhouse: str, key: list[str]) -> str:
    h = 0xCBF29CE484222325  # FNV-1a: a stable name; the stamp itself holds the full key
    for b in "\0".join([os.getcwd(), *key]).encode("utf-8", "surrogateescape"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return os.path.join(wheelhouse, "cache", "noop", f"{h:016x}.stamp")


def _identity(key: list[str]) -> dict[str, Any]:
    """Everything but the watched inputs and the wheelhouse, as it is now."""
    return {
        "format": STAMP_FORMAT,
        "cwd": os.getcwd(),
        "argv": key,
        "env": _env(),
        "host": _host(),
        "code": _code(),
    }


# --- writing a stamp (the full run) -------------------------------------------------------


def _save(rec: Recorder, report: dict[str, Any]) -> str | None:
    if rec.argv is None or rec.wheelhouse_before is None:
        return "not started through the command line"
    if rec.volatile:
        return f"the run asked {rec.volatile[0]}"
    parsed = _parse(rec.argv)
    if parsed is None:
        return "an option the fast path does not know"
    key, _, _ = parsed
    root = rec.wheelhouse
    state = _wheelhouse_state(root)
    if state != rec.wheelhouse_before:
        return "the wheelhouse changed during the run"
    watched = sorted((kind, path, sig) for (kind, path), sig in rec.watched.items())
    if any(_SIGNERS[kind](path) != sig for kind, path, sig in watched):
        return "an input changed during the run"
    path = _stamp_path(root, key)
    tmp = f"{path}.{os.getpid()}.tmp"
    identity = _identity(key)
    stamp = {**identity, "watched": watched, "wheelhouse": state, "report": report}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)  # a read-only wheelhouse: no stamp
        with open(tmp, "wb") as fh:
            marshal.dump(stamp, fh)
        now = os.stat(tmp).st_mtime_ns  # the filesystem's clock, at its granularity
        margin = _COARSE_RACY_NS if now % 1_000_000_000 == 0 else _RACY_NS
        code, paths = identity["code"]
        sigs = [s for _, _, s in watched] + [s for _, s in [*state, *code, *paths]]
        if any(t > now - margin for s in sigs if isinstance(s, tuple) for t in s[4:6]):
            os.unlink(tmp)
            return "a file changed moments ago; the next run will stamp"
        os.replace(tmp, path)
    except OSError as exc:
        return f"cannot write {path}: {exc}"
    return None


# --- answering from a stamp (the fast path) -----------------------------------------------


def debug(why: str) -> None:
    if os.environ.get("PREWHEEL_DEBUG"):
        print(f"no-op stamp: {why}; running the full build", file=sys.stderr)


def check(argv: list[str]) -> tuple[dict[str, Any], bool, str] | None:
    """The stamped report, whether to print JSON and the stamp's path, when nothing the stamp
    recorded has changed; None (with the reason under PREWHEEL_DEBUG) otherwise."""
    parsed = _parse(argv)
    if parsed is None or os.environ.get("PREWHEEL_FAST") == "0":
        return None
    key, wheelhouse, as_json = parsed
    path = _stamp_path(wheelhouse, key)
    try:
        with open(path, "rb") as fh:
            stamp = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        debug(f"no stamp at {path}")
        return None
    if not isinstance(stamp, dict) or stamp.get("format") != STAMP_FORMAT:
        debug("a stamp of another format")
        return None
    now = _identity(key)
    for part, value in now.items():
        if stamp.get(part) != value:
            why = f"{part} changed"
            if part == "env":
                names = sorted({k for k, _ in set(value) ^ set(stamp.get(part) or ())})
                why += f" ({', '.join(names)})"
            debug(why)
            return None
    for kind, p, sig in stamp["watched"]:
        if _SIGNERS[kind](p) != sig:
            debug(f"{p} changed")
            return None
    if _wheelhouse_state(wheelhouse) != stamp["wheelhouse"]:
        debug("the wheelhouse changed")
        return None
    report: dict[str, Any] = stamp["report"]
    return report, as_json, path
