"""Cold and warm builds, and resolution alone, against uv and pip, side by side in one run.

Three comparisons, each interleaved round by round (A B C, A B C, ...) so a machine whose
speed drifts slows every tool alike; the medians, the spread (min-max) and the ratios of the
medians are printed. Needs PyPI (https://pypi.org/simple/, or --index).

- `cold`: a real set of sdist-only pins plus their closure (`SDIST_SET`, or the bundled
  example with `--example`), every cache empty: prewheel (`build`: resolve, build, repair,
  verify, publish) against `uv pip compile` + `uv build --wheel` of each sdist, two at a
  time (neither repairs nor verifies) and against `pip wheel -r` (same). Goal: <= 1.0x uv.
- `warm`: the same set, top-level pins only, everything built once: prewheel `build` again
  against `pip wheel -r` again (its cache and wheel directory warm). Goal: <= 1.0x pip.
- `resolve`: resolution alone of a real 100+-pin closure (the top-level pins of
  tests/data/real_closure) for CPython 3.11 and 3.12: prewheel `plan --refresh` against
  `uv pip compile` for both at once, cold caches. Goal: <= 1.5x uv.

    python benchmarks/against_uv.py cold|warm|resolve [--rounds 3] [--example] [--json]
    python benchmarks/against_uv.py cold --requirements FILE  # a set of one's own
    python benchmarks/against_uv.py --one NAME ...   # one command of a comparison, once
                                                     # (for an external timer)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from packaging import tags
from packaging.tags import Tag
from packaging.utils import parse_wheel_filename

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PYPI = "https://pypi.org/simple/"
# Four sdist-only pins for CPython 3.11 (three C extensions, one pure); their closure adds
# setuptools (python-Levenshtein needs it at run time).
SDIST_SET = ["python-Levenshtein==0.12.2", "crcmod==1.7", "netifaces==0.11.0", "docopt==0.6.2"]
REAL_CLOSURE = ROOT / "tests" / "data" / "real_closure" / "closure.json"


def tool(name: str) -> str:
    """A program beside this interpreter (prewheel, uv, pip), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.is_file() else shutil.which(name)
    if not found:
        sys.exit(f"{name} not found beside {sys.executable} or on PATH")
    return found


def python(version: str) -> str:
    """The interpreter itself (not a pyenv shim, a shell script)."""
    found = next(
        (str(p) for p in sorted(Path.home().glob(f".pyenv/versions/{version}.*/bin/python"))),
        None,
    ) or shutil.which(f"python{version}")
    if not found:
        sys.exit(f"CPython {version} not found (pyenv install {version})")
    return found


def clean_env(work: Path) -> dict[str, str]:
    """No user pip / uv configuration (this machine's adds indexes and constraints)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    # Installed packages start from compiled bytecode (pip compiles it at install); a dev
    # shell that forbids writing it would make prewheel (and pip) compile their changed
    # modules on every start, which no installed copy does.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {
        "PIP_CONFIG_FILE": os.devnull,
        "UV_NO_CONFIG": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    if os.environ.get("PIP_CERT"):
        env |= {"PIP_CERT": os.environ["PIP_CERT"], "SSL_CERT_FILE": os.environ["PIP_CERT"]}
    env["PREWHEEL_WHEELHOUSE"] = str(work / "wh")
    return env


def run(argv: list[str], work: Path) -> None:
    proc = subprocess.run(argv, cwd=work, env=clean_env(work), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed ({proc.returncode}): {' '.join(argv)}\n{proc.stdout[-2000:]}"
                 f"{proc.stderr[-3000:]}")  # fmt: skip


def requirements(args: argparse.Namespace) -> list[str]:
    if args.requirements:  # a set of one's own (a held-out one)
        return _pins(args.requirements)
    if args.example:
        return _pins(ROOT / "examples" / "requirements.txt")
    return SDIST_SET


def _pins(path: Path) -> list[str]:
    """The requirements of a file: one a line, comments and blank lines left out."""
    lines = (ln.split("#")[0].strip() for ln in path.read_text().splitlines())
    return [ln for ln in lines if ln]


def prepare(work: Path, reqs: list[str], index: str, pythons: list[str]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "requirements.txt").write_text("".join(f"{r}\n" for r in reqs))
    paths = ", ".join(json.dumps(v) for v in pythons)  # prewheel finds the interpreters
    (work / "prewheel.toml").write_text(
        f'[index]\nupstream = "{index}"\n[targets]\npython = [{paths}]\naccel = ["cpu"]\n'
        'policy = ["auto"]\n'
    )


# -- the commands ------------------------------------------------------------------------


def prewheel_build(work: Path, index: str) -> None:
    run([tool("prewheel"), "build", "-r", "requirements.txt", "-c", "prewheel.toml",
         "--wheelhouse", "wh", "--jobs", "2", "--json", "--allow-unpinned"], work)  # fmt: skip


def pip_wheel(work: Path, index: str) -> None:
    run([sys.executable, "-m", "pip", "--isolated", "wheel", "-r", "requirements.txt", "-w",
         "pip-out", "--cache-dir", "pip-cache", "--index-url", index, "--quiet"], work)  # fmt: skip


def _ssl() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


def _target_tags() -> frozenset[Tag]:
    """The tags a CPython 3.11 install on this machine accepts (the target of the set)."""
    platforms = list(tags.platform_tags())
    return frozenset(
        [*tags.cpython_tags((3, 11), platforms=platforms),
         *tags.compatible_tags((3, 11), "cp311", platforms)]
    )  # fmt: skip


def _sdist_url(index: str, requirement: str) -> str | None:
    """The sdist uv has to build for the target, or None when a wheel of the pin installs
    there. A wheel for another Python or platform does not count: netifaces 0.11.0 has
    wheels up to cp39 only, so uv builds it for 3.11 as prewheel does."""
    name, _, version = requirement.partition("==")
    req = urllib.request.Request(
        f"{index.rstrip('/')}/{name.lower()}/",
        headers={"Accept": "application/vnd.pypi.simple.v1+json"},
    )
    with urllib.request.urlopen(req, timeout=60, context=_ssl()) as resp:
        files = json.load(resp)["files"]
    accepted = _target_tags()
    for f in files:
        if not f["filename"].endswith(".whl"):
            continue
        _, wheel_version, _, wheel_tags = parse_wheel_filename(f["filename"])
        if str(wheel_version) == version and not wheel_tags.isdisjoint(accepted):
            return None  # uv installs this wheel; nothing to build
    stem = f"-{version}.tar.gz"
    sdists = [f for f in files if f["filename"].endswith(stem)]
    return urllib.parse.urljoin(resp.geturl(), sdists[0]["url"]) if sdists else None


def uv_build(work: Path, index: str) -> None:
    """`uv pip compile` for the target, then `uv build --wheel` of each sdist-only pin of the
    closure, two at a time (the sdists fetched as uv would: straight from the index)."""
    uv = tool("uv")
    run([uv, "pip", "compile", "--no-config", "--quiet", "--python", python("3.11"),
         "--index-url", index, "--cache-dir", "uv-cache", "requirements.txt", "-o",
         "lock.txt"], work)  # fmt: skip
    pins = [ln.split(";")[0].strip() for ln in (work / "lock.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith(("#", "-", " "))]  # fmt: skip
    (work / "sdists").mkdir(exist_ok=True)

    def one(pin: str) -> None:
        url = _sdist_url(index, pin)
        if url is None:
            return
        dest = work / "sdists" / url.rsplit("/", 1)[-1]
        with urllib.request.urlopen(url, timeout=120, context=_ssl()) as resp:
            dest.write_bytes(resp.read())
        run([uv, "build", "--no-config", "--quiet", "--wheel", "--python", python("3.11"),
             "--index-url", index, "--cache-dir", "uv-cache", "--out-dir", "uv-out",
             str(dest)], work)  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, pins))


def prewheel_plan(work: Path, index: str) -> None:
    run([tool("prewheel"), "plan", "-r", "requirements.txt", "-c", "prewheel.toml",
         "--wheelhouse", "wh", "--json", "--allow-unpinned", "--refresh"], work)  # fmt: skip


def uv_compile(work: Path, index: str) -> None:
    uv = tool("uv")

    def one(version: str) -> None:
        run([uv, "pip", "compile", "--no-config", "--quiet", "--python", python(version),
             "--index-url", index, "--no-cache", "requirements.txt", "-o",
             f"lock-{version}.txt"], work)  # fmt: skip

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, ["3.11", "3.12"]))


COMMANDS = {
    "prewheel-build": prewheel_build,
    "uv-build": uv_build,
    "pip-wheel": pip_wheel,
    "prewheel-plan": prewheel_plan,
    "uv-compile": uv_compile,
}
COMPARISONS = {
    "cold": ["prewheel-build", "uv-build", "pip-wheel"],
    "warm": ["prewheel-build", "pip-wheel"],
    "resolve": ["prewheel-plan", "uv-compile"],
}


def reset(work: Path) -> None:
    """Every cache and output of a cold run gone (prewheel's wheelhouse holds its caches).
    The lock files too: `uv pip compile` takes the pins of an existing output file as its
    preferences, so a lock left by the last round spared uv its backtracking."""
    for name in ("wh", "pip-out", "pip-cache", "uv-cache", "uv-out", "sdists", "lock.txt"):
        p = work / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for lock in work.glob("lock-*.txt"):
        lock.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("comparison", choices=sorted(COMPARISONS), nargs="?")
    ap.add_argument("--one", choices=sorted(COMMANDS), help="run one command once and exit")
    ap.add_argument("--workdir", type=Path, help="(with --one: the same dir every time)")
    ap.add_argument("--cold", action="store_true", help="with --one: empty caches first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--example", action="store_true", help="the bundled example's pins")
    ap.add_argument("--requirements", type=Path, help="cold/warm: these pins instead")
    ap.add_argument("--index", default=PYPI)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    resolve = args.comparison == "resolve" or args.one in ("prewheel-plan", "uv-compile")
    reqs = json.loads(REAL_CLOSURE.read_text())["top"] if resolve else requirements(args)
    pythons = ["3.11", "3.12"] if resolve else ["3.11"]
    if args.one:
        work = args.workdir or Path(tempfile.mkdtemp(prefix="against-uv-"))
        prepare(work, reqs, args.index, pythons)
        if args.cold:
            reset(work)
        COMMANDS[args.one](work, args.index)
        return
    if not args.comparison:
        ap.error("a comparison, or --one")
    names = COMPARISONS[args.comparison]
    base = Path(args.workdir or tempfile.mkdtemp(prefix="against-uv-"))
    times: dict[str, list[float]] = {n: [] for n in names}
    works = {n: base / n for n in names}
    for n in names:
        prepare(works[n], reqs, args.index, pythons)
        if args.comparison == "warm":
            COMMANDS[n](works[n], args.index)  # the cold run that warms it
    for r in range(args.rounds):
        for n in names:
            if args.comparison != "warm":
                reset(works[n])
            t0 = time.perf_counter()
            COMMANDS[n](works[n], args.index)
            times[n].append(time.perf_counter() - t0)
            print(f"round {r + 1} {n}: {times[n][-1]:.2f}s", flush=True)
    medians = {n: statistics.median(t) for n, t in times.items()}
    first = names[0]
    out = {
        "comparison": args.comparison,
        "requirements": reqs,
        "rounds": args.rounds,
        "seconds": times,
        "median": medians,
        "ratio": {f"{first}/{n}": medians[first] / medians[n] for n in names[1:]},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for n in names:
        print(f"{n:16} median {medians[n]:7.2f}s  min {min(times[n]):7.2f}s  "
              f"max {max(times[n]):7.2f}s")  # fmt: skip
    for k, v in out["ratio"].items():
        print(f"{k}: {v:.2f}x")


if __name__ == "__main__":
    main()
