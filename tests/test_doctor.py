"""`prewheel doctor` for real: the command line on this machine (no GPU), on every recorded
host tree, with requirements pins, and the readers that only a real machine can prove (its
libc.so.6, its CPU level as glibc's own loader sees it)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from clitools import prewheel
from doctorkit import case_dirs, check_report, expected

from builder.doctor import read_host
from builder.doctor.host import _glibc

SCHEMA = json.loads((Path(__file__).parent / "schemas" / "doctor.json").read_text())
HAS_NVIDIA = Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")


def doctor_json(*args: str | os.PathLike[str]) -> tuple[dict[str, object], int]:
    proc = prewheel("doctor", "--json", *args, timeout=120)
    assert proc.returncode in (0, 1, 2), proc.stderr
    report = json.loads(proc.stdout)
    jsonschema.validate(report, SCHEMA)
    assert report["exit_code"] == proc.returncode
    return report, proc.returncode


@pytest.mark.skipif(bool(HAS_NVIDIA), reason="this machine has an NVIDIA driver")
def test_on_this_machine_without_a_gpu_it_says_so_and_recommends_cpu(tmp_path: Path) -> None:
    proc = prewheel("doctor", cwd=tmp_path, timeout=120)  # built-in config: cpu only
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nvidia driver   none" in proc.stdout
    assert "accelerator     cpu: no NVIDIA GPU or driver found" in proc.stdout
    assert "no problems found" in proc.stdout
    report, _ = doctor_json()
    host = report["host"]
    assert isinstance(host, dict) and host["live"] is True and host["gpus"] == []
    assert report["recommendation"] == {
        "accel": "cpu",
        "why": "no NVIDIA GPU or driver found",
        "targets": [t["name"] for t in report["targets"]],  # type: ignore[index,union-attr]
    }


@pytest.mark.skipif(bool(HAS_NVIDIA), reason="this machine has an NVIDIA driver")
def test_a_cuda_target_without_a_gpu_is_an_error(tmp_path: Path) -> None:
    report, code = doctor_json("--target", "cu130")
    assert code == 1
    assert [p["code"] for p in report["problems"]] == ["no-gpu"]  # type: ignore[union-attr,index]


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_recorded_host_from_the_command_line(case: Path) -> None:
    report, _ = doctor_json("--root", case / "root", "-c", case / "prewheel.toml")
    check_report(report, expected(case))


def test_torch_pin_without_a_build_exits_2_naming_the_variants(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("numpy==2.1.0\ntorch==2.5.1\n")
    case = next(c for c in case_dirs() if c.name == "driver-580-h100")
    proc = prewheel("doctor", "--root", case / "root", "-r", reqs, "--target", "cu128", timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"{reqs}:2: torch==2.5.1 has no cu128 build" in proc.stdout + proc.stderr
    assert "cpu, cu118, cu121, cu124" in proc.stdout + proc.stderr
    # The recommendation then names a build torch 2.5.1 has.
    report, code = doctor_json("--root", case / "root", "-r", reqs, "--target", "cu124")
    assert code == 0
    assert report["recommendation"]["accel"] == "cu124"  # type: ignore[index]


def test_unknown_target_is_bad_input(tmp_path: Path) -> None:
    proc = prewheel("doctor", "--target", "cp399-nope", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "no target matches 'cp399-nope'" in proc.stderr


def test_glibc_from_a_roots_libc(tmp_path: Path) -> None:
    """A recorded root is not the running machine: its glibc comes from its libc.so.6."""
    libc = next(
        (
            p
            for p in (Path("/lib/x86_64-linux-gnu/libc.so.6"), Path("/lib64/libc.so.6"))
            if p.exists()
        ),
        None,
    )
    if libc is None:
        pytest.skip("no glibc libc.so.6 on this machine")
    (tmp_path / "lib64").mkdir()
    shutil.copy(libc, tmp_path / "lib64" / "libc.so.6")
    found, source = _glibc(tmp_path, live=False)
    name, ver = platform.libc_ver()
    assert name == "glibc" and found == tuple(int(x) for x in ver.split(".")[:2])
    assert source == "/lib64/libc.so.6"


def test_cpu_level_agrees_with_glibcs_loader() -> None:
    """glibc's dynamic loader knows which x86-64 levels this CPU supports (`ld.so --help`,
    glibc 2.33+); the doctor's reading of /proc/cpuinfo must say the same."""
    loader = Path("/lib64/ld-linux-x86-64.so.2")
    if platform.machine() != "x86_64" or not loader.exists():
        pytest.skip("not an x86-64 glibc machine")
    out = subprocess.run([str(loader), "--help"], capture_output=True, text=True, timeout=30).stdout
    supported = re.findall(r"(x86-64-v\d) \(supported", out)
    if not supported:
        pytest.skip("this glibc's loader does not list x86-64 levels")
    cpu = read_host().cpu
    assert cpu.isa == max(supported), (cpu, out)
