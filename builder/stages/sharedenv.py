"""Build environments that the builds of one run share.

Under bubblewrap a build sees its environment read-only, so two builds whose environments
would hold the same thing (the same interpreter, the same build requirements installed the
same way) can use one: the first build that needs it makes it (a venv, then an install that
asks the index), the others wait for it and then neither create a venv nor ask the index.
On the 4-pin set each build after the first saved 0.3-0.5 s, most of it CPU, plus the
removal of its environment's ~1,000 files.

A build sees the shared environment at its own `env` directory (a read-only mount over an
empty one), so its paths, logs and outputs are what a private environment gives. Where
package code could write into its environment (no bubblewrap), or where a build must start
from a fresh one (`--check-reproducible`'s second build), builds make their own.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..cmd import check_stop
from ..threads import PerKey


@dataclass(frozen=True, kw_only=True)
class SharedEnv:
    """A made environment: where it is, what it holds ({name: version}), and which build
    made it (whose log holds its venv and install commands)."""

    path: Path
    installed: Mapping[str, str]
    made_by: str

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

        return self._made.get(path, made, after_failure=check_stop)
