"""The ISA baseline, end to end: the compiler wrapper takes -march=native away, the scan
fails a wheel with instructions above the baseline (naming the file and the class), and
`isa_dispatch = true` records them instead.

Real builds of the sdists in `isafixtures` on the local upstream index.
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
from isafixtures import add_isa
from upstream import Upstream

from builder.stages import isa, toolchain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def index(upstream: Upstream) -> Upstream:
    add_isa(upstream)
    return upstream


def _build(root: Path, index: Upstream, reqs: str, **tables: Any) -> tuple[Any, dict[str, Any]]:
    root.mkdir(parents=True, exist_ok=True)
    (root / "requirements.txt").write_text(reqs)
    config = root / "prewheel.toml"
    config.write_text(to_toml({"index": {"upstream": index.url}, **tables}))
    proc = prewheel(
        "build", "-r", root / "requirements.txt", "-c", config, "--wheelhouse", root / "wh",
        "--json",
    )  # fmt: skip
    if not proc.stdout.startswith("{"):
        return proc, {}
    return proc, {r["name"]: r for r in json.loads(proc.stdout)["results"]}


def _records(wh: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((wh / "builds").glob("*.json"))]


def _record(wh: Path, wheel: str) -> dict[str, Any]:
    found = [r for r in _records(wh) if r.get("wheel") == wheel]
    assert found, f"no build record for {wheel}"
    return found[0]


def _so_scan(wheel: Path, baseline: str) -> isa.WheelScan:
    return isa.scan_wheel(wheel, baseline)


@pytest.fixture(scope="module")
def default_run(index: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """pw-native and pw-avx2 for the default baseline (x86-64-v2)."""
    root = tmp_path_factory.mktemp("isa-default")
    proc, results = _build(root, index, "pw-native==1.0\npw-avx2==1.0\n")
    return {"proc": proc, "results": results, "wh": root / "wh"}


def test_march_native_is_replaced_by_the_baseline(default_run: dict[str, Any]) -> None:
    results, wh = default_run["results"], default_run["wh"]
    native = results["pw-native"]
    assert native["status"] == "built", default_run["proc"].stderr
    assert "isa" in native["checks"]
    (wheel,) = sorted((wh / "files").rglob("pw_native-*.whl"))
    assert _so_scan(wheel, "x86-64-v2").clean, "an instruction above x86-64-v2 got in"
    record = _record(wh, wheel.name)
    assert record["inputs"]["isa"] == "x86-64-v2"
    assert record["isa"] == {"baseline": "x86-64-v2", "dispatch": False, "above": {}}
    assert record["build_env"]["toolchain"].startswith("host ")
    log = (wh / record["log"]).read_text()
    assert "prewheel: compilers: host" in log and "x86-64-v2" in log
    targets = json.loads((wh / "targets.json").read_text())["targets"]
    assert {t["isa"] for t in targets} == {"x86-64-v2"}
    # The wheel runs: install it where no compiler is, and call the vectorized loop.
    python, env = compiler_free_venv(wh.parent / "venv")
    subprocess.run(
        [python, "-m", "pip", "install", "--isolated", "--no-index", "-q", str(wheel)],
        check=True, env=env, timeout=300,
    )  # fmt: skip
    out = subprocess.run(
        [python, "-c", "import pw_native; print(pw_native.dot(64))"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert float(out.stdout) > 0


def test_unconditional_avx2_fails_the_wheel_naming_file_and_class(
    default_run: dict[str, Any],
) -> None:
    proc, results, wh = default_run["proc"], default_run["results"], default_run["wh"]
    assert proc.returncode == 1
    bad = results["pw-avx2"]
    assert (bad["status"], bad["step"], bad["check"]) == ("failed", "isa", "isa")
    assert "pw_avx2.cpython-" in bad["error"] and ".so: AVX" in bad["error"]
    assert "AVX2" in bad["error"] and "above the baseline x86-64-v2" in bad["error"]
    assert "isa_dispatch" in bad["hint"]
    assert not sorted((wh / "files").rglob("pw_avx2-*.whl")), "published anyway"
    assert json.loads(proc.stdout)["caught"].get("isa") == 1


def test_isa_dispatch_records_instead_of_failing(index: Upstream, tmp_path: Path) -> None:
    proc, results = _build(
        tmp_path, index, "pw-avx2==1.0\n", packages={"pw-avx2": {"isa_dispatch": True}}
    )
    assert results["pw-avx2"]["status"] == "built", proc.stderr
    (wheel,) = sorted((tmp_path / "wh" / "files").rglob("pw_avx2-*.whl"))
    record = _record(tmp_path / "wh", wheel.name)
    assert record["inputs"]["isa_dispatch"] is True
    ((path, classes),) = record["isa"]["above"].items()
    assert path.startswith("pw_avx2.cpython-") and "AVX2" in classes
    assert any("AVX2" in w and "isa_dispatch" in w for w in record["warnings"])


def test_a_higher_baseline_lets_the_native_loop_use_it(
    index: Upstream, tmp_path: Path, default_run: dict[str, Any]
) -> None:
    """isa = "x86-64-v3": the wrapper applies v3 (the fixture does vectorize), the wheel
    passes its own baseline and is a different build (the baseline is in the key)."""
    proc, results = _build(tmp_path, index, "pw-native==1.0\n", targets={"isa": "x86-64-v3"})
    assert results["pw-native"]["status"] == "built", proc.stderr
    (wheel,) = sorted((tmp_path / "wh" / "files").rglob("pw_native-*.whl"))
    assert _so_scan(wheel, "x86-64-v3").clean
    found = _so_scan(wheel, "x86-64-v2")
    assert not found.clean and "AVX" in found.objects[0].classes
    (v2_wheel,) = sorted((default_run["wh"] / "files").rglob("pw_native-*.whl"))
    assert wheel.name != v2_wheel.name, "the build tag (from the key) is the same"
    assert _record(tmp_path / "wh", wheel.name)["inputs"]["isa"] == "x86-64-v3"


def test_the_wrapper_drops_native_flags_and_keeps_quoting(tmp_path: Path) -> None:
    """The wrapper script itself, in front of a fake compiler that prints its arguments."""
    fake = tmp_path / "fake-cc"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    script = tmp_path / "cc"
    script.write_text(toolchain.wrapper_script([str(fake)], first=["-march=x86-64", "-msse4.2"],
                                                link=["-L/opt/x"]))  # fmt: skip
    script.chmod(0o755)
    args = ["-c", "-march=native", "-mtune=native", "-DX=a b", "-march=skylake", "-mavx2", "f.c"]
    out = subprocess.run([script, *args], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.splitlines() == [
        "-march=x86-64",
        "-msse4.2",
        "-c",
        "-DX=a b",
        "-mavx2",
        "f.c",
    ]
    linked = subprocess.run(
        [script, "-shared", "-march=native", "a.o", "-o", "a.so"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert linked.stdout.splitlines() == [
        "-march=x86-64", "-msse4.2", "-shared", "a.o", "-o", "a.so", "-L/opt/x"
    ]  # fmt: skip


def test_scan_reads_real_objects_per_level(tmp_path: Path) -> None:
    """gcc's output for each level scans clean at that level and not below it."""
    from needs import machine

    gcc = machine("gcc", "apt-get install gcc")
    src = tmp_path / "k.c"
    src.write_text(
        "float k(const float *a, const float *b, int n) {\n"
        "  float s = 0; for (int i = 0; i < n; i++) s += a[i] * b[i]; return s; }\n"
        "int p(unsigned long x) { return __builtin_popcountl(x); }\n"
    )
    levels = ("x86-64-v2", "x86-64-v3", "x86-64-v4")
    for level in levels:
        so = tmp_path / f"{level}.so"
        flags = toolchain.baseline_flags(level)
        subprocess.run(
            [gcc, "-O3", "-ffast-math", "-shared", "-fPIC", *flags, str(src), "-o", str(so)],
            check=True, timeout=120,
        )  # fmt: skip
        data = so.read_bytes()
        assert not isa.scan_object(data, so.name, level).uses, level
        lower = levels[levels.index(level) - 1] if level != "x86-64-v2" else "x86-64"
        below = isa.scan_object(data, so.name, lower)
        assert below.uses, f"{level} code scanned clean at {lower}"
        expected = {"x86-64-v2": "POPCNT", "x86-64-v3": "AVX", "x86-64-v4": "AVX-512F"}[level]
        assert expected in below.classes, (level, below.classes)
        assert below.uses[0].first.endswith((" in k", " in p")), "the function is named"


def test_wheel_scan_skips_grafted_libraries(tmp_path: Path) -> None:
    """Libraries auditwheel copied in (`<pkg>.libs/`) are the system's: not judged."""
    wheel = tmp_path / "x-1.0-cp311-cp311-linux_x86_64.whl"
    src = tmp_path / "v3.so"
    from needs import machine

    gcc = machine("gcc", "apt-get install gcc")
    (tmp_path / "a.c").write_text("int f(unsigned long x) { return __builtin_popcountl(x); }\n")
    subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-mpopcnt", str(tmp_path / "a.c"), "-o", str(src)],
        check=True, timeout=60,
    )  # fmt: skip
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.write(src, "x.libs/libv3-1234.so.1")
    assert isa.scan_wheel(wheel, "x86-64").clean
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.write(src, "x/_x.so")
    scan = isa.scan_wheel(wheel, "x86-64")
    assert [o.path for o in scan.objects] == ["x/_x.so"] and scan.objects[0].classes == ("POPCNT",)


def test_the_zig_wrapper_drops_what_zig_rejects(tmp_path: Path) -> None:
    """Debian's and Ubuntu's Pythons link with -Wl,-Bsymbolic-functions (their LDSHARED), and
    packages pass gcc's -mtune names: zig rejects both, so its wrapper drops them."""
    fake = tmp_path / "fake-zig"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done\n')
    fake.chmod(0o755)
    script = tmp_path / "cc"
    script.write_text(toolchain.wrapper_script([str(fake), "cc"], first=["-mcpu=x86_64_v2"],
                                                drops=toolchain.ZIG_DROPS))  # fmt: skip
    script.chmod(0o755)
    args = ["-shared", "-Wl,-O1", "-Wl,-Bsymbolic-functions", "-mtune=generic", "a.o", "-o", "a.so"]
    out = subprocess.run([script, *args], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.splitlines() == [
        "cc", "-mcpu=x86_64_v2", "-shared", "-Wl,-O1", "a.o", "-o", "a.so"
    ]  # fmt: skip
