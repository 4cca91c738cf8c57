"""One plan, every CPython 3.9+ found here: each wheel's tags match its interpreter, the pure
sdist is built once and served to all, and every accelerator's index installs the closure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from clitools import pip_install, prewheel, serving
from needs import missing
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename
from upstream import Upstream, pip_isolated_env

from builder.config import parse_config
from builder.targets import Interpreter, discover_interpreters, find_toolkit, resolve_targets

pytestmark = pytest.mark.slow

PYTHONS = discover_interpreters((3, 9))
ACCELS = ["cpu"] + (["cu130"] if find_toolkit("cu130", None)[0] is not None else [])


@pytest.fixture(scope="module")
def multi(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    if len(PYTHONS) < 2:
        missing("needs two CPython 3.9+ interpreters (pyenv, /opt/python or python3.X on PATH)")
    root = tmp_path_factory.mktemp("multi")
    config = root / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{upstream.url}"\n\n'
        f'[targets]\npython = ["3.9+"]\naccel = {json.dumps(ACCELS)}\n'
    )
    reqs = root / "requirements.txt"
    reqs.write_text("pw-cext==1.0\npw-pure==1.0\n")
    wh = root / "wheelhouse"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json", "-j", "2")
    assert proc.stdout.startswith("{"), proc.stderr
    return {"wh": wh, "proc": proc, "report": json.loads(proc.stdout)}


def _results(multi: dict[str, object]) -> list[dict[str, object]]:
    report = multi["report"]
    assert isinstance(report, dict)
    results: list[dict[str, object]] = report["results"]
    return results


def test_every_python_found_is_a_target() -> None:
    config = parse_config({"targets": {"python": ["3.9+"], "accel": ACCELS}}, source="test")
    names = {t.name for t in resolve_targets(config) if t.missing is None}
    assert names == {f"{i.abi}-{a}-auto" for i in PYTHONS for a in ACCELS}


def test_all_targets_built_from_one_plan(multi: dict[str, object]) -> None:
    proc = multi["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout[-3000:]
    targets = {r["target"] for r in _results(multi)}
    assert targets == {f"{i.abi}-{a}-auto" for i in PYTHONS for a in ACCELS}


def test_each_extension_wheel_matches_its_interpreter(multi: dict[str, object]) -> None:
    by_target = {r["target"]: str(r["wheel"]) for r in _results(multi) if r["name"] == "pw-cext"}
    abis = {i.abi: i for i in PYTHONS}
    wheels = set()
    for target, wheel in by_target.items():
        abi = target.split("-")[0]
        interp: Interpreter = abis[abi]
        tags: frozenset[Tag] = parse_wheel_filename(wheel)[3]
        assert {t.interpreter for t in tags} == {abi}, wheel
        assert {t.abi for t in tags} == {abi}, wheel
        assert all(t.platform.startswith("manylinux") for t in tags), wheel
        assert interp.version[:2] == (int(abi[2]), int(abi[3:]))
        wheels.add(wheel)
    # One wheel per Python, shared by the accelerators (pw-cext does not link CUDA).
    assert len(wheels) == len(PYTHONS)


def test_pure_sdist_is_built_once_for_all(multi: dict[str, object]) -> None:
    pure = [r for r in _results(multi) if r["name"] == "pw-pure"]
    assert len(pure) == len(PYTHONS) * len(ACCELS)
    assert len({r["wheel"] for r in pure}) == 1
    assert {r["status"] for r in pure} == {"built", "cached"}
    wh = multi["wh"]
    assert isinstance(wh, Path)
    records = [json.loads(p.read_text()) for p in (wh / "builds").glob("[0-9a-f]*.json")]
    assert len([r for r in records if r["name"] == "pw-pure"]) == 1  # one build
    (entry,) = json.loads((wh / "catalog" / "pw-pure.json").read_text())["files"]
    assert entry["accels"] is None  # listed in every accelerator's index
    assert len(list((wh / "files").rglob("pw_pure-*.whl"))) == 1


@pytest.mark.parametrize("accel", ACCELS)
def test_each_index_installs_the_closure_for_every_python(
    multi: dict[str, object], accel: str, tmp_path: Path
) -> None:
    env = pip_isolated_env()
    with serving(multi["wh"]) as base:  # type: ignore[arg-type]
        for interp in (PYTHONS[0], PYTHONS[-1]):
            venv = tmp_path / interp.abi
            # The venv's own pip: Python 3.9 bundles pip 23.0, which crashes on PEP 691 JSON
            # that carries `dist-info-metadata` (PEP 714), so the index must not send it.
            subprocess.run([str(interp.path), "-m", "venv", str(venv)], check=True)
            python = venv / "bin" / "python"
            proc = pip_install(
                python, f"{base}/{accel}/simple/", "pw-cext==1.0", "pw-pure==1.0", env=env
            )
            assert proc.returncode == 0, proc.stdout + proc.stderr
            out = subprocess.run(
                [str(python), "-c", "import pw_pure, pw_cext; print(pw_cext.add(20, 22))"],
                capture_output=True,
                text=True,
                env=env,
            )
            assert out.stdout.strip() == "42", out.stderr
