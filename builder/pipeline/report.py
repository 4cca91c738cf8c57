"""What a build run reports: one result per (target, package), the run's totals, and what the
plan could not do (skipped targets, unpinned closure members).

The pipeline fills it; the CLI renders its JSON (`summary`), and the no-op stamp keeps that
JSON to answer the next identical run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeAlias

from ..errors import StepError
from ..records import Reproduction
from ..stages.plan import PlanItem
from ..targets import Target

Status: TypeAlias = Literal["built", "downloaded", "cached", "skipped", "failed"]
STATUSES: tuple[Status, ...] = ("built", "downloaded", "cached", "skipped", "failed")


@dataclass(frozen=True, kw_only=True)
class ItemResult:
    item: PlanItem
    status: Status
    wheel: str | None = None
    duration: float = 0.0
    error: str | None = None
    step: str | None = None
    log: str | None = None
    tail: str = ""
    warnings: tuple[str, ...] = ()
    exit_code: int = 0  # of a failure: 1, or 3 for a hash mismatch
    check: str | None = None  # of a failure: the check that caught it ("abi", "smoke", ...)
    checks: tuple[str, ...] = ()  # of a verified wheel: the checks it passed
    strip_saved: int | None = None  # of a built wheel: bytes strip took off its objects
    # Of a wheel built twice (--check-reproducible): the second build's outcome.
    reproduction: Reproduction | None = None
    hint: str | None = None  # of a failure: what to try
    toolchain: str | None = None  # of a built wheel: what compiled it ("host gcc ...", "zig ...")
    # Of a failure: it failed before under the same cache key and was not tried again.
    cached_failure: bool = False

    @classmethod
    def failure(
        cls,
        item: PlanItem,
        exc: StepError,
        *,
        duration: float = 0.0,
        log: str | None = None,
        cached: bool = False,
    ) -> ItemResult:
        return cls(
            item=item,
            status="failed",
            error=exc.message,
            step=exc.step,
            log=log or exc.log,
            tail=exc.tail,
            duration=duration,
            exit_code=exc.exit_code,
            check=exc.check,
            hint=exc.hint,
            cached_failure=cached,
        )

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
            "check": self.check,
            "checks": list(self.checks),
            "strip_saved": self.strip_saved,
            "reproduction": self.reproduction.to_json() if self.reproduction else None,
            "hint": self.hint,
            "toolchain": self._toolchain(),
            "cached_failure": self.cached_failure,
        }

    def _toolchain(self) -> str | None:
        """What compiled the wheel: the build's own line, or for a wheel taken from the
        cache, its key's (`host` or `zig 0.13.0 x86_64-linux-gnu.2.28`) and baseline."""
        if self.toolchain or self.status not in ("built", "cached") or self.item.key is None:
            return self.toolchain
        inputs = self.item.key.inputs
        if inputs.toolchain is None:
            return None
        return f"{inputs.toolchain}, {inputs.isa}" if inputs.isa else inputs.toolchain


@dataclass(kw_only=True)
class BuildReport:
    results: list[ItemResult] = field(default_factory=list)
    duration: float = 0.0
    skipped_targets: tuple[Target, ...] = ()
    unpinned: tuple[str, ...] = ()
    requirements: str | None = None  # the file the run was asked to build, for messages

    @property
    def failed(self) -> list[ItemResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def exit_code(self) -> int:
        """0, or the most serious failure's code (a hash mismatch before a failed build)."""
        return max((r.exit_code or 1 for r in self.failed), default=0)

    @property
    def nothing_to_do(self) -> bool:
        """Nothing was built, downloaded or tried: a failure kept from before counts as
        nothing to do, so the stamp can answer the next identical run (exit 1 again)."""
        return all(r.status in ("cached", "skipped") or r.cached_failure for r in self.results)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATUSES, 0)
        for r in self.results:
            out[r.status] += 1
        return out

    def caught(self) -> dict[str, int]:
        """Failures per check that caught them (a wheel that built but would not work)."""
        out: dict[str, int] = {}
        for r in self.failed:
            if r.check:
                out[r.check] = out.get(r.check, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {
            "duration": round(self.duration, 3),
            "counts": self.counts(),
            "caught": self.caught(),
            "results": [r.to_json() for r in self.results],
            "skipped_targets": [
                {"target": t.name, "reason": t.missing} for t in self.skipped_targets
            ],
            "unpinned": list(self.unpinned),
            "requirements": self.requirements,
            "fast_path": False,
        }


class Reporter(Protocol):
    """Hears about progress while the run goes (the CLI's live display)."""

    def step(self, item: PlanItem, step: str) -> None: ...
    def finished(self, result: ItemResult) -> None: ...


class SilentReporter:
    def step(self, item: PlanItem, step: str) -> None:
        pass

    def finished(self, result: ItemResult) -> None:
        pass
