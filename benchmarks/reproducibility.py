"""Reproducibility on real packages: the real-world set of benchmarks/real_world.py (real PyPI
sdist-only packages) built twice, from empty wheelhouses in two unrelated directories (and
two temp dirs), then every wheel built both times compared by sha256; the share that is
bit-identical (goal: >= 90 %), and for each one that is not, the members that differ (the
cause; diffoscope's summary too when it is installed). Then the time the SBOM adds per wheel:
for each built wheel, the SBOM document made from its record and the final re-zip with and
without it, timed in this process (median of repeated runs).

Needs PyPI and two builds of the set (minutes on 2 cores).

    python benchmarks/reproducibility.py [--quick] [--python 3.11 ...] [--jobs 2]
                                         [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_world import EXTRA_PINS, PYPI, prepare, run_build

GOAL = 90.0


# PyPI's files live on another host than its pages. Where that host resolves to an address
# that is not public (an intercepting proxy; on the development machines it is TEST-NET-3),
# the sandbox's index proxy refuses its files unless it is one of the upstreams: it is listed
# as an extra one (its /simple/ pages are 404s, which pip skips).
FILES_UPSTREAM = "https://files.pythonhosted.org/simple/"


def build(
    root: Path, reqs: Path, pythons: list[str], jobs: int, files_upstream: str
) -> tuple[dict[str, Any], float]:
    """One `prewheel build --json` into `root/wheelhouse`, with TMPDIR `root/t`."""
    (root / "t").mkdir(parents=True)
    extra = f'\n[accel.cpu]\nextra_upstreams = ["{files_upstream}"]\n' if files_upstream else ""
    config = f'[index]\nupstream = "{PYPI}"\n\n[targets]\npython = {json.dumps(pythons)}\n{extra}'
    report, _, took = run_build(root, config, reqs, jobs, tmpdir=root / "t")
    return report, took


def built_wheels(report: dict[str, Any], wh: Path) -> dict[tuple[str, str], Path]:
    """(package, target) -> the wheel this run built from an sdist."""
    files = {p.name: p for p in (wh / "files").glob("*/*.whl")}
    return {
        (r["name"], r["target"]): files[r["wheel"]]
        for r in report["results"]
        if r["status"] == "built" and r.get("wheel") in files
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cause(first: Path, second: Path) -> dict[str, Any]:
    from builder.stages import compare

    return {
        "differs": list(compare.differing_members(first, second)),
        "diffoscope": compare.diffoscope_detail(first, second),
    }


def sbom_cost(wh: Path, wheel: Path, repeat: int) -> dict[str, float] | None:
    """Seconds the SBOM adds to one wheel: making the document from the build record, and
    the final re-zip with it against without it (medians of `repeat` runs)."""
    from builder.records import BuildRecord
    from builder.stages import sbom
    from builder.wheelfile import ZIP_EPOCH, set_build_tag

    rec = next(
        (
            BuildRecord.from_json(json.loads(p.read_text()))
            for p in (wh / "builds").glob("*.json")
            if json.loads(p.read_text()).get("wheel") == wheel.name
        ),
        None,
    )
    if rec is None:
        return None
    inputs = sbom.SbomInputs(
        name=rec.name, version=rec.version, cache_key=rec.cache_key, inputs=rec.inputs,
        sdist=rec.sdist, sdist_url=None, build_deps=rec.build_deps, tools=rec.tools,
        grafted=rec.grafted, epoch=ZIP_EPOCH,
    )  # fmt: skip
    tag = wheel.name.split("-")[2]
    make, plain, with_sbom = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(repeat):
            t0 = time.perf_counter()
            doc = sbom.document(inputs)
            make.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            set_build_tag(wheel, tag, Path(tmp), epoch=ZIP_EPOCH)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            set_build_tag(wheel, tag, Path(tmp), epoch=ZIP_EPOCH, extra={sbom.MEMBER: doc})
            with_sbom.append(time.perf_counter() - t0)
    return {
        "document_s": statistics.median(make),
        "rezip_extra_s": statistics.median(with_sbom) - statistics.median(plain),
        "total_s": statistics.median(make)
        + statistics.median(with_sbom)
        - statistics.median(plain),
        "sbom_bytes": len(doc),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="four packages")
    ap.add_argument("--python", action="append", help="target Pythons (default 3.11)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=20, help="runs per SBOM timing")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/prewheel-bench-repro"))
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--files-upstream",
        default=FILES_UPSTREAM,
        help="listed as an extra upstream so the sandbox's proxy accepts PyPI's file host "
        "('' for none)",
    )
    args = ap.parse_args()
    pythons = args.python or ["3.11"]
    work: Path = args.workdir
    chosen, reqs = prepare(work, quick=args.quick)

    roots = [work / "one", work / "elsewhere" / "two"]
    runs = [build(root, reqs, pythons, args.jobs, args.files_upstream) for root in roots]
    first, second = (
        built_wheels(rep, root / "wheelhouse") for (rep, _), root in zip(runs, roots, strict=True)
    )
    rows = []
    for key in sorted(first.keys() & second.keys()):
        a, b = first[key], second[key]
        same = a.name == b.name and sha256(a) == sha256(b)
        row: dict[str, Any] = {"package": key[0], "target": key[1], "wheel": a.name,
                               "identical": same}  # fmt: skip
        if not same:
            row["file_names_match"] = a.name == b.name
            row.update(cause(a, b))
        row["sbom"] = sbom_cost(roots[0] / "wheelhouse", a, args.repeat)
        rows.append(row)
    identical = sum(r["identical"] for r in rows)
    share = round(100 * identical / len(rows), 1) if rows else 0.0
    costs = [r["sbom"]["total_s"] for r in rows if r["sbom"]]
    docs = [r["sbom"]["document_s"] for r in rows if r["sbom"]]
    rezips = [r["sbom"]["rezip_extra_s"] for r in rows if r["sbom"]]
    result = {
        "packages": [p[0] for p in chosen],
        "extra_pins": EXTRA_PINS,
        "pythons": pythons,
        "built_both_times": len(rows),
        "built_once_only": sorted(f"{n} {t}" for n, t in (first.keys() ^ second.keys())),
        "identical": identical,
        "identical_pct": share,
        "goal": f">= {GOAL:.0f} % bit-identical",
        "met": bool(rows) and share >= GOAL,
        "wheels": rows,
        "sbom_seconds_per_wheel_median": statistics.median(costs) if costs else None,
        "sbom_seconds_per_wheel_max": max(costs) if costs else None,
        # The two parts: making the document, and the re-zip with it minus without it (on a
        # busy machine the latter is within noise, and can come out negative).
        "sbom_document_seconds_median": statistics.median(docs) if docs else None,
        "sbom_rezip_extra_seconds_median": statistics.median(rezips) if rezips else None,
        "build_seconds": [round(t, 1) for _, t in runs],
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    secs = result["build_seconds"]
    print(f"{len(chosen)} sdist-only packages for {pythons}, built twice in {roots[0]} and "
          f"{roots[1]} ({secs[0]:.0f} s, {secs[1]:.0f} s)")  # fmt: skip
    for r in rows:
        state = "identical" if r["identical"] else "DIFFERS: " + ", ".join(r["differs"][:6])
        cost = f"sbom +{r['sbom']['total_s'] * 1000:.1f} ms" if r["sbom"] else ""
        print(f"  {r['package']:20} {r['target']:16} {state}  {cost}")
        if not r["identical"] and r.get("diffoscope"):
            print("    " + r["diffoscope"][:600].replace("\n", "\n    "))
    if result["built_once_only"]:
        print(f"  built in one run only: {', '.join(result['built_once_only'])}")
    met = "met" if result["met"] else "not met"
    print(f"bit-identical: {identical} of {len(rows)} ({share} %); goal >= {GOAL:.0f} %: {met}")
    if costs:
        med, top = statistics.median(costs) * 1000, max(costs) * 1000
        print(f"SBOM per wheel: median {med:.1f} ms, max {top:.1f} ms "
              "(document + re-zip with it, in process)")  # fmt: skip
        print(f"  document: median {statistics.median(docs) * 1000:.1f} ms, max "
              f"{max(docs) * 1000:.1f} ms; re-zip with it minus without: median "
              f"{statistics.median(rezips) * 1000:+.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
