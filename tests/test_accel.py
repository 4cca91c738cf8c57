"""The right wheel for every accelerator, with real builds (CUDA 13.0 toolkit, no GPU).

The three ways packages treat CUDA (tests/gpu/accel_fixtures.py: always, when found, never)
are built for cpu + cu130 twice: with no toolkit on PATH, and with the toolkit's bin first on
PATH as in `nvidia/cuda:*-devel` images. Either way the cpu index serves CPU builds that carry
no CUDA library, the cu130 index CUDA builds with the configured architectures; what each
index serves is installed into a compiler-free venv and asked which backend it has.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from clitools import compiler_free_venv, pip_install, prewheel, serving
from gpu.accel_fixtures import FIXED_ARCH, PACKAGES, STUB, all_fixtures, module_of, stub_files
from needs import missing
from upstream import Upstream

from builder import elf
from builder.cmd import hiding_prefix
from builder.targets import find_toolkit

pytestmark = pytest.mark.slow

ALWAYS, FOUND, NEVER = PACKAGES["always"], PACKAGES["when-found"], PACKAGES["never"]
HERE = f"cp{sys.version_info[0]}{sys.version_info[1]}"
CPU, CU = f"{HERE}-cpu-auto", f"{HERE}-cu130-auto"


@pytest.fixture(scope="module")
def toolkit() -> Path:
    kit = find_toolkit("cu130", None)[0]
    if kit is None:
        missing("needs the CUDA 13.0 toolkit (nvcc) in /usr/local/cuda-13.0 or on PATH")
    if hiding_prefix([str(kit.cuda_home)], offline=True) is None:
        missing("needs a mount namespace (root, or user namespaces) to hide the toolkit")
    return kit.cuda_home


def _path_without_nvcc() -> str:
    dirs = os.environ.get("PATH", "").split(":")
    return ":".join(d for d in dirs if d and not (Path(d) / "nvcc").exists())


def _config(root: Path, upstream: Upstream) -> Path:
    config = root / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{upstream.url}"\n\n'
        f'[targets]\npython = ["{sys.executable}"]\naccel = ["cpu", "cu130"]\n\n'
        '[accel.cu130]\ncuda_home = "/usr/local/cuda"\narch_list = ["7.5+PTX"]\n'
    )
    return config


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.stdout.startswith("{"), proc.stdout[-2000:] + proc.stderr[-3000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture(scope="module", params=["toolkit-off-path", "toolkit-on-path"])
def built(
    request: pytest.FixtureRequest,
    toolkit: Path,
    upstream: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    on_path = request.param == "toolkit-on-path"
    for name, files in all_fixtures(with_fixed_arch=True).items():
        upstream.add_sdist(name, "1.0", files)
    root = tmp_path_factory.mktemp(request.param)
    config = _config(root, upstream)
    names = [ALWAYS, FOUND, NEVER] + ([FIXED_ARCH] if on_path else [])
    reqs = root / "requirements.txt"
    reqs.write_text("".join(f"{n}==1.0\n" for n in names))
    path = f"{toolkit}/bin:{os.environ['PATH']}" if on_path else _path_without_nvcc()
    env = {**os.environ, "PATH": path}
    env.pop("CUDA_HOME", None)
    wh = root / "wheelhouse"
    args = ("-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    plan = _json(prewheel("plan", *args, env=env))
    build = prewheel("build", *args, env=env)
    return {"mode": request.param, "wh": wh, "plan": plan, "build": _json(build), "proc": build}


def _results(built: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["name"], r["target"]): r for r in built["build"]["results"]}


def _records(built: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    """The published (or failed) build records of `name`, by target."""
    out = {}
    for p in (built["wh"] / "builds").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec["name"] == name and rec["result"] in ("ok", "failed"):
            for t in rec["targets"]:
                out[t] = rec
    return out


def test_the_plan_decides_per_accelerator_from_the_sdist(built: dict[str, Any]) -> None:
    items = {(i["name"], i["target"]): i for i in built["plan"]["items"]}
    for name in (ALWAYS, FOUND):
        decision = items[(name, CPU)]["accel_decision"]
        assert decision["specific"] and decision["by"] == "sdist"
        assert "csrc/kernel.cu" in decision["evidence"]
        assert "setup.py: CUDA_HOME" in decision["evidence"]
        assert items[(name, CPU)]["cache_key"] != items[(name, CU)]["cache_key"]
    never = items[(NEVER, CPU)]["accel_decision"]
    assert never == {"specific": False, "by": "none", "evidence": []}
    assert items[(NEVER, CPU)]["cache_key"] == items[(NEVER, CU)]["cache_key"]


def test_cpu_builds_reach_no_toolkit(built: dict[str, Any]) -> None:
    results = _results(built)
    assert built["proc"].returncode == 1  # CUDA always cannot build for cpu
    always_cpu = results[(ALWAYS, CPU)]
    assert always_cpu["status"] == "failed"
    log = Path(always_cpu["log"]).read_text()
    assert "pw_cu_always needs the CUDA toolkit" in log
    assert results[(FOUND, CPU)]["status"] == "built"
    rec = _records(built, FOUND)[CPU]
    env = rec["build_env"]
    assert env["accel"] == "none" and env["toolkit"] is None
    assert not [k for k in env["variables"] if k.startswith("CUDA")]
    assert str(Path("/usr/local/cuda-13.0").resolve()) in env["hidden"]
    assert "nvcc" not in env["variables"]["PATH"]
    if built["mode"] == "toolkit-on-path":
        assert any(r.startswith("PATH: ") and "cuda" in r for r in env["removed"])
    assert "WITH_CUDA=False" in Path(built["wh"] / rec["log"]).read_text()


def test_cuda_builds_have_their_toolkit_and_arch_list(built: dict[str, Any]) -> None:
    results = _results(built)
    for name in (ALWAYS, FOUND):
        assert results[(name, CU)]["status"] == "built", results[(name, CU)]
        rec = _records(built, name)[CU]
        assert rec["build_env"]["toolkit"] == "/usr/local/cuda"
        assert rec["build_env"]["variables"]["CUDA_HOME"] == "/usr/local/cuda"
        assert rec["inputs"]["accel"] == "cu130" and rec["inputs"]["toolkit"].startswith("13.0")
        (code,) = rec["device_code"]
        assert (code["sass"], code["ptx"]) == (["7.5"], ["7.5"])
        assert rec["links_cuda"] == ["libcudart.so.13"]
    # CUDA never: one neutral build, listed in both indexes.
    assert results[(NEVER, CPU)]["wheel"] == results[(NEVER, CU)]["wheel"]


def test_a_build_that_ignores_the_arch_list_fails(built: dict[str, Any]) -> None:
    if built["mode"] != "toolkit-on-path":
        pytest.skip("built in the toolkit-on-path round only")
    res = _results(built)[(FIXED_ARCH, CU)]
    assert res["status"] == "failed" and res["step"] == "accel"
    assert "lacks configured CUDA architectures" in res["error"] and "sm_75" in res["error"]


def test_the_cpu_index_holds_no_cuda(built: dict[str, Any]) -> None:
    wh = built["wh"]
    listed = set()
    for page in (wh / "cpu" / "simple").glob("*/index.json"):
        listed |= {f["filename"] for f in json.loads(page.read_text())["files"]}
    assert {n.split("-")[0] for n in listed} == {module_of(FOUND), module_of(NEVER)}
    for name in listed:
        (path,) = (wh / "files").rglob(name)
        assert elf.wheel_cuda(path) == [], name
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 0, check.stdout + check.stderr


BACKEND = (
    "import importlib, json, sys\n"
    "out = {}\n"
    "for m in sys.argv[1:]:\n"
    "    mod = importlib.import_module(m)\n"
    "    try:\n"
    "        added = mod.add([1.0, 2.0], [10.0, 20.0])\n"
    "    except RuntimeError as exc:\n"
    "        added = str(exc)\n"
    "    out[m] = [mod.BACKEND, mod.CUDA_RUNTIME, added]\n"
    "print(json.dumps(out))\n"
)


def _installed(
    base: str, accel: str, names: list[str], venv: Path, toolkit: Path, absent: str = ""
) -> Any:
    python, env = compiler_free_venv(venv)
    if absent:  # a package this index must not serve
        missing = pip_install(python, f"{base}/{accel}/simple/", f"{absent}==1.0", env=env)
        assert missing.returncode != 0, missing.stdout
    proc = pip_install(python, f"{base}/{accel}/simple/", *(f"{n}==1.0" for n in names), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if accel != "cpu":  # libcudart comes from the runtime image (here: the toolkit)
        env = {**env, "LD_LIBRARY_PATH": f"{toolkit}/lib64"}
    out = subprocess.run(
        [str(python), "-c", BACKEND, *map(module_of, names)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_each_index_serves_its_backend(
    built: dict[str, Any], toolkit: Path, tmp_path: Path
) -> None:
    with serving(built["wh"]) as base:
        # A CUDA-only package has no cpu build.
        cpu = _installed(base, "cpu", [FOUND, NEVER], tmp_path / "cpu", toolkit, absent=ALWAYS)
        cu = _installed(base, "cu130", [ALWAYS, FOUND, NEVER], tmp_path / "cu", toolkit)
    assert cpu[module_of(FOUND)] == ["cpu", 0, [11.0, 22.0]]
    assert cpu[module_of(NEVER)] == ["cpu", 0, [11.0, 22.0]]
    for name in (ALWAYS, FOUND):
        backend, runtime, added = cu[module_of(name)]
        assert backend == "cuda" and runtime // 1000 == 13
        # No GPU here: the CUDA build says so; on a GPU it adds.
        assert added == [11.0, 22.0] or added.startswith("no CUDA device"), added
    assert cu[module_of(NEVER)] == ["cpu", 0, [11.0, 22.0]]


# -- the second check: DT_NEEDED after a neutral build ---------------------------------------------


def test_a_neutral_build_that_links_cuda_is_built_per_accelerator(
    toolkit: Path, upstream: Upstream, tmp_path: Path
) -> None:
    upstream.add_sdist(STUB, "1.0", stub_files())
    config = _config(tmp_path, upstream)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"{STUB}==1.0\n")
    args = ("-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh", "--json")
    plan = _json(prewheel("plan", *args))
    assert {i["accel_decision"]["specific"] for i in plan["items"]} == {False}
    build = prewheel("build", *args)
    results = {r["target"]: r for r in _json(build)["results"]}
    assert build.returncode == 1
    assert results[CPU]["status"] == "failed" and "links CUDA" in results[CPU]["error"]
    assert results[CU]["status"] == "built", results[CU]
    records = [json.loads(p.read_text()) for p in (tmp_path / "wh" / "builds").glob("*.json")]
    (ok,) = [r for r in records if r["result"] == "ok"]
    assert ok["accel_decision"]["by"] == "links-cuda" and ok["inputs"]["accel"] == "cu130"
    assert [r["result"] for r in records].count("accel-specific") == 1  # the neutral build
    again = _json(prewheel("plan", *args))
    decisions = {i["target"]: i["accel_decision"] for i in again["items"]}
    assert decisions[CU]["by"] == "links-cuda" and decisions[CU]["specific"]
    assert decisions[CU]["evidence"] == ["linked libcudart.so.13"]


def test_a_downloaded_wheel_that_links_cuda_stays_out_of_the_cpu_index(
    built: dict[str, Any], tmp_path: Path
) -> None:
    """An upstream wheel that links CUDA (PyPI's Linux torch, say): the cu130 index serves
    it, the cpu items fail naming the fix, the cpu index does not list it."""
    if built["mode"] != "toolkit-on-path":
        pytest.skip("checked in the toolkit-on-path round only")
    cu_wheel = _results(built)[(FOUND, CU)]["wheel"]
    (path,) = (built["wh"] / "files").rglob(cu_wheel)
    with Upstream(tmp_path / "upstream") as index:
        index.add_file(path)
        config = _config(tmp_path, index)
        reqs = tmp_path / "requirements.txt"
        reqs.write_text(f"{FOUND}==1.0\n")
        wh = tmp_path / "wh"
        proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    results = {r["target"]: r for r in _json(proc)["results"]}
    assert proc.returncode == 1
    assert results[CU]["status"] == "downloaded"
    assert results[CPU]["status"] == "failed"
    assert "the cpu index never holds CUDA" in results[CPU]["error"]
    assert not (wh / "cpu" / "simple" / FOUND).exists()
    assert (wh / "cu130" / "simple" / FOUND / "index.html").is_file()
    assert prewheel("index", "check", "--wheelhouse", wh).returncode == 0
