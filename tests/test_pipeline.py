"""The pipeline end to end on the local upstream index: plan, build, serve, install, import."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from clitools import compiler_free_venv, pip_install, prewheel, serving
from needs import network_namespace
from packaging.utils import parse_wheel_filename
from upstream import Upstream, WriteConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, upstream: Upstream) -> dict[str, object]:
    """One real build of the fixture set, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("built")
    config = root / "prewheel.toml"
    config.write_text(f'[index]\nupstream = "{upstream.url}"\n')
    reqs = root / "requirements.txt"
    reqs.write_text("pw-app==1.0\npw-broken==1.0\npw-badimport==1.0\n")
    wh = root / "wheelhouse"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    return {
        "root": root,
        "config": config,
        "reqs": reqs,
        "wh": wh,
        "proc": proc,
        "report": json.loads(proc.stdout),
    }


def test_plan_lists_the_closure_with_actions(
    upstream: Upstream, tmp_path: Path, write_config: WriteConfig
) -> None:
    config = write_config(tmp_path)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-app==1.0\n")
    proc = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh", "--json")
    assert proc.returncode == 0, proc.stderr
    actions = {i["name"]: i["action"] for i in json.loads(proc.stdout)["items"]}
    assert actions == {
        "pw-app": "build",
        "pw-cext": "build",
        "pw-pure": "build",
        "pw-haswheel": "download",
    }
    table = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh")
    assert "pw-haswheel" in table.stdout and "download" in table.stdout
    assert not (tmp_path / "wh").exists(), "plan must not write a wheelhouse"


def test_build_publishes_good_packages_and_isolates_failures(built: dict[str, object]) -> None:
    proc = built["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 1, proc.stderr
    status = {r["name"]: r["status"] for r in built["report"]["results"]}  # type: ignore[index]
    assert status == {
        "pw-app": "built",
        "pw-cext": "built",
        "pw-pure": "built",
        "pw-haswheel": "downloaded",
        "pw-broken": "failed",
        "pw-badimport": "failed",
    }
    wh = built["wh"]
    assert isinstance(wh, Path)
    names = {p.name for p in (wh / "files").rglob("*.whl")}
    assert not any(n.startswith(("pw_broken", "pw_badimport")) for n in names)
    cext = next(n for n in names if n.startswith("pw_cext"))
    assert all(t.platform.startswith("manylinux") for t in parse_wheel_filename(cext)[3])
    page = (wh / "cpu" / "simple" / "pw-cext" / "index.html").read_text()
    assert "#sha256=" in page and "data-requires-python" in page


def test_failed_build_keeps_its_log(built: dict[str, object]) -> None:
    results = {r["name"]: r for r in built["report"]["results"]}  # type: ignore[index]
    broken = results["pw-broken"]
    assert broken["step"] == "build"
    log = Path(broken["log"])
    assert log.is_file() and "error" in log.read_text().lower()
    assert broken["tail"]
    bad = results["pw-badimport"]
    assert bad["step"] == "verify" and "pw_badimport" in bad["error"]
    assert "ImportError" in Path(bad["log"]).read_text()


def test_serve_then_install_without_compiler(built: dict[str, object], tmp_path: Path) -> None:
    python, env = compiler_free_venv(tmp_path / "venv")
    with serving(built["wh"]) as base:  # type: ignore[arg-type]
        proc = pip_install(python, f"{base}/cpu/simple/", "pw-app==1.0", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run(
        [str(python), "-c", "import pw_app, pw_cext; print(pw_cext.add(2, 3))"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "5"


def test_wheels_carry_their_exact_metadata(built: dict[str, object]) -> None:
    wh = built["wh"]
    assert isinstance(wh, Path)
    for wheel in (wh / "files").rglob("*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            assert zf.read(meta) == wheel.with_name(wheel.name + ".metadata").read_bytes()


@pytest.mark.parametrize("sandbox", ["auto", "netns"])
def test_a_long_tmpdir_does_not_stop_the_index_proxy(
    tmp_path: Path, write_config: WriteConfig, sandbox: str
) -> None:
    """The index proxy's unix socket lives in the run's scratch directory under TMPDIR; a
    socket's address holds at most 107 bytes, which a deep TMPDIR (a CI runner's) passes."""
    import os

    deep = tmp_path / ("t" * 60) / ("m" * 60)
    deep.mkdir(parents=True)
    if sandbox == "netns":  # the forwarder reaches the socket by its path outside bubblewrap
        network_namespace()
    # pip reads the index through the proxy
    config = write_config(tmp_path, index={"resolver": "pip"}, build={"sandbox": sandbox})
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-app==1.0\n")
    env = {**os.environ, "TMPDIR": str(deep)}
    proc = prewheel("plan", "-r", reqs, "-c", config, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    names = {i["name"] for i in json.loads(proc.stdout)["items"]}
    assert names == {"pw-app", "pw-cext", "pw-pure", "pw-haswheel"}
