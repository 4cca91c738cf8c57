"""An abi3 extension is built once, by one Python, and serves every Python its tag allows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import prewheel
from needs import missing
from packaging.utils import parse_wheel_filename
from upstream import Upstream

from builder.targets import discover_interpreters

pytestmark = pytest.mark.slow

PYTHONS = discover_interpreters((3, 9))

ABI3_C = r"""
#define Py_LIMITED_API 0x03090000
#include <Python.h>

static PyObject *twice(PyObject *self, PyObject *arg) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    return PyLong_FromLong(2 * v);
}

static PyMethodDef methods[] = {{"twice", twice, METH_O, "2 * x"}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "pw_abi3", NULL, -1, methods};
PyMODINIT_FUNC PyInit_pw_abi3(void) { return PyModule_Create(&module); }
"""

SETUP = (
    "from setuptools import Extension, setup\n\n"
    "setup(ext_modules=[Extension('pw_abi3', ['pw_abi3.c'], py_limited_api=True)],\n"
    "      options={'bdist_wheel': {'py_limited_api': 'cp39'}})\n"
)


def test_abi3_wheel_is_built_once_for_all_pythons(upstream: Upstream, tmp_path: Path) -> None:
    if len(PYTHONS) < 2:
        missing("needs two CPython 3.9+ interpreters (pyenv, /opt/python or python3.X on PATH)")
    upstream.add_sdist("pw-abi3", "1.0", {"setup.py": SETUP, "pw_abi3.c": ABI3_C})
    pythons = [PYTHONS[0], PYTHONS[-1]]
    config = tmp_path / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{upstream.url}"\n\n'
        f"[targets]\npython = {json.dumps([i.short for i in pythons])}\n"
    )
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-abi3==1.0\n")
    wh = tmp_path / "wheelhouse"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    results = json.loads(proc.stdout)["results"]
    assert len(results) == 2
    assert len({r["wheel"] for r in results}) == 1
    assert sorted(r["status"] for r in results) == ["built", "cached"]
    tags = parse_wheel_filename(results[0]["wheel"])[3]
    assert {t.abi for t in tags} == {"abi3"} and {t.interpreter for t in tags} == {"cp39"}
    assert len(list((wh / "files").rglob("pw_abi3-*.whl"))) == 1
    # Planned again: both targets find it.
    again = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert again.returncode == 0, again.stderr
    assert {i["action"] for i in json.loads(again.stdout)["items"]} == {"cached"}
