"""The sandbox around every run of package code: the PEP 517 hooks of a build, the metadata
preparation pip does while it resolves, and the import that verifies a wheel.

An sdist is someone else's code, run as the user who owns the wheelhouse. In the sandbox it
has no network, sees the filesystem read-only except its own directory and a private `/tmp`
and `$HOME`, cannot see the wheelhouse at all (nor the real home directory, where credentials
live), gets a fixed environment (no secrets: only what the build needs and what the config
passes), and runs without capabilities. Every process it starts dies with it: `_contain.py`
(which `cmd.run` puts in front of every command) is the subreaper of the whole tree and kills
what is left when the command ends or is stopped, and bubblewrap runs it in its own PID
namespace (`--die-with-parent`, `--new-session`). Time limits come from `cmd.run`; the memory
limit is RLIMIT_AS per process, set by `_contain.py` (a cgroup would bound the tree as a whole,
but needs a writable, delegated cgroup hierarchy, which containers and CI roots rarely give;
an rlimit works unprivileged everywhere).

Where the machine does not allow all of it, the sandbox says so once per run and does what it
can (`Isolation.mode`):

- `bwrap`: bubblewrap, all of the above;
- `netns`: no bubblewrap (or it cannot make its namespaces): `unshare --net` takes the network
  away (its loopback brought up by `_forward.py`, as bubblewrap does); HOME and TMPDIR point at
  private directories, but the filesystem stays as it is;
- `none`: neither works (not root and no user namespaces): only the fixed environment, the
  private HOME and TMPDIR, the time and memory limits and the process containment.

The settings that change what a build produces (network, filesystem view, environment) are
part of the cache key (`key_settings`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeAlias

from . import stamp
from .cmd import probe
from .errors import SandboxError
from .log import get_logger
from .threads import once

log = get_logger("sandbox")

Mode: TypeAlias = Literal["bwrap", "netns", "none"]
SETTINGS = ("auto", "bwrap", "netns", "none")
HERE = Path(__file__).resolve().parent
FORWARD = HERE / "_forward.py"

# The one locale every build gets: a fixed environment gives the same bytes everywhere.
LANG = "C.UTF-8"
# Where the proxy's socket appears inside a bubblewrap sandbox.
INDEX_SOCKET = "/tmp/.prewheel-index.sock"
# Files and directories of the host that hold secrets; hidden in a bubblewrap sandbox.
SECRET_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/sudoers")
SECRET_DIRS = ("/etc/ssh", "/etc/sudoers.d", "/root", "/var/lib/docker", "/run/secrets")
_NAMESPACES = ("--unshare-net", "--unshare-pid", "--unshare-ipc", "--unshare-uts")


@dataclass(frozen=True, kw_only=True)
class Isolation:
    """How far this machine lets the sandbox go, found once per run."""

    mode: Mode
    requested: str  # the `[build] sandbox` setting
    missing: str | None = None  # why a stronger mode is not used; None at full strength
    bwrap: str | None = None
    unshare: str | None = None

    @property
    def network_off(self) -> bool:
        return self.mode != "none"

    @property
    def read_only(self) -> bool:
        """Whether package code sees the filesystem read-only outside its own directory, and
        a directory mounted read-only over a place (`Sandbox.mounted`): only then may what it
        runs in (a shared build environment, a verify venv) be hard links into a cache."""
        return self.mode == "bwrap"

    def key_settings(self) -> tuple[tuple[str, str], ...]:
        """What changes a build's output: part of every cache key."""
        return (
            ("env", f"LANG={LANG}"),
            ("filesystem", "read-only" if self.read_only else "host"),
            ("home", "private"),
            ("network", "off" if self.network_off else "on"),
        )

    def describe(self) -> dict[str, str | None]:
        """For the build record: the mode, and what is missing for a stronger one."""
        return {"mode": self.mode, "requested": self.requested, "missing": self.missing}


def _bwrap_works(exe: str) -> str | None:
    """None when bubblewrap runs with every option the sandbox uses, else why not."""
    argv = [exe, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
    argv += [*_NAMESPACES, "--cap-drop", "ALL", "--die-with-parent", "--new-session", "true"]
    if probe(argv, timeout=20) is not None:
        return None
    return f"{exe} cannot create its namespaces here (no user namespaces, or not root)"


@once
def isolation(setting: str = "auto") -> Isolation:
    """The strongest mode the machine allows, no stronger than `setting`; said once per run
    (a warning line) when it is weaker than bubblewrap."""
    assert setting in SETTINGS, setting  # the config checked it
    bwrap = shutil.which("bwrap")
    unshare = shutil.which("unshare")
    for exe in (bwrap, unshare):
        if exe:
            stamp.watch_path(Path(exe))
    why: str | None = None
    if setting in ("auto", "bwrap"):
        why = "bubblewrap is not installed (Debian: apt-get install bubblewrap)"
        if bwrap is not None:
            why = _bwrap_works(bwrap)
        if why is None:
            return Isolation(mode="bwrap", requested=setting, bwrap=bwrap, unshare=unshare)
        if setting == "bwrap":
            raise SandboxError(
                f"[build] sandbox = 'bwrap', but {why}",
                hint="install bubblewrap, or set [build] sandbox = 'auto' to use what this "
                "machine allows",
            )
    elif setting != "bwrap":
        why = f"[build] sandbox = '{setting}'"
    if setting in ("auto", "bwrap", "netns") and unshare is not None:
        if probe([unshare, "--net", "true"], timeout=10) is not None:
            found = Isolation(mode="netns", requested=setting, missing=why, unshare=unshare)
            _say_once(found, "the network is off, but the filesystem is not read-only")
            return found
        why = f"{why}; `unshare --net` is not allowed either"
    elif setting != "none":
        why = f"{why}; unshare (util-linux) is not installed"
    found = Isolation(mode="none", requested=setting, missing=why)
    _say_once(found, "package code runs with the network on and the filesystem as it is")
    return found


def _say_once(found: Isolation, effect: str) -> None:
    log.warning(
        "sandbox: %s (%s): %s; package code still gets a fixed environment, a private HOME "
        "and TMPDIR, the time and memory limits, and every process it starts dies with it",
        found.mode,
        found.missing,
        effect,
    )


def homes() -> list[Path]:
    """The real home directories of this user: never visible in the sandbox."""
    found = {os.environ.get("HOME", "")}
    with contextlib.suppress(KeyError):
        found.add(pwd.getpwuid(os.getuid()).pw_dir)
    return [Path(h) for h in sorted(found) if h and Path(h) != Path("/")]


def _own_paths() -> list[Path]:
    """What the helper programs need: prewheel's interpreter, its libraries, this package."""
    paths = {Path(sys.prefix), Path(sys.base_prefix), HERE}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        paths.add(Path(sysconfig.get_path(name)))
    return sorted(paths)


def interpreter_paths(python: Path) -> list[Path]:
    """The prefix of `python` and of the interpreter it links to (a venv's base)."""
    out = {python.absolute().parent.parent}
    with_links = python.resolve()
    out.add(with_links.parent.parent)
    return sorted(out)


def _env_paths(env: Mapping[str, str]) -> list[Path]:
    """Absolute paths named by the build's variables (PATH, CC=..., a toolkit): a build must
    see them even when they lie under a hidden home directory."""
    out = []
    for value in env.values():
        for part in value.split(os.pathsep):
            inside = part.startswith(("/dev", "/proc", "/tmp/")) or part == "/tmp"
            if part.startswith("/") and not inside and Path(part).exists():
                out.append(Path(part))
    return out


@dataclass(frozen=True, kw_only=True)
class Sandbox:
    """One command of package code: what it may see and use. `cmd.run(..., sandbox=)` runs it.

    `workdir` is the command's own directory (read-write); in the weaker modes its private
    HOME and TMPDIR are made there. `env` holds the build's own variables (the config's
    `env`, the toolkit's, PATH); the rest of the environment is fixed here.
    """

    isolation: Isolation
    workdir: Path
    env: Mapping[str, str] = field(default_factory=dict)
    writable: tuple[Path, ...] = ()
    readable: tuple[Path, ...] = ()  # shown read-only even under a hidden directory
    # Directories shown read-only at a place inside `workdir` (source, place), over what is
    # there: a build environment that builds share appears as the build's own (bubblewrap).
    mounted: tuple[tuple[Path, Path], ...] = ()
    hidden: tuple[Path, ...] = ()  # never shown: the wheelhouse
    memory: int | None = None  # RLIMIT_AS, bytes, per process
    index_socket: Path | None = None  # the index proxy; pip's index URL is `index_url()`
    # Under bubblewrap, `workdir` also appears at this fixed path (in the sandbox's private
    # /tmp) and the command sees it only there: its arguments, working directory and
    # variables name the alias. So a path a build writes into its output (an RPATH the
    # linker hashed into the build-id, a `__FILE__`) is the same for every build of one
    # (package, version, target), and two builds at once never share it.
    alias: str | None = None

    @property
    def proxied(self) -> bool:
        return self.index_socket is not None and self.isolation.network_off

    def index_url(self, upstream: str) -> str:
        """The index URL to give pip inside: the proxy (through the forwarder's port) when the
        network is off, else the upstream itself."""
        return "http://127.0.0.1:@PORT@/simple/" if self.proxied else upstream

    def index_urls(self, upstreams: Sequence[str]) -> list[str]:
        """`index_url` for each of `upstreams`: the proxy serves the k-th at `/<k>/simple/`."""
        if not self.proxied:
            return list(upstreams)
        return [self.index_url(u) if k == 0 else f"http://127.0.0.1:@PORT@/{k}/simple/"
                for k, u in enumerate(upstreams)]  # fmt: skip

    @property
    def aliased(self) -> bool:
        return self.alias is not None and self.isolation.mode == "bwrap"

    def seen(self, text: str) -> str:
        """`text` with the work directory's real path replaced by the alias, under
        bubblewrap; unchanged otherwise."""
        if not self.aliased or self.alias is None:
            return text
        for real in dict.fromkeys((str(self.workdir.resolve()), str(self.workdir))):
            if text == real or text.startswith(real + "/") or f"{real}/" in text:
                text = text.replace(real, self.alias)
        return text

    @property
    def mode(self) -> str:
        return self.isolation.mode

    def environment(self) -> dict[str, str]:
        """The whole environment of the command: fixed variables, then the build's own."""
        private = (
            {"HOME": "/tmp/home", "TMPDIR": "/tmp"}
            if self.isolation.mode == "bwrap"
            else {"HOME": str(self.workdir / ".home"), "TMPDIR": str(self.workdir / ".tmp")}
        )
        env = {
            "PATH": os.environ.get("PATH", os.defpath),
            "LANG": LANG,
            **private,
            "PIP_CONFIG_FILE": os.devnull,
            "PIP_DISABLE_PIP_VERSION_CHECK": "1",
            "PIP_NO_INPUT": "1",
            "PYTHONNOUSERSITE": "1",
        }
        env.update(self.env)
        return {k: self.seen(v) for k, v in env.items()}

    def wrap(self, argv: Sequence[str], cwd: Path | None) -> list[str]:
        """`argv` behind the sandbox's launcher: bubblewrap, or `unshare --net`, or nothing;
        and behind the forwarder when it reaches the index through the proxy."""
        if self.isolation.mode != "bwrap":
            for d in (self.workdir / ".home", self.workdir / ".tmp"):
                d.mkdir(parents=True, exist_ok=True)
        inner = list(argv)
        if self.proxied:
            assert self.index_socket is not None
            sock = INDEX_SOCKET if self.isolation.mode == "bwrap" else str(self.index_socket)
            inner = [sys.executable, "-I", "-S", str(FORWARD), "--socket", sock, "--", *inner]
        if self.isolation.mode == "netns":
            assert self.isolation.unshare is not None
            if not self.proxied:  # the forwarder brings the loopback up itself
                inner = [sys.executable, "-I", "-S", str(FORWARD), "--", *inner]
            return [self.isolation.unshare, "--net", "--", *inner]
        if self.isolation.mode == "none":
            return inner
        return [*self._bwrap_args(cwd), "--", *map(self.seen, inner)]

    def _bwrap_args(self, cwd: Path | None) -> list[str]:
        assert self.isolation.bwrap is not None
        args = [self.isolation.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for f in SECRET_FILES:
            if Path(f).is_file():
                args += ["--ro-bind", "/dev/null", f]
        # Mounts stack in order: shallower paths first, so a deeper one always wins (the
        # build's own directory under the private /tmp, the wheelhouse under a shown prefix).
        ops: list[tuple[int, int, str, Path]] = [(1, 0, "--tmpfs", Path("/tmp"))]
        for d in _existing([*map(Path, SECRET_DIRS), *homes()]):
            if d.is_dir():
                ops.append((len(d.parts), 0, "--tmpfs", d))
        own_vars = {**self.env, "PATH": self.environment()["PATH"]}
        shown = [*self.readable, *_own_paths(), *_env_paths(own_vars)]
        for p in _existing(shown):
            ops.append((len(p.parts), 1, "--ro-bind", p))
        for p in _existing([self.workdir, *self.writable]):
            ops.append((len(p.parts), 2, "--bind", p))
        for p in _existing(self.hidden):
            ops.append((len(p.parts), 3, "--tmpfs", p))
        aliased = self.aliased and self.alias is not None and self.workdir.is_dir()
        for _, _, op, p in sorted(ops, key=lambda o: (o[0], o[1])):
            args += [op, str(p)] if op == "--tmpfs" else [op, str(p), str(p)]
        # What hides a directory is empty and read-only too, once what it shows is mounted.
        for _, _, op, p in ops:
            if op == "--tmpfs" and p != Path("/tmp"):
                args += ["--remount-ro", str(p)]
        args += ["--dir", "/tmp/home"]
        if aliased and self.alias is not None:
            work = self.workdir.resolve()
            args += ["--bind", str(work), self.alias]
            # A read-only directory inside the work directory is read-only there too.
            for p in _existing(self.readable):
                if p.resolve().is_relative_to(work) and p.resolve() != work:
                    args += ["--ro-bind", str(p), f"{self.alias}/{p.resolve().relative_to(work)}"]
        for source, place in self.mounted:
            args += ["--ro-bind", str(source), self.seen(str(place))]
        if self.proxied:
            assert self.index_socket is not None
            args += ["--bind", str(self.index_socket), INDEX_SOCKET]
        args += [*_NAMESPACES, "--cap-drop", "ALL", "--die-with-parent", "--new-session"]
        if cwd is not None:
            args += ["--chdir", self.seen(str(cwd))]
        return args


def _existing(paths: Iterable[Path]) -> list[Path]:
    """`paths` made absolute and resolved, without the ones that do not exist or repeat."""
    out: dict[Path, None] = {}
    for p in paths:
        try:
            out[p.resolve(strict=True)] = None
        except (OSError, RuntimeError):
            continue
    return list(out)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """What every sandbox of one run shares: the isolation asked for, what it hides (the
    wheelhouse), the memory limit."""

    setting: str = "auto"
    hidden: tuple[Path, ...] = ()
    memory: int | None = None

    @property
    def isolation(self) -> Isolation:
        """The isolation found for `setting`, on first use: finding it starts processes (tens
        of milliseconds), which a run that never runs package code (a resolution of wheels
        only, a no-op) should not wait for."""
        return isolation(self.setting)

    def describe(self) -> dict[str, str | int | None]:
        """For the build record: how package code ran."""
        limit = f"RLIMIT_AS {self.memory} bytes per process" if self.memory else None
        return {**self.isolation.describe(), "memory": limit}

    def box(
        self,
        workdir: Path,
        *,
        env: Mapping[str, str] | None = None,
        readable: Iterable[Path] = (),
        writable: Iterable[Path] = (),
        limit_memory: bool = True,
        index_socket: Path | None = None,
        alias: str | None = None,
    ) -> Sandbox:
        return Sandbox(
            isolation=self.isolation,
            workdir=workdir,
            env=dict(env or {}),
            readable=tuple(readable),
            writable=tuple(writable),
            hidden=self.hidden,
            memory=self.memory if limit_memory else None,
            index_socket=index_socket,
            alias=alias,
        )


def policy(setting: str, *, memory: int | None, wheelhouse: Path | None) -> Policy:
    """The sandbox policy of a run: `[build] sandbox` and `memory`, hiding `wheelhouse`."""
    return Policy(
        setting=setting,
        hidden=(wheelhouse.absolute(),) if wheelhouse is not None else (),
        memory=memory,
    )
