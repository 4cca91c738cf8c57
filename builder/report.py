"""What a build run reports: one result per (target, package), and the run's totals.

The pipeline fills it; the CLI prints it as a table or JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from .plan import PlanItem


@dataclass(frozen=True, kw_only=True)
class ItemResult:
    item: PlanItem
    status: str  # built | downloaded | cached | skipped | failed
    wheel: str | None = None
    duration: float = 0.0
    error: str | None = None
    step: str | None = None
    log: str | None = None
    tail: str = ""
    warnings: tuple[str, ...] = ()
    exit_code: int = 0  # of a failure: 1, or 3 for a hash mismatch

    def to_json(self) -> dict[str, Any]:
        return {
            **self.item.to_json(),
            "status": self.status,
            "wheel": self.wheel,
            "duration": round(self.duration, 3),
            "error": self.error,
            "step": self.step,
            "log": self.log,
            "tail": self.tail,
            "warnings": list(self.warnings),
            "exit_code": self.exit_code,
        }


@dataclass(kw_only=True)
class BuildReport:
    results: list[ItemResult] = field(default_factory=list)
    duration: float = 0.0

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0, or the most serious failure's code (a hash mismatch before a failed build)."""
        return max((r.exit_code or 1 for r in self.failed), default=0)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(("built", "downloaded", "cached", "skipped", "failed"), 0)
        for r in self.results:
            out[r.status] += 1
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "results": [r.to_json() for r in self.results],
        }


class Reporter(Protocol):
    def step(self, item: PlanItem, step: str) -> None: ...
    def finished(self, result: ItemResult) -> None: ...
