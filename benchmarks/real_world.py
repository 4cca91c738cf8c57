"""Real-world checks: real PyPI sdist-only packages, built for cp311 and cp312, counted.

How many wheels built, how many passed import, how many passed their smoke test, and how
many each check caught before publishing (-Werror=implicit-function-declaration at build
time, the ABI checks, the import, the smoke test); then the same set built with
`[build] strip = false`, to compare wheel and `.so` sizes stripped (the default: -g0 and
`auditwheel repair --strip`) against not (goal: >= 70 % smaller `.so` for the C++ ones).

Needs PyPI and two builds of the set (minutes on 2 cores). `--quick`: cp311 only, four
packages (one of them C++).

    python benchmarks/real_world.py [--quick] [--python 3.11 --python 3.12] [--jobs 2]
                                    [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PYPI = "https://pypi.org/simple/"

# name==version, the language of its extension, what is known about it (FINDINGS.md).
PACKAGES = [
    ("python-Levenshtein==0.12.2", "C", "uses C API removed in 3.12"),
    ("annoy==1.17.3", "C++", "-march=native by default"),
    ("hnswlib==0.8.0", "C++", "pybind11, numpy"),
    ("fasttext==0.9.3", "C++", "predict() fails with numpy 2"),
    ("pyworld==0.3.5", "C++", "Cython; imports pkg_resources, undeclared"),
    ("crcmod==1.7", "C", ""),
    ("netifaces==0.11.0", "C", ""),
    ("webrtcvad==2.0.10", "C", "imports pkg_resources, undeclared"),
    ("crc16==0.1.1", "C", "'y#' without PY_SSIZE_T_CLEAN"),
    ("pysha3==1.0.2", "C", "unmaintained since 2017"),
]
QUICK = ("python-Levenshtein", "annoy", "crc16", "netifaces")
# numpy 2, as a fresh resolve gives today: what fasttext 0.9.3 meets in the wild.
EXTRA_PINS = ["numpy==2.2.6"]
CHECKS = ("werror", "abi", "install", "import", "smoke")


def prepare(work: Path, *, quick: bool) -> tuple[list[tuple[str, str, str]], Path]:
    """The packages of the set (`quick`: the QUICK four) and their requirements file, with
    EXTRA_PINS, in `work`, made empty first."""
    chosen = [p for p in PACKAGES if not quick or p[0].split("==")[0] in QUICK]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    reqs = work / "requirements.txt"
    reqs.write_text("\n".join([*(p[0] for p in chosen), *EXTRA_PINS]) + "\n")
    return chosen, reqs


def prewheel_argv() -> list[str]:
    script = Path(sys.executable).parent / "prewheel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "builder"]


def run_build(
    root: Path, config_text: str, reqs: Path, jobs: int, *, tmpdir: Path | None = None
) -> tuple[dict[str, Any], Path, float]:
    """`prewheel build --json` of `reqs` with `config_text` into `root/wheelhouse`, without
    the machine's pip or prewheel settings (and with TMPDIR `tmpdir`, run from `root`, when
    given): report, wheelhouse, seconds. A run that fails as a whole ends the benchmark."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "prewheel.toml"
    config.write_text(config_text)
    wh = root / "wheelhouse"
    argv = [
        *prewheel_argv(), "build", "-r", str(reqs), "-c", str(config), "--wheelhouse", str(wh),
        "--allow-unpinned", "--jobs", str(jobs), "--json",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PREWHEEL_"))}
    if tmpdir is not None:
        env["TMPDIR"] = str(tmpdir)
    t0 = time.monotonic()
    proc = subprocess.run(
        argv, capture_output=True, text=True, env=env, cwd=root if tmpdir else None, check=False
    )
    took = time.monotonic() - t0
    if proc.returncode not in (0, 1) or not proc.stdout.startswith("{"):
        sys.exit(f"prewheel build in {root} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout), wh, took


def build(
    work: Path, name: str, reqs: Path, pythons: list[str], strip: bool, jobs: int
) -> tuple[dict[str, Any], Path, float]:
    """One `prewheel build --json` of the set into its own wheelhouse: report, wheelhouse,
    seconds."""
    config = (
        f'[index]\nupstream = "{PYPI}"\n\n[build]\nstrip = {"true" if strip else "false"}\n\n'
        f"[targets]\npython = {json.dumps(pythons)}\n"
    )
    return run_build(work / name, config, reqs, jobs)


def records(wh: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(name, target) -> the build record (the latest, when there are several)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((wh / "builds").glob("*.json")):
        rec = json.loads(path.read_text())
        for target in rec.get("targets") or [rec["target"]]:
            key = (rec["name"], target)
            if key not in out or rec["started"] > out[key]["started"]:
                out[key] = rec
    return out


def counts(report: dict[str, Any], names: set[str]) -> dict[str, dict[str, Any]]:
    """Per target: what was built from an sdist here, and what became of it."""
    out: dict[str, dict[str, Any]] = {}
    for r in report["results"]:
        if r["name"] not in names:
            continue  # closure members with wheels (numpy, ...) are not the subject
        t = out.setdefault(
            r["target"],
            {
                "sdist_only": 0,
                "built": 0,
                "build_failed": [],
                "passed_import": 0,
                "with_smoke": 0,
                "passed_smoke": 0,
                "published": 0,
                "caught": {c: [] for c in CHECKS},
            },
        )
        t["sdist_only"] += 1
        check, step = r.get("check"), r.get("step")
        if r["status"] == "failed" and step in ("build", "fetch", "patch", "build-deps", "repair"):
            if check == "werror":
                t["caught"]["werror"].append(r["name"])
            else:
                t["build_failed"].append(r["name"])
            continue
        t["built"] += 1
        if r["status"] == "failed":
            t["caught"].setdefault(check or step, []).append(r["name"])
        # The checks run in order (abi, install, import, smoke): one that failed at its smoke
        # test passed its import.
        passed = r.get("checks") or []
        t["passed_import"] += "import" in passed or check == "smoke"
        t["passed_smoke"] += "smoke" in passed
        t["with_smoke"] += "smoke" in passed or check == "smoke"
        t["published"] += r["status"] in ("built", "cached")
    return out


def sizes(
    stripped: dict[tuple[str, str], dict[str, Any]],
    kept: dict[tuple[str, str], dict[str, Any]],
    lang: dict[str, str],
) -> list[dict[str, Any]]:
    """Per (package, target) built both ways: wheel and .so bytes, and how much smaller."""
    out = []
    for key in sorted(stripped):
        a, b = stripped[key].get("sizes"), kept.get(key, {}).get("sizes")
        if not a or not b or not b["shared_objects"]:
            continue
        out.append(
            {
                "package": key[0],
                "target": key[1],
                "lang": lang.get(key[0], "?"),
                "so_unstripped": b["shared_objects"],
                "so_stripped": a["shared_objects"],
                "so_smaller_pct": round(100 * (1 - a["shared_objects"] / b["shared_objects"]), 1),
                "wheel_unstripped": b["wheel"],
                "wheel_stripped": a["wheel"],
                "wheel_smaller_pct": round(100 * (1 - a["wheel"] / b["wheel"]), 1),
            }
        )
    return out


def kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="cp311 only, four packages")
    ap.add_argument("--python", action="append", help="target Pythons (default 3.11, 3.12)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/prewheel-bench-real-world"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    pythons = args.python or (["3.11"] if args.quick else ["3.11", "3.12"])
    work: Path = args.workdir
    chosen, reqs = prepare(work, quick=args.quick)
    names = {p[0].split("==")[0].lower().replace("_", "-") for p in chosen}
    lang = {p[0].split("==")[0].lower(): p[1] for p in chosen}

    report, wh, took = build(work, "stripped", reqs, pythons, True, args.jobs)
    _, kept_wh, kept_took = build(work, "unstripped", reqs, pythons, False, args.jobs)
    per_target = counts(report, names)
    table = sizes(records(wh), records(kept_wh), lang)
    cpp = [row["so_smaller_pct"] for row in table if row["lang"] == "C++"]
    result = {
        "packages": [p[0] for p in chosen],
        "extra_pins": EXTRA_PINS,
        "pythons": pythons,
        "targets": per_target,
        "sizes": table,
        "cpp_so_smaller_pct_median": statistics.median(cpp) if cpp else None,
        "cpp_so_smaller_pct_min": min(cpp) if cpp else None,
        "goal": ">= 70 % smaller .so on the C++ packages",
        "met": bool(cpp) and min(cpp) >= 70,
        "build_seconds": {"stripped": round(took, 1), "unstripped": round(kept_took, 1)},
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(chosen)} sdist-only packages, pins {', '.join(EXTRA_PINS)}, for {pythons}")
    for target, t in sorted(per_target.items()):
        caught = "; ".join(f"{c} {len(n)} ({', '.join(n)})" for c, n in t["caught"].items() if n)
        print(
            f"{target}: {t['sdist_only']} to build, {t['built']} built"
            + (f" ({len(t['build_failed'])} failed to build: {', '.join(t['build_failed'])})"
               if t["build_failed"] else "")
            + f"; {t['passed_import']} passed import; {t['passed_smoke']} of the "
            f"{t['with_smoke']} that reached their smoke test passed it; {t['published']} "
            "published\n"
            f"  caught before publishing: {caught or 'nothing'}"
        )  # fmt: skip
    print("\nsizes, stripped (default) vs [build] strip = false:")
    print(f"{'package':20} {'target':16} {'lang':4} {'.so':>24} {'wheel':>24}")
    for row in table:
        print(
            f"{row['package']:20} {row['target']:16} {row['lang']:4} "
            f"{kib(row['so_unstripped']):>10} -> {kib(row['so_stripped']):>9} "
            f"{-row['so_smaller_pct']:+4.0f}% "
            f"{kib(row['wheel_unstripped']):>10} -> {kib(row['wheel_stripped']):>9} "
            f"{-row['wheel_smaller_pct']:+4.0f}%"
        )
    if cpp:
        met = "met" if result["met"] else "not met"
        print(
            f"C++ .so: {min(cpp):.0f}-{max(cpp):.0f} % smaller (median "
            f"{statistics.median(cpp):.0f} %); goal >= 70 %: {met}"
        )
    print(f"build time: stripped {took:.0f} s, unstripped {kept_took:.0f} s (one run each)")


if __name__ == "__main__":
    main()
