"""Build against the runtime's framework: a build requirement that is also a runtime pin is
installed in the build environment at the pinned version, recorded, and part of the key.

`pw-frame` stands in for torch or numpy: two versions upstream, the closure pins the older,
and `pw-withframe` compiles the version it was built against into its extension. A second,
per-accelerator upstream (PyTorch's per-CUDA index in miniature) serves `pw-frame 1.0+cu130`
to the cu130 target only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import compiler_free_venv, pip_install, prewheel, serving
from needs import missing
from upstream import Upstream

from builder.targets import find_toolkit

pytestmark = pytest.mark.slow

FRAME, USER = "pw-frame", "pw-withframe"
HERE = f"cp{sys.version_info[0]}{sys.version_info[1]}"

SETUP = """\
import pw_frame
from setuptools import Extension, setup

setup(
    packages=["pw_withframe"],
    ext_modules=[Extension("pw_withframe._ext", ["ext.c"],
                           define_macros=[("BUILT_AGAINST", '"' + pw_frame.VERSION + '"')])],
)
"""

EXT_C = """\
#define PY_SSIZE_T_CLEAN
#include <Python.h>
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ext", NULL, -1, NULL};
PyMODINIT_FUNC PyInit__ext(void) {
    PyObject *m = PyModule_Create(&module);
    if (m) PyModule_AddStringConstant(m, "BUILT_AGAINST", BUILT_AGAINST);
    return m;
}
"""

PYPROJECT = """\
[build-system]
requires = ["setuptools>=61", "pw-frame"]
build-backend = "setuptools.build_meta"

[project]
name = "pw-withframe"
version = "1.0"
requires-python = ">=3.9"
dependencies = ["pw-frame"]
"""


def _frame(version: str) -> dict[str, str]:
    return {"pw_frame/__init__.py": f"VERSION = {version!r}\n"}


def _user_files() -> dict[str, str]:
    return {
        "pyproject.toml": PYPROJECT,
        "setup.py": SETUP,
        "ext.c": EXT_C,
        "pw_withframe/__init__.py": "from ._ext import BUILT_AGAINST\n",
    }


@pytest.fixture(scope="module")
def frames(upstream: Upstream) -> Upstream:
    upstream.add_wheel(FRAME, "1.0", _frame("1.0"))
    upstream.add_wheel(FRAME, "2.0", _frame("2.0"))  # what pip would take unpinned
    upstream.add_sdist(USER, "1.0", _user_files(), deps=[FRAME])
    return upstream


def _config(root: Path, upstream: Upstream, accels: list[str], extra: str = "") -> Path:
    config = root / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{upstream.url}"\n\n'
        f'[targets]\npython = ["{sys.executable}"]\naccel = {json.dumps(accels)}\n\n{extra}'
    )
    return config


def _run(cmd: str, root: Path, config: Path, pin: str) -> dict[str, Any]:
    reqs = root / "requirements.txt"
    reqs.write_text(f"{USER}==1.0\n{FRAME}=={pin}\n")
    proc = prewheel(cmd, "-r", reqs, "-c", config, "--wheelhouse", root / "wh", "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def _built_against(base: str, accel: str, venv: Path) -> str:
    python, env = compiler_free_venv(venv)
    proc = pip_install(python, f"{base}/{accel}/simple/", f"{USER}==1.0", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run(
        [str(python), "-c", "import pw_withframe, pw_frame; print(pw_withframe.BUILT_AGAINST, "
         "pw_frame.VERSION)"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def _record(wh: Path, target: str) -> dict[str, Any]:
    for p in (wh / "builds").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec["name"] == USER and rec["result"] == "ok" and target in rec["targets"]:
            data: dict[str, Any] = rec
            return data
    raise AssertionError(f"no record of {USER} for {target}")


def test_the_build_environment_holds_the_closures_version(frames: Upstream, tmp_path: Path) -> None:
    config = _config(tmp_path, frames, ["cpu"])
    plan = _run("plan", tmp_path, config, "1.0")
    (item,) = [i for i in plan["items"] if i["name"] == USER]
    assert item["framework"] == {FRAME: "1.0"}
    _run("build", tmp_path, config, "1.0")
    rec = _record(tmp_path / "wh", f"{HERE}-cpu-auto")
    assert rec["build_deps"][FRAME] == "1.0"  # not 2.0, the newest
    assert rec["inputs"]["framework"] == {FRAME: "1.0"}
    assert rec["cache_key"] == item["cache_key"]
    with serving(tmp_path / "wh") as base:
        assert _built_against(base, "cpu", tmp_path / "venv") == "1.0 1.0"
    newer = _run("plan", tmp_path, config, "2.0")
    (item2,) = [i for i in newer["items"] if i["name"] == USER]
    assert item2["framework"] == {FRAME: "2.0"} and item2["cache_key"] != item["cache_key"]
    assert item2["action"] == "build"


@pytest.fixture
def cu130_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A per-accelerator index, as PyTorch's /whl/cu130/: the framework's CUDA build."""
    index = Upstream(tmp_path_factory.mktemp("cu130-upstream")).start()
    index.add_wheel(FRAME, "1.0+cu130", _frame("1.0+cu130"))
    yield index
    index.stop()


def test_each_accelerator_builds_against_its_own_upstreams_framework(
    frames: Upstream, cu130_upstream: Upstream, tmp_path: Path
) -> None:
    if find_toolkit("cu130", None)[0] is None:
        missing("needs the CUDA 13.0 toolkit (nvcc) in /usr/local/cuda-13.0 or on PATH")
    extra = (
        f'[accel.cu130]\nupstream = "{cu130_upstream.url}"\n'
        f'extra_upstreams = ["{frames.url}"]\narch_list = ["7.5+PTX"]\n'
    )
    config = _config(tmp_path, frames, ["cpu", "cu130"], extra)
    plan = _run("plan", tmp_path, config, "1.0")
    items = {i["accel"]: i for i in plan["items"] if i["name"] == USER}
    assert items["cpu"]["framework"] == {FRAME: "1.0"}
    assert items["cu130"]["framework"] == {FRAME: "1.0+cu130"}
    decision = items["cu130"]["accel_decision"]
    assert decision["by"] == "framework" and decision["specific"]
    assert "1.0+cu130 for cu130" in decision["evidence"][0]
    _run("build", tmp_path, config, "1.0")
    wh = tmp_path / "wh"
    assert _record(wh, f"{HERE}-cu130-auto")["build_deps"][FRAME] == "1.0+cu130"
    with serving(wh) as base:
        assert _built_against(base, "cpu", tmp_path / "cpu") == "1.0 1.0"
        assert _built_against(base, "cu130", tmp_path / "cu") == "1.0+cu130 1.0+cu130"
    frame_files = json.loads((wh / "catalog" / f"{FRAME}.json").read_text())["files"]
    by_accels = {tuple(f["accels"] or ()): f["filename"] for f in frame_files}
    assert "+cu130" in by_accels[("cu130",)]  # from cu130's own upstream: listed there only
