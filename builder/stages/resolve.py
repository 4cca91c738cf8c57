"""Resolving the pinned closure with the target's own interpreter and pip's resolver."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from .. import scratch, stamp
from ..cmd import run
from ..errors import CommandError, CommandTimeout, HashMismatchError, ResolutionError
from ..indexproxy import IndexProxy
from ..requirements import Pin
from ..sandbox import Policy, interpreter_paths
from ..targets import Target


@dataclass(frozen=True, kw_only=True)
class Resolved:
    name: str
    version: str
    requested: bool


def resolve_closure(
    target: Target,
    pins: list[Pin],
    upstreams: tuple[str, ...],
    *,
    policy: Policy,
    timeout: float,
) -> list[Resolved]:
    """`pip install --dry-run --ignore-installed --report` with the target interpreter,
    against the target accelerator's indexes (the first, then the extra ones).

    Markers are evaluated for that interpreter, so each target gets its own closure. pip runs
    sdists' `setup.py` to read their metadata, so it runs in the sandbox: no network but the
    upstream index through `IndexProxy`, no secrets, nothing writable but its own directory,
    and `timeout` seconds at most.
    """
    assert target.interpreter is not None
    stamp.volatile(f"pip to resolve the closure for {target.name}")
    scratch.clean_stale()  # what killed runs left
    with tempfile.TemporaryDirectory(prefix="resolve-") as tmp:
        box = policy.box(
            Path(tmp),
            readable=interpreter_paths(target.interpreter.path),
            index_socket=Path(tmp) / "index.sock",
        )
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("".join(p.requirement + "\n" for p in pins), encoding="utf-8")
        report = Path(tmp) / "report.json"
        urls = box.index_urls(upstreams)
        argv = [
            *target.interpreter.pip(),
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--index-url",
            urls[0],
            *(a for u in urls[1:] for a in ("--extra-index-url", u)),
            "-r",
            str(reqs),
        ]
        proxy = (
            IndexProxy(upstreams, box.index_socket) if box.index_socket and box.proxied else None
        )
        try:
            with proxy or contextlib.nullcontext():
                run(argv, step="resolve", cwd=Path(tmp), timeout=timeout, sandbox=box)
        except CommandTimeout as exc:
            raise ResolutionError(
                f"resolving for {target.name} ran past its time limit of {timeout:.0f}s and was "
                f"stopped (pip runs the setup.py of sdists to read their metadata): "
                f"{_pip_reason(exc.tail)}",
                hint="raise [build] timeout if resolving is just slow",
            ) from exc
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
                f"{_pip_reason(exc.tail)}{_subprocess_output(exc.tail)}",
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


def _subprocess_output(output: str) -> str:
    """When a package's own code failed while pip prepared its metadata, what it printed
    (pip says only "see above"), indented under the error."""
    if "originates from a subprocess" not in output:
        return ""
    lines = output.rstrip().splitlines()
    start = next((i for i, ln in enumerate(lines) if "─> [" in ln), max(0, len(lines) - 15))
    end = next((i for i in range(start, len(lines)) if "[end of output]" in lines[i]), start + 20)
    shown = [ln.rstrip() for ln in lines[start : min(end, start + 20) + 1] if ln.strip()]
    return "\n" + "\n".join(f"    {ln.strip()}" for ln in shown)


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
