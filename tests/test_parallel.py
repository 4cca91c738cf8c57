"""Parallel builds: --jobs, heavy packages alone, failure isolation, time limits, retries."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from clitools import lines_of, prewheel, start
from upstream import Upstream

pytestmark = pytest.mark.slow

# A build that hangs in a child process too: only ending the whole process tree stops both.
# The build runs in the sandbox, where nothing outside is writable: the processes carry the
# marker (PW_HANG_MARK, from the config) in their command lines, for the test to look for.
_HANG_SETUP = """\
import os, subprocess, sys, time
from setuptools import setup

mark = os.environ.get("PW_HANG_MARK")
if mark:
    print("hanging:", mark, flush=True)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", mark])
    subprocess.run([sys.executable, "-c", "import time; time.sleep(600)", mark])
setup()
"""


# A build that takes its time (in bdist_wheel only: resolving reads its metadata at once).
_SLOW_SETUP = """\
import sys, time
from setuptools import setup

if "bdist_wheel" in sys.argv:
    time.sleep(12)
setup()
"""


def _pure(module: str) -> dict[str, str]:
    return {f"{module}/__init__.py": f"VALUE = {module!r}\n"}


@pytest.fixture(scope="module")
def index(upstream: Upstream) -> Upstream:
    """The shared upstream plus this module's own packages (new names only)."""
    upstream.add_sdist("pw-par-a", "1.0", _pure("pw_par_a"))
    upstream.add_sdist("pw-hang", "1.0", {"setup.py": _HANG_SETUP, **_pure("pw_hang")})
    upstream.add_sdist("pw-par-slow", "1.0", {"setup.py": _SLOW_SETUP, **_pure("pw_par_slow")})
    return upstream


def _config(path: Path, index: Upstream, packages: str = "", build: str = "") -> Path:
    path.write_text(f'[index]\nupstream = "{index.url}"\n[build]\n{build}\n{packages}')
    return path


def _build(root: Path, reqs: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    req = root / "requirements.txt"
    req.write_text(reqs)
    return prewheel("build", "-r", req, "-c", config, "--wheelhouse", root / "wh", *args)


def _results(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in json.loads(proc.stdout)["results"]}


def _records(wh: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for p in (wh / "builds").glob("*.json"):
        rec = json.loads(p.read_text())
        out[rec["name"]] = rec
    return out


def _interval(rec: dict[str, Any]) -> tuple[float, float]:
    """When the build held its slot: taken after acquiring it, and before giving it back."""

    def when(stamp: str) -> float:
        return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()

    return when(rec["started"]), when(rec["build_finished"])


def test_jobs_run_builds_at_once_and_heavy_alone(index: Upstream, tmp_path: Path) -> None:
    config = _config(
        tmp_path / "prewheel.toml", index, packages="[packages.pw-cext]\nheavy = true\n"
    )
    proc = _build(
        tmp_path, "pw-cext==1.0\npw-pure==1.0\npw-par-a==1.0\n", config, "-j", "2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    assert {r["status"] for r in _results(proc).values()} == {"built"}
    spans = {name: _interval(rec) for name, rec in _records(tmp_path / "wh").items()}
    heavy = spans.pop("pw-cext")
    for name, (began, end) in spans.items():
        assert end <= heavy[0] or began >= heavy[1], f"{name} built while heavy pw-cext did"
    (a0, a1), (b0, b1) = spans["pw-pure"], spans["pw-par-a"]
    assert a0 < b1 and b0 < a1, "two light builds with --jobs 2 did not overlap"
    # Plain progress lines (not a TTY) name the package they belong to.
    assert "[pw-cext] " in proc.stderr and "[pw-par-a] " in proc.stderr


@pytest.fixture(scope="module")
def failing(index: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Good packages next to one that fails to compile and one that hangs past its limit."""
    root = tmp_path_factory.mktemp("failing")
    mark = f"pw-hang-mark-{os.getpid()}-{root.name}"
    config = _config(
        root / "prewheel.toml",
        index,
        packages=(f'[packages.pw-hang]\ntimeout = 15\nenv = {{ PW_HANG_MARK = "{mark}" }}\n'),
    )
    reqs = "pw-pure==1.0\npw-haswheel==1.0\npw-broken==1.0\npw-hang==1.0\n"
    proc = _build(root, reqs, config, "-j", "3", "--json")
    return {"root": root, "config": config, "proc": proc, "mark": mark, "reqs": reqs}


def test_failures_do_not_stop_the_others(failing: dict[str, Any]) -> None:
    proc, wh = failing["proc"], failing["root"] / "wh"
    assert proc.returncode == 1, proc.stderr
    results = _results(proc)
    assert {n: r["status"] for n, r in results.items()} == {
        "pw-pure": "built",
        "pw-haswheel": "downloaded",
        "pw-broken": "failed",
        "pw-hang": "failed",
    }
    page = (wh / "cpu" / "simple" / "pw-pure" / "index.html").read_text()
    assert "pw_pure-1.0-" in page
    records = _records(wh)
    broken = records["pw-broken"]
    assert broken["result"] == "failed" and broken["step"] == "build"
    log = (wh / broken["log"]).read_text()
    assert "syntax error on purpose" in log
    assert "pw_broken.c" in results["pw-broken"]["tail"]
    # The message names the compiler's first error, not just "see the log".
    error = results["pw-broken"]["error"]
    assert error.startswith("build failed (exit 1): pw_broken.c:"), error
    assert ": error:" in error, error


def test_a_hanging_build_is_stopped_and_recorded(failing: dict[str, Any]) -> None:
    results, records = _results(failing["proc"]), _records(failing["root"] / "wh")
    hang = records["pw-hang"]
    assert hang["result"] == "failed"
    # The configured limit, not a clock reading.
    assert "ran past its time limit of 15s" in hang["error"]
    assert "ran past its time limit" in results["pw-hang"]["error"]
    log = (failing["root"] / "wh" / hang["log"]).read_text()
    assert failing["mark"] in log, "the hanging build never ran"
    left = _marked(failing["mark"])
    assert not left, f"processes of the timed-out build are still running: {left}"


def _marked(mark: str) -> list[int]:
    """Live processes whose command line holds `mark`."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "status").read_text()
        except OSError:
            continue
        if mark.encode() in cmdline and "\nState:\tZ" not in state:
            found.append(int(proc.name))
    return found


def test_failures_are_cached_unless_retried(failing: dict[str, Any]) -> None:
    root, config, reqs = failing["root"], failing["config"], failing["reqs"]
    before = _records(root / "wh")
    # Without --json: the summary table and the failure lines, on stdout.
    skip = _build(root, reqs, config)
    assert skip.returncode == 1
    assert "failed (cached) pw-broken 1.0" in skip.stdout
    assert "failed (cached) pw-hang 1.0" in skip.stdout
    assert str(root / "wh" / before["pw-broken"]["log"]) in skip.stdout, "the log is named"
    assert "--retry-failed" in skip.stdout
    assert _records(root / "wh") == before, "a cached failure must not build anything"
    # Nothing was tried: the stamp answers the next identical run, failing the same way.
    stamped = _build(root, reqs, config)
    assert stamped.returncode == 1
    assert "answered from" in stamped.stdout and "failed (cached) pw-broken" in stamped.stdout
    # The old spelling of the default still works, and answers the same.
    again = _build(root, reqs, config, "--no-retry-failed", "--json")
    assert again.returncode == 1
    kept = _results(again)
    assert kept["pw-broken"]["status"] == "failed" and kept["pw-broken"]["cached_failure"]
    assert kept["pw-broken"]["log"] == str(root / "wh" / before["pw-broken"]["log"])
    assert _records(root / "wh") == before

    # A failure another prewheel version recorded is tried again (an upgrade may fix it).
    for path in (root / "wh" / "builds").glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["name"] == "pw-broken":
            path.write_text(json.dumps({**rec, "tools": {**rec["tools"], "prewheel": "0.0.1"}}))
    other = _results(_build(root, reqs, config, "--json"))
    assert other["pw-hang"]["cached_failure"]
    assert not other["pw-broken"]["cached_failure"], "a failure of another version is kept"
    assert _records(root / "wh")["pw-broken"]["tools"]["prewheel"] != "0.0.1"

    # The same pins (no new resolution), pw-hang switched off: --retry-failed builds pw-broken.
    text = config.read_text().replace("timeout = 15", 'skip = "hangs"')
    config2 = root / "retry.toml"
    config2.write_text(text)
    retry = _build(root, reqs, config2, "--json", "--retry-failed")
    assert retry.returncode == 1
    results = _results(retry)
    assert results["pw-pure"]["status"] == "cached"
    assert results["pw-hang"]["status"] == "skipped"
    assert results["pw-broken"]["status"] == "failed"
    assert not results["pw-broken"]["cached_failure"]
    assert "not retried" not in results["pw-broken"]["error"]
    assert _records(root / "wh")["pw-broken"]["started"] != before["pw-broken"]["started"]


def test_each_result_is_reported_as_soon_as_it_is_published(
    index: Upstream, tmp_path: Path
) -> None:
    """A wheel built, verified and published while another build still runs is reported
    then: its line does not wait for the slow build."""

    config = _config(tmp_path / "prewheel.toml", index, build="jobs = 2")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-par-slow==1.0\npw-par-a==1.0\n")
    proc = start("build", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh")
    with lines_of(proc) as got:
        assert proc.wait(timeout=120) == 0, "".join(got)
    lines = [ln for ln in got if ln.startswith("[pw-par-")]
    done = next(i for i, ln in enumerate(lines) if ln.startswith("[pw-par-a] ") and "built" in ln)
    slow = [ln.rsplit(": ", 1)[-1].split()[0] for ln in lines[:done] if "[pw-par-slow]" in ln]
    assert slow[-1] == "build", "pw-par-a was reported after the slow build:\n" + "".join(lines)
