"""Parallel builds: the same independent sdist builds with --jobs 1 and with --jobs 2.

Six real sdist-only packages (for CPython 3.11) from PyPI, no build depending on another.
A warm-up build resolves the closure once (its cache is copied into every measured
wheelhouse, so both sides measure builds, not pip's resolver) and fills pip's HTTP cache
for the build dependencies. Each measured run starts from an empty wheelhouse; the runs
alternate (1, 2, 1, 2, ...) so that a change in machine load hits both sides.

    python benchmarks/parallel_builds.py [--workdir DIR] [--rounds 3] [--json]

Goal on a 2-core machine: --jobs 2 >= 1.7x faster than --jobs 1, judged on the best run of
each (other processes on the machine only ever add time; the median is printed too).
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

PYPI = "https://pypi.org/simple/"

# Six sdist-only packages (three C extensions, three pure) and the one dependency of the
# closure (python-Levenshtein needs setuptools), pinned like a lock file.
REQUIREMENTS = """\
python-Levenshtein==0.12.2
crcmod==1.7
netifaces==0.11.0
termcolor==1.1.0
docopt==0.6.2
sgmllib3k==1.0.0
setuptools==68.2.2
"""
BUILDS = 6


def prewheel_argv() -> list[str]:
    script = Path(sys.executable).parent / "prewheel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "builder"]


def build(work: Path, wheelhouse: Path, jobs: int, env: dict[str, str]) -> float:
    argv = [
        *prewheel_argv(),
        "build",
        "-r",
        str(work / "requirements.txt"),
        "-c",
        str(work / "prewheel.toml"),
        "--wheelhouse",
        str(wheelhouse),
        "--jobs",
        str(jobs),
        "--json",
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    counts = json.loads(proc.stdout)["counts"]
    if counts["built"] != BUILDS:
        sys.exit(f"expected {BUILDS} builds, got {counts}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/prewheel-bench-parallel"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "requirements.txt").write_text(REQUIREMENTS)
    (work / "prewheel.toml").write_text(f'[index]\nupstream = "{PYPI}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PREWHEEL_"))}

    warmup = work / "warmup"
    build(work, warmup, 2, env)
    times: dict[int, list[float]] = {1: [], 2: []}
    for r in range(args.rounds):
        for jobs in (1, 2):
            wh = work / f"wh-{jobs}-{r}"
            (wh / "cache").parent.mkdir(parents=True)
            shutil.copytree(warmup / "cache", wh / "cache")
            times[jobs].append(build(work, wh, jobs, env))
            shutil.rmtree(wh)
            if not args.json:
                print(f"round {r + 1}: --jobs {jobs}: {times[jobs][-1]:.1f} s")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    best = min(times[1]) / min(times[2])
    result = {
        "builds": BUILDS,
        "cpus": os.cpu_count(),
        "jobs_1_s": [round(t, 1) for t in times[1]],
        "jobs_2_s": [round(t, 1) for t in times[2]],
        "speedup": round(one / two, 2),
        "speedup_best": round(best, 2),
        "goal": ">= 1.7 (best of each)",
        "met": best >= 1.7,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"{BUILDS} sdist builds on {os.cpu_count()} CPUs: --jobs 1 {one:.1f} s, "
        f"--jobs 2 {two:.1f} s (medians of {args.rounds}) -> {one / two:.2f}x"
        f"; best of each: {min(times[1]):.1f} s / {min(times[2]):.1f} s -> {best:.2f}x "
        f"(goal >= 1.7x: {'met' if result['met'] else 'not met'})"
    )


if __name__ == "__main__":
    main()
