"""The no-op fast path: answer a repeated `prewheel build` from a stamp, like ninja's no-op.

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

The slow path declares what it reads with `watch_file`, `watch_path` and `watch_which`, and
anything that asks the network or a resolver (`volatile`) means its answer cannot be stamped.
This module imports only `os`, `sys`, `time` and `marshal`: it runs before everything else.
"""

from __future__ import annotations

import marshal
import os
import sys
import time
from typing import Any

STAMP_FORMAT = 1

# Variables that cannot change a build: shell bookkeeping, the test runner's own, and the
# switches of this module. Every other variable is part of the stamp.
_IGNORED_ENV = frozenset(
    ("_", "OLDPWD", "PWD", "SHLVL", "PYTEST_CURRENT_TEST", "PREWHEEL_DEBUG", "PREWHEEL_FAST")
)
# `build` options the fast path understands: everything else (--refresh, --help, anything
# new) takes the full path. Output-only options do not change what the run does.
_VALUE_OPTIONS = frozenset(
    ("-r", "--requirements", "-c", "--config", "--target", "--wheelhouse", "-j", "--jobs")
) | frozenset(("--package", "--cache-from"))
_FLAG_OPTIONS = frozenset(("--allow-unpinned", "--retry-failed", "--no-retry-failed"))
_OUTPUT_FLAGS = frozenset(("--json", "-q", "--quiet"))
# A file changed within this long before the stamp is written may change again without its
# timestamps moving (they tick coarsely): the stamp is not written then (git's "racy" rule).
_RACY_NS = 100_000_000
_COARSE_RACY_NS = 2_100_000_000  # filesystems that keep whole seconds

Signature = tuple[Any, ...] | bytes | None


class _Recording:
    """What the full run consulted, with each input's signature when it was first read."""

    def __init__(self) -> None:
        self.argv: list[str] | None = None  # set by main() when a stamp may be written
        self.watched: dict[tuple[str, str], Signature] = {}
        self.volatile: list[str] = []
        self.wheelhouse_before: list[tuple[str, Signature]] | None = None


_REC = _Recording()


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
    _REC.watched.setdefault(key, data)
    return data


def watch_path(path: str | os.PathLike[str]) -> None:
    """The run looks at this executable or directory (exists? runnable? what is in it?)."""
    key = ("stat", os.path.abspath(path))
    if key not in _REC.watched:
        _REC.watched[key] = _stat_sig(key[1])


def watch_which(name: str) -> None:
    """The run looks `name` up on PATH: each directory (its entries) and each place the
    name could be found there (its mode, its target)."""
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
    _REC.volatile.append(reason)


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
_WHEELHOUSE_SKIP = frozenset(("logs", ".index.lock", "cache/noop"))


def _wheelhouse_state(wheelhouse: str) -> list[tuple[str, Signature]]:
    return _walk(wheelhouse, _WHEELHOUSE_SKIP)


# --- the command line ---------------------------------------------------------------------


def _parse(argv: list[str]) -> tuple[list[str], str, bool] | None:
    """For an eligible `build` command line: the arguments that decide what it does, the
    wheelhouse, and whether it prints JSON. None for anything else."""
    if not argv or argv[0] != "build":
        return None
    key: list[str] = []
    wheelhouse = os.environ.get("PREWHEEL_WHEELHOUSE", "wheelhouse")
    as_json = False
    i = 1
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg in _OUTPUT_FLAGS:
            as_json = as_json or arg == "--json"
        elif arg in _FLAG_OPTIONS:
            key.append(arg)
        elif name in _VALUE_OPTIONS:
            if not eq:
                if i + 1 >= len(argv):
                    return None
                i += 1
                value = argv[i]
            key += [name, value]
            if name == "--wheelhouse":
                wheelhouse = value
        else:
            return None
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


def begin(wheelhouse: str | os.PathLike[str]) -> None:
    """The full run starts: note the wheelhouse as it is before anything reads it."""
    if _REC.argv is not None:
        _REC.wheelhouse_before = _wheelhouse_state(os.fspath(wheelhouse))


def save(wheelhouse: str | os.PathLike[str], report: dict[str, Any]) -> str | None:
    """After a run that found nothing to do, write its stamp. Returns why it was not
    written, or None. `report` is what the run printed with --json."""
    if _REC.argv is None or _REC.wheelhouse_before is None:
        return "not started through the command line"
    if _REC.volatile:
        return f"the run asked {_REC.volatile[0]}"
    parsed = _parse(_REC.argv)
    if parsed is None:
        return "an option the fast path does not know"
    key, _, _ = parsed
    root = os.fspath(wheelhouse)
    state = _wheelhouse_state(root)
    if state != _REC.wheelhouse_before:
        return "the wheelhouse changed during the run"
    watched = sorted((kind, path, sig) for (kind, path), sig in _REC.watched.items())
    if any(_SIGNERS[kind](path) != sig for kind, path, sig in watched):
        return "an input changed during the run"
    path = _stamp_path(root, key)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    identity = _identity(key)
    stamp = {**identity, "watched": watched, "wheelhouse": state, "report": report}
    try:
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


def _debug(why: str) -> None:
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
        _debug(f"no stamp at {path}")
        return None
    if not isinstance(stamp, dict) or stamp.get("format") != STAMP_FORMAT:
        _debug("a stamp of another format")
        return None
    now = _identity(key)
    for part, value in now.items():
        if stamp.get(part) != value:
            why = f"{part} changed"
            if part == "env":
                names = sorted({k for k, _ in set(value) ^ set(stamp.get(part) or ())})
                why += f" ({', '.join(names)})"
            _debug(why)
            return None
    for kind, p, sig in stamp["watched"]:
        if _SIGNERS[kind](p) != sig:
            _debug(f"{p} changed")
            return None
    if _wheelhouse_state(wheelhouse) != stamp["wheelhouse"]:
        _debug("the wheelhouse changed")
        return None
    report: dict[str, Any] = stamp["report"]
    return report, as_json, path


def _print_report(report: dict[str, Any], seconds: float, stamp: str) -> None:
    rows = [("target", "package", "version", "result", "wheel / reason")]
    for r in sorted(report["results"], key=lambda r: (r["target"], r["name"])):
        rows.append((r["target"], r["name"], r["version"], r["status"], r["wheel"] or r["reason"]))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[4]
        for row in rows
    ]
    counts = ", ".join(f"{n} {k}" for k, n in report["counts"].items())
    lines += [f"skipped target {t['target']}: {t['reason']}" for t in report["skipped_targets"]]
    lines += [
        f"{counts} in {seconds:.3f}s",
        f"nothing changed since the last run: answered from {stamp}",
    ]
    sys.stdout.write("\n".join(lines) + "\n")


def main() -> None:
    """The `prewheel` command: the fast path when it applies, else the full command line."""
    started = time.perf_counter()
    argv = sys.argv[1:]
    try:
        answer = check(argv)
    except Exception as exc:  # a fast path must never be the reason a run fails
        _debug(f"the check failed ({type(exc).__name__}: {exc})")
        answer = None
    if answer is not None:
        report, as_json, stamp = answer
        seconds = time.perf_counter() - started
        if as_json:
            import json

            sys.stdout.write(
                json.dumps({**report, "duration": round(seconds, 3), "fast_path": True}, indent=2)
                + "\n"
            )
        else:
            _print_report(report, seconds, stamp)
        return
    if _parse(argv) is not None:
        _REC.argv = argv
    from .cli import main as cli

    cli()
