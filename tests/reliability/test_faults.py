"""A wheelhouse on a full disk and on a read-only filesystem: one clear error line naming the
path (exit 2: before any work when nothing can be written), never a traceback; a no-op run on
a read-only wheelhouse still answers; nothing is half-written.

Each test mounts a small tmpfs in a mount namespace of its own (`unshare --mount`, as root),
so nothing outside the test sees it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from needs import private_mounts
from reliakit import own_traceback
from reliakit import write_config as module_config
from upstream import Upstream

pytestmark = pytest.mark.slow

PREWHEEL = f"{sys.executable} -m builder"


def _namespace(script: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`script` (sh) in a private mount namespace."""
    unshare = private_mounts()
    return subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _step(out: Path, name: str, command: str) -> str:
    """A shell step whose stdout, stderr and exit status land in `out`."""
    files = f">{out}/{name}.out 2>{out}/{name}.err"
    return f"set +e; {command} {files}; echo $? >{out}/{name}.rc; set -e\n"


def _result(out: Path, name: str) -> tuple[int, str, str]:
    return (
        int((out / f"{name}.rc").read_text()),
        (out / f"{name}.out").read_text(),
        (out / f"{name}.err").read_text(),
    )


def _error_lines(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error:")]


def test_a_read_only_wheelhouse(upstream: Upstream, tmp_path: Path) -> None:
    wh, out = tmp_path / "wh", tmp_path / "out"
    wh.mkdir()
    out.mkdir()
    config = module_config(tmp_path, upstream.url)
    reqs, more = tmp_path / "requirements.txt", tmp_path / "more.txt"
    reqs.write_text("pw-pure==1.0\npw-haswheel==1.0\n")
    more.write_text("pw-pure==1.0\npw-haswheel==1.0\npw-cext==1.0\n")
    build = f"{PREWHEEL} build -c {config} --wheelhouse {wh}"
    script = (
        f"mount -t tmpfs -o size=64m tmpfs {wh}\n"
        + _step(out, "first", f"{build} -r {reqs}")
        + f"mount -o remount,ro {wh}\n"
        + _step(out, "stamped", f"{build} -r {reqs} --json")
        + _step(out, "noop", f"PREWHEEL_FAST=0 {build} -r {reqs} --json")
        + _step(out, "work", f"{build} -r {more}")
        + _step(out, "check", f"{PREWHEEL} index check --wheelhouse {wh}")
    )
    proc = _namespace(script)
    assert proc.returncode == 0, proc.stderr
    rc, _, err = _result(out, "first")
    assert rc == 0, err
    for name in ("stamped", "noop"):
        rc, stdout, err = _result(out, name)
        assert rc == 0, f"{name}: {err}"
        statuses = {r["status"] for r in json.loads(stdout)["results"]}
        assert statuses == {"cached"}, f"{name}: {statuses}"
        assert not own_traceback(err), err
    rc, stdout, err = _result(out, "work")
    print("read-only wheelhouse, work to do:", _error_lines(err))
    assert rc == 2, stdout + err
    (line,) = _error_lines(err)
    assert str(wh) in line and "not writable" in line and "Read-only" in line
    assert "Traceback" not in err
    rc, stdout, err = _result(out, "check")
    assert rc == 0, stdout + err


def test_a_full_disk(upstream: Upstream, tmp_path: Path) -> None:
    wh, out = tmp_path / "wh", tmp_path / "out"
    wh.mkdir()
    out.mkdir()
    config = module_config(tmp_path, upstream.url)
    reqs, more = tmp_path / "requirements.txt", tmp_path / "more.txt"
    reqs.write_text("pw-pure==1.0\n")
    more.write_text("pw-pure==1.0\npw-cext==1.0\npw-haswheel==1.0\n")
    build = f"{PREWHEEL} build -c {config} --wheelhouse {wh}"
    script = (
        f"mount -t tmpfs -o size=4m tmpfs {wh}\n"
        + _step(out, "first", f"{build} -r {reqs}")
        + f"dd if=/dev/zero of={wh}/filler bs=4k 2>/dev/null || true\n"
        + _step(out, "full", f"{build} -r {more}")
        + f"rm {wh}/filler\n"
        + _step(out, "check", f"{PREWHEEL} index check --wheelhouse {wh}")
        + _step(out, "after", f"{build} -r {more}")
    )
    proc = _namespace(script)
    assert proc.returncode == 0, proc.stderr
    rc, _, err = _result(out, "first")
    assert rc == 0, err
    rc, stdout, err = _result(out, "full")
    print("full disk:", _error_lines(err))
    assert rc == 2, stdout + err
    (line,) = _error_lines(err)
    assert str(wh) in line and "No space left on device" in line
    assert not own_traceback(err), err
    rc, stdout, err = _result(out, "check")
    assert rc == 0, "nothing half-written: " + stdout + err
    rc, stdout, err = _result(out, "after")
    assert rc == 0, "with space again, the build completes: " + stdout + err
