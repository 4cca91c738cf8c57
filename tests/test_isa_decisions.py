"""The ISA baseline and toolchain decisions, alone: which feature belongs to which psABI
level, the flags of each level, zig's target for a policy, the config keys, and the key
and record fields. No process is started."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.config import ConfigError, parse_config
from builder.records import IsaReport
from builder.stages import isa, toolchain
from builder.stages.isa import ObjectScan, Use, WheelScan


@pytest.mark.parametrize(
    ("feature", "level"),
    [
        ("SSE2", None),
        ("CMOV", None),
        ("CET_IBT", None),  # endbr64: a NOP on older CPUs
        ("SSE4_2", "x86-64-v2"),
        ("POPCNT", "x86-64-v2"),
        ("CMPXCHG16B", "x86-64-v2"),
        ("AVX", "x86-64-v3"),
        ("AVX2", "x86-64-v3"),
        ("FMA", "x86-64-v3"),
        ("BMI2", "x86-64-v3"),
        ("MOVBE", "x86-64-v3"),
        ("AVX512F", "x86-64-v4"),
        ("AVX512VL", "x86-64-v4"),
        ("AVX512_VNNI", isa.ABOVE_ALL),
        ("AVX_VNNI", isa.ABOVE_ALL),
        ("AES", isa.ABOVE_ALL),
    ],
)
def test_each_feature_has_its_level(feature: str, level: str | None) -> None:
    assert isa.level_of(feature) == level


def test_above_the_baseline() -> None:
    assert isa.above("SSE4_2", "x86-64")
    assert not isa.above("SSE4_2", "x86-64-v2")
    assert isa.above("AVX2", "x86-64-v2") and not isa.above("AVX2", "x86-64-v3")
    assert isa.above("AVX512BW", "x86-64-v3") and not isa.above("AVX512BW", "x86-64-v4")
    assert isa.above("AVX512_BF16", "x86-64-v4"), "no level guarantees it"
    assert not isa.above("SSE2", "x86-64")


def test_class_names_are_the_ones_people_know() -> None:
    assert isa.class_name("SSE4_2") == "SSE4.2"
    assert isa.class_name("AVX512F") == "AVX-512F"
    assert isa.class_name("AVX512_VNNI") == "AVX-512-VNNI"


def test_baseline_flags_work_on_gcc_10_too() -> None:
    """Feature flags, never `-march=x86-64-v2` (gcc 10, bullseye's, does not know it)."""
    for level in ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4"):
        flags = toolchain.baseline_flags(level)
        assert flags[0] == "-march=x86-64" and not any("-v" in f for f in flags)
    assert "-msse4.2" in toolchain.baseline_flags("x86-64-v2")
    assert "-mavx2" not in toolchain.baseline_flags("x86-64-v2")
    assert {"-mavx2", "-mfma", "-mbmi2"} <= set(toolchain.baseline_flags("x86-64-v3"))
    assert "-mavx512f" in toolchain.baseline_flags("x86-64-v4")


@pytest.mark.parametrize(
    ("policy", "target"),
    [
        ("manylinux_2_28_x86_64", "x86_64-linux-gnu.2.28"),
        ("manylinux2014", "x86_64-linux-gnu.2.17"),
        ("manylinux_2_17_x86_64", "x86_64-linux-gnu.2.17"),
        ("manylinux1_x86_64", "x86_64-linux-gnu.2.17"),  # zig's oldest
        ("auto", "x86_64-linux-gnu.2.17"),
    ],
)
def test_zig_target_follows_the_policy(policy: str, target: str) -> None:
    assert toolchain.zig_target(policy) == target


def test_config_isa_toolchain_and_dispatch() -> None:
    cfg = parse_config(
        {
            "targets": {"isa": "x86-64-v3", "toolchain": "zig"},
            "target": [{"python": "3.12", "policy": "manylinux_2_28_x86_64", "isa": "x86-64"}],
            "packages": {"annoy": {"isa_dispatch": True}},
        },
        source="t.toml",
    )
    assert [(t.isa, t.toolchain) for t in cfg.targets] == [("x86-64-v3", "zig"), ("x86-64", "host")]
    assert cfg.package("annoy").isa_dispatch and not cfg.package("other").isa_dispatch
    default = parse_config({}, source="t.toml")
    assert (default.targets[0].isa, default.targets[0].toolchain) == ("x86-64-v2", "host")


def test_config_errors_name_the_key_and_all_are_reported() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "targets": {"isa": "x86-64-v5", "toolchain": "zag"},
                "target": [{"isa": "native"}],
                "packages": {"x": {"isa_dispatch": "yes"}},
            },
            source="t.toml",
        )
    text = str(err.value)
    assert "targets.isa: 'x86-64-v5' is not one of" in text
    assert "targets.toolchain: 'zag'" in text and "did you mean 'zig'?" in text
    assert "target[0].isa: 'native'" in text
    assert "packages.x.isa_dispatch: expected bool" in text


def test_a_finding_names_object_level_and_first_instruction() -> None:
    scan = WheelScan(
        baseline="x86-64-v2",
        objects=(
            ObjectScan(
                path="pkg/_k.so",
                uses=(
                    Use(feature="AVX2", count=40, first="vpaddd at 0x1130 in k"),
                    Use(feature="FMA", count=2, first="vfmadd231ps at 0x1200 in k"),
                ),
                dispatch=("cpuid instruction",),
            ),
        ),
    )
    with pytest.raises(Exception) as err:
        isa.check(scan, package="annoy", dispatch_allowed=False, log="l.log")
    exc = err.value
    assert "pkg/_k.so: AVX2, FMA (x86-64-v3; 42 instructions, first vpaddd at 0x1130 in k)" in str(
        exc
    )
    assert getattr(exc, "check", None) == "isa"
    assert "cpuid instruction" in (getattr(exc, "hint", "") or "")
    notes = isa.check(scan, package="annoy", dispatch_allowed=True, log="l.log")
    assert notes and "isa_dispatch = true" in notes[0]
    clean = WheelScan(baseline="x86-64-v2")
    assert isa.check(clean, package="a", dispatch_allowed=False, log="") == ()


def test_isa_report_round_trips() -> None:
    report = IsaReport(baseline="x86-64-v2", dispatch=True, above=(("a.so", ("AVX2",)),))
    assert IsaReport.from_json(report.to_json()) == report


def test_zig_gets_its_own_cpu_name() -> None:
    assert toolchain.zig_cpu("x86-64-v2") == "-mcpu=x86_64_v2"
    assert toolchain.zig_cpu("x86-64") == "-mcpu=x86_64"


def test_the_summary_names_the_toolchain() -> None:
    from builder import summary

    assert summary.COLUMNS[-2] == "compiled by"
    row = {
        "target": "t", "name": "pw-cxx", "version": "1.0", "status": "built", "duration": 1.0,
        "wheel": "w.whl", "toolchain": "zig 0.17.1 x86_64-linux-gnu.2.28, x86-64-v2",
    }  # fmt: skip
    host = {**row, "name": "pw-c", "toolchain": "host /usr/bin/x86_64-linux-gnu-gcc-12, x86-64-v2"}
    rows = summary.rows({"results": [row, host, {**row, "name": "dl", "toolchain": None}]})
    assert [r[-2] for r in rows] == ["", "host, x86-64-v2", "zig glibc 2.28, x86-64-v2"]


def test_zig_is_for_cpu_targets_and_names_stay_unique() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            {
                "targets": {"accel": ["cpu", "cu130"], "toolchain": "zig"},
                "target": [{"python": "current", "accel": "cpu", "isa": "x86-64-v3"}],
            },
            source="t.toml",
        )
    text = str(err.value)
    assert "targets[1].toolchain: zig builds cpu targets only, not cu130" in text
    assert "targets[2]: the same python, accel and policy as targets[0]" in text


def test_no_compiler_no_wrapper_and_no_failure(tmp_path: Path) -> None:
    """A machine without a compiler still builds pure sdists: no CC pointing nowhere."""
    tc = toolchain.prepare(
        name="host", isa="x86-64-v2", policy="auto", workdir=tmp_path,
        path=str(tmp_path / "empty"), package_env={},
    )  # fmt: skip
    assert "CC" not in tc.env and "CXX" not in tc.env
    assert tc.describe == "host no C compiler found, x86-64-v2"


def test_wrappers_for_the_compilers_found_and_the_packages_own(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("gcc", "g++", "clang-15"):
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    tc = toolchain.prepare(
        name="host", isa="x86-64-v3", policy="auto", workdir=tmp_path / "w",
        path=str(bin_dir), package_env={"CXX": "clang-15 -stdlib=libc++"},
    )  # fmt: skip
    assert tc.env["CC"] == str(tc.bin_dir / "gcc"), "no cc here: gcc's wrapper"
    assert tc.env["CXX"] == f"{tc.bin_dir / 'prewheel-c++'} -stdlib=libc++"
    script = (tc.bin_dir / "prewheel-c++").read_text()
    assert str(bin_dir / "clang-15") in script and "-mavx2" in script
    assert sorted(p.name for p in tc.bin_dir.iterdir()) == ["g++", "gcc", "prewheel-c++"]
