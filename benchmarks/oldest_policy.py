"""The oldest manylinux policy each package of the real-world set reaches: host toolchain vs zig.

The set of `real_world.py` (real PyPI sdist-only packages, numpy pinned as a fresh resolve
gives), built twice in one run with `policy = "auto"` (the lowest policy auditwheel
reaches): with the host's gcc, then with `toolchain = "zig"` (zig from prewheel's
environment, compiling for glibc 2.17). For each package: the oldest platform tag repair
gave (from the build record, whatever the checks after repair decided), whether the wheel
passed every check and was published (or which check caught it), and its `.so` size.

Needs PyPI. The zig build fills zig's cache first (libc++ for the target: minutes).

    python benchmarks/oldest_policy.py [--quick] [--python 3.11] [--jobs 2] [--workdir DIR]
                                       [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from real_world import PYPI, kib, prepare, records, run_build


def build(
    work: Path, toolchain: str, reqs: Path, pythons: list[str], jobs: int, sandbox: str
) -> tuple[Path, float]:
    config = (
        f'[index]\nupstream = "{PYPI}"\n\n[build]\nsandbox = "{sandbox}"\n\n'
        f'[targets]\npython = {json.dumps(pythons)}\npolicy = ["auto"]\ntoolchain = "{toolchain}"\n'
    )
    _, wh, took = run_build(work / toolchain, config, reqs, jobs)
    return wh, took


def outcome(rec: dict[str, Any] | None) -> dict[str, Any]:
    """The oldest policy reached and what became of the wheel, from its build record."""
    if rec is None:
        return {"oldest": None, "result": "not built"}
    platforms = rec.get("platforms") or []
    oldest = next((p for p in platforms if p.startswith("manylinux")), None)
    if rec["result"] == "ok":
        result = "published"
    elif rec.get("build_finished") is None:
        result = f"failed at {rec.get('step')}"
    else:
        result = f"caught by {rec.get('check') or rec.get('step')}"
    sizes = rec.get("sizes") or {}
    return {
        "oldest": oldest,
        "result": result,
        "so_bytes": sizes.get("shared_objects"),
        "error": (rec.get("error") or "")[:160] if rec["result"] == "failed" else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four packages")
    ap.add_argument("--python", action="append", help="target Pythons (default 3.11)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/prewheel-bench-oldest-policy"))
    ap.add_argument(
        "--sandbox",
        default="auto",
        help="[build] sandbox (none: where the sandbox's index proxy refuses the index's file "
        "host, e.g. one that resolves to a private address behind a proxy)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pythons = args.python or ["3.11"]
    work: Path = args.workdir
    chosen, reqs = prepare(work, quick=args.quick)
    seconds: dict[str, float] = {}
    found: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for toolchain in ("host", "zig"):
        wh, seconds[toolchain] = build(work, toolchain, reqs, pythons, args.jobs, args.sandbox)
        found[toolchain] = records(wh)
    rows = []
    targets = sorted({t for recs in found.values() for (_, t) in recs})
    for spec, lang, _ in chosen:
        name = spec.split("==")[0].lower()
        for target in targets:
            rows.append(
                {
                    "package": spec,
                    "lang": lang,
                    "target": target,
                    **{tc: outcome(found[tc].get((name, target))) for tc in ("host", "zig")},
                }
            )
    result = {"pythons": pythons, "rows": rows, "build_seconds": seconds}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'package':28} {'lang':4} {'host: oldest, result':48} zig: oldest, result")
    for row in rows:
        cells = []
        for tc in ("host", "zig"):
            o = row[tc]
            size = f", .so {kib(o['so_bytes'])}" if o.get("so_bytes") else ""
            cells.append(f"{o['oldest'] or '-'} ({o['result']}{size})")
        print(f"{row['package']:28} {row['lang']:4} {cells[0]:48} {cells[1]}")
    for row in rows:
        for tc in ("host", "zig"):
            if row[tc].get("error"):
                print(f"  {row['package']} ({tc}): {row[tc]['error']}")
    print(
        "build time: "
        + ", ".join(f"{tc} {s:.0f} s" for tc, s in seconds.items())
        + " (one run each; zig's first includes filling its cache)"
    )


if __name__ == "__main__":
    main()
