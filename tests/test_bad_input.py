"""Bad input: exit 2, a message that names the problem, and the wheelhouse untouched."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import content, prewheel, snapshot
from upstream import Upstream, WriteConfig


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    """A wheelhouse with something in it, to prove that bad input never touches it."""
    wh = tmp_path / "wh"
    (wh / "catalog").mkdir(parents=True)
    (wh / "catalog" / "demo.json").write_text('{"project": "demo", "files": []}\n')
    return wh


def _build(
    tmp_path: Path, config: Path, wh: Path, text: str, *extra: str
) -> subprocess.CompletedProcess[str]:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(text)
    return prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, *extra)


def test_malformed_line_names_file_and_line(
    tmp_path: Path, write_config: WriteConfig, existing: Path
) -> None:
    before = snapshot(existing)
    proc = _build(tmp_path, write_config(tmp_path), existing, "pw-pure==1.0\npw-cext===\n")
    assert proc.returncode == 2
    assert f"{tmp_path / 'requirements.txt'}:2" in proc.stderr
    assert snapshot(existing) == before


def test_unpinned_requirements_are_listed(
    tmp_path: Path, write_config: WriteConfig, existing: Path
) -> None:
    before = snapshot(existing)
    proc = _build(tmp_path, write_config(tmp_path), existing, "pw-pure\npw-cext>=1\n")
    assert proc.returncode == 2
    assert "pw-pure" in proc.stderr and "pw-cext>=1" in proc.stderr
    assert "--allow-unpinned" in proc.stderr
    assert snapshot(existing) == before


def test_allow_unpinned_prints_the_resolved_pins(tmp_path: Path, write_config: WriteConfig) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-cext\n")
    proc = prewheel(
        "plan",
        "-r",
        reqs,
        "-c",
        write_config(tmp_path),
        "--allow-unpinned",
        "--wheelhouse",
        tmp_path / "wh",
    )
    assert proc.returncode == 0, proc.stderr
    assert "pw-cext==1.1" in proc.stdout


@pytest.mark.parametrize(
    "line,needle", [("pw-nonesuch==1.0", "pw-nonesuch"), ("pw-cext==9.9", "pw-cext==9.9")]
)
def test_missing_upstream_is_named(
    tmp_path: Path, write_config: WriteConfig, existing: Path, line: str, needle: str
) -> None:
    before = snapshot(existing)
    proc = _build(tmp_path, write_config(tmp_path), existing, line + "\n")
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "not found upstream" in proc.stderr
    assert snapshot(existing) == before


@pytest.mark.parametrize(
    "reqs,needle",
    [
        # pw-app is an sdist: its requirements are read in the sandbox, by its build hooks.
        ("pw-app==1.0\npw-cext==1.1\n", "pw-cext"),
        # Wheels only: proved without the sandbox.
        ("pw-needsnewer==1.0\n", "pw-haswheel>=2"),
    ],
)
def test_unsatisfiable_pins_are_explained_by_uv(
    tmp_path: Path,
    write_config: WriteConfig,
    existing: Path,
    upstream: Upstream,
    reqs: str,
    needle: str,
) -> None:
    """Pins that cannot be satisfied together: uv's proof (its cause) is the error, at once;
    pip's resolver is not run to say less after a long backtrack. Nothing is published or
    recorded; where the sdists were built to read their metadata (ahead of the plan), the
    shared wheel cache may keep the build dependencies that were fetched, nothing else."""
    upstream.add_wheel("pw-needsnewer", "1.0", {"pw_needsnewer/__init__.py": ""},
                       deps=["pw-haswheel>=2"])  # fmt: skip
    before = content(existing)
    proc = _build(tmp_path, write_config(tmp_path), existing, reqs)
    assert proc.returncode == 2, proc.stderr
    assert "uv could not resolve the requirements" in proc.stderr, proc.stderr
    assert "cause:" in proc.stderr and needle in proc.stderr, proc.stderr
    assert "pip's resolver tries instead" not in proc.stderr
    assert content(existing) == before


def test_bad_config_lists_every_problem(tmp_path: Path, existing: Path) -> None:
    config = tmp_path / "prewheel.toml"
    config.write_text('[build]\njbos = 2\n[packages.pw-cext]\nevn = {A = "1"}\n')
    before = snapshot(existing)
    proc = _build(tmp_path, config, existing, "pw-cext==1.0\n")
    assert proc.returncode == 2
    assert "build.jbos: unknown key, did you mean 'jobs'?" in proc.stderr
    assert "packages.pw-cext.evn: unknown key, did you mean 'env'?" in proc.stderr
    assert snapshot(existing) == before


def test_hash_mismatch_publishes_nothing(
    tmp_path: Path, write_config: WriteConfig, upstream: Upstream
) -> None:
    wh = tmp_path / "wh"
    wrong = "0" * 64
    proc = _build(
        tmp_path,
        write_config(tmp_path),
        wh,
        f"pw-haswheel==1.0 --hash=sha256:{wrong}\npw-pure==1.0\n",
    )
    assert proc.returncode == 3, proc.stderr  # a hash mismatch; the rest went on
    assert "pw-haswheel" in proc.stdout and "not among the --hash pins" in proc.stdout
    assert not list(wh.rglob("pw_haswheel*.whl"))
    assert not (wh / "cpu" / "simple" / "pw-haswheel").exists()
    assert (wh / "cpu" / "simple" / "pw-pure" / "index.html").is_file()


def test_bytes_that_do_not_match_the_index_hash_are_refused(
    tmp_path: Path, write_config: WriteConfig, fresh_upstream: Upstream
) -> None:
    """The upstream page promises one sha256, the file has other bytes: the same exit code as
    a --hash pin mismatch, whether pip meets it while resolving (nothing is published) or
    prewheel while fetching a locked closure (nothing of that package is)."""
    wh = tmp_path / "wh"
    config = write_config(tmp_path, index={"upstream": fresh_upstream.url})
    reqs = "pw-cext==1.0\nsetuptools\npw-pure==1.0\n"
    # Resolve once while the file is intact: the pinned closure is cached, so the next run
    # asks pip nothing and meets the bytes only when it fetches them.
    plan = _build(tmp_path, config, wh, "pw-cext==1.0\npw-pure==1.0\n", "--package", "none")
    assert plan.returncode == 0, plan.stderr
    sdist = fresh_upstream.files_dir / "pw_cext-1.0.tar.gz"
    sdist.write_bytes(sdist.read_bytes() + b"tampered")  # the page keeps the old #sha256
    # That plan also fetched (and checked) the sdist to read it: a later run would build from
    # that verified copy and never meet the tampered bytes. Drop it, as a cleaned cache.
    shutil.rmtree(wh / "sources")

    fetched = _build(tmp_path, config, wh, "pw-cext==1.0\npw-pure==1.0\n")
    assert fetched.returncode == 3, fetched.stderr
    assert "does not match the expected" in fetched.stdout
    assert (wh / "cpu" / "simple" / "pw-pure" / "index.html").is_file()

    resolved = _build(tmp_path, config, tmp_path / "wh2", reqs, "--allow-unpinned")
    assert resolved.returncode == 3, resolved.stderr
    assert "pw-cext" in resolved.stderr and "do not match the sha256" in resolved.stderr
    for where in (wh, tmp_path / "wh2"):
        assert not list(where.rglob("pw_cext*.whl"))
        assert not (where / "cpu" / "simple" / "pw-cext").exists()


def test_interrupt_leaves_no_partial_files(tmp_path: Path, write_config: WriteConfig) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-app==1.0\n")
    wh = tmp_path / "wh"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "builder",
            "build",
            "-r",
            str(reqs),
            "-c",
            str(write_config(tmp_path)),
            "--wheelhouse",
            str(wh),
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not list(wh.glob("logs/*.log")) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130
    leftovers = [p for p in wh.rglob("*") if p.name.endswith((".tmp", ".part"))]
    assert leftovers == []
    for page in wh.rglob("index.html"):
        assert page.read_text().rstrip().endswith("</html>")


def test_serving_a_path_that_holds_no_wheelhouse_warns(tmp_path: Path) -> None:
    """A mistyped --wheelhouse is served (a server may start before the first build), with a
    warning that it is empty; nothing is created there."""
    from clitools import lines_of, start, wait_for

    missing = tmp_path / "wheelhuose"
    proc = start("serve", "--wheelhouse", missing, "--port", "0", "--quiet")
    try:
        with lines_of(proc) as got:
            assert wait_for(got, proc, 30, "holds no wheelhouse"), "".join(got)
            proc.terminate()
            proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = "".join(got)
    assert got[0].startswith(f"serving {missing} on http://"), "the URL stays the first line"
    assert f"warning: {missing} holds no wheelhouse" in text, text
    assert not missing.exists()
