"""The build summary, rendered from the report's JSON: one table and its footer lines.

Both ways a `build` answers use it: the full run (as a rich table on a terminal, plain text
elsewhere) and the no-op stamp, which must not import rich. So this module imports nothing
but the standard library, and the columns are the same whichever path printed them.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: the stamp's answer uses this
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

COLUMNS = (
    "target", "package", "version", "result", "time", "stripped", "compiled by", "wheel / error"
)  # fmt: skip
ERROR_WIDTH = 70


def _short(text: str, width: int = ERROR_WIDTH) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= width else first[: width - 3] + "..."


def rows(report: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """One row per (target, package), sorted, as strings."""
    out: list[tuple[str, ...]] = []
    for r in sorted(report["results"], key=lambda r: (r["target"], r["name"])):
        shown = r["wheel"] or _short(r.get("error") or r.get("reason") or "")
        saved = r.get("strip_saved")
        out.append(
            (
                r["target"],
                r["name"],
                r["version"],
                status(r),
                f"{r['duration']:.1f}s",
                f"-{size(saved)}" if saved else "",
                _compiled_by(r.get("toolchain")),
                shown,
            )
        )
    return out


def _compiled_by(toolchain: str | None) -> str:
    """`zig 0.13.0 x86_64-linux-gnu.2.28, x86-64-v2` -> `zig glibc 2.28, x86-64-v2`;
    `host /usr/bin/x86_64-linux-gnu-gcc-12, x86-64-v2` -> `host, x86-64-v2`."""
    if not toolchain:
        return ""
    head, _, isa = toolchain.partition(", ")
    words = head.split()
    if words[0] == "zig" and words[-1].startswith("x86_64-linux-gnu."):
        head = f"zig glibc {words[-1].removeprefix('x86_64-linux-gnu.')}"
    else:
        head = words[0]
    return f"{head}, {isa}" if isa else head


def status(r: Mapping[str, Any]) -> str:
    """The result column: a failure kept from an earlier run says so."""
    return "failed (cached)" if r.get("cached_failure") else str(r["status"])


def exit_code(report: Mapping[str, Any]) -> int:
    """The exit status a report means: 0, or its most serious failure's code."""
    return max(
        (r.get("exit_code") or 1 for r in report["results"] if r["status"] == "failed"),
        default=0,
    )


def size(n: int) -> str:
    """Bytes for people: 812 B, 40.1 KiB, 3.2 MiB."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / 1024 / 1024:.1f} MiB"


def totals(report: Mapping[str, Any], seconds: float | None = None) -> str:
    counts = ", ".join(f"{n} {k}" for k, n in report["counts"].items())
    return f"{counts} in {report['duration'] if seconds is None else seconds:.1f}s"


def footer(report: Mapping[str, Any]) -> list[str]:
    """What follows the table: every failure with its step and log, skipped targets, and
    the note about unpinned closure members."""
    lines = [
        f"{status(r)} {r['name']} {r['version']} ({r['target']}) at {r['step']}: log {r['log']}"
        for r in sorted(report["results"], key=lambda r: (r["target"], r["name"]))
        if r["status"] == "failed"
    ]
    if any(r.get("cached_failure") for r in report["results"]):
        lines.append(
            "failed (cached): not tried again while the cache key is the same; "
            "--retry-failed builds them again"
        )
    lines += [f"skipped target {t['target']}: {t['reason']}" for t in report["skipped_targets"]]
    if report.get("caught"):
        caught = ", ".join(f"{n} by {check}" for check, n in report["caught"].items())
        lines.append(f"caught before publishing: {caught}")
    saved = [r["strip_saved"] for r in report["results"] if r.get("strip_saved")]
    if saved:
        lines.append(
            f"stripped: {size(sum(saved))} taken off the shared objects of {len(saved)} "
            "built wheel(s)"
        )
    if report.get("unpinned"):
        lines.append(unpinned_note(report.get("requirements") or "the requirements", report))
    return lines


def unpinned_note(requirements: str, report: Mapping[str, Any]) -> str:
    return (
        f"not pinned in {requirements}: {', '.join(report['unpinned'])}; every run resolves "
        "the closure again (pin all of it, as pip-compile does, and a repeated build is "
        "answered in milliseconds)"
    )


def plain_table(table: Sequence[tuple[str, ...]]) -> list[str]:
    """The table as aligned text; the last column is not padded."""
    lines = [COLUMNS, *table]
    widths = [max(len(row[i]) for row in lines) for i in range(len(COLUMNS) - 1)]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
        for row in lines
    ]


def plain(report: Mapping[str, Any], seconds: float | None = None) -> str:
    """The whole summary as plain text."""
    return "\n".join([*plain_table(rows(report)), totals(report, seconds), *footer(report)])
