"""No-op rebuild: a warm `prewheel build` (everything cached) against a warm `pip wheel -r`.

The set is 17 real PyPI pins (a fully pinned closure, as pip-compile writes it), six of them
sdist-only for CPython 3.11. Both tools first run once cold (prewheel builds and publishes,
pip fills its own cache in the work dir and writes every wheel to its -w directory); then each
runs --runs times warm and the medians are compared. pip is timed twice per run: online
(`--index-url` PyPI, as a user runs it) and offline (`--no-index --find-links` the wheels its
cold run left, so no network time counts against it); prewheel's ratio is printed against
both. Needs PyPI. Prints one line per run and the ratios; --json for machines.

    python benchmarks/noop_rebuild.py [--workdir DIR] [--runs 5] [--json]

Goal: prewheel >= 50x faster than pip online, and under 1 second. A warm run is answered
from the no-op stamp (builder/stamp.py); the same run with PREWHEEL_FAST=0 (the full plan:
config, targets, compiler probe, wheelhouse) is printed beside it, and so is how long the
interpreter alone takes to start (`python -c pass`): no Python tool can be faster than that.
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

# Six sdist-only for cp311 (C: python-Levenshtein, crcmod, netifaces; pure: termcolor,
# docopt, sgmllib3k); the rest ship wheels. Every member of the closure is pinned.
REQUIREMENTS = """\
python-Levenshtein==0.12.2
crcmod==1.7
netifaces==0.11.0
termcolor==1.1.0
docopt==0.6.2
sgmllib3k==1.0.0
setuptools==68.2.2
wrapt==1.14.1
six==1.16.0
idna==3.4
certifi==2023.7.22
charset-normalizer==3.3.2
urllib3==2.0.7
requests==2.31.0
packaging==23.2
attrs==23.1.0
click==8.1.7
"""


def prewheel_argv() -> list[str]:
    """The `prewheel` console script beside this interpreter, as a user runs it."""
    script = Path(sys.executable).parent / "prewheel"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "builder"]


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/prewheel-bench-noop"))
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)  # cold means cold: no wheelhouse, no pip cache
    work.mkdir(parents=True)
    reqs = work / "requirements.txt"
    reqs.write_text(REQUIREMENTS)
    config = work / "prewheel.toml"
    config.write_text(f'[index]\nupstream = "{PYPI}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PREWHEEL_"))}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    # Installed packages start from compiled bytecode; a dev shell that forbids writing it
    # would make both tools compile their modules on every start.
    env.pop("PYTHONDONTWRITEBYTECODE", None)

    prewheel = [
        *prewheel_argv(),
        "build",
        "-r",
        str(reqs),
        "-c",
        str(config),
        "--wheelhouse",
        str(work / "wheelhouse"),
    ]
    pip_wheel = [sys.executable, "-m", "pip", "--isolated", "wheel", "--quiet"]
    pip_args = [
        "--cache-dir",
        str(work / "pip-cache"),
        "-r",
        str(reqs),
        "-w",
        str(work / "pip-wheels"),
    ]
    pip = [*pip_wheel, "--index-url", PYPI, *pip_args]
    # Offline: only the wheels pip built or downloaded in its cold run, no index asked.
    pip_offline = [*pip_wheel, "--no-index", "--find-links", str(work / "pip-wheels"), *pip_args]

    cold_prewheel, _ = timed(prewheel, env, work)
    _, report = timed([*prewheel, "--json"], env, work)
    counts = json.loads(report)["counts"]
    if counts["cached"] != len(REQUIREMENTS.split()):
        sys.exit(f"the warm prewheel run was not a no-op: {counts}")
    shutil.rmtree(work / "pip-wheels", ignore_errors=True)
    cold_pip, _ = timed(pip, env, work)

    bare = min(timed([sys.executable, "-c", "pass"], env, work)[0] for _ in range(5))
    warm_prewheel, warm_full, warm_pip, warm_offline = [], [], [], []
    full_env = {**env, "PREWHEEL_FAST": "0"}
    for i in range(args.runs):
        # pip's best case: its cache warm and its -w directory already holding every wheel.
        warm_pip.append(timed(pip, env, work)[0])
        warm_offline.append(timed(pip_offline, env, work)[0])
        warm_prewheel.append(timed(prewheel, env, work)[0])
        # For scale: the same no-op without its stamp (plans, reads the wheelhouse, probes).
        warm_full.append(timed(prewheel, full_env, work)[0])
        if not args.json:
            print(
                f"run {i + 1}: prewheel {warm_prewheel[-1]:.3f} s "
                f"(full plan {warm_full[-1]:.3f} s), pip {warm_pip[-1]:.3f} s "
                f"(offline {warm_offline[-1]:.3f} s)"
            )
    _, report = timed([*prewheel, "--json"], env, work)
    if not json.loads(report)["fast_path"]:
        sys.exit("the warm prewheel runs were not answered from the no-op stamp")
    pw, pp = statistics.median(warm_prewheel), statistics.median(warm_pip)
    off = statistics.median(warm_offline)
    full = statistics.median(warm_full)
    result = {
        "packages": len(REQUIREMENTS.split()),
        "sdist_only": 6,
        "cold_prewheel_s": round(cold_prewheel, 2),
        "cold_pip_s": round(cold_pip, 2),
        "warm_prewheel_median_s": round(pw, 3),
        "warm_pip_median_s": round(pp, 3),
        "warm_pip_offline_median_s": round(off, 3),
        "warm_prewheel_full_plan_median_s": round(full, 3),
        "ratio": round(pp / pw, 1),
        "ratio_offline": round(off / pw, 1),
        "python_start_s": round(bare, 3),
        "goal": "ratio (against pip online) >= 50 and prewheel < 1 s",
        "met": pp / pw >= 50 and pw < 1.0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"cold: prewheel {cold_prewheel:.1f} s (builds 6 sdists), pip {cold_pip:.1f} s\n"
        f"warm (median of {args.runs}): prewheel {pw:.3f} s, pip wheel {pp:.3f} s online, "
        f"{off:.3f} s offline (--no-index --find-links)\n"
        f"-> prewheel is {pp / pw:.1f}x faster than pip online (goal >= 50x, < 1 s: "
        f"{'met' if result['met'] else 'not met'}) and {off / pw:.1f}x faster than pip offline; "
        f"without the no-op stamp (full plan) {full:.3f} s = {pp / full:.1f}x online, "
        f"{off / full:.1f}x offline; the interpreter alone starts in {bare:.3f} s"
    )


if __name__ == "__main__":
    main()
