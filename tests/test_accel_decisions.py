"""The accelerator decisions, tested alone (no process is started, nothing is built): what
an sdist says about CUDA, the decision and its key, framework pins, the environment a cpu or
cuXXX build gets, the GPU code a fatbin carries, and what keeps the cpu index free of CUDA.
tests/test_accel.py proves the same paths with real builds."""

from __future__ import annotations

import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import refuse_processes
from gpu.accel_fixtures import accel_files
from indexkit import add_wheel
from packaging.utils import canonicalize_name
from upstream import make_sdist

from builder import elf, sandbox
from builder.config import ConfigError, PackageConfig, TargetSpec, parse_config
from builder.index.check import check
from builder.records import DeviceCode
from builder.sandbox import Isolation
from builder.stages import accel, buildenv, classify, keys
from builder.stages.classify import SdistScan
from builder.stages.plan import closures_by_accel, plan_item
from builder.stages.resolve import Resolved
from builder.targets import Interpreter, Target, Toolkit, compilers
from builder.upstream import UpstreamFile
from builder.wheelhouse import Wheelhouse


@pytest.fixture(autouse=True)
def no_processes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The sandbox a cache key holds is the machine's, asked once per process (cached): asked
    # here, before processes are refused, whichever test of the process comes first.
    sandbox.isolation("auto")
    refuse_processes(monkeypatch)
    monkeypatch.setattr(compilers, "c_compiler", lambda env=None: {"path": "cc", "version": "gcc"})
    # Whether a mount namespace can hide directories is asked of the kernel: say yes.
    monkeypatch.setattr(buildenv, "hiding_prefix", lambda dirs, offline: ("unshare", *dirs))
    # What the machine allows is found by starting bubblewrap: here, a full sandbox.
    monkeypatch.setattr(
        keys, "isolation", lambda setting="auto": Isolation(mode="bwrap", requested=setting)
    )
    yield


def target(accel_name: str = "cpu", toolkit: Toolkit | None = None) -> Target:
    interp = Interpreter(
        path=Path(sys.executable), version=(3, 11, 7), implementation="cpython", gil_disabled=False
    )
    return Target(
        name=f"cp311-{accel_name}-auto",
        spec=TargetSpec(python="3.11", accel=accel_name, policy="auto"),
        interpreter=interp,
        toolkit=toolkit,
        arch_list=("8.0", "12.0+PTX") if toolkit else (),
        repair_excludes=("libcuda.so.1",),
        missing=None,
    )


# -- what an sdist says ---------------------------------------------------------------------


def _scan(tmp_path: Path, files: dict[str, str], name: str = "pw-x") -> SdistScan:
    return classify.scan_archive(make_sdist(tmp_path, name, "1.0", files))


def test_cuda_sources_and_toolkit_lookups_are_evidence(tmp_path: Path) -> None:
    always = _scan(tmp_path, accel_files("always", "pw-cu-always"), "pw-cu-always")
    assert always.cuda_sources == ("csrc/kernel.cu",)
    assert {"setup.py: nvcc", "setup.py: CUDA_HOME", "setup.py: FORCE_CUDA"} <= set(
        always.toolkit_use
    )
    found = _scan(tmp_path, accel_files("when-found", "pw-cu-found"), "pw-cu-found")
    assert found.evidence and found.build_requires == ("setuptools>=61",)
    never = _scan(tmp_path, accel_files("never", "pw-cu-never"), "pw-cu-never")
    assert never.evidence == () and never.error is None


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"CMakeLists.txt": "project(x LANGUAGES CXX CUDA)\n"},
         "CMakeLists.txt: project(... CUDA)"),
        ({"CMakeLists.txt": "enable_language( CUDA )\n"}, "CMakeLists.txt: enable_language(CUDA)"),
        ({"cmake/deps.cmake": "find_package(CUDAToolkit REQUIRED)\n"},
         "cmake/deps.cmake: find_package(CUDAToolkit)"),
        ({"setup.py": "from torch.utils.cpp_extension import CUDAExtension\n"},
         "setup.py: CUDAExtension"),
        ({"meson.build": "add_languages('cuda')\n"}, "meson.build: meson cuda"),
        ({"src/ops.cuh": "#pragma once\n"}, "src/ops.cuh"),
    ],
)  # fmt: skip
def test_each_kind_of_evidence(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    assert expected in _scan(tmp_path, files).evidence


def test_tests_examples_comments_and_vendored_scripts_are_not_evidence(tmp_path: Path) -> None:
    files = {
        "setup.py": (
            "# set CUDA_HOME? not here: this package never uses nvcc\n"
            "from setuptools import setup\nsetup()\n"
        ),
        "tests/test_gpu.cu": "",
        "examples/CMakeLists.txt": "enable_language(CUDA)\n",
        "third_party/lib/CMakeLists.txt": "enable_language(CUDA)\n",
    }
    assert _scan(tmp_path, files).evidence == ()


def test_an_unreadable_archive_is_said_so(tmp_path: Path) -> None:
    bad = tmp_path / "pw_bad-1.0.tar.gz"
    bad.write_bytes(b"not a tar")
    scan = classify.scan_archive(bad)
    assert scan.error and classify.decide(scan, override=None).specific is False


# -- the decision -----------------------------------------------------------------------------

CUDA_SCAN = SdistScan(cuda_sources=("k.cu",), toolkit_use=("setup.py: nvcc",), build_requires=())
PLAIN_SCAN = SdistScan(cuda_sources=(), toolkit_use=(), build_requires=("setuptools",))


def test_the_sdist_decides_and_the_config_overrides() -> None:
    assert classify.decide(CUDA_SCAN, override=None).by == "sdist"
    assert classify.decide(CUDA_SCAN, override=None).specific
    assert not classify.decide(PLAIN_SCAN, override=None).specific
    off = classify.decide(CUDA_SCAN, override=False)
    assert (off.specific, off.by, off.evidence[0]) == (False, "config", "accel_specific = false")
    assert "k.cu" in off.evidence  # what was overridden is still shown
    assert classify.decide(PLAIN_SCAN, override=True).specific
    split = classify.decide(PLAIN_SCAN, override=None, framework_split=("builds against x",))
    assert (split.specific, split.by) == (True, "framework")
    assert classify.decide(CUDA_SCAN, override=None).summary().startswith("per accel (sdist: k.cu")
    assert classify.decide(PLAIN_SCAN, override=None).summary() == "shared"


def test_framework_pins_and_a_framework_that_differs_by_accelerator() -> None:
    closure = {"torch": "2.5.1+cu130", "numpy": "2.1.0", "setuptools": "58.0"}
    pins = classify.framework_pins(("setuptools>=61", "torch", "numpy>=2", "cython"), closure)
    assert pins == (("numpy", "2.1.0"), ("torch", "2.5.1+cu130"))  # build tools left out
    by_accel = {"torch": {"cpu": "2.5.1+cpu a", "cu130": "2.5.1+cu130 b"}, "numpy": {"cpu": "2 c"}}
    (said,) = classify.framework_split(pins, by_accel)
    assert said == "builds against torch: 2.5.1+cpu for cpu, 2.5.1+cu130 for cu130"


def test_closures_by_accel_tells_same_version_other_bytes_apart() -> None:
    cpu, cu = target("cpu"), target("cu130")

    def f(sha: str) -> UpstreamFile:
        return _file("pw_frame-1.0-py3-none-any.whl", sha)

    r = [Resolved(name="pw-frame", version="1.0", requested=False)]
    seen = closures_by_accel({cpu: (r, {"pw-frame": [f("aa" * 32)]}),
                              cu: (r, {"pw-frame": [f("bb" * 32)]})})  # fmt: skip
    (per_interp,) = seen.values()
    assert len(set(per_interp["pw-frame"].values())) == 2


def _file(filename: str, sha: str = "ab" * 32) -> UpstreamFile:
    from packaging.version import Version

    return UpstreamFile(
        filename=filename,
        url=f"http://upstream/files/{filename}",
        sha256=sha,
        requires_python=None,
        yanked=False,
        version=Version("1.0"),
        is_wheel=filename.endswith(".whl"),
    )


def _plan(tmp_path: Path, scan: SdistScan, t: Target, **packages: PackageConfig):  # type: ignore[no-untyped-def]
    cfg = replace(parse_config({}, source="<t>"), packages=packages)
    return plan_item(
        t,
        canonicalize_name("pw-x"),
        "1.0",
        frozenset(),
        cfg,
        Wheelhouse(tmp_path / "wh"),
        files=[_file("pw_x-1.0.tar.gz")],
        scan=lambda f, h: (f.sha256 or "", scan),
        closure={"pw-frame": "1.0", "setuptools": "70"},
    )


def test_the_decision_keys_the_build_before_it_runs(tmp_path: Path) -> None:
    cuda = _plan(tmp_path, CUDA_SCAN, target("cu130"))
    assert cuda.key is not None and cuda.key.accel_specific and cuda.accel_key is None
    cpu = _plan(tmp_path, CUDA_SCAN, target("cpu"))
    assert cpu.key is not None and cpu.key.key != cuda.key.key
    # A pure wheel built for one accelerator never serves another's index.
    assert cpu.key.source_key != cuda.key.source_key
    assert cuda.to_json()["accel_decision"]["by"] == "sdist"
    plain = _plan(tmp_path, PLAIN_SCAN, target("cu130"))
    assert plain.key is not None and not plain.key.accel_specific
    plain_cpu = _plan(tmp_path, PLAIN_SCAN, target("cpu")).key
    assert plain_cpu is not None and plain_cpu.source_key == plain.key.source_key
    assert plain.accel_key is not None  # DT_NEEDED after the build stays the second check
    off = _plan(
        tmp_path,
        CUDA_SCAN,
        target("cu130"),
        **{"pw-x": PackageConfig(name="pw-x", accel_specific=False)},
    )
    assert off.key is not None and not off.key.accel_specific and off.accel_key is not None


def test_framework_pins_are_in_the_key_and_the_plan(tmp_path: Path) -> None:
    scan = replace(PLAIN_SCAN, build_requires=("setuptools", "pw-frame"))
    item = _plan(tmp_path, scan, target("cpu"))
    assert item.key is not None and item.key.inputs.framework == (("pw-frame", "1.0"),)
    assert item.to_json()["framework"] == {"pw-frame": "1.0"}
    assert item.runtime_pins == (("pw-frame", "1.0"),)  # setuptools is a build tool
    other = _plan(tmp_path, PLAIN_SCAN, target("cpu"))
    assert other.key is not None and other.key.key != item.key.key


def test_accelerator_upstreams_in_the_config() -> None:
    cfg = parse_config(
        {"accel": {"cu130": {"upstream": "https://download.pytorch.org/whl/cu130",
                             "extra_upstreams": ["https://pypi.org/simple"]}}},
        source="<t>",
    )  # fmt: skip
    assert cfg.upstreams("cu130") == (
        "https://download.pytorch.org/whl/cu130/",
        "https://pypi.org/simple/",
    )
    assert cfg.upstreams("cpu") == (cfg.upstream,) and not cfg.own_upstream("cpu")
    assert cfg.own_upstream("cu130")
    with pytest.raises(ConfigError) as err:
        parse_config(
            {"accel": {"cu130": {"upstream": "pypi", "extra_upstreams": [3]}},
             "packages": {"x": {"accel_specific": "yes"}}},
            source="<t>",
        )  # fmt: skip
    assert len(err.value.problems) == 3  # every problem at once
    assert "accel.cu130.upstream" in err.value.problems[0]


# -- the build's environment --------------------------------------------------------------------


def _toolkit(root: Path, version: str) -> Path:
    home = root / f"cuda-{version}"
    for sub in ("bin", "include", "lib64"):
        (home / sub).mkdir(parents=True)
    (home / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (home / "include" / "cuda_runtime_api.h").write_text("")
    (home / "lib64" / "libcudart.so.13").write_text("")
    return home


def _host(tmp_path: Path) -> tuple[Path, Path, Path, dict[str, str]]:
    old, new = _toolkit(tmp_path, "12.8"), _toolkit(tmp_path, "13.0")
    shared = tmp_path / "shared-bin"
    shared.mkdir()
    for tool in ("nvcc", "ptxas", "cmake"):
        (shared / tool).write_text("#!/bin/sh\n")
    env = {
        "PATH": f"{old}/bin:{shared}:/usr/bin",
        "LD_LIBRARY_PATH": f"{old}/lib64:{new}/lib64",
        "CPATH": f"{old}/include",
        "CUDA_HOME": str(old),
        "CUDNN_PATH": "/opt/cudnn",
        "FORCE_CUDA": "1",
        "HOME": "/root",
    }
    return old, new, shared, env


def test_a_cpu_build_reaches_no_cuda(tmp_path: Path) -> None:
    old, new, shared, env = _host(tmp_path)
    made = buildenv.for_build(
        target=target("cpu"),
        cuda=False,
        base=env,
        package_env={"MY_FLAG": "1"},
        env_dir=tmp_path / "venv",
        workdir=tmp_path / "work",
        known_homes=[str(new)],
    )
    out = made.env
    assert not {"CUDA_HOME", "CUDNN_PATH", "FORCE_CUDA", "LD_LIBRARY_PATH", "CPATH"} & set(out)
    path = out["PATH"].split(":")
    # The compiler wrappers (stages.toolchain), then the venv.
    assert path[0].endswith("/toolchain/bin") and path[1] == str(tmp_path / "venv" / "bin")
    assert "/usr/bin" in path
    assert f"{old}/bin" not in path and str(shared) not in path
    (copy,) = [p for p in path if "path-shadow" in p]
    assert sorted(p.name for p in Path(copy).iterdir()) == ["cmake"]  # no nvcc, no fake one
    assert {old.resolve(), new.resolve()} <= set(made.hidden)  # and /usr/local/cuda* here
    rec = made.record(["MY_FLAG"])
    assert rec.accel == "none" and rec.toolkit is None and rec.variables["MY_FLAG"] == "1"
    assert "CUDA_HOME" in rec.unset and f"LD_LIBRARY_PATH: {old}/lib64" in rec.removed
    assert made.prefix()[0] == "unshare"


def test_a_cuda_build_has_its_own_toolkit_and_no_other(tmp_path: Path) -> None:
    old, new, _, env = _host(tmp_path)
    kit = Toolkit(cuda_home=new, nvcc=new / "bin" / "nvcc", version="13.0")
    made = buildenv.for_build(
        target=target("cu130", kit),
        cuda=True,
        base=env,
        package_env={},
        env_dir=tmp_path / "venv",
        workdir=tmp_path / "work",
    )
    out = made.env
    assert out["CUDA_HOME"] == out["CUDA_PATH"] == str(new)
    # after the compiler wrappers and the venv, before anything else
    assert out["PATH"].split(":")[2] == f"{new}/bin"
    assert str(old) not in out["PATH"] + out["LD_LIBRARY_PATH"] + out.get("CPATH", "")
    assert f"{new}/lib64" in out["LD_LIBRARY_PATH"]
    assert out["TORCH_CUDA_ARCH_LIST"] == "8.0;12.0+PTX"
    assert out["CMAKE_CUDA_ARCHITECTURES"] == "80-real;120"
    assert out["FORCE_CUDA"] == "1" and "CUDNN_PATH" not in out
    assert old.resolve() in made.hidden and new.resolve() not in made.hidden
    assert made.record().toolkit == str(new)


# -- GPU code in a fatbin -------------------------------------------------------------------------


def _entry(kind: int, arch: int, flags: int = 0x11, payload: bytes = b"\0" * 16) -> bytes:
    head = struct.pack("<HHIQ", kind, 0x0101, 64, len(payload))
    head += struct.pack("<IIHHIIIQQQ", 0, 0, 8, 1, arch, 0, 0, flags, 0, 0)
    return head + payload


def _fatbin(*entries: bytes) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", 0xBA55ED50, 1, 16, len(body)) + body


def test_a_fatbin_says_which_architectures_it_carries() -> None:
    data = _fatbin(_entry(2, 75), _entry(2, 90, 0x100011), _entry(1, 120, 0x8011))
    data += b"\0" * 8 + _fatbin(_entry(2, 100, 0x1200011))  # a second fatbin, after padding
    assert elf.fatbin_archs(data) == (("7.5", "9.0a", "10.0f"), ("12.0",))
    assert elf.fatbin_archs(b"") == ((), ())


def test_a_missing_configured_architecture_fails_the_wheel() -> None:
    code = (DeviceCode(path="x/_k.so", sass=("8.0", "12.0"), ptx=("12.0",)),)
    assert accel.missing_archs(code, ("8.0", "12.0+PTX")) == []
    assert accel.missing_archs(code, ("7.5", "9.0a", "12.0+PTX")) == ["x/_k.so: sm_75, sm_90a"]
    ptx_only = (DeviceCode(path="x/_k.so", sass=("12.0",), ptx=()),)
    assert accel.missing_archs(ptx_only, ("12.0+PTX",)) == ["x/_k.so: compute_120"]
    kw = {"wheel": "x.whl", "accel": "cu130", "arch_list": ("8.0",)}
    assert (
        accel.check_device_code(code=code, links=("libcudart.so.13",), cuda_sources=True, **kw)
        is None
    )
    cpu_only = accel.check_device_code(code=(), links=(), cuda_sources=True, **kw)
    assert cpu_only is not None and "CPU-only" in cpu_only
    assert accel.check_device_code(code=(), links=(), cuda_sources=False, **kw) is None


# -- the cpu index never holds CUDA ---------------------------------------------------------------


def test_index_check_fails_a_cpu_index_that_lists_cuda(tmp_path: Path) -> None:
    wh = Wheelhouse(tmp_path / "wh")
    wh.ensure()
    wh.register_accelerators(["cpu", "cu130"])
    real_elf = Path(shutil.which("true") or "/bin/true").read_bytes()
    bundled = {"pw_bad.libs/libcudart-0123abcd.so.13": real_elf}
    add_wheel(wh, tmp_path / "w", "pw-ok", "1.0", tag="py3-none-any")
    add_wheel(wh, tmp_path / "w", "pw-cudaonly", "1.0", accels=("cu130",), extra=bundled)
    assert check(wh).problems == []  # listed in cu130 only: fine
    add_wheel(wh, tmp_path / "w", "pw-bad", "1.0", extra=bundled)  # every index, cpu too
    (problem,) = check(wh).problems
    assert problem.startswith("cpu/simple/pw-bad/") and "libcudart.so.13" in problem
    with pytest.raises(Exception, match="the cpu index never holds CUDA"):
        raise accel.cpu_listing_error("pw_bad.whl", ["libcudart.so.13"], ["cu130"])


def test_a_toolkit_sharing_the_interpreters_prefix_stays_visible(tmp_path: Path) -> None:
    conda = _toolkit(tmp_path, "conda")  # a conda environment with nvcc and its python
    (conda / "bin" / "python").write_text("")
    t = replace(
        target("cpu"), interpreter=replace(target().interpreter, path=conda / "bin" / "python")
    )  # type: ignore[type-var]
    made = buildenv.for_build(
        target=t,
        cuda=False,
        base={"PATH": f"{conda}/bin:/usr/bin"},
        package_env={},
        env_dir=tmp_path / "venv",
        workdir=tmp_path / "work",
        known_homes=[str(conda)],
    )
    assert conda.resolve() not in made.hidden
    assert f"{conda}/bin" not in made.env["PATH"].split(":")  # still off the paths


def test_a_package_kept_to_some_accelerators_is_skipped_elsewhere(tmp_path: Path) -> None:
    only_cuda = {"pw-x": PackageConfig(name="pw-x", accels=("cu*",))}
    skipped = _plan(tmp_path, CUDA_SCAN, target("cpu"), **only_cuda)
    assert (skipped.action, skipped.reason) == ("skip", "config: only for cu*")
    assert _plan(tmp_path, CUDA_SCAN, target("cu130"), **only_cuda).action == "build"
    with pytest.raises(ConfigError, match=r"packages.x.accels\[0\]"):
        parse_config({"packages": {"x": {"accels": ["gpu"]}}}, source="<t>")
