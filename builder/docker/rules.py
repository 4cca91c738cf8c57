"""The CI rules an image audit is gated by: Dive's three, from options or a `.dive-ci` file.

Dive reads `rules.lowestEfficiency`, `rules.highestWastedBytes` and
`rules.highestUserWastedPercent` from `.dive-ci` (YAML), each a number, a byte size ("20MB",
parsed like go-humanize: MB = 1000^2, MiB = 1024^2) or "disabled"; a command-line value wins
over the file, and `dive --ci` fills unset rules with its defaults (0.9, disabled, 0.1).
A rule fails when the image is strictly past it, as in Dive. Two differences, both in the
user's favour: a fraction may also be written as a percentage ("90%"), and a value that does
not parse is an error naming the file and key (exit 2) rather than a failed CI run.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..errors import ImageError
from .dive import DiveMeasures

EFFICIENCY = "lowestEfficiency"
WASTED_BYTES = "highestWastedBytes"
WASTED_PERCENT = "highestUserWastedPercent"
DIVE_DEFAULTS = {EFFICIENCY: "0.9", WASTED_BYTES: "disabled", WASTED_PERCENT: "0.1"}
_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "ki": 2**10, "kib": 2**10,
    "m": 10**6, "mb": 10**6, "mi": 2**20, "mib": 2**20,
    "g": 10**9, "gb": 10**9, "gi": 2**30, "gib": 2**30,
    "t": 10**12, "tb": 10**12, "ti": 2**40, "tib": 2**40,
    "p": 10**15, "pb": 10**15, "pi": 2**50, "pib": 2**50,
}  # fmt: skip
Status = Literal["pass", "fail", "disabled"]


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    value: str  # as configured
    source: str  # "--min-efficiency", ".dive-ci", "Dive's default"


@dataclass(frozen=True, kw_only=True)
class Verdict:
    rule: Rule
    status: Status
    measured: str
    message: str


def parse_bytes(text: str) -> int:
    """A size as Dive reads one (go-humanize ParseBytes): "20MB", "1.5 GiB", "4096"."""
    m = re.fullmatch(r"\s*([\d.,]+)\s*([a-zA-Z]*)\s*", text)
    unit = _UNITS.get(m.group(2).lower()) if m else None
    if m is None or unit is None:
        raise ValueError(f"not a byte size: {text!r} (like 20MB, 512KiB or 1048576)")
    return int(float(m.group(1).replace(",", "")) * unit)


def parse_fraction(text: str) -> float:
    """A ratio between 0 and 1 ("0.9"), or a percentage ("90%")."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ValueError(f"not a ratio: {text!r} (like 0.9 or 90%)") from None
    if not 0 <= value <= 1:
        raise ValueError(f"{text!r} is outside 0-1")
    return value


def _check(name: str, value: str, where: str) -> None:
    if value == "disabled":
        return
    try:
        parse_bytes(value) if name == WASTED_BYTES else parse_fraction(value)
    except ValueError as exc:
        raise ImageError(f"{where}: {exc}") from exc


def read_dive_ci(path: Path) -> dict[str, str]:
    """The rules of a Dive `.dive-ci` file; other keys (Dive plugins) are left alone."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ImageError(f"{path}: cannot read it as YAML: {exc}") from exc
    rules = raw.get("rules") if isinstance(raw, Mapping) else None
    if rules is None:
        return {}
    if not isinstance(rules, Mapping):
        raise ImageError(f"{path}: rules: expected a mapping of rule names to values")
    out = {}
    for name in DIVE_DEFAULTS:
        if name in rules:
            value = "disabled" if rules[name] is False else str(rules[name])
            _check(name, value, f"{path}: rules.{name}")
            out[name] = value
    return out


def configure(
    options: Mapping[str, str | None], dive_ci: Path | None, *, ci_defaults: bool
) -> list[Rule]:
    """The rules in force: each option given, else the .dive-ci value, else (with --ci)
    Dive's default."""
    from_file = read_dive_ci(dive_ci) if dive_ci is not None else {}
    flags = {EFFICIENCY: "--min-efficiency", WASTED_BYTES: "--max-wasted-bytes",
             WASTED_PERCENT: "--max-wasted-percent"}  # fmt: skip
    rules = []
    for name, default in DIVE_DEFAULTS.items():
        value = options.get(name)
        if value is not None:
            _check(name, value, flags[name])
            rules.append(Rule(name=name, value=value, source=flags[name]))
        elif name in from_file:
            rules.append(Rule(name=name, value=from_file[name], source=str(dive_ci)))
        elif ci_defaults:
            rules.append(Rule(name=name, value=default, source="Dive's default"))
    return rules


def evaluate(rules: list[Rule], measures: DiveMeasures) -> list[Verdict]:
    out = []
    for rule in rules:
        if rule.value == "disabled":
            out.append(Verdict(rule=rule, status="disabled", measured="", message="disabled"))
            continue
        if rule.name == EFFICIENCY:
            limit, have = parse_fraction(rule.value), measures.efficiency
            failed = limit > have
            measured, message = f"{have:.4%}", f"efficiency {have:.4%}, lowest allowed {limit:.2%}"
        elif rule.name == WASTED_BYTES:
            cap, wasted = parse_bytes(rule.value), measures.wasted_bytes
            failed = wasted > cap
            measured, message = f"{wasted} bytes", f"wasted {wasted:,} bytes, at most {cap:,}"
        else:
            limit, pct = parse_fraction(rule.value), measures.user_wasted_percent
            failed = not math.isnan(pct) and pct > limit
            measured = "n/a" if math.isnan(pct) else f"{pct:.4%}"
            message = (
                f"user-wasted {measured} of the bytes above the base layer, at most {limit:.2%}"
            )
        out.append(
            Verdict(
                rule=rule, status="fail" if failed else "pass", measured=measured, message=message
            )
        )
    return out


def rules_json(verdicts: list[Verdict]) -> list[dict[str, Any]]:
    return [
        {
            "rule": v.rule.name,
            "value": v.rule.value,
            "source": v.rule.source,
            "status": v.status,
            "measured": v.measured,
            "message": v.message,
        }
        for v in verdicts
    ]
