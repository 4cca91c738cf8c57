"""Policy honesty: a wheel is never published under a manylinux policy it violates.

On this host (glibc 2.36) a C++ extension that starts a thread needs pthread_create@GLIBC_2.34:
`auto` reaches manylinux_2_34, manylinux_2_17 is refused with the symbol named and the fix.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from clitools import prewheel
from packaging.utils import parse_wheel_filename
from upstream import Upstream

from builder.config import parse_config
from builder.elf import glibc_floor, wheel_elves
from builder.errors import StepError
from builder.stages.repair import check_policy, offending_symbols
from builder.targets import host_glibc, resolve_targets

pytestmark = pytest.mark.slow

HERE = f"cp{sys.version_info[0]}{sys.version_info[1]}"
STRICT = "manylinux_2_17_x86_64"

CXX_SRC = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <thread>

static void *work(void *arg) { *(long *)arg += 1; return NULL; }

static PyObject *run(PyObject *self, PyObject *args) {
    long value = 0;
    std::thread worker([&value] { value = 41; });
    worker.join();
    pthread_t t;
    pthread_create(&t, NULL, work, &value);
    pthread_join(t, NULL);
    return PyLong_FromLong(value);
}

static PyMethodDef methods[] = {{"run", run, METH_NOARGS, "Run a thread."}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pw_cxxthread", NULL, -1, methods};
PyMODINIT_FUNC PyInit_pw_cxxthread(void) { return PyModule_Create(&module); }
"""

SETUP = (
    "from setuptools import Extension, setup\n\n"
    "setup(ext_modules=[Extension('pw_cxxthread', ['pw_cxxthread.cpp'], language='c++',"
    " extra_compile_args=['-std=c++17', '-g0'], extra_link_args=['-pthread'])])\n"
)


@pytest.fixture(scope="module")
def policy_build(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    upstream.add_sdist("pw-cxxthread", "1.0", {"setup.py": SETUP, "pw_cxxthread.cpp": CXX_SRC})
    root = tmp_path_factory.mktemp("policy")
    config = root / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{upstream.url}"\n\n'
        f'[targets]\npython = ["{sys.executable}"]\naccel = ["cpu"]\n'
        f'policy = ["auto", "{STRICT}"]\n'
    )
    reqs = root / "requirements.txt"
    reqs.write_text("pw-cxxthread==1.0\n")
    wh = root / "wheelhouse"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.stdout.startswith("{"), proc.stderr
    return {"wh": wh, "proc": proc, "report": json.loads(proc.stdout), "config": config}


def _results(build: dict[str, object]) -> dict[str, dict[str, object]]:
    report = build["report"]
    assert isinstance(report, dict)
    return {r["target"]: r for r in report["results"]}


@pytest.mark.skipif(
    host_glibc() < (2, 34), reason="needs a host glibc 2.34+ (C++ symbols versioned 2.34)"
)
def test_strict_policy_fails_naming_symbols_and_the_fix(policy_build: dict[str, object]) -> None:
    proc = policy_build["proc"]
    assert proc.returncode == 1, proc.stderr  # type: ignore[attr-defined]
    strict = _results(policy_build)[f"{HERE}-cpu-{STRICT}"]
    assert strict["status"] == "failed"
    assert strict["step"] == "repair"
    error = str(strict["error"])
    assert "GLIBC_2.34" in error and "pthread_create" in error
    assert STRICT in error
    assert "Dockerfile.builder" in error and "manylinux2014" in error


@pytest.mark.skipif(
    host_glibc() < (2, 34), reason="needs a host glibc 2.34+ (C++ symbols versioned 2.34)"
)
def test_nothing_is_published_under_the_violated_policy(policy_build: dict[str, object]) -> None:
    wh = policy_build["wh"]
    assert isinstance(wh, Path)
    wheels = sorted(p.name for p in (wh / "files").rglob("*.whl"))
    assert wheels, "the auto target's wheel should be published"
    for name in wheels:
        plats = {t.platform for t in parse_wheel_filename(name)[3]}
        assert "manylinux_2_17_x86_64" not in plats and "manylinux2014_x86_64" not in plats
    page = (wh / "cpu" / "simple" / "pw-cxxthread" / "index.html").read_text()
    assert "manylinux_2_17" not in page


def test_auto_reaches_the_lowest_policy_the_symbols_allow(policy_build: dict[str, object]) -> None:
    auto = _results(policy_build)[f"{HERE}-cpu-auto"]
    assert auto["status"] == "built", auto["error"]
    wheel = str(auto["wheel"])
    floor = None
    wh = policy_build["wh"]
    assert isinstance(wh, Path)
    (path,) = (wh / "files").rglob(wheel)
    floor = glibc_floor(wheel_elves(path))
    assert floor is not None
    assert f"manylinux_{floor[0]}_{floor[1]}_x86_64" in wheel


def test_a_mistagged_wheel_is_refused(policy_build: dict[str, object], tmp_path: Path) -> None:
    """Belt and braces: whatever tagged it, a wheel whose symbols exceed its tag is refused."""
    auto = _results(policy_build)[f"{HERE}-cpu-auto"]
    wh = policy_build["wh"]
    assert isinstance(wh, Path)
    (path,) = (wh / "files").rglob(str(auto["wheel"]))
    _, version, _, tags = parse_wheel_filename(path.name)
    tag = next(iter(tags))
    fake = tmp_path / f"pw_cxxthread-{version}-{tag.interpreter}-{tag.abi}-{STRICT}.whl"
    shutil.copyfile(path, fake)
    assert offending_symbols(wheel_elves(fake), STRICT)
    config = parse_config(
        {"targets": {"python": [sys.executable], "accel": ["cpu"], "policy": [STRICT]}},
        source="test",
    )
    (target,) = resolve_targets(config)
    with pytest.raises(StepError, match=r"refusing to publish.*GLIBC_2\.34"):
        check_policy(fake, target)
