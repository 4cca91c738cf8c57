"""Resolving the pinned closure with the target's own interpreter and pip's resolver."""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .. import stamp
from ..cmd import clean_env, run
from ..errors import CommandError, HashMismatchError, ResolutionError
from ..requirements import Pin
from ..targets import Target


@dataclass(frozen=True, kw_only=True)
class Resolved:
    name: str
    version: str
    requested: bool


def resolve_closure(target: Target, pins: list[Pin], upstreams: tuple[str, ...]) -> list[Resolved]:
    """`pip install --dry-run --ignore-installed --report` with the target interpreter,
    against the target accelerator's indexes (the first, then the extra ones).

    Markers are evaluated for that interpreter, so each target gets its own closure.
    """
    assert target.interpreter is not None
    stamp.volatile(f"pip to resolve the closure for {target.name}")
    with tempfile.TemporaryDirectory(prefix="prewheel-resolve-") as tmp:
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("".join(p.requirement + "\n" for p in pins), encoding="utf-8")
        report = Path(tmp) / "report.json"
        argv = [
            *target.interpreter.pip(),
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--index-url",
            upstreams[0],
            *(a for u in upstreams[1:] for a in ("--extra-index-url", u)),
            "-r",
            str(reqs),
        ]
        try:
            run(
                argv,
                step="resolve",
                env=clean_env({"PIP_NO_CACHE_DIR": "0"}),
                cwd=Path(tmp),
                timeout=1800,
            )
        except CommandError as exc:
            if "DO NOT MATCH THE HASHES" in exc.tail:
                raise HashMismatchError(
                    f"pip refused a file while resolving for {target.name}: its bytes do not "
                    f"match the sha256 the index gave: {_hash_lines(exc.tail)}",
                    step="resolve",
                    hint="the upstream file changed after the index listed it; nothing was "
                    "published",
                ) from exc
            raise ResolutionError(
                f"pip could not resolve the requirements for {target.name}: "
                f"{_pip_reason(exc.tail)}",
                hint="check that every pin exists on the upstream index for this Python",
            ) from exc
        data = json.loads(report.read_text(encoding="utf-8"))
    return [
        Resolved(
            name=canonicalize_name(item["metadata"]["name"]),
            version=item["metadata"]["version"],
            requested=bool(item.get("requested")),
        )
        for item in data.get("install", [])
    ]


def _pip_reason(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    picked = errors or lines[-3:]
    return re.sub(r"\s+", " ", " / ".join(picked))[:600]


def _hash_lines(output: str) -> str:
    """pip's lines that name the file, the expected and the actual sha256."""
    keep = ("Expected", "Got", " from ")
    lines = [ln.strip() for ln in output.splitlines() if any(k in ln for k in keep)]
    return re.sub(r"\s+", " ", " / ".join(lines))[:600] or _pip_reason(output)
