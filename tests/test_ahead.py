"""Builds ahead of the plan (`pipeline.ahead`, `plan.start_ahead`): a target's top-level sdists
are built before its closure is resolved, and the resolver reads their wheels' metadata
instead of running each sdist's metadata hook; the plan's build takes the wheel. The lock on
the key is taken at once and handed over; given up, it leaves no lock file behind."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from clitools import prewheel
from conftest import WriteConfig
from test_decisions import target
from upstream import Upstream

from builder import locks
from builder.stages.build import BuildResult
from builder.stages.plan import PlanItem

# A dependency only setup.py knows (`dynamic`), and a metadata hook that refuses to run:
# setuptools runs `prepare_metadata_for_build_wheel` as `setup.py dist_info`.
REFUSING = {
    "pyproject.toml": (
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"'
        '\n\n[project]\nname = "pw-ahead"\nversion = "1.0"\ndynamic = ["dependencies"]\n'
    ),
    "PKG-INFO": "Metadata-Version: 2.1\nName: pw-ahead\nVersion: 1.0\n",
    "setup.py": (
        "import sys\n"
        "if 'dist_info' in sys.argv:\n"
        "    sys.exit('pw-ahead: the metadata hook ran')\n"
        "from setuptools import setup\n"
        "setup(install_requires=['pw-haswheel==1.0'])\n"
    ),
    "pw_ahead/__init__.py": "VALUE = 1\n",
}


def test_the_resolver_reads_the_wheel_built_ahead_instead_of_the_metadata_hook(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """The sdist's metadata hook would fail the resolution (uv's, then pip's): run with the
    wheel built ahead, it is never called; the closure is the wheel's (its dependency, which
    only setup.py names, is in it), and the plan's build took that wheel, its log going on
    in the wheelhouse."""
    upstream.add_sdist("pw-ahead", "1.0", REFUSING)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-ahead==1.0\n")
    wh = tmp_path / "wh"
    proc = prewheel(
        "build", "-r", reqs, "-c", write_config(tmp_path), "--wheelhouse", wh, "--json",
        "--allow-unpinned",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert "the metadata hook ran" not in proc.stderr + proc.stdout
    got = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert got == {"pw-ahead": "built", "pw-haswheel": "downloaded"}, got
    (log,) = wh.glob("logs/pw-ahead-1.0-*.log")
    text = log.read_text()
    assert 0 <= text.find(" build_wheel ") < text.find("--offline"), "build, then verify"


def slow(name: str, build_s: float) -> dict[str, str]:
    """An sdist whose build takes `build_s` seconds and whose metadata hook, if it ever runs,
    hangs for a minute and then fails."""
    module = name.replace("-", "_")
    return {
        "pyproject.toml": (
            '[build-system]\nrequires = ["setuptools>=61"]\n'
            'build-backend = "setuptools.build_meta"\n\n'
            f'[project]\nname = "{name}"\nversion = "1.0"\ndynamic = ["dependencies"]\n'
        ),
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        "setup.py": (
            "import sys, time\n"
            "if 'dist_info' in sys.argv:\n"
            "    time.sleep(60)\n"
            f"    sys.exit('{name}: the metadata hook ran')\n"
            "if 'bdist_wheel' in sys.argv:\n"
            f"    time.sleep({build_s})\n"
            "from setuptools import setup\n"
            "setup(install_requires=['pw-haswheel==1.0'])\n"
        ),
        f"{module}/__init__.py": "VALUE = 1\n",
    }


def _build(
    tmp_path: Path, write_config: WriteConfig, pins: str, jobs: int, **build: object
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """`prewheel --debug build` of `pins` with `jobs` slots: what it said, and the
    wheelhouse; it must succeed."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(pins)
    wh = tmp_path / "wh"
    config = write_config(tmp_path, **({"build": build} if build else {}))
    proc = prewheel(
        "--debug", "build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json",
        "--allow-unpinned", "--jobs", str(jobs),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return proc, wh


def test_the_resolution_after_the_builds_ahead_reads_the_pages_again_only_when_it_must(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """After the builds ahead, uv resolves from their wheels and the pages its first attempt
    read (`--offline`). Where the wheel requires a project no pin named (pw-haswheel, only
    in setup.py), those pages do not hold it: uv reads the index, and the closure is the
    same."""
    upstream.add_sdist("pw-ahead", "1.0", REFUSING)
    for pins, offline_answers in (("pw-ahead==1.0\n", False),
                                  ("pw-ahead==1.0\npw-haswheel==1.0\n", True)):  # fmt: skip
        (work := tmp_path / str(offline_answers)).mkdir()
        proc, _ = _build(work, write_config, pins, 2)
        compiles = [ln for ln in proc.stderr.splitlines() if "uv pip compile" in ln]
        after = [ln for ln in compiles if "--find-links" in ln]  # with the wheel built ahead
        assert after and after[0].endswith("--no-build --offline"), compiles
        assert len(after) == (1 if offline_answers else 2), compiles
        missed = "the pages read so far did not resolve it" in proc.stderr
        assert missed != offline_answers, proc.stderr
        got = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
        assert got == {"pw-ahead": "built", "pw-haswheel": "downloaded"}, got


def test_the_pages_of_a_wheels_closure_are_read_while_the_other_builds_ahead_compile(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """pw-ahead's wheel requires pw-haswheel, which no pin names. pw-ahead is built while
    pw-slow still compiles: the pages of its closure are read then, so the resolution after
    the builds answers from what it read (`--offline`), not from the index."""
    upstream.add_sdist("pw-ahead", "1.0", REFUSING)
    upstream.add_sdist("pw-slow", "1.0", slow("pw-slow", 4))
    proc, _ = _build(tmp_path, write_config, "pw-ahead==1.0\npw-slow==1.0\n", 2, timeout=30)
    compiles = [ln for ln in proc.stderr.splitlines() if "uv pip compile" in ln]
    reads = [ln for ln in compiles if "/pages-" in ln]  # pw-ahead's own closure
    final = [ln for ln in compiles if ln.endswith("--no-build --offline")]
    assert len(reads) == 1 and len(final) == 1, compiles
    assert proc.stderr.find(reads[0]) < proc.stderr.find(final[0])
    assert "the pages read so far did not resolve it" not in proc.stderr, proc.stderr
    # The closure's wheel was fetched while pw-slow compiled; the plan's download took it.
    assert re.search(r"took pw_haswheel-1\.0-\S+\.whl from the files this run", proc.stderr)
    got = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert got == {"pw-ahead": "built", "pw-slow": "built", "pw-haswheel": "downloaded"}, got


def test_a_build_ahead_still_compiling_when_a_slot_frees_is_raced_not_abandoned(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """Two builds ahead in two slots; the quick one is done first, so a slot is free while
    the slow one still builds. The resolver then starts the sandboxed resolution (the slow
    sdist's metadata hook) beside it, but the build is done first: uv resolves from both
    wheels, and the hook, which would hang past the resolution's time limit, is stopped. It
    used to be left to the hook: the resolution timed out, exit 2. The race starts as soon as
    the slot is free: no attempt to resolve without pw-slow's wheel is made first."""
    upstream.add_sdist("pw-quick", "1.0", slow("pw-quick", 0))
    upstream.add_sdist("pw-slow", "1.0", slow("pw-slow", 4))
    proc, _ = _build(tmp_path, write_config, "pw-quick==1.0\npw-slow==1.0\n", 2, timeout=30)
    assert "the metadata hook ran" not in proc.stderr + proc.stdout
    assert "the builds ahead were done first" in proc.stderr, "no race: the hook was not run"
    # One attempt without builds failed: the first. None was made while pw-slow still built:
    # it could not succeed without pw-slow's wheel, and held up the race by its own run.
    assert proc.stderr.count("resolving without builds did not do") == 1, proc.stderr
    got = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert got == {"pw-quick": "built", "pw-slow": "built", "pw-haswheel": "downloaded"}, got


def test_a_wheel_built_ahead_is_repaired_and_checked_in_its_slot_while_the_resolution_waits(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """pw-cext (C, requiring nothing) is built ahead beside pw-slow; its repair (auditwheel)
    and its checks (ISA, ABI, install, import) run in its slot as soon as it is built, while
    the resolution still waits for pw-slow, not after the resolution. Once: the plan takes
    the repaired, checked wheel. pw-slow requires pw-haswheel: its install waits for the
    closure."""
    upstream.add_sdist("pw-slow", "1.0", slow("pw-slow", 8))  # longer than pw-cext's all
    proc, wh = _build(tmp_path, write_config, "pw-cext==1.0\npw-slow==1.0\n", 2, timeout=30)
    got = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert got == {"pw-cext": "built", "pw-slow": "built", "pw-haswheel": "downloaded"}, got
    err = proc.stderr
    repaired = err.find("auditwheel repair")
    assert "[pw-cext]" in err[err.rfind("\n", 0, repaired) : repaired], "pw-cext repaired first"
    resolved = err.find("the builds ahead were done first")
    assert 0 <= repaired < resolved, err
    installs = [ln for ln in err.splitlines() if " --offline " in ln]
    assert [ln.split("] $")[0].rsplit("[", 1)[1] for ln in installs] == ["pw-cext", "pw-slow"]
    assert err.find(installs[0]) < resolved < err.find(installs[1]), err
    (log,) = wh.glob("logs/pw-cext-1.0-*.log")
    text = log.read_text()
    assert text.count("auditwheel repair") == 1 and text.count(" --offline ") == 1, text
    assert text.find("auditwheel repair") < text.find("--offline"), "repaired, then verified"
    records = [json.loads(r.read_text()) for r in wh.glob("builds/*.json")]
    (record,) = [r for r in records if r["name"] == "pw-cext"]
    assert record["result"] == "ok" and record["checks"] == ["isa", "abi", "import"], record
    assert any(p.startswith("manylinux") for p in record["platforms"]), record["platforms"]


def test_the_longest_build_ahead_takes_the_first_slot_whichever_sdist_came_first(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """One slot, two builds ahead: pw-pure (listed first, its sdist the smallest, so it is
    ready first) and pw-cext (C source). The slot goes to pw-cext: a build ahead is expected
    from its start, and a lighter one waits for it to ask. First come, first served, the
    longest build started last."""
    proc, _ = _build(tmp_path, write_config, "pw-pure==1.0\npw-cext==1.0\n", 1)
    got = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert got == {"pw-pure": "built", "pw-cext": "built"}, got
    hooks = [ln for ln in proc.stderr.splitlines() if " get_requires_for_build_wheel " in ln]
    assert [ln.split("] $")[0].rsplit("[", 1)[1] for ln in hooks] == ["pw-cext", "pw-pure"]


def test_a_command_cancelled_ends_its_whole_tree(tmp_path: Path) -> None:
    """The race's loser: `cmd.run(cancel=)` ends the command and what it started (a metadata
    hook is uv's grandchild) and says so, not as a failure of the package."""
    import os
    import sys
    import time

    from builder.cmd import run
    from builder.errors import CommandCancelled

    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    cancel = threading.Event()
    threading.Timer(1.0, cancel.set).start()
    t0 = time.monotonic()
    with pytest.raises(CommandCancelled):
        run([sys.executable, "-c", code], step="resolve", timeout=120, cancel=cancel)
    assert time.monotonic() - t0 < 30, "not stopped when cancelled"
    grandchild = int(pid_file.read_text())
    for _ in range(100):
        if not Path(f"/proc/{grandchild}").exists():
            break
        time.sleep(0.05)
    else:
        os.kill(grandchild, 9)
        pytest.fail("the command's child outlived the cancel")


def test_a_wheel_built_ahead_is_taken_only_with_the_closures_build_requirements() -> None:
    """A build requirement the closure pins must be what the wheel was built with (a
    framework an extension compiles against); others, and the build tools, do not count."""
    from builder.pipeline.ahead import fits

    built = BuildResult(
        wheel=Path("x.whl"), build_deps={"setuptools": "80.0", "Numpy": "2.1.0"},
        has_native_sources=True,
    )  # fmt: skip
    item = PlanItem(target=target(), name="pw-x", version="1.0", action="build", reason="")  # type: ignore[arg-type]
    assert fits(built, item)
    assert fits(built, replace(item, runtime_pins=(("numpy", "2.1.0"),)))
    assert not fits(built, replace(item, runtime_pins=(("numpy", "1.26.4"),)))
    assert fits(built, replace(item, runtime_pins=(("idna", "3.1"),)))


def test_a_lock_given_up_leaves_no_file_and_its_waiter_takes_the_new_one(tmp_path: Path) -> None:
    path = tmp_path / ".locks" / "build-k.lock"
    taken = locks.Taken(path)
    assert taken.taken and taken.made and path.exists()
    with locks.attempt(path) as free:
        assert not free
    got = threading.Event()
    release = threading.Event()

    def waiter() -> None:
        with locks.hold(path):
            got.set()
            release.wait(30)

    t = threading.Thread(target=waiter)
    t.start()
    assert not got.wait(0.3), "took a lock that is held"
    taken.give_up()
    assert got.wait(10), "the waiter never took the lock"
    # It holds the lock of the file now at the path: nobody else takes that one meanwhile.
    assert path.exists()
    with locks.attempt(path) as free:
        assert not free
    release.set()
    t.join(10)
    with locks.attempt(path) as free:
        assert free

    # A lock on a file that was there before is released, never removed.
    kept = locks.Taken(path)
    assert kept.taken and not kept.made
    kept.give_up()
    assert path.exists()


def test_a_probe_asked_by_threads_at_once_runs_once() -> None:
    """Builds ahead start side by side, each asking the same probes first (the sandbox this
    machine allows, the compiler's version): one process per probe, not one per build (the
    sandbox's warning was printed twice)."""
    from builder.threads import once

    calls: list[int] = []
    go = threading.Event()
    out: list[int] = []

    @once
    def probe(x: int) -> int:
        calls.append(x)
        go.wait(10)
        if x < 0:
            raise ValueError(x)
        return x * 2

    threads = [threading.Thread(target=lambda: out.append(probe(1))) for _ in range(4)]
    for t in threads:
        t.start()
    go.set()
    for t in threads:
        t.join(10)
    assert calls == [1] and out == [2, 2, 2, 2]
    assert probe(2) == 4 and calls == [1, 2]
    for _ in range(2):  # an error is not kept: asked again, it runs again
        with pytest.raises(ValueError):
            probe(-1)
    assert calls == [1, 2, -1, -1]
