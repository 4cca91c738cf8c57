"""Wheels checked as the runtime uses them: smoke tests at the plan's pins, runtime
constraints, the ABI checks, -Werror=implicit-function-declaration, and stripped wheels.

Real builds of the tiny sdists in `checkfixtures`, on the local upstream index.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import pytest
from checkfixtures import add_all
from clitools import compiler_free_venv, prewheel, snapshot
from conftest import to_toml
from elftools.elf.elffile import ELFFile
from needs import missing
from upstream import Upstream

from builder.targets import find_interpreter

pytestmark = pytest.mark.slow

FIRSTCALL_SMOKE = "import pw_firstcall\nassert pw_firstcall.compute() == 42\n"


@pytest.fixture(scope="module")
def index(upstream: Upstream) -> Upstream:
    add_all(upstream)
    return upstream


def _run(
    root: Path, index: Upstream, reqs: str, *args: str, **tables: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """`prewheel build --json` of `reqs` with a config of `tables` into `root/wh`: the
    process and the report's results by package name."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "requirements.txt").write_text(reqs)
    config = root / "prewheel.toml"
    config.write_text(to_toml({"index": {"upstream": index.url}, **tables}))
    proc = prewheel(
        "build",
        "-r",
        root / "requirements.txt",
        "-c",
        config,
        "--wheelhouse",
        root / "wh",
        "--json",
        *args,
    )
    if not proc.stdout.startswith("{"):
        return proc, {}
    return proc, {r["name"]: r for r in json.loads(proc.stdout)["results"]}


def _wheels(wh: Path, prefix: str) -> list[Path]:
    return sorted((wh / "files").rglob(f"{prefix}-*.whl"))


def _record(wh: Path, wheel: str) -> dict[str, Any]:
    for path in (wh / "builds").glob("*.json"):
        record: dict[str, Any] = json.loads(path.read_text())
        if record.get("wheel") == wheel:
            return record
    raise AssertionError(f"no build record for {wheel}")


@pytest.fixture(scope="module")
def caught(index: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One run with three wheels that build and import but would fail in use: a first-call
    failure (the closure pins pw-dep 2.0), `s#` without PY_SSIZE_T_CLEAN, abi3 with the
    non-limited API."""
    root = tmp_path_factory.mktemp("caught")
    proc, results = _run(
        root,
        index,
        "pw-firstcall==1.0\npw-dep==2.0\npw-ssize==1.0\npw-abi3bad==1.0\npw-cext==1.0\n",
        packages={"pw-firstcall": {"smoke": FIRSTCALL_SMOKE}},
    )
    return {"root": root, "wh": root / "wh", "proc": proc, "results": results, "index": index}


def test_a_failing_smoke_test_fails_the_wheel(caught: dict[str, Any]) -> None:
    proc, results, wh = caught["proc"], caught["results"], caught["wh"]
    assert proc.returncode == 1, proc.stderr
    first = results["pw-firstcall"]
    assert (first["status"], first["step"], first["check"]) == ("failed", "smoke", "smoke")
    assert "AttributeError" in first["error"] and "legacy" in first["error"]
    log = Path(first["log"]).read_text()
    assert "prewheel abi:" in log and "AttributeError" in log, "the log is kept, whole"
    assert not _wheels(wh, "pw_firstcall"), "a wheel that failed its smoke test is published"
    assert results["pw-dep"]["status"] == "downloaded"
    assert results["pw-cext"]["status"] == "built"
    assert results["pw-cext"]["checks"] == ["isa", "abi", "import"]
    assert json.loads(proc.stdout)["caught"] == {"abi": 2, "smoke": 1}


def test_ssize_t_without_the_macro_is_caught_naming_extension_and_symbol(
    caught: dict[str, Any],
) -> None:
    ssize = caught["results"]["pw-ssize"]
    assert (ssize["status"], ssize["step"], ssize["check"]) == ("failed", "abi", "abi")
    assert "pw_ssize.cpython-" in ssize["error"]
    assert "PyArg_ParseTuple" in ssize["error"] and "'s#:length'" in ssize["error"]
    assert not _wheels(caught["wh"], "pw_ssize")


def test_abi3_wheel_with_non_limited_api_is_caught(caught: dict[str, Any]) -> None:
    bad = caught["results"]["pw-abi3bad"]
    assert (bad["status"], bad["step"], bad["check"]) == ("failed", "abi", "abi")
    assert "pw_abi3bad.abi3.so: PyUnicode_New: not in the limited API" in bad["error"]
    assert not _wheels(caught["wh"], "pw_abi3bad")


def test_the_ssize_t_finding_is_real_and_can_be_waived(index: Upstream, tmp_path: Path) -> None:
    """With `abi_check = false` the wheel is published, imports, and raises SystemError at
    its first call: what the check said."""
    proc, results = _run(
        tmp_path, index, "pw-ssize==1.0\n", packages={"pw-ssize": {"abi_check": False}}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["pw-ssize"]["checks"] == ["isa", "import"]
    (wheel,) = _wheels(tmp_path / "wh", "pw_ssize")
    python, env = compiler_free_venv(tmp_path / "venv")
    subprocess.run(
        [python, "-m", "pip", "install", "--isolated", "--no-index", str(wheel)],
        check=True,
        env=env,
        capture_output=True,
    )
    call = subprocess.run(
        [python, "-c", "import pw_ssize; pw_ssize.length('abc')"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert call.returncode != 0
    assert "SystemError" in call.stderr and "PY_SSIZE_T_CLEAN" in call.stderr


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_verify_installs_exactly_the_plan_pins_and_the_requires(
    index: Upstream, tmp_path: Path, installer: str
) -> None:
    """The wheelhouse holds pw-dep 2.0; the plan pins 1.0. Verify installs 1.0, so the smoke
    test passes (an installer left to itself would take 2.0 and fail), with uv and with
    pip."""
    root = tmp_path
    first, _ = _run(root, index, "pw-dep==2.0\n")
    assert first.returncode == 0, first.stdout + first.stderr
    proc, results = _run(
        root,
        index,
        "pw-firstcall==1.0\npw-dep==1.0\n",
        build={"verify_installer": installer},
        packages={"pw-firstcall": {"smoke": FIRSTCALL_SMOKE, "requires": ["pw-dep<2"]}},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert results["pw-firstcall"]["checks"] == ["isa", "abi", "import", "smoke"]
    assert _wheels(root / "wh", "pw_dep-2.0") and _wheels(root / "wh", "pw_dep-1.0")
    (wheel,) = _wheels(root / "wh", "pw_firstcall")
    assert _record(root / "wh", wheel.name)["checks"] == ["isa", "abi", "import", "smoke"]
    log = Path(results["pw-firstcall"]["log"]).read_text()
    assert "--constraint" in log
    assert ("--offline --no-index --no-build" in log) == (installer == "uv")
    assert ("--only-binary=:all:" in log) == (installer == "pip")


def test_a_closure_that_breaks_requires_is_bad_input(index: Upstream, tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    (wh / "catalog").mkdir(parents=True)
    (wh / "catalog" / "demo.json").write_text('{"project": "demo", "files": []}\n')
    before = snapshot(wh)
    for command in ("plan", "build"):
        (tmp_path / "requirements.txt").write_text("pw-firstcall==1.0\npw-dep==2.0\n")
        config = tmp_path / "prewheel.toml"
        config.write_text(
            to_toml(
                {
                    "index": {"upstream": index.url},
                    "packages": {"pw-firstcall": {"requires": ["pw-dep<2"]}},
                }
            )
        )
        reqs = tmp_path / "requirements.txt"
        proc = prewheel(command, "-r", reqs, "-c", config, "--wheelhouse", wh)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "pw-firstcall==1.0" in proc.stderr and "requires pw-dep<2" in proc.stderr
        assert f"pins pw-dep==2.0 ({reqs}:2)" in proc.stderr
        assert snapshot(wh) == before


def _python(version: str) -> str:
    interp, why = find_interpreter(version)
    if interp is None:
        missing(f"needs CPython {version} (pyenv, /opt/python or python{version}): {why}")
    return version


def test_removed_c_api_fails_the_build_or_the_abi_check(index: Upstream, tmp_path: Path) -> None:
    """Python 3.13 removed Py_SetStandardStreamEncoding: by default the compile fails on the
    undeclared function; with the opt-out it builds, imports (the package does not load the
    submodule), and the ABI check names the submodule and the symbol."""
    targets = {"python": [_python("3.13")]}
    proc, results = _run(tmp_path / "werror", index, "pw-removedapi==1.0\n", targets=targets)
    assert proc.returncode == 1, proc.stderr
    first = results["pw-removedapi"]
    assert (first["step"], first["check"]) == ("build", "werror")
    assert "Py_SetStandardStreamEncoding" in first["error"]
    assert "-Werror=implicit-function-declaration" in first["error"]
    assert "implicit declaration of function" in Path(first["log"]).read_text()

    proc, results = _run(
        tmp_path / "optout",
        index,
        "pw-removedapi==1.0\n",
        targets=targets,
        packages={"pw-removedapi": {"werror_implicit": False}},
    )
    assert proc.returncode == 1, proc.stderr
    second = results["pw-removedapi"]
    assert (second["step"], second["check"]) == ("abi", "abi")
    assert (
        "pw_removedapi/_speedups.cpython-313-x86_64-linux-gnu.so: Py_SetStandardStreamEncoding: "
        "Python 3.13 does not export it" in second["error"]
    )
    assert not _wheels(tmp_path / "optout" / "wh", "pw_removedapi")


def _sections(wheel: Path, member_prefix: str) -> tuple[set[str], int]:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.startswith(member_prefix) and ".so" in n]
        data = zf.read(name)
    return {s.name for s in ELFFile(io.BytesIO(data)).iter_sections()}, len(data)


def test_stripped_by_default_sizes_recorded_and_config_flags_kept(
    index: Upstream, tmp_path: Path
) -> None:
    """The config's CFLAGS stay (pw-sized does not compile without them) and `-g -g0` ends in
    no debug info; `strip = false` for the package keeps it. Both sizes are recorded."""
    env = {"CFLAGS": "-DPW_CONFIG_FLAG -g"}
    stripped, results = _run(
        tmp_path / "on", index, "pw-sized==1.0\n", packages={"pw-sized": {"env": env}}
    )
    assert stripped.returncode == 0, stripped.stdout + stripped.stderr
    kept, kept_results = _run(
        tmp_path / "off",
        index,
        "pw-sized==1.0\n",
        packages={"pw-sized": {"env": env, "strip": False}},
    )
    assert kept.returncode == 0, kept.stdout + kept.stderr

    (on_wheel,) = _wheels(tmp_path / "on" / "wh", "pw_sized")
    (off_wheel,) = _wheels(tmp_path / "off" / "wh", "pw_sized")
    on_sections, on_size = _sections(on_wheel, "pw_sized")
    off_sections, off_size = _sections(off_wheel, "pw_sized")
    assert not {s for s in on_sections if s.startswith(".debug")} and ".symtab" not in on_sections
    assert ".debug_info" in off_sections and ".symtab" in off_sections
    assert on_size < off_size

    on_record = _record(tmp_path / "on" / "wh", on_wheel.name)
    off_record = _record(tmp_path / "off" / "wh", off_wheel.name)
    assert on_record["inputs"]["build_flags"] == ["-g0", "-Werror=implicit-function-declaration"]
    assert off_record["inputs"]["build_flags"] == ["-Werror=implicit-function-declaration"]
    assert on_record["sizes"]["shared_objects"] == on_size
    assert off_record["sizes"]["shared_objects"] == off_size
    assert on_record["sizes"]["wheel"] == on_wheel.stat().st_size
    assert on_record["sizes"]["strip_saved"] > 0, "strip takes the symbol table off"
    assert off_record["sizes"]["strip_saved"] is None
    assert results["pw-sized"]["strip_saved"] == on_record["sizes"]["strip_saved"]
    assert kept_results["pw-sized"]["strip_saved"] is None


def test_default_flags_keep_the_interpreters_own(caught: dict[str, Any]) -> None:
    """pw-cext sets no CFLAGS: it is compiled with the interpreter's (-O3 for pyenv's, -O2 for
    Debian's ...) and then prewheel's, not with prewheel's alone (setuptools replaces them
    with $CFLAGS)."""
    log = Path(caught["results"]["pw-cext"]["log"]).read_text()
    compile_line = next(ln for ln in log.splitlines() if " -c pw_cext.c " in ln)
    own = [f for f in (sysconfig.get_config_var("CFLAGS") or "").split() if f.startswith("-O")]
    assert own, "the interpreter names no optimization level"
    flags = compile_line.split()
    assert own[-1] in flags
    assert flags.index("-g0") > flags.index(own[-1])
    assert "-Werror=implicit-function-declaration" in flags


def test_a_failed_check_is_kept_while_its_inputs_are_the_same(
    caught: dict[str, Any], tmp_path: Path
) -> None:
    """A wheel that failed a check after its build (the smoke test, the ABI check) is not
    built again on the next run while the pins, the smoke test and the check settings are the
    same: "failed (cached)". Change one of them and it is tried again: an ABI finding waived,
    a smoke test that now passes."""
    root = tmp_path / "again"
    shutil.copytree(caught["root"], root, symlinks=True)
    reqs = "pw-firstcall==1.0\npw-dep==2.0\npw-ssize==1.0\npw-abi3bad==1.0\npw-cext==1.0\n"
    index = caught["index"]
    proc, results = _run(root, index, reqs, packages={"pw-firstcall": {"smoke": FIRSTCALL_SMOKE}})
    assert proc.returncode == 1, proc.stderr
    for name in ("pw-firstcall", "pw-ssize", "pw-abi3bad"):
        assert results[name]["status"] == "failed" and results[name]["cached_failure"], (
            json.dumps(results[name]) + proc.stderr
        )
    assert "AttributeError" in results["pw-firstcall"]["error"], "the first failure is told"
    assert results["pw-cext"]["status"] == "cached"

    passing = "import pw_firstcall\n"
    proc, results = _run(
        root,
        index,
        reqs,
        packages={"pw-firstcall": {"smoke": passing}, "pw-ssize": {"abi_check": False}},
    )
    assert proc.returncode == 1, proc.stderr  # pw-abi3bad still fails, from its cache
    assert results["pw-abi3bad"]["cached_failure"]
    assert results["pw-firstcall"]["status"] == "built", results["pw-firstcall"]
    assert results["pw-ssize"]["status"] == "built", results["pw-ssize"]


def test_a_platform_wheel_without_compiled_code_is_published_and_said(
    index: Upstream, tmp_path: Path
) -> None:
    """An extension that did not build and a package that fell back to pure Python (PyYAML
    5.3.1 on Python 3.11): pip would install that wheel, so prewheel publishes it, under the
    oldest manylinux tag (no symbol bounds its glibc; auditwheel refuses such a wheel), and
    says the compiled code is missing."""
    proc, results = _run(tmp_path, index, "pw-fallback==1.0\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = results["pw-fallback"]
    assert got["status"] == "built", got
    (wheel,) = _wheels(tmp_path / "wh", "pw_fallback")
    interp = find_interpreter("3.11")[0]
    assert interp is not None
    assert wheel.name.endswith(
        f"-{interp.abi}-{interp.abi}-manylinux1_x86_64.manylinux_2_5_x86_64.whl"
    ), wheel.name
    with zipfile.ZipFile(wheel) as zf:
        tags = [ln for ln in zf.read(next(n for n in zf.namelist() if n.endswith("/WHEEL")))
                .decode().splitlines() if ln.startswith("Tag:")]  # fmt: skip
    assert tags == [
        f"Tag: {interp.abi}-{interp.abi}-manylinux1_x86_64",
        f"Tag: {interp.abi}-{interp.abi}-manylinux_2_5_x86_64",
    ]
    assert any("holds no compiled code" in w for w in got["warnings"]), got["warnings"]
    assert "falling back to pure Python" in Path(got["log"]).read_text()
    assert got["checks"] == ["isa", "abi", "import"]


def test_a_shared_pure_wheel_that_fails_one_python_stays_failed_there(
    fresh_upstream: Upstream, tmp_path: Path
) -> None:
    """A pure wheel built once serves every Python; where its import fails (`imp` is gone
    from 3.12), that target fails, and the next run says so again ("failed (cached)", exit
    1) instead of taking the other target's wheel as a success."""
    for py in ("3.11", "3.12"):
        if find_interpreter(py)[0] is None:
            missing(f"CPython {py} is not installed (pyenv install {py})")
    fresh_upstream.add_sdist("pw-imp", "1.0", {"pw_imp/__init__.py": "import imp\n"})

    def run() -> tuple[int, dict[str, dict[str, Any]]]:
        proc, _ = _run(
            tmp_path, fresh_upstream, "pw-imp==1.0\n",
            targets={"python": ["3.11", "3.12"], "accel": ["cpu"], "policy": ["auto"]},
        )  # fmt: skip
        assert proc.stdout.startswith("{"), proc.stderr
        results = json.loads(proc.stdout)["results"]
        return proc.returncode, {r["target"].split("-")[0]: r for r in results}

    code, got = run()
    assert code == 1
    assert got["cp311"]["status"] == "built", got["cp311"]
    assert got["cp312"]["status"] == "failed", got["cp312"]
    assert "No module named 'imp'" in got["cp312"]["error"]
    code, got = run()
    assert code == 1, "the second run passed a wheel whose import fails on 3.12"
    assert got["cp311"]["status"] == "cached"
    assert got["cp312"]["status"] == "failed" and got["cp312"]["cached_failure"], got["cp312"]
    assert "No module named 'imp'" in got["cp312"]["error"]
