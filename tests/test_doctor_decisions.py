"""`prewheel doctor`'s decisions, tested alone: recorded host trees, ISA levels, arch-list
coverage, driver ranges, framework pins and the shipped data. No process is started (a
fixture makes starting one fail); tests/test_doctor.py runs the CLI for real.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from doctorkit import case_dirs, check_report, expected

from builder import compat
from builder.config import TargetSpec, load_config
from builder.doctor import check_pins, diagnose, read_host
from builder.doctor.decide import arch_coverage, driver_runs, toolkit_coverage
from builder.doctor.facts import Cpu, Driver, Gpu, HostFacts
from builder.doctor.host import parse_nvidia_smi
from builder.doctor.isa import cpuinfo_flags, isa_level
from builder.doctor.pins import allowed_variants
from builder.requirements import Pin
from builder.targets import Target, default_arch_list
from builder.targets.images import image_glibc, runtime_bases, runtime_image
from builder.targets.model import cuda_version_of
from builder.targets.policy import normalize

pytestmark = pytest.mark.usefixtures("no_processes")


def targets_of(config: Path, python: str = "3.11") -> list[Target]:
    """The case's configured targets as the CLI would resolve them, without probing for
    interpreters or toolkits (the default arch list of each CUDA release)."""
    out = []
    loaded = load_config(config)
    for spec in loaded.targets:
        spec = replace(spec, python=python, policy=normalize(spec.policy))
        cuda = cuda_version_of(spec.accel)
        arch = loaded.accel(spec.accel).arch_list or (default_arch_list(cuda) if cuda else ())
        out.append(
            Target(
                name=f"cp{python.replace('.', '')}-{spec.accel}-{spec.policy}",
                spec=spec,
                interpreter=None,
                toolkit=None,
                arch_list=arch,
                repair_excludes=(),
                missing=None,
            )
        )
    return out


def target(accel: str, arch: tuple[str, ...] = (), policy: str = "manylinux_2_28_x86_64") -> Target:
    cuda = cuda_version_of(accel)
    return Target(
        name=f"cp311-{accel}-{policy}",
        spec=TargetSpec(python="3.11", accel=accel, policy=policy),
        interpreter=None,
        toolkit=None,
        arch_list=arch or (default_arch_list(cuda) if cuda else ()),
        repair_excludes=(),
        missing=None,
    )


def host(driver: str | None, *ccs: str, isa: str = "x86-64-v3") -> HostFacts:
    gpus = tuple(Gpu(index=i, name=f"gpu{i}", cc=cc, cc_source="nvml") for i, cc in enumerate(ccs))
    return HostFacts(
        root="/recorded",
        live=False,
        driver=Driver(version=driver, source="test") if driver else None,
        gpus=gpus if driver else (),
        pci_gpus=(),
        glibc=(2, 39),
        glibc_source="test",
        os=None,
        cpu=Cpu(arch="x86_64", isa=isa, model=None),
        looked=(),
    )


@pytest.mark.parametrize("case", case_dirs(), ids=lambda p: p.name)
def test_recorded_host(case: Path) -> None:
    facts = read_host(case / "root")
    assert not facts.live
    report = diagnose(facts, targets_of(case / "prewheel.toml"))
    check_report(report.to_json(), expected(case))


# ISA levels: the psABI's feature lists, under the names Linux prints.


def test_isa_levels_follow_the_psabi() -> None:
    base = {"cmov", "cx8", "fpu", "fxsr", "mmx", "syscall", "sse", "sse2"}
    v2 = base | {"cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"}
    v3 = v2 | {"avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave"}
    v4 = v3 | {"avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"}
    assert isa_level(base) == (
        "x86-64",
        ("cx16", "lahf_lm", "pni", "popcnt", "sse4_1", "sse4_2", "ssse3"),
    )
    assert isa_level(v2)[0] == "x86-64-v2"
    assert isa_level(v3)[0] == "x86-64-v3"
    assert isa_level(v4) == ("x86-64-v4", ())
    assert isa_level(v3 - {"movbe"}) == ("x86-64-v2", ("movbe",))  # one missing flag is enough
    assert isa_level(base - {"sse2"})[0] is None


def test_cpuinfo_takes_the_flags_every_processor_has() -> None:
    text = (
        "processor\t: 0\nmodel name\t: Big\nflags\t\t: fpu avx2 sse\n\n"
        "processor\t: 1\nmodel name\t: Little\nflags\t\t: fpu sse\n"
    )
    flags, model, arch = cpuinfo_flags(text)
    assert flags == {"fpu", "sse"} and model == "Big" and arch == "x86_64"
    assert cpuinfo_flags("processor\t: 0\nFeatures\t: fp asimd\n")[2] == "aarch64"


# Arch lists: SASS runs within a major release on the same or a newer minor; PTX is JIT-compiled
# for any newer GPU; an `a` entry runs on its own compute capability only.


@pytest.mark.parametrize(
    ("arch", "cc", "coverage"),
    [
        (("8.0",), "8.0", "sass"),
        (("8.0",), "8.6", "sass"),
        (("8.6",), "8.0", "none"),
        (("8.0", "8.6"), "9.0", "none"),
        (("8.0", "8.6+PTX"), "9.0", "ptx"),
        (("8.0", "8.6+PTX"), "12.0", "ptx"),
        (("9.0a",), "9.0", "sass"),
        (("9.0a",), "10.0", "none"),
        (("10.0",), "12.0", "none"),
        (("8.0+PTX",), "7.5", "none"),
        (("7.5", "8.0", "8.6", "9.0", "10.0", "12.0+PTX"), "8.9", "sass"),
        (("8.0",), None, "unknown"),
    ],
)
def test_arch_coverage(arch: tuple[str, ...], cc: str | None, coverage: str) -> None:
    assert arch_coverage(arch, cc) == coverage


def test_toolkits_know_their_gpus() -> None:
    data = compat.load()
    cuda13, cuda126 = data.toolkits[(13, 0)], data.toolkits[(12, 6)]
    assert toolkit_coverage(cuda13, "6.1") == "none"  # Pascal dropped by CUDA 13
    assert toolkit_coverage(cuda126, "6.1") == "sass"
    assert toolkit_coverage(cuda126, "12.0") == "ptx"  # Blackwell after CUDA 12.6's newest
    assert toolkit_coverage(data.toolkits[(12, 8)], "12.0") == "sass"


# Drivers: versions compare as numbers; minor-version compatibility within a major release.


def test_driver_ranges() -> None:
    data = compat.load()
    assert driver_runs("570.26", (12, 8), data) == "native"  # the GA driver itself
    assert driver_runs("570.124.06", (12, 8), data) == "native"  # newer, not "smaller"
    assert driver_runs("565.57.01", (12, 8), data) == "minor-compat"
    assert driver_runs("525.60.13", (12, 8), data) == "minor-compat"
    assert driver_runs("525.60.12", (12, 8), data) == "no"
    assert driver_runs("575.64", (13, 0), data) == "no"  # 13.x needs an R580 driver
    assert driver_runs("440.33", (10, 2), data) == "native"
    assert driver_runs("435.21", (10, 2), data) == "no"  # no minor-version compatibility in 10.x
    assert driver_runs(None, (12, 8), data) == "no"


def test_native_beats_minor_compat_and_pins_narrow_the_choice() -> None:
    facts = host("580.95.05", "9.0")
    assert diagnose(facts, []).recommendation.accel == "cu130"
    pins = [Pin(name="torch", requirement="torch==2.5.1", version="2.5.1", where="r.txt:1")]
    allowed, why = allowed_variants(pins)
    rec = diagnose(facts, [], allowed=allowed, allowed_why=why).recommendation
    assert rec.accel == "cu124" and "torch 2.5.1" in rec.why
    # Only minor-version compatibility left: taken, and said.
    rec = diagnose(host("530.30.02", "9.0"), [], allowed={"cu126"}).recommendation
    assert rec.accel == "cu126" and "minor-version compatibility only" in rec.why


def test_no_gpu_means_cpu_whatever_is_configured() -> None:
    report = diagnose(host(None), [target("cpu"), target("cu128")])
    assert report.recommendation.accel == "cpu"
    assert report.recommendation.why == "no NVIDIA GPU or driver found"
    assert [p.code for p in report.problems] == ["no-gpu"]
    assert report.exit_code == 1


def test_bases_follow_policy_glibc_and_cpu_level() -> None:
    facts = host("580.95.05", "9.0", isa="x86-64")
    fit = diagnose(facts, [target("cu130", policy="manylinux_2_34_x86_64")]).targets[0]
    fits = {b.image: b for b in fit.bases}
    assert fits["nvidia/cuda:13.0.0-runtime-ubuntu24.04"].fits
    assert not fits["nvidia/cuda:13.0.0-runtime-ubi8"].fits  # glibc 2.28 < 2.34
    assert "x86-64-v2" in (fits["nvidia/cuda:13.0.0-runtime-ubi9"].why or "")  # RHEL 9 needs v2
    assert "nvidia/cuda:13.0.0-runtime-ubuntu20.04" not in fits  # CUDA 13 dropped 20.04


# Pins against targets.


def pin(spec: str, where: str = "requirements.txt:3") -> Pin:
    name, _, version = spec.partition("==")
    return Pin(name=name, requirement=spec, version=version or None, where=where)


def test_torch_pin_without_a_build_names_the_variants_that_exist() -> None:
    (problem,) = check_pins([pin("torch==2.5.1")], [target("cu128")])
    assert problem.level == "error" and problem.code == "pin-no-build"
    assert problem.message.startswith("requirements.txt:3: torch==2.5.1 has no cu128 build")
    assert "cpu, cu118, cu121, cu124" in problem.message
    # PyPI's torch 2.5.1 is the cu124 build: nothing to say.
    assert check_pins([pin("torch==2.5.1")], [target("cu124")]) == []


def test_torch_pins_that_pull_another_variant() -> None:
    (mismatch,) = check_pins([pin("torch==2.5.1+cu121")], [target("cu124")])
    assert mismatch.code == "pin-variant-mismatch" and mismatch.level == "error"
    (pypi,) = check_pins([pin("torch==2.7.1")], [target("cpu")])
    assert pypi.code == "pin-pypi-variant" and pypi.level == "warning"
    assert "https://download.pytorch.org/whl/cpu" in pypi.message
    assert check_pins([pin("torch==2.7.1+cpu")], [target("cpu")]) == []
    (unknown,) = check_pins([pin("torch==9.9.0")], [target("cu130")])
    assert unknown.code == "pin-unknown" and unknown.level == "warning"
    (unpinned,) = check_pins([pin("torch")], [target("cu130")])
    assert unpinned.code == "pin-unpinned"


def test_tensorflow_pins_against_cuda_majors() -> None:
    (wrong,) = check_pins([pin("tensorflow==2.18.0")], [target("cu130")])
    assert wrong.level == "error" and wrong.code == "pin-no-build"
    assert "CUDA 12.5 with cuDNN 9.3" in wrong.message and "cu126, cu128, cu129" in wrong.message
    (older,) = check_pins([pin("tensorflow==2.18.0")], [target("cu124")])
    assert older.level == "warning" and older.code == "pin-cuda-older"
    assert check_pins([pin("tensorflow==2.18.0")], [target("cu128"), target("cpu")]) == []


def test_a_pin_error_exits_2() -> None:
    problems = check_pins([pin("torch==2.5.1")], [target("cu128")])
    report = diagnose(host("580.95.05", "9.0"), [target("cu128")], pin_problems=problems)
    assert report.exit_code == 2


# nvidia-smi's answer, as it prints it (drivers >= 510 know compute_cap; older ones do not).


def test_nvidia_smi_output() -> None:
    driver, gpus = parse_nvidia_smi(
        "0, NVIDIA H100 80GB HBM3, 9.0, 00000000:18:00.0, 570.124.06\n"
        "1, NVIDIA H100 80GB HBM3, 9.0, 00000000:2A:00.0, 570.124.06\n"
    )
    assert driver is not None and driver.version == "570.124.06"
    assert [(g.index, g.cc, g.cc_source) for g in gpus] == [
        (0, "9.0", "nvidia-smi"),
        (1, "9.0", "nvidia-smi"),
    ]
    driver, gpus = parse_nvidia_smi("0, Tesla T4, 00000000:00:1E.0, 470.256.02\n")
    assert driver is not None and gpus[0].cc is None and gpus[0].name == "Tesla T4"
    driver, gpus = parse_nvidia_smi("0, NVIDIA A10G, 8.6, 00000000:00:1E.0, [N/A]\n")
    assert driver is None and gpus[0].cc == "8.6"  # no version: no driver, never a crash


# The shipped data: one source, internally consistent.


def test_compat_data_is_consistent() -> None:
    data = compat.load()
    versions = list(data.toolkits)
    assert versions == sorted(versions)
    drivers = [compat.parse_version(data.toolkits[v].driver) for v in versions]
    assert drivers == sorted(drivers), "a newer CUDA never needs an older driver"
    for tk in data.toolkits.values():
        archs = [compat.parse_version(a) for a in tk.archs]
        assert archs == sorted(archs), tk
        floor = data.minor_compat.get(tk.version[0])
        if floor is not None:
            assert compat.parse_version(floor) <= compat.parse_version(tk.driver), tk
    for rel in data.torch.values():
        for variant in rel.variants:
            cuda = compat.cuda_of(variant)
            assert variant == "cpu" or (cuda is not None and data.toolkit(cuda)), variant
        assert rel.pypi is None or rel.pypi in rel.variants
    for rng in data.cuda_images:
        assert rng.os in data.os
    assert data.python_os in data.os and set(data.python_variants.values()) <= set(data.os)


def test_images_come_from_the_data() -> None:
    assert image_glibc("python:3.12-slim") == (2, 41)
    assert image_glibc("python:3.12-slim-bookworm") == (2, 36)
    assert image_glibc("nvidia/cuda:12.8.0-runtime-ubuntu22.04") == (2, 35)
    assert image_glibc("registry.example.com/custom:1") is None
    assert runtime_image(target("cu130")) == "nvidia/cuda:13.0.0-runtime-ubuntu24.04"
    py310 = replace(target("cu126"), spec=replace(target("cu126").spec, python="3.10"))
    assert runtime_image(py310) == "nvidia/cuda:12.6.0-runtime-ubuntu22.04"
    bases = runtime_bases(target("cpu"))
    assert bases[0].image == "python:3.11-slim"


def test_a_driver_without_per_gpu_files_still_counts_the_gpus_on_the_bus(tmp_path: Path) -> None:
    """Some containers see /sys/module/nvidia but not /proc/driver/nvidia: the GPUs on the
    PCI bus still count, their compute capability unknown (and said so)."""
    case = next(c for c in case_dirs() if c.name == "driver-580-h100")
    root = tmp_path / "root"
    shutil.copytree(case / "root", root)
    shutil.rmtree(root / "proc/driver")
    facts = read_host(root)
    assert facts.driver is not None and facts.driver.source == "/sys/module/nvidia/version"
    assert [(g.name, g.cc) for g in facts.gpus] == [("NVIDIA GPU (PCI device 0x2330)", None)] * 4
    report = diagnose(facts, [target("cu130")])
    assert report.recommendation.accel == "cu130"
    assert {p.code for p in report.problems} == {"cc-unknown"}
