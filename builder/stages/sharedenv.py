"""Build environments that the builds of one run share.

Under bubblewrap a build sees its environment read-only, so two builds whose environments
would hold the same thing (the same interpreter, the same build requirements installed the
same way) can use one: the first build that needs it makes it (a venv, then an install that
asks the index), the others wait for it and then neither create a venv nor ask the index.
On the 4-pin set each build after the first saved 0.3-0.5 s, most of it CPU, plus the
removal of its environment's ~1,000 files.

Once a second build takes a shared environment, its bytecode is compiled beside the builds
(`python -I -S -m compileall`: the sources are compiled, none of them run, as pip compiles
what it installs). A hook shown the environment read-only cannot write its own: without it
each hook compiled setuptools in memory again (0.58 s of a `get_requires_for_build_wheel`,
0.20 s with it). The backend's question (`build._Beside`) waits for a compile begun, so only
the first builds' own hooks pay. An environment one build uses is not compiled (0.8 s of CPU
for setuptools, which that build's two hooks would not win back).

A build sees the shared environment at its own `env` directory (a read-only mount over an
empty one), so its paths, logs and outputs are what a private environment gives. Where
package code could write into its environment (no bubblewrap), or where a build must start
from a fresh one (`--check-reproducible`'s second build), builds make their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..cmd import check_stop, run
from ..errors import Interrupted
from ..threads import PerKey

# An environment of at most this many Python files has its bytecode compiled once a second
# build takes it (setuptools alone: 229 files, 0.8 s of CPU); a bigger one (torch) is not.
BYTECODE_LIMIT = 1500


@dataclass(frozen=True, kw_only=True)
class SharedEnv:
    """A made environment: where it is, what it holds ({name: version}), and which build
    made it (whose log holds its venv and install commands)."""

    path: Path
    installed: Mapping[str, str]
    made_by: str
    # Its bytecode's compile: begun (by a second build), and ended (or failed, or not run).
    _begun: threading.Event = field(default_factory=threading.Event, compare=False)
    _ended: threading.Event = field(default_factory=threading.Event, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, compare=False)

    def compile(self) -> None:
        """Its bytecode compiled beside the builds that use it (once)."""
        with self._lock:
            if self._begun.is_set():
                return
            self._begun.set()
        threading.Thread(target=self._compile, name="prewheel-bytecode", daemon=True).start()

    def wait_compiled(self) -> None:
        """Back once a compile begun has ended; at once where none began."""
        if self._begun.is_set():
            self._ended.wait()

    def _compile(self) -> None:
        """The bytecode of its files, written beside them (atomically: a hook importing
        meanwhile reads a whole file or none). The venv's interpreter with `-I -S` runs only
        the standard library's compileall (no `.pth` file is read)."""
        try:
            sites = sorted(self.path.glob("lib/python*/site-packages"))
            files = sum(1 for site in sites for _ in site.rglob("*.py"))
            if sites and files <= BYTECODE_LIMIT:
                python = self.path / "bin" / "python"
                argv: list[str | Path] = [python, "-I", "-S", "-m", "compileall", "-q", *sites]
                # A hook compiles in memory what is missing; a stop ends the run's builds.
                with contextlib.suppress(Exception, Interrupted):
                    run(argv, step="build-env", check=False, timeout=120)
        finally:
            self._ended.set()

    def log_use(self, log_file: Path) -> None:
        """Whose environment a build used, in its log (its commands are in the log of the
        build that made it)."""
        held = ", ".join(f"{n}=={v}" for n, v in sorted(self.installed.items()))
        with log_file.open("a", encoding="utf-8") as fh:
            fh.write(
                f"prewheel: build environment shared, made by {self.made_by} (its log shows "
                f"how): {held}\n\n"
            )


class SharedEnvs:
    """The shared build environments of one run, under `root` (in its scratch directory:
    they go when the run ends)."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._made: PerKey[SharedEnv] = PerKey()

    def get(self, key: Hashable, make: Callable[[Path], Mapping[str, str]], by: str) -> SharedEnv:
        """The environment of `key`: made here by `make(path)` (which returns what it
        installed) for the build `by` names, or by another build, waited for. A failure is
        not kept: a build that waited on one that failed makes the environment itself, so
        its own log says why it failed (a run told to stop does not start it again)."""
        path = self._root / hashlib.sha256(repr(key).encode()).hexdigest()[:16]

        def made() -> SharedEnv:
            shutil.rmtree(path, ignore_errors=True)  # what a failed attempt left
            return SharedEnv(path=path, installed=dict(make(path)), made_by=by)

        env = self._made.get(path, made, after_failure=check_stop)
        if env.made_by != by:
            env.compile()
        return env
