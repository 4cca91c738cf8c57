"""`toolchain = "zig"`: C and C++ compiled for the policy's glibc on this newer host, so
repair reaches manylinux_2_17 / 2_28 with no container; the wheels install and work in a
compiler-free venv.

Real builds of the sdists in `isafixtures` (`pw-zlibc`: a system header and library;
`pw-cxx`: the C++ standard library, exceptions) with zig from prewheel's environment. The
first C++ build fills zig's cache (libc++ for the target: minutes on 2 cores); both runs
share one wheelhouse, so its cache.
"""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest
from clitools import compiler_free_venv, prewheel
from conftest import to_toml
from isafixtures import add_zig
from needs import missing
from packaging.utils import parse_wheel_filename
from upstream import Upstream

from builder import elf, tools
from builder.errors import ToolMissingError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zig_runs(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    try:
        tools.require(tools.ZIG)
    except ToolMissingError as exc:
        pytest.fail(f"ziglang is a declared test dependency: {exc.message}")
    if not Path("/usr/include/zlib.h").is_file():
        missing("zlib.h is not installed (apt-get install zlib1g-dev)")
    add_zig(upstream)
    root = tmp_path_factory.mktemp("zig")
    out: dict[str, Any] = {"wh": root / "wh"}
    for policy, reqs in (
        ("manylinux_2_28_x86_64", "pw-zlibc==1.0\npw-cxx==1.0\n"),
        ("manylinux_2_17_x86_64", "pw-zlibc==1.0\n"),
    ):
        run_dir = root / policy
        run_dir.mkdir()
        (run_dir / "requirements.txt").write_text(reqs)
        config = run_dir / "prewheel.toml"
        targets = {"policy": [policy], "toolchain": "zig"}
        config.write_text(to_toml({"index": {"upstream": upstream.url}, "targets": targets}))
        proc = prewheel(
            "build", "-r", run_dir / "requirements.txt", "-c", config,
            "--wheelhouse", root / "wh", "--json", timeout=1500,
        )  # fmt: skip
        assert proc.stdout.startswith("{"), proc.stderr
        out[policy] = {r["name"]: r for r in json.loads(proc.stdout)["results"]}
        out[policy + ":proc"] = proc
    return out


def _tags(wheel: str) -> set[str]:
    return {t.platform for t in parse_wheel_filename(wheel)[3]}


def _wheel(wh: Path, name: str) -> Path:
    return next((wh / "files").rglob(name))


def test_c_and_cxx_reach_manylinux_2_28_and_2_17(zig_runs: dict[str, Any]) -> None:
    r28, r17 = zig_runs["manylinux_2_28_x86_64"], zig_runs["manylinux_2_17_x86_64"]
    proc = zig_runs["manylinux_2_28_x86_64:proc"]
    for name in ("pw-zlibc", "pw-cxx"):
        assert r28[name]["status"] == "built", (name, r28[name]["error"], proc.stderr[-2000:])
        assert "manylinux_2_28_x86_64" in _tags(r28[name]["wheel"])
        assert r28[name]["toolchain"].startswith("zig ")
        assert "x86_64-linux-gnu.2.28" in r28[name]["toolchain"]
    assert r17["pw-zlibc"]["status"] == "built"
    assert "manylinux_2_17_x86_64" in _tags(r17["pw-zlibc"]["wheel"])
    assert "x86_64-linux-gnu.2.17" in r17["pw-zlibc"]["toolchain"]
    # What the objects ask of glibc (the C one may ask nothing: zlib is the system's).
    for run, name, ceiling in ((r17, "pw-zlibc", (2, 17)), (r28, "pw-cxx", (2, 28))):
        wheel = _wheel(zig_runs["wh"], run[name]["wheel"])
        versions = {
            tuple(map(int, v.removeprefix("GLIBC_").split(".")))
            for e in elf.wheel_elves(wheel)
            for _, v, _ in e.versioned
            if v.startswith("GLIBC_") and v[6:7].isdigit()
        }
        assert all(v <= ceiling for v in versions), (name, sorted(versions))


def test_cxx_carries_zigs_libcxx_not_the_hosts_libstdcxx(zig_runs: dict[str, Any]) -> None:
    wh = zig_runs["wh"]
    wheel = _wheel(wh, zig_runs["manylinux_2_28_x86_64"]["pw-cxx"]["wheel"])
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if n.endswith(".so")]
        assert names == [n for n in names if "/" not in n], "a library was grafted"
    (obj,) = elf.wheel_elves(wheel)
    assert not [lib for lib in obj.needed if "stdc++" in lib or "c++" in lib], obj.needed


def test_the_key_record_and_log_name_the_toolchain(zig_runs: dict[str, Any]) -> None:
    wh = zig_runs["wh"]
    records = [json.loads(p.read_text()) for p in (wh / "builds").glob("*.json")]
    built = [r for r in records if r.get("result") == "ok" and r["name"] == "pw-cxx"]
    assert built
    record = built[0]
    assert record["inputs"]["toolchain"].startswith("zig ")
    assert record["inputs"]["compiler"] is None, "the host compiler built nothing"
    assert record["build_env"]["toolchain"].startswith("zig ")
    assert "prewheel: compilers: zig" in (wh / record["log"]).read_text()
    assert any((wh / "cache" / "zig").iterdir()), "zig's cache is not kept in the wheelhouse"


def test_the_wheels_work_in_a_compiler_free_venv(zig_runs: dict[str, Any], tmp_path: Path) -> None:
    wh = zig_runs["wh"]
    python, env = compiler_free_venv(tmp_path / "venv")
    wheels = [
        _wheel(wh, zig_runs["manylinux_2_28_x86_64"]["pw-cxx"]["wheel"]),
        _wheel(wh, zig_runs["manylinux_2_17_x86_64"]["pw-zlibc"]["wheel"]),
    ]
    subprocess.run(
        [python, "-m", "pip", "install", "--isolated", "--no-index", "--only-binary=:all:", "-q",
         *map(str, wheels)],
        check=True, env=env, timeout=300,
    )  # fmt: skip
    code = (
        "import pw_cxx, pw_zlibc\n"
        "assert pw_cxx.sorted_words(['pear', 'apple']) == 'apple,pear'\n"
        "try:\n    pw_cxx.sorted_words([])\n"
        "except ValueError as e:\n    assert 'no words' in str(e)\n"
        "else:\n    raise AssertionError('a C++ exception did not cross')\n"
        "data, version = pw_zlibc.roundtrip(b'hello hello hello')\n"
        "assert data == b'hello hello hello' and version.startswith('1.')\n"
        "print('ok')\n"
    )
    out = subprocess.run([python, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
