"""The doctor's judgement: pure functions from what a host has (`HostFacts`), what is
configured (`Target`s) and the shipped compatibility data, to what runs here and what to use.

Nothing here reads the machine or starts a process, so every rule is tested on recorded
facts in milliseconds (tests/test_doctor_decisions.py); `host` does the reading.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from .. import compat
from ..compat import Compat, Version, cuda_of, parse_version, show
from ..targets import Target, policy
from ..targets.images import runtime_bases
from .facts import Gpu, HostFacts
from .report import (
    BaseFit,
    Coverage,
    DoctorReport,
    Problem,
    Recommendation,
    Runs,
    TargetFit,
    VariantFit,
)

_ARCH = re.compile(r"(\d+)\.(\d+)([af]?)(\+PTX)?")
Level = Literal["warning", "error"]
Emit = Callable[[Level, str, str], None]


def driver_runs(driver: str | None, cuda: Version, data: Compat) -> Runs:
    """Whether a driver runs code built with CUDA `cuda`: natively (at least the GA
    release's driver), through minor-version compatibility (at least the whole major's
    minimum: SASS runs, PTX newer than the driver and newer driver features do not), or not."""
    toolkit = data.toolkit(cuda)
    if driver is None or toolkit is None:
        return "no"
    have = parse_version(driver)
    if have >= parse_version(toolkit.driver):
        return "native"
    floor = data.minor_compat.get(cuda[0])
    return "minor-compat" if floor is not None and have >= parse_version(floor) else "no"


def arch_coverage(arch_list: Iterable[str], cc: str | None) -> Coverage:
    """How an arch list (TORCH_CUDA_ARCH_LIST style: 8.0, 9.0a, 12.0+PTX) reaches a GPU of
    compute capability `cc`: `sass` when some entry's machine code runs on it (same major,
    minor no newer; an `a` entry only on exactly its own), `ptx` when only PTX can be
    JIT-compiled for it (slow first start), `none` when nothing runs."""
    if cc is None:
        return "unknown"
    major, minor = (int(x) for x in cc.split("."))
    found: Coverage = "none"
    for entry in arch_list:
        m = _ARCH.fullmatch(entry.strip())
        if not m:
            continue
        arch = (int(m.group(1)), int(m.group(2)))
        exact_only = m.group(3) == "a"
        if arch == (major, minor) or (not exact_only and arch[0] == major and arch[1] <= minor):
            return "sass"
        if m.group(4) and not m.group(3) and arch <= (major, minor):
            found = "ptx"
    return found


def toolkit_coverage(toolkit: compat.CudaToolkit, cc: str | None) -> Coverage:
    """Whether a CUDA release can compile machine code for a GPU at all (its nvcc's
    architectures), or only PTX that a GPU newer than all of them JIT-compiles."""
    if cc is None:
        return "unknown"
    cov = arch_coverage(toolkit.archs, cc)
    if cov == "none" and parse_version(cc) > parse_version(toolkit.archs[-1]):
        return "ptx"
    return cov


def candidate_variants(targets: Sequence[Target], data: Compat) -> list[str]:
    """The CUDA variants worth judging: every one PyTorch has published and every configured
    one, oldest first."""
    found = {v for rel in data.torch.values() for v in rel.variants if cuda_of(v)}
    found |= {t.accel for t in targets if cuda_of(t.accel)}
    return sorted(found, key=lambda v: cuda_of(v) or (0, 0))


def variant_fit(facts: HostFacts, accel: str, data: Compat) -> VariantFit:
    cuda = cuda_of(accel) or (0, 0)
    toolkit = data.toolkit(cuda)
    driver = facts.driver.version if facts.driver else None
    gpus: tuple[tuple[int, Coverage], ...] = tuple(
        (g.index, toolkit_coverage(toolkit, g.cc) if toolkit else "unknown") for g in facts.gpus
    )
    return VariantFit(
        accel=accel,
        cuda=show(cuda),
        driver_needs=toolkit.driver if toolkit else None,
        runs=driver_runs(driver, cuda, data) if facts.gpus else "no",
        gpus=gpus,
    )


def recommend(
    facts: HostFacts,
    fits: Sequence[VariantFit],
    targets: Sequence[Target],
    allowed: set[str] | None = None,
    allowed_why: str = "",
) -> Recommendation:
    """The accelerator to use here: the newest CUDA variant the driver runs natively and
    whose toolkit compiles for every GPU (minor-version compatibility only when nothing runs
    natively); `cpu` when there is no GPU, no driver, or no variant fits. `allowed` narrows
    the choice to the builds the pinned frameworks publish."""

    def chosen(accel: str, why: str) -> Recommendation:
        return Recommendation(
            accel=accel, why=why, targets=tuple(t.name for t in targets if t.accel == accel)
        )

    if not facts.gpus:
        if facts.pci_gpus:
            return chosen("cpu", "an NVIDIA GPU is on the PCI bus but no NVIDIA driver is loaded")
        if facts.driver:
            return chosen("cpu", f"driver {facts.driver.version} is loaded but lists no GPU")
        return chosen("cpu", "no NVIDIA GPU or driver found")
    pool = [f for f in fits if allowed is None or f.accel in allowed]
    usable = [f for f in pool if f.runs != "no" and f.serves_every_gpu]
    native = [f for f in usable if f.runs == "native"]
    best = max(native or usable, key=lambda f: parse_version(f.cuda), default=None)
    driver = facts.driver.version if facts.driver else "none"
    if best is None:
        ccs = ", ".join(sorted({g.cc or "?" for g in facts.gpus}))
        return chosen(
            "cpu",
            f"no CUDA variant{allowed_why} both runs on driver {driver} and compiles for "
            f"compute capability {ccs}",
        )
    how = (
        "the newest CUDA variant"
        + allowed_why
        + f" that driver {driver} runs"
        + (" natively" if best.runs == "native" else " (through minor-version compatibility only)")
        + " and whose toolkit compiles for every GPU here"
    )
    return chosen(best.accel, how)


def _isa_rank(level: str | None) -> int:
    return compat.ISA_LEVELS.index(level) if level in compat.ISA_LEVELS else -1


def base_fits(facts: HostFacts, target: Target) -> tuple[BaseFit, ...]:
    """Each known runtime base for the target, and whether its glibc accepts every wheel the
    target's policy allows and its ISA level runs on this CPU."""
    ceiling = policy.glibc_of(target.platform_ceiling)
    out = []
    for base in runtime_bases(target):
        why = None
        if ceiling is not None and base.os.glibc < ceiling:
            why = (
                f"glibc {show(base.os.glibc)} < {show(ceiling)} that "
                f"{target.platform_ceiling} wheels may need"
            )
        elif facts.cpu.isa is not None and _isa_rank(base.os.isa) > _isa_rank(facts.cpu.isa):
            why = f"built for {base.os.isa}; this CPU is {facts.cpu.isa}"
        out.append(
            BaseFit(
                image=base.image,
                os=base.os.name,
                glibc=show(base.os.glibc),
                isa=base.os.isa,
                fits=why is None,
                why=why,
                apt_python=base.apt_python,
            )
        )
    return tuple(out)


def check_target(facts: HostFacts, target: Target, data: Compat) -> tuple[TargetFit, list[Problem]]:
    """Whether `target`'s wheels run on this host: the driver for its CUDA, its arch list for
    every GPU, and which base images fit its policy and this CPU."""
    problems: list[Problem] = []

    def problem(level: Level, code: str, message: str) -> None:
        problems.append(Problem(level=level, code=code, message=message, target=target.name))

    runs: Runs = "native"
    coverage: tuple[tuple[int, Coverage], ...] = ()
    cuda = cuda_of(target.accel)
    if cuda is not None:
        fit = variant_fit(facts, target.accel, data)
        runs = fit.runs
        coverage = tuple((g.index, arch_coverage(target.arch_list, g.cc)) for g in facts.gpus)
        _cuda_problems(facts, target, fit, cuda, data, problem)
        for gpu, (_, cov) in zip(facts.gpus, coverage, strict=True):
            _arch_problem(target, gpu, cov, problem)
    bases = base_fits(facts, target)
    if bases and not any(b.fits for b in bases):
        problem(
            "warning",
            "no-base",
            f"no known {'python' if cuda is None else 'nvidia/cuda runtime'} base image fits "
            f"{target.name}: " + "; ".join(f"{b.image}: {b.why}" for b in bases),
        )
    ceiling = policy.glibc_of(target.platform_ceiling)
    if facts.glibc and ceiling and facts.glibc < ceiling:
        problem(
            "warning",
            "host-glibc",
            f"{target.name} accepts wheels up to {target.platform_ceiling}; this host's glibc "
            f"is {show(facts.glibc)}: they install in a fitting image, not on the host itself",
        )
    fit_record = TargetFit(
        name=target.name,
        accel=target.accel,
        policy=target.policy,
        platform_ceiling=target.platform_ceiling,
        runs=runs,
        arch_list=target.arch_list,
        gpus=coverage,
        bases=bases,
    )
    return fit_record, problems


def _cuda_problems(
    facts: HostFacts,
    target: Target,
    fit: VariantFit,
    cuda: Version,
    data: Compat,
    report: Emit,
) -> None:
    if not facts.gpus:
        report(
            "error",
            "no-gpu",
            f"{target.name} is a CUDA target, but this host has no usable NVIDIA GPU: its "
            "CUDA code cannot run here (use a cpu target)",
        )
        return
    driver = facts.driver.version if facts.driver else "none"
    floor = data.minor_compat.get(cuda[0])
    if fit.driver_needs is None:
        report(
            "warning",
            "unknown-cuda",
            f"CUDA {fit.cuda} ({target.accel}) is not in prewheel's table "
            "(builder/data/cuda.toml): its driver needs are not checked",
        )
    elif fit.runs == "no":
        newest = newest_cuda(facts, data, native=True) or "none"
        report(
            "error",
            "driver-too-old",
            f"{target.name} needs CUDA {fit.cuda}: driver {fit.driver_needs} or newer"
            + (
                f" (or {floor} through minor-version compatibility)"
                if floor and floor != fit.driver_needs
                else ""
            )
            + f"; this host's driver {driver} runs CUDA {newest} at most",
        )
    elif fit.runs == "minor-compat":
        report(
            "warning",
            "minor-version-compat",
            f"{target.name} runs on driver {driver} only through CUDA minor-version "
            f"compatibility (CUDA {fit.cuda} wants {fit.driver_needs}): machine code for these "
            "GPUs works, PTX newer than the driver cannot be JIT-compiled and features that "
            f"need a newer driver fail; upgrade the driver to {fit.driver_needs} or newer",
        )


def _arch_problem(target: Target, gpu: Gpu, cov: Coverage, report: Emit) -> None:
    arch = ", ".join(target.arch_list) or "(empty)"
    if cov == "none":
        report(
            "error",
            "arch-not-covered",
            f"GPU {gpu.index} ({gpu.name}, compute capability {gpu.cc}) is not covered by "
            f"{target.name}'s arch list {arch}: its kernels fail with 'no kernel image is "
            f"available'; add {gpu.cc} to [accel.{target.accel}] arch_list",
        )
    elif cov == "ptx":
        report(
            "warning",
            "ptx-only",
            f"GPU {gpu.index} ({gpu.name}, compute capability {gpu.cc}) runs {target.name}'s "
            f"kernels only by JIT-compiling PTX (arch list {arch}): slow first start; add "
            f"{gpu.cc} to [accel.{target.accel}] arch_list",
        )
    elif cov == "unknown":
        report(
            "warning",
            "cc-unknown",
            f"GPU {gpu.index} ({gpu.name}): its compute capability is unknown, so "
            f"{target.name}'s arch list is not checked (NVML or nvidia-smi tell it)",
        )


def newest_cuda(facts: HostFacts, data: Compat, *, native: bool) -> str | None:
    """The newest CUDA release in the table this host's driver runs (natively, or with
    minor-version compatibility too)."""
    if not facts.gpus or facts.driver is None:
        return None
    ok = ("native",) if native else ("native", "minor-compat")
    runs = [v for v in data.toolkits if driver_runs(facts.driver.version, v, data) in ok]
    return show(max(runs)) if runs else None


def host_problems(facts: HostFacts) -> list[Problem]:
    out = []
    if facts.pci_gpus and not facts.gpus:
        out.append(
            Problem(
                level="warning",
                code="gpu-without-driver",
                message="NVIDIA GPU(s) on the PCI bus ("
                + ", ".join(facts.pci_gpus)
                + ") but no NVIDIA driver is loaded: install the driver to use them",
            )
        )
    if facts.cpu.isa is not None and _isa_rank(facts.cpu.isa) < 1:
        out.append(
            Problem(
                level="warning",
                code="isa",
                message=f"this CPU is {facts.cpu.isa} (lacks "
                + " ".join(facts.cpu.missing_for_next)
                + "): RHEL 9-based images (ubi9, rockylinux9) and wheels built for "
                "x86-64-v2 or newer crash here with SIGILL",
            )
        )
    return out


def diagnose(
    facts: HostFacts,
    targets: Sequence[Target],
    *,
    data: Compat | None = None,
    pin_problems: Sequence[Problem] = (),
    allowed: set[str] | None = None,
    allowed_why: str = "",
) -> DoctorReport:
    """The whole report: variants, the recommendation, every target's fit, every problem."""
    data = data or compat.load()
    fits = tuple(variant_fit(facts, v, data) for v in candidate_variants(targets, data))
    rec = recommend(facts, fits, targets, allowed, allowed_why)
    problems = host_problems(facts)
    target_fits = []
    for target in targets:
        fit, found = check_target(facts, target, data)
        target_fits.append(fit)
        problems += found
    if rec.accel != "cpu" and not rec.targets and targets:
        problems.append(
            Problem(
                level="warning",
                code="recommendation-not-configured",
                message=f"this host runs {rec.accel} best, but none of the targets checked "
                f'uses it: add "{rec.accel}" to [targets] accel',
            )
        )
    return DoctorReport(
        facts=facts,
        newest_native=newest_cuda(facts, data, native=True),
        newest_compat=newest_cuda(facts, data, native=False),
        variants=fits,
        recommendation=rec,
        targets=tuple(target_fits),
        problems=tuple(problems) + tuple(pin_problems),
    )
