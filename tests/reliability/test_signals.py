"""SIGTERM (CI cancel, `docker stop`) and SIGINT (Ctrl-C) in each phase of a build: resolving,
building, verifying. The run stops new work, ends every child's process tree (a detached
grandchild included), publishes nothing after the signal, removes its scratch directory and
exits 143 or 130."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from clitools import lines_of, prewheel, snapshot, start, wait_for
from reliakit import kill_marked, own_traceback, scratch_dirs, wait_gone
from reliakit import write_config as module_config
from upstream import Upstream

pytestmark = pytest.mark.slow

MARK = f"pw-signal-mark-{os.getpid()}"

# Each hangs in its phase, with a detached grandchild that carries MARK.
_SLEEPER = (
    "import subprocess, sys, time\n"
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', {mark!r}],"
    " start_new_session=True)\n"
    "time.sleep(600)\n"
)
META_SETUP = (
    "import sys\nfrom setuptools import setup\nif 'bdist_wheel' not in sys.argv:\n"
    + "".join(f"    {line}\n" for line in _SLEEPER.format(mark=MARK).splitlines())
    + "setup()\n"
)
BUILD_SETUP = META_SETUP.replace("'bdist_wheel' not in", "'bdist_wheel' in")

PHASES = {
    # phase: (package, the step its progress line names once the phase runs)
    "resolve": ("pw-sig-meta", None),
    "build": ("pw-sig-build", ": build"),
    "verify": ("pw-sig-verify", ": verify"),
}


@pytest.fixture(scope="module")
def index(upstream: Upstream) -> Upstream:
    upstream.add_sdist(
        "pw-sig-meta", "1.0", {"setup.py": META_SETUP, "pw_sig_meta/__init__.py": ""}
    )
    upstream.add_sdist(
        "pw-sig-build", "1.0", {"setup.py": BUILD_SETUP, "pw_sig_build/__init__.py": ""}
    )
    upstream.add_sdist(
        "pw-sig-verify", "1.0", {"pw_sig_verify/__init__.py": _SLEEPER.format(mark=MARK)}
    )
    return upstream


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_stops_the_run_cleanly(
    index: Upstream, tmp_path: Path, phase: str, signum: int
) -> None:
    package, needle = PHASES[phase]
    wh = tmp_path / "wh"
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"pw-pure==1.0\n{package}==1.0\n")
    # Resolving runs package code with pip (setup.py prepares the metadata); uv reads this
    # sdist's PKG-INFO and runs none, so the resolve phase is pip's.
    resolver = "pip" if phase == "resolve" else "uv"
    config = module_config(
        tmp_path, index.url, build={"jobs": 2}, index={"upstream": index.url, "resolver": resolver}
    )
    proc = start("build", "-r", reqs, "-c", config, "--wheelhouse", wh)
    try:
        with lines_of(proc) as got:
            if needle is None:  # resolving: only the builds ahead of it (their repair and
                # checks too) report before it ends; nothing is published before it ends
                assert wait_for(got, proc, 60, "[pw-pure] ", ": build"), "".join(got)
                assert not wait_for(got, proc, 8, ": built "), "resolving ended too early"
            else:
                assert wait_for(got, proc, 120, f"[{package}] ", needle), "".join(got)
                wait_for(got, proc, 1.5, "never printed")  # well inside the phase
            before = snapshot(wh / "catalog")
            sent = time.monotonic()
            proc.send_signal(signum)
            code = proc.wait(timeout=30)
            took = time.monotonic() - sent
        stderr = "".join(got)
    finally:
        if proc.poll() is None:
            proc.kill()
        left = wait_gone(MARK)
        kill_marked(MARK)
    expected = 143 if signum == signal.SIGTERM else 130
    name = signal.Signals(signum).name
    print(f"{phase} {name}: exit {code} {took:.1f}s after the signal, {len(left)} left")
    assert code == expected, stderr
    assert not own_traceback(stderr), stderr
    assert "nothing was published after the signal" in stderr
    assert not left, f"processes left: {left}"
    assert snapshot(wh / "catalog") == before, "something was published after the signal"
    assert not list(wh.glob(f"files/*/{package.replace('-', '_')}-*.whl"))
    assert not scratch_dirs(proc.pid), "the run's scratch directory was left"
    check = prewheel("index", "check", "--wheelhouse", wh) if wh.is_dir() else None
    assert check is None or check.returncode == 0, check.stdout + check.stderr
