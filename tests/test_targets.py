"""Targets: the matrix and explicit forms, names, interpreter and toolkit discovery, CUDA env.

No builds here: `prewheel targets` and the library functions only.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from clitools import prewheel
from needs import missing
from upstream import WriteConfig

from builder.config import parse_config
from builder.stages.buildenv import for_build
from builder.targets import (
    default_arch_list,
    discover_interpreters,
    find_toolkit,
    normalize_policy,
    resolve_targets,
    select_targets,
    target_name,
)

CUDA_130 = Path("/usr/local/cuda-13.0/bin/nvcc")


@pytest.fixture
def _cuda_130() -> None:
    if not CUDA_130.is_file():
        missing(f"needs the CUDA 13.0 toolkit ({CUDA_130})")


needs_cuda_130 = pytest.mark.usefixtures("_cuda_130")
HERE = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def targets_json(config: Path) -> dict[str, dict[str, object]]:
    proc = prewheel("targets", "-c", config, "--json")
    assert proc.returncode == 0, proc.stderr
    return {t["name"]: t for t in json.loads(proc.stdout)["targets"]}


def test_matrix_and_explicit_targets_have_stable_names(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    config = write_config(
        tmp_path,
        targets={"python": [sys.executable], "accel": ["cpu"], "policy": ["auto"]},
        target=[{"python": sys.executable, "accel": "cpu", "policy": "manylinux2014"}],
    )
    found = targets_json(config)
    assert set(found) == {f"{HERE}-cpu-auto", f"{HERE}-cpu-manylinux_2_17_x86_64"}
    auto = found[f"{HERE}-cpu-auto"]
    assert auto["interpreter"] == sys.executable
    assert auto["available"] is True
    assert str(auto["platform_ceiling"]).startswith("manylinux_2_")
    assert auto["runtime_image"] == f"python:{sys.version_info[0]}.{sys.version_info[1]}-slim"


def test_policy_names_are_normalized() -> None:
    assert normalize_policy("manylinux2014") == "manylinux_2_17_x86_64"
    assert normalize_policy("manylinux2014_x86_64") == "manylinux_2_17_x86_64"
    assert normalize_policy("manylinux_2_28") == "manylinux_2_28_x86_64"
    assert normalize_policy("auto") == "auto"
    assert target_name("cp312", "cu128", "manylinux_2_28") == "cp312-cu128-manylinux_2_28_x86_64"


def test_select_by_name_glob_and_auto_alias() -> None:
    config = parse_config(
        {
            "targets": {
                "python": [sys.executable],
                "accel": ["cpu"],
                "policy": ["auto", "manylinux_2_28"],
            }
        },
        source="test",
    )
    targets = resolve_targets(config)
    names = [t.name for t in targets]
    assert select_targets(targets, (f"{HERE}-cpu-auto",))[0].name == f"{HERE}-cpu-auto"
    assert [t.name for t in select_targets(targets, ("*-manylinux_2_28_*",))] == [names[1]]
    ceiling = targets[0].platform_ceiling
    assert select_targets(targets, (f"{HERE}-cpu-{ceiling}",))[0].policy == "auto"
    assert select_targets(targets, ("nope-*",)) == []


def test_every_cpython_from_39_is_discovered() -> None:
    found = discover_interpreters((3, 9))
    assert found, "no CPython 3.9+ found"
    assert all(i.version[:2] >= (3, 9) for i in found)
    assert len({i.abi for i in found}) == len(found)
    config = parse_config({"targets": {"python": ["3.9+"], "accel": ["cpu"]}}, source="test")
    names = {t.name for t in resolve_targets(config)}
    assert names == {f"{i.abi}-cpu-auto" for i in found}


def test_missing_interpreter_is_reported(tmp_path: Path, write_config: WriteConfig) -> None:
    config = write_config(tmp_path, targets={"python": ["3.99"], "accel": ["cpu"]})
    found = targets_json(config)
    entry = found["cp399-cpu-auto"]
    assert entry["available"] is False
    assert "no interpreter for Python 3.99" in str(entry["missing"])


def test_missing_toolkit_is_reported_with_the_places_looked_at(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    config = write_config(tmp_path, targets={"python": [sys.executable], "accel": ["cu126"]})
    entry = targets_json(config)[f"{HERE}-cu126-auto"]
    assert entry["available"] is False
    assert "no CUDA 12.6 toolkit" in str(entry["missing"])
    assert "/usr/local/cuda-12.6" in str(entry["missing"])
    assert entry["cuda_version"] == "12.6"
    assert str(entry["runtime_image"]).startswith("nvidia/cuda:12.6")


@needs_cuda_130
def test_cuda_toolkit_is_found_and_checked(tmp_path: Path, write_config: WriteConfig) -> None:
    config = write_config(tmp_path, targets={"python": [sys.executable], "accel": ["cu130"]})
    entry = targets_json(config)[f"{HERE}-cu130-auto"]
    assert entry["available"] is True, entry["missing"]
    toolkit = entry["toolkit"]
    assert isinstance(toolkit, dict) and toolkit["version"] == "13.0"
    arch_list = entry["arch_list"]
    assert isinstance(arch_list, list) and arch_list[-1].endswith("+PTX")
    assert sum(a.endswith("+PTX") for a in arch_list) == 1
    assert "libcuda.so.1" in entry["repair_excludes"]  # type: ignore[operator]
    assert "libcudart.so.*" in entry["repair_excludes"]  # type: ignore[operator]
    assert entry["runtime_image"] == "nvidia/cuda:13.0.0-runtime-ubuntu24.04" or str(
        entry["runtime_image"]
    ).startswith("nvidia/cuda:13.0.0-runtime-ubuntu")


@needs_cuda_130
def test_nvcc_version_mismatch_names_both() -> None:
    toolkit, why = find_toolkit("cu126", "/usr/local/cuda-13.0")
    assert toolkit is None
    assert why is not None
    assert "CUDA 13.0" in why and "CUDA 12.6" in why and "cu126" in why


@needs_cuda_130
def test_arch_list_the_toolkit_cannot_build_is_reported(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    config = write_config(
        tmp_path,
        targets={"python": [sys.executable], "accel": ["cu130"]},
        accel={"cu130": {"arch_list": ["5.0", "9.0+PTX"]}},
    )
    entry = targets_json(config)[f"{HERE}-cu130-auto"]
    assert entry["available"] is False
    assert "5.0" in str(entry["missing"]) and "not supported" in str(entry["missing"])


@needs_cuda_130
def test_cuda_env_puts_the_toolkit_first_and_sets_arch_lists(tmp_path: Path) -> None:
    config = parse_config(
        {
            "targets": {"python": [sys.executable], "accel": ["cu130"]},
            "accel": {"cu130": {"arch_list": ["8.0", "9.0", "12.0+PTX"]}},
        },
        source="test",
    )
    (target,) = resolve_targets(config)
    env = for_build(
        target=target,
        cuda=True,
        base={"PATH": "/usr/bin"},
        package_env={},
        env_dir=tmp_path / "venv",
        workdir=tmp_path,
    ).env
    assert env["CUDA_HOME"] == env["CUDA_PATH"] == "/usr/local/cuda-13.0"
    # The compiler wrappers (the ISA baseline) first, then the venv, then the toolkit.
    assert env["PATH"].startswith(
        f"{tmp_path}/toolchain/bin:{tmp_path}/venv/bin:/usr/local/cuda-13.0/bin:"
    )
    assert env["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0;12.0+PTX"
    assert env["CMAKE_CUDA_ARCHITECTURES"] == "80-real;90-real;120"


def test_default_arch_lists_follow_the_toolkit() -> None:
    assert default_arch_list("13.0")[-1] == "12.0+PTX"
    assert "7.0" not in default_arch_list("13.0")  # CUDA 13 dropped Volta
    assert default_arch_list("12.6")[-1] == "9.0+PTX"
    assert default_arch_list("12.8")[-1] == "12.0+PTX"
    # Kept to what this nvcc knows, PTX still on the newest.
    assert default_arch_list("13.0", ("7.5", "8.0", "9.0")) == ("7.5", "8.0", "9.0+PTX")


@pytest.mark.slow
def test_a_shim_as_target_interpreter_builds_and_verifies(
    tmp_path: Path, write_config: WriteConfig
) -> None:
    """A target named by a script that finds the interpreter from the caller's environment,
    as a pyenv shim does (PYENV_VERSION, the directory's .python-version): builds and
    verification run in environments of their own, where such a script finds nothing, so
    prewheel works with the interpreter the script ran, which it names when asked."""
    real = Path(sys.executable).resolve()
    shim = tmp_path / "shims" / "python3"
    shim.parent.mkdir()
    shim.write_text('#!/bin/sh\nexec "${PW_SHIM_PYTHON:-/nonexistent/python}" "$@"\n')
    shim.chmod(0o755)
    config = write_config(tmp_path, targets={"python": [str(shim)], "accel": ["cpu"]})
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-cext==1.0\npw-pure==1.0\n")
    env = {**os.environ, "PW_SHIM_PYTHON": str(real)}
    wh = tmp_path / "wh"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)["results"]
    assert {r["name"]: r["status"] for r in results} == {"pw-cext": "built", "pw-pure": "built"}
    (target,) = json.loads((wh / "targets.json").read_text())["targets"]
    assert target["python_version"] == ".".join(map(str, sys.version_info[:3]))
