"""Same inputs, same bytes: fixture sdists built twice from empty wheelhouses in different
directories (and different temp dirs) come out bit-identical; a package that writes the time
into a module does not, and `--check-reproducible` names the member; every built wheel
carries an SBOM (PEP 770) that cyclonedx-python-lib reads back and that names the sdist, the
build dependencies and the library repair grafted in; pip and uv install the wheels."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel
from needs import declared, missing
from upstream import Upstream, pip_isolated_env, sha256_of

pytestmark = pytest.mark.slow

# A C extension that links a library of its own, built by setup.py into a directory of the
# build and linked from there: auditwheel grafts it into the wheel (`pw_graft.libs/`).
_GRAFT_SETUP = """\
import os, shlex, subprocess
from setuptools import Extension, setup

here = os.path.abspath(os.path.dirname(__file__))
lib = os.path.join(here, "build", "native")
os.makedirs(lib, exist_ok=True)
if not os.path.exists(os.path.join(lib, "libpwgraft.so")):
    flags = shlex.split(os.environ.get("CFLAGS", ""))
    subprocess.check_call(["cc", *flags, "-shared", "-fPIC", "-Wl,-soname,libpwgraft.so.1",
                           "-o", os.path.join(lib, "libpwgraft.so.1"), "pwgraft.c"], cwd=here)
    os.symlink("libpwgraft.so.1", os.path.join(lib, "libpwgraft.so"))
setup(packages=[], py_modules=[],
      ext_modules=[Extension("pw_graft", ["pw_graft.c"], libraries=["pwgraft"],
                             library_dirs=[lib], runtime_library_dirs=[lib])])
"""
_GRAFT_LIB = "int pwgraft_answer(void) { return 42; }\n"
_GRAFT_EXT = """\
#include <Python.h>
int pwgraft_answer(void);
static PyObject *answer(PyObject *s, PyObject *a) { return PyLong_FromLong(pwgraft_answer()); }
static PyMethodDef m[] = {{"answer", answer, METH_NOARGS, ""}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef d = {PyModuleDef_HEAD_INIT, "pw_graft", NULL, -1, m};
PyMODINIT_FUNC PyInit_pw_graft(void) { return PyModule_Create(&d); }
"""
# Writes the time of the build into a module: never the same twice.
_CLOCK_SETUP = """\
import os, time
from setuptools import setup

os.makedirs("pw_clock", exist_ok=True)
with open(os.path.join("pw_clock", "_built.py"), "w") as fh:
    fh.write(f"BUILT = {time.time_ns()}\\n")
setup()
"""
PACKAGES = ("pw-cext==1.0", "pw-pure==1.0", "pw-graft==1.0")


@pytest.fixture(scope="module")
def repro_upstream(upstream: Upstream) -> Upstream:
    upstream.add_sdist(
        "pw-graft",
        "1.0",
        {"setup.py": _GRAFT_SETUP, "pwgraft.c": _GRAFT_LIB, "pw_graft.c": _GRAFT_EXT},
    )
    upstream.add_sdist(
        "pw-clock", "1.0", {"setup.py": _CLOCK_SETUP, "pw_clock/__init__.py": "VALUE = 1\n"}
    )
    return upstream


def _build(
    root: Path, tmp: Path, upstream: Upstream, *reqs: str, extra: tuple[str, ...] = ()
) -> Any:
    """`prewheel build --json` in `root`, with TMPDIR `tmp` (short: the index proxy's socket
    lives there, and a Unix socket path has at most 107 bytes)."""
    root.mkdir(parents=True)
    tmp.mkdir()
    (root / "prewheel.toml").write_text(f'[index]\nupstream = "{upstream.url}"\n')
    (root / "requirements.txt").write_text("".join(f"{r}\n" for r in reqs))
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = prewheel(
        "build", "-r", root / "requirements.txt", "-c", root / "prewheel.toml",
        "--wheelhouse", root / "wh", "--json", *extra, cwd=root, env=env,
    )  # fmt: skip
    return proc


def _wheels(wh: Path) -> dict[str, Path]:
    return {p.name: p for p in (wh / "files").glob("*/*.whl")}


@pytest.fixture(scope="module")
def twice(repro_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """The same requirements built from empty wheelhouses in two unrelated directories."""
    base = tmp_path_factory.mktemp("repro")
    out = []
    for n, sub in enumerate(("first/a", "second/deeper/b")):
        proc = _build(base / sub, base / f"t{n}", repro_upstream, *PACKAGES)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out.append(base / sub / "wh")
    return out


def test_two_builds_in_different_directories_give_the_same_bytes(twice: list[Path]) -> None:
    from builder.sandbox import isolation

    first, second = (_wheels(wh) for wh in twice)
    assert len(first) >= len(PACKAGES)
    assert first.keys() == second.keys()  # the same file names: build tags from the key
    # A library linked from the build tree puts the build path into the linker's build-id:
    # only the fixed path bubblewrap shows the build makes that one the same.
    fixed_path = isolation("auto").mode == "bwrap"
    for name in first:
        if name.startswith("pw_graft-") and not fixed_path:
            continue
        assert sha256_of(first[name]) == sha256_of(second[name]), name
    if not fixed_path:
        missing("bubblewrap cannot run here (apt-get install bubblewrap): pw-graft not compared")


def test_wheels_are_normalised_archives(twice: list[Path]) -> None:
    for wheel in _wheels(twice[0]).values():
        with zipfile.ZipFile(wheel) as zf:
            infos = zf.infolist()
            names = [i.filename for i in infos]
            assert names[-1].endswith(".dist-info/RECORD")
            assert len({i.date_time for i in infos}) == 1
            assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in infos)
            assert all((i.external_attr >> 16) in (0o100644, 0o100755) for i in infos)
            body = [n for n in names if ".dist-info/" not in n]
            assert body == sorted(body)


def _sbom(wheel: Path) -> tuple[dict[str, Any], bytes]:
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(".dist-info/sboms/prewheel.cdx.json")]
        data = zf.read(member)
    return json.loads(data), data


def _graft_wheel(wh: Path) -> Path:
    (wheel,) = [p for n, p in _wheels(wh).items() if n.startswith("pw_graft-")]
    return wheel


def test_sbom_parses_and_names_sdist_build_deps_and_grafted_library(
    twice: list[Path], repro_upstream: Upstream
) -> None:
    from cyclonedx.model.bom import Bom

    wheel = _graft_wheel(twice[0])
    doc, _ = _sbom(wheel)
    bom = Bom.from_json(doc)  # type: ignore[attr-defined]
    assert bom.metadata.component.name == "pw-graft"
    comps = {c.bom_ref.value: c for c in bom.components}
    sdist = comps["sdist:pw_graft-1.0.tar.gz"]
    sdist_file = repro_upstream.files_dir / "pw_graft-1.0.tar.gz"
    assert [h.content for h in sdist.hashes] == [sha256_of(sdist_file)]
    urls = [str(r.url) for r in sdist.external_references]
    assert urls == [repro_upstream.file_url("pw_graft-1.0.tar.gz")]
    build = {c.name: c.version for c in comps.values() if c.bom_ref.value.startswith("build:")}
    assert build.get("setuptools")
    (grafted,) = [c for c in comps.values() if c.bom_ref.value.startswith("grafted:")]
    assert grafted.name == "libpwgraft.so.1"
    member = grafted.bom_ref.value.removeprefix("grafted:")
    with zipfile.ZipFile(wheel) as zf:
        assert [h.content for h in grafted.hashes] == [hashlib.sha256(zf.read(member)).hexdigest()]
    tools = {t.name for t in bom.metadata.tools.components}
    assert {"compiler", "auditwheel", "prewheel"} <= tools


def test_sbom_is_in_the_build_record(twice: list[Path]) -> None:
    wheel = _graft_wheel(twice[0])
    proc = prewheel("show", "pw-graft", "--wheelhouse", twice[0], "--json")
    (rec,) = json.loads(proc.stdout)["records"]
    doc, _ = _sbom(wheel)
    assert rec["sbom"] == doc
    assert rec["sbom_member"].endswith(".dist-info/sboms/prewheel.cdx.json")
    assert [g["library"] for g in rec["grafted"]] == ["libpwgraft.so.1"]


def test_pip_and_uv_install_the_wheels_and_the_grafted_library_loads(
    twice: list[Path], tmp_path: Path
) -> None:
    wheels = [str(p) for p in _wheels(twice[0]).values()]
    env = pip_isolated_env()
    venv = tmp_path / "pip"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [py, "-m", "pip", "install", "--isolated", "--no-index", *wheels],
        check=True, env=env, timeout=300, capture_output=True,
    )  # fmt: skip
    out = subprocess.run(
        [py, "-c", "import pw_graft; print(pw_graft.answer())"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.strip() == "42"
    uv = declared("uv")
    uvenv = tmp_path / "uv"
    subprocess.run([uv, "venv", "--no-config", "-q", uvenv], check=True, timeout=120, env=env)
    proc = subprocess.run(
        [uv, "pip", "install", "--no-config", "--no-index", "-p", uvenv / "bin" / "python",
         *wheels],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


@pytest.fixture(scope="module")
def checked(repro_upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A reproducible and a non-reproducible package, built with --check-reproducible."""
    base = tmp_path_factory.mktemp("check")
    reqs = ("pw-cext==1.0", "pw-clock==1.0")
    proc = _build(base / "w", base / "t", repro_upstream, *reqs, extra=("--check-reproducible",))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # a difference is a warning
    return base / "w" / "wh", {r["name"]: r for r in json.loads(proc.stdout)["results"]}


def test_check_reproducible_names_the_member_that_differs(checked: Any) -> None:
    wh, results = checked
    clock = results["pw-clock"]
    assert clock["status"] == "built"
    rep = clock["reproduction"]
    assert rep["identical"] is False
    assert "pw_clock/_built.py" in rep["differs"]
    assert any("pw_clock/_built.py" in w for w in clock["warnings"])
    assert results["pw-cext"]["reproduction"]["identical"] is True
    assert results["pw-cext"]["reproduction"]["sha256"] == sha256_of(
        next(p for n, p in _wheels(wh).items() if n.startswith("pw_cext-"))
    )


def test_show_tells_whether_a_wheel_was_reproduced(checked: Any) -> None:
    wh, _ = checked
    data = json.loads(prewheel("show", "pw-clock", "--wheelhouse", wh, "--json").stdout)
    (rec,) = data["records"]
    assert rec["reproduction"]["differs"][0] == "pw_clock/_built.py"
    table = prewheel("show", "pw-clock", "--wheelhouse", wh).stdout
    assert "not reproducible: a second build differs in pw_clock/_built.py" in table
    table = prewheel("show", "pw-cext", "--wheelhouse", wh).stdout
    assert "reproduced (bit-identical)" in table


def test_status_page_shows_provenance_and_the_record_is_served_with_its_sbom(
    checked: Any,
) -> None:
    import re
    import urllib.request

    from clitools import serving

    wh, results = checked
    with serving(wh) as base:
        page = urllib.request.urlopen(base + "/", timeout=10).read().decode()
        rows = {
            name: next(r for r in page.split("<tr>") if f">{name}-1.0-" in r)
            for name in ("pw_cext", "pw_clock")
        }
        assert '<span class="built">yes</span>' in rows["pw_cext"]
        assert "no: pw_clock/_built.py" in rows["pw_clock"]
        assert "CycloneDX</a>" in rows["pw_cext"]
        (link,) = set(re.findall(r'href="(builds/[0-9a-f]{64}\.json)">record', rows["pw_cext"]))
        record = json.loads(urllib.request.urlopen(f"{base}/{link}", timeout=10).read())
    wheel = next(p for n, p in _wheels(wh).items() if n.startswith("pw_cext-"))
    assert record["wheel"] == wheel.name == results["pw-cext"]["wheel"]
    assert record["sbom"] == _sbom(wheel)[0]
    assert record["reproduction"]["identical"] is True
    assert (wh / "status.html").read_text() == page  # the static copy says the same
