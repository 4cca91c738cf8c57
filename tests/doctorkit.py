"""Recorded host trees for `prewheel doctor` (tests/data/doctor/<case>/) and how a report is
held against a case's expected.json. A held-out tree in the same layout is picked up as is."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

CASES = Path(__file__).parent / "data" / "doctor"


def case_dirs() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if (p / "expected.json").is_file())


def expected(case: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((case / "expected.json").read_text())
    return data


def check_report(report: dict[str, Any], want: dict[str, Any]) -> None:
    """Assert what expected.json pins down: the facts read, the choices made, the problems
    per target accelerator (codes, any order) and on the host, and the exit code."""
    host = report["host"]
    driver = host["driver"]["version"] if host["driver"] else None
    assert driver == want["driver"]
    gpus = [[g["name"], g["compute_capability"]] for g in host["gpus"]]
    assert gpus == want["gpus"]
    assert host["glibc"] == want["glibc"]
    assert host["cpu"]["isa_level"] == want["isa"]
    assert report["cuda"]["newest_native"] == want["newest_native"]
    assert report["cuda"]["newest_minor_compat"] == want["newest_minor_compat"]
    assert report["recommendation"]["accel"] == want["accel"], report["recommendation"]
    by_accel: dict[str, list[str]] = defaultdict(list)
    accel_of = {t["name"]: t["accel"] for t in report["targets"]}
    host_codes = []
    for p in report["problems"]:
        if p["target"] is None:
            host_codes.append(p["code"])
        else:
            by_accel[accel_of[p["target"]]].append(p["code"])
    for accel, codes in want["problems"].items():
        assert sorted(by_accel.get(accel, [])) == sorted(codes), (accel, report["problems"])
    assert set(by_accel) <= set(want["problems"]), report["problems"]
    assert sorted(host_codes) == sorted(want["host_problems"]), report["problems"]
    assert report["exit_code"] == want["exit_code"]
