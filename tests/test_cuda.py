"""A tiny CUDA extension (tests/gpu/cuda_fixture.py) built for cu130 with the toolkit found
here, cu126 reported as skipped, cpu skipped by the config (`accels = ["cu*"]`: it needs CUDA).

`pw-cuda` is not marked accelerator-specific: its sdist (a `.cu` file, nvcc and CUDA_HOME in
setup.py) says so, before anything is built. The cu130 wheel excludes libcudart (the runtime
image or the nvidia-cuda-runtime wheel provides it) and imports far enough, without a GPU, to
report "no CUDA device". tests/test_accel.py covers the cpu side and the DT_NEEDED check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from clitools import pip_install, prewheel, serving
from gpu.cuda_fixture import NAME, cuda_files
from needs import missing
from packaging.utils import parse_wheel_filename
from upstream import Upstream, WriteConfig, pip_isolated_env

from builder.elf import glibc_floor, read_elf
from builder.targets import find_toolkit

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _cuda_130() -> None:
    if find_toolkit("cu130", None)[0] is None:
        missing("needs the CUDA 13.0 toolkit (nvcc) in /usr/local/cuda-13.0 or on PATH")


HERE = f"cp{sys.version_info[0]}{sys.version_info[1]}"


@pytest.fixture(scope="module")
def cuda_build(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    upstream.add_sdist(NAME, "1.0", cuda_files())
    root = tmp_path_factory.mktemp("cuda")
    config = root / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{upstream.url}"\n\n'
        f'[targets]\npython = ["{sys.executable}"]\naccel = ["cpu", "cu130", "cu126"]\n\n'
        '[accel.cu130]\narch_list = ["7.5+PTX"]\n\n'
        f'[packages.{NAME}]\naccels = ["cu*"]\n'
    )
    reqs = root / "requirements.txt"
    reqs.write_text(f"{NAME}==1.0\npw-pure==1.0\n")
    wh = root / "wheelhouse"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.stdout.startswith("{"), proc.stderr
    return {"root": root, "config": config, "reqs": reqs, "wh": wh, "proc": proc}


def _report(build: dict[str, object]) -> dict[str, object]:
    proc = build["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    data: dict[str, object] = json.loads(proc.stdout)
    return data


def _wheel(build: dict[str, object], target: str, name: str = NAME) -> Path:
    results = _report(build)["results"]
    assert isinstance(results, list)
    (res,) = [r for r in results if r["target"] == target and r["name"] == name]
    assert res["status"] == "built", res
    wh = build["wh"]
    assert isinstance(wh, Path)
    (path,) = (wh / "files").rglob(res["wheel"])
    return path


def test_build_succeeds_and_reports_the_missing_toolkit(cuda_build: dict[str, object]) -> None:
    proc = cuda_build["proc"]
    assert isinstance(proc, subprocess.CompletedProcess)
    assert proc.returncode == 0, proc.stdout[-3000:]
    skipped = _report(cuda_build)["skipped_targets"]
    assert skipped == [
        {"target": f"{HERE}-cu126-auto", "reason": skipped[0]["reason"]}  # type: ignore[index]
    ]
    assert "no CUDA 12.6 toolkit" in skipped[0]["reason"]  # type: ignore[index]


def test_cu130_wheel_grafts_neither_driver_nor_runtime(cuda_build: dict[str, object]) -> None:
    wheel = _wheel(cuda_build, f"{HERE}-cu130-auto")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if "libcudart" in n or "libcuda." in n], names
    shown = subprocess.run(
        [sys.executable, "-m", "auditwheel", "show", "--json", str(wheel)],
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert "libcudart.so.13" in info["external_libs"]  # needed, not carried
    # Not carried, but still counted: the tag is no older than libcudart's own glibc needs.
    toolkit = find_toolkit("cu130", None)[0]
    assert toolkit is not None
    (cudart,) = [
        p for d in ("lib64", "lib") for p in (toolkit.cuda_home / d).glob("libcudart.so.13")
    ][:1]
    floor = glibc_floor([read_elf(cudart.name, cudart.read_bytes())])
    assert floor is not None
    plats = [t.platform for t in parse_wheel_filename(wheel.name)[3]]
    assert plats == [f"manylinux_{floor[0]}_{floor[1]}_x86_64"] or all(
        p.startswith("manylinux") for p in plats
    )
    oldest = min(tuple(map(int, p.split("_")[1:3])) for p in plats if p.startswith("manylinux_"))
    assert oldest >= floor, (plats, floor)


def test_the_sdist_says_cuda_and_only_cuda_indexes_list_it(
    cuda_build: dict[str, object],
) -> None:
    wh = cuda_build["wh"]
    assert isinstance(wh, Path)
    catalog = json.loads((wh / "catalog" / f"{NAME}.json").read_text())
    assert [f["accels"] for f in catalog["files"]] == [["cu130"]]
    assert not (wh / "cpu" / "simple" / NAME).exists()
    results = _report(cuda_build)["results"]
    assert isinstance(results, list)
    (skipped,) = [r for r in results if r["name"] == NAME and r["target"] == f"{HERE}-cpu-auto"]
    assert skipped["status"] == "skipped"
    # The pure package is still built once and listed for both.
    pure = json.loads((wh / "catalog" / "pw-pure.json").read_text())["files"]
    assert len(pure) == 1 and pure[0]["accels"] is None
    records = [json.loads(p.read_text()) for p in (wh / "builds").glob("*.json")]
    assert not [r for r in records if r.get("result") == "accel-specific"]  # no rebuild
    (cu_rec,) = [r for r in records if r["name"] == NAME and r.get("result") == "ok"]
    assert cu_rec["accel_decision"]["by"] == "sdist"
    assert "csrc/kernel.cu" in cu_rec["accel_decision"]["evidence"]
    assert cu_rec["inputs"]["accel"] == "cu130"
    assert cu_rec["inputs"]["toolkit"].startswith("13.0")
    (ext,) = cu_rec["external_libraries"]
    assert ext["library"] == "libcudart.so.13"
    assert "nvidia/cuda:13.0" in ext["provided_by"] and "nvidia-cuda-runtime" in ext["provided_by"]


def test_next_plan_finds_it_cached(cuda_build: dict[str, object]) -> None:
    proc = prewheel(
        "plan",
        "-r",
        cuda_build["reqs"],  # type: ignore[arg-type]
        "-c",
        cuda_build["config"],  # type: ignore[arg-type]
        "--wheelhouse",
        cuda_build["wh"],  # type: ignore[arg-type]
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    items = {i["accel"]: i for i in json.loads(proc.stdout)["items"] if i["name"] == NAME}
    assert items["cpu"]["action"] == "skip"
    assert items["cu130"]["action"] == "cached" and items["cu130"]["accel_specific"]


def test_targets_json_describes_every_target(cuda_build: dict[str, object]) -> None:
    wh = cuda_build["wh"]
    assert isinstance(wh, Path)
    data = json.loads((wh / "targets.json").read_text())
    targets = {t["name"]: t for t in data["targets"]}
    cu = targets[f"{HERE}-cu130-auto"]
    assert cu["cuda_version"] == "13.0"
    assert cu["arch_list"] == ["7.5+PTX"]
    assert cu["runtime_image"].startswith("nvidia/cuda:13.0.0-runtime-ubuntu")
    assert cu["index"] == "/cu130/simple/"
    cpu = targets[f"{HERE}-cpu-auto"]
    assert cpu["runtime_image"].startswith("python:3.")
    assert cpu["cuda_version"] is None
    assert targets[f"{HERE}-cu126-auto"]["available"] is False


def test_installed_from_the_cu130_index_it_reports_no_device(
    cuda_build: dict[str, object], tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = pip_isolated_env()
    with serving(cuda_build["wh"]) as base:  # type: ignore[arg-type]
        proc = pip_install(python, f"{base}/cu130/simple/", f"{NAME}==1.0", "pw-pure==1.0", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    script = (
        "import pw_cuda\n"
        "try:\n"
        "    print('devices', pw_cuda.device_count())\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([str(python), "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(("no CUDA device", "devices")), out.stdout


def test_accel_specific_config_keys_per_accelerator_before_building(
    upstream: Upstream, tmp_path: Path, write_config: WriteConfig
) -> None:
    upstream.add_sdist(NAME, "1.0", cuda_files())
    config = write_config(
        tmp_path,
        targets={"python": [sys.executable], "accel": ["cpu", "cu130"]},
        packages={NAME: {"accel_specific": True}},
    )
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"{NAME}==1.0\n")
    proc = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh", "--json")
    assert proc.returncode == 0, proc.stderr
    items = json.loads(proc.stdout)["items"]
    assert {i["accel"] for i in items} == {"cpu", "cu130"}
    assert len({i["cache_key"] for i in items}) == 2
