"""What the doctor concluded: frozen records, their JSON, and the exit code they mean."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from .facts import HostFacts

Runs = Literal["native", "minor-compat", "no"]
Coverage = Literal["sass", "ptx", "none", "unknown"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    """A mismatch the doctor found. Errors are what will not work on this host; warnings what
    works with a caveat; a `pin-*` error is a requirement that has no build for a target."""

    level: Literal["warning", "error"]
    code: str
    message: str
    target: str | None = None

    @property
    def is_pin_error(self) -> bool:
        return self.level == "error" and self.code.startswith("pin-")


@dataclass(frozen=True, kw_only=True)
class VariantFit:
    """One CUDA variant (cu128) on this host: whether its driver runs it, whether its toolkit
    compiles for every GPU here."""

    accel: str
    cuda: str
    driver_needs: str | None  # None: not in prewheel's table
    runs: Runs
    gpus: tuple[tuple[int, Coverage], ...]

    @property
    def serves_every_gpu(self) -> bool:
        return all(cov in ("sass", "unknown") for _, cov in self.gpus)


@dataclass(frozen=True, kw_only=True)
class BaseFit:
    image: str
    os: str
    glibc: str
    isa: str
    fits: bool
    why: str | None  # why not, when it does not fit
    apt_python: bool


@dataclass(frozen=True, kw_only=True)
class TargetFit:
    name: str
    accel: str
    policy: str
    platform_ceiling: str
    runs: Runs
    arch_list: tuple[str, ...]
    gpus: tuple[tuple[int, Coverage], ...]
    bases: tuple[BaseFit, ...]


@dataclass(frozen=True, kw_only=True)
class Recommendation:
    accel: str
    why: str
    targets: tuple[str, ...]  # configured targets with that accelerator


@dataclass(frozen=True, kw_only=True)
class DoctorReport:
    facts: HostFacts
    newest_native: str | None
    newest_compat: str | None
    variants: tuple[VariantFit, ...]
    recommendation: Recommendation
    targets: tuple[TargetFit, ...]
    problems: tuple[Problem, ...]

    @property
    def exit_code(self) -> int:
        """2: a pin has no build for a target (bad input); 1: a target will not run here;
        0: everything fits, warnings aside."""
        if any(p.is_pin_error for p in self.problems):
            return EXIT_BAD_INPUT
        if any(p.level == "error" for p in self.problems):
            return EXIT_FAILED
        return EXIT_OK

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.facts.to_json(),
            "cuda": {
                "newest_native": self.newest_native,
                "newest_minor_compat": self.newest_compat,
                "variants": [
                    {
                        "accel": v.accel,
                        "cuda": v.cuda,
                        "driver_needs": v.driver_needs,
                        "runs": v.runs,
                        "gpus": [{"index": i, "coverage": c} for i, c in v.gpus],
                    }
                    for v in self.variants
                ],
            },
            "recommendation": {
                "accel": self.recommendation.accel,
                "why": self.recommendation.why,
                "targets": list(self.recommendation.targets),
            },
            "targets": [
                {
                    "name": t.name,
                    "accel": t.accel,
                    "policy": t.policy,
                    "platform_ceiling": t.platform_ceiling,
                    "runs": t.runs,
                    "arch_list": list(t.arch_list),
                    "gpus": [{"index": i, "coverage": c} for i, c in t.gpus],
                    "bases": [
                        {
                            "image": b.image,
                            "os": b.os,
                            "glibc": b.glibc,
                            "isa": b.isa,
                            "fits": b.fits,
                            "why": b.why,
                            "apt_python": b.apt_python,
                        }
                        for b in t.bases
                    ],
                }
                for t in self.targets
            ],
            "problems": [
                {"level": p.level, "code": p.code, "target": p.target, "message": p.message}
                for p in self.problems
            ],
            "exit_code": self.exit_code,
        }
