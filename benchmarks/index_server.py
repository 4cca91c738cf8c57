"""Index servers compared on one generated wheel set: pages, files, installs, and updates.

    python benchmarks/index_server.py [--work /tmp/prewheel-bench] [--projects 2000]
        [--versions 5] [--duration 5] [--rounds 3] [--installs 3] [--connections 16]
        [--only NAME ...] [--json]

The wheel set: PROJECTS x VERSIONS small pure wheels, plus 8 real 1 MiB wheels (`bigpkg-N`).
Servers: nginx with a plain static config on the static tree (the baseline, which leads the
table and the goals), `prewheel serve`, nginx with the config from
`prewheel serve --print-nginx-config`, devpi-server 6.20.3 (Argon2 turned down so it starts
fast), pypiserver 2.4 and `python -m http.server`. Load comes from Debian's wrk on 127.0.0.1,
bounded by --duration: the page figure walks every project page of the index in turn
(rotate_pages.lua), since one hot URL measures a cache rather than an index; the wheel figure
fetches one 1 MiB wheel. Installs are cold (no cache) pip and uv installs of the 8 big packages.
All servers run at once and are measured in turn, round after round, so that other load on
the machine hits them alike; the table shows medians and the goals show prewheel's ratios to
the others measured in the same run. Read ratios, not absolutes.
Needs: apt-get install wrk nginx libnginx-mod-http-perl.
Exit 0 when every goal is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from urllib.parse import urlsplit

import index_server_backends as backends
from index_server_backends import REPO, Backend

sys.path.insert(0, str(REPO / "tests"))

from indexkit import wheel_bytes
from packaging.utils import canonicalize_name, parse_wheel_filename

from builder import index
from builder.wheelfile import read_metadata
from builder.wheelhouse import CatalogEntry, Wheelhouse, utcnow

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
BIG = [f"bigpkg-{i}" for i in range(8)]
PROBE = "proj-0042"
ROTATE = Path(__file__).resolve().with_name("rotate_pages.lua")
THREADS = 2
BASELINE = "nginx-plain"


def generate(root: Path, projects: int, versions: int) -> list[Path]:
    """Write the wheel set straight into a wheelhouse (no per-file fsync), then index it."""
    marker = root / f".bench-{projects}x{versions}"
    wh = Wheelhouse(root)
    if marker.exists():
        return sorted(wh.files_dir.glob("*/*.whl"))
    shutil.rmtree(root, ignore_errors=True)
    wh.ensure()
    specs = [(f"proj-{p:04d}", f"1.{v}", 0) for p in range(projects) for v in range(versions)]
    specs += [(name, "1.0", 1 << 20) for name in BIG]
    catalog: dict[str, list[CatalogEntry]] = {}
    for name, version, payload in specs:
        filename, data = wheel_bytes(name, version, payload=payload)
        digest = hashlib.sha256(data).hexdigest()
        path = wh.files_dir / digest[:2] / filename
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        meta = read_metadata(path)
        path.with_name(filename + ".metadata").write_bytes(meta)
        catalog.setdefault(name, []).append(CatalogEntry(
            filename=filename, path=f"files/{digest[:2]}/{filename}", sha256=digest,
            size=len(data), version=version, requires_python=">=3.8",
            metadata_sha256=hashlib.sha256(meta).hexdigest(), upload_time=utcnow(),
            accels=None, origin="downloaded",
        ))  # fmt: skip
    for name, entries in catalog.items():
        wh._write_catalog(name, entries)
    index.rebuild(wh)
    marker.touch()
    return sorted(wh.files_dir.glob("*/*.whl"))


def wrk(url: str, duration: int, connections: int, paths: Path | None = None) -> dict[str, float]:
    """wrk against one URL, or with `paths` (a file, one path a line) against every path in
    turn through rotate_pages.lua."""
    script = ["-s", str(ROTATE), url, "--", str(paths), str(THREADS)] if paths else [url]
    out = subprocess.run(
        ["wrk", f"-t{THREADS}", f"-c{connections}", f"-d{duration}s", "--latency",
         "--timeout", "10s", "-H", f"Accept: {PIP_ACCEPT}", *script],
        capture_output=True, text=True, check=True, timeout=duration + 60,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    done = re.search(r"(\d+) requests in", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rps,
        "requests": float(done.group(1)) if done else 0.0,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else float("nan"),
        "non2xx": float(errors.group(1)) if errors else 0.0,
    }


def check_pages(index_url: str, projects: list[str]) -> None:
    """Raise unless the first, middle and last project pages answer 200 as they are (wrk counts
    a redirect as a success, so a server that redirects every page would look fast)."""
    url = urlsplit(index_url)
    for name in {projects[0], projects[len(projects) // 2], projects[-1]}:
        conn = http.client.HTTPConnection(url.netloc, timeout=30)
        try:
            conn.request("GET", f"{url.path}{name}/", headers={"Accept": PIP_ACCEPT})
            status = conn.getresponse().status
        finally:
            conn.close()
        if status != 200:
            raise RuntimeError(f"{url.path}{name}/ answered {status}, not 200")


def page_paths(work: Path, key: str, index_url: str, projects: list[str]) -> Path:
    """The file of every project page's path on one server, for rotate_pages.lua."""
    prefix = urlsplit(index_url).path
    out = work / f"pages-{key}.txt"
    out.write_text("".join(f"{prefix}{name}/\n" for name in projects))
    return out


def timed_install(tool: str, index_url: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    env |= {"PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        if tool == "uv":
            argv = [backends.tool("uv") or "uv", "pip", "install", "--no-config", "--no-cache",
                    "-q", "--python", sys.executable]  # fmt: skip
        else:
            argv = [sys.executable, "-m", "pip", "--isolated", "install", "--no-cache-dir", "-q"]
        argv += ["--index-url", index_url, "--target", tmp, *BIG]
        started = time.perf_counter()
        subprocess.run(argv, check=True, env=env, timeout=600, capture_output=True)
        return time.perf_counter() - started


def add_one_wheel(root: Path, work: Path, repeats: int = 5) -> dict[str, float]:
    """Publish one new wheel into the big wheelhouse and update its index, as the pipeline does."""
    wh = Wheelhouse(root)
    publish, update = [], []
    for i in range(repeats):
        filename, data = wheel_bytes("proj-0001", f"9.{time.time_ns()}.{i}")
        path = work / filename
        path.write_bytes(data)
        t0 = time.perf_counter()
        wh.publish(path, origin="built", accels=None)
        t1 = time.perf_counter()
        index.update_project(wh, "proj-0001")
        t2 = time.perf_counter()
        path.unlink()
        publish.append((t1 - t0) * 1000)
        update.append((t2 - t1) * 1000)
    total = [p + u for p, u in zip(publish, update, strict=True)]
    return {"publish_ms": statistics.median(publish), "index_ms": statistics.median(update),
            "total_ms": statistics.median(total)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/prewheel-bench"))
    ap.add_argument("--projects", type=int, default=2000)
    ap.add_argument("--versions", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians reported")
    ap.add_argument("--installs", type=int, default=3, help="cold installs per tool and round")
    ap.add_argument("--connections", type=int, default=16)
    names = [BASELINE, "prewheel", "nginx", "devpi", "pypiserver", "http.server"]
    ap.add_argument("--only", nargs="*", default=None, choices=names)
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is missing: apt-get install wrk", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    root = args.work / "wheelhouse"
    t0 = time.monotonic()
    wheels = generate(root, args.projects, args.versions)
    projects = sorted({canonicalize_name(parse_wheel_filename(w.name)[0]) for w in wheels})
    print(f"wheel set: {len(wheels)} wheels, {len(projects)} projects in {root} "
          f"({time.monotonic() - t0:.0f} s)", file=sys.stderr)  # fmt: skip
    # The baseline first: it leads the table and the goals.
    starters: dict[str, Callable[[], AbstractContextManager[Backend]]] = {
        BASELINE: lambda: backends.nginx_plain(root, args.work, PROBE, BIG[0]),
        "prewheel": lambda: backends.prewheel(root, args.work, PROBE, BIG[0]),
        "nginx": lambda: backends.nginx(root, args.work, PROBE, BIG[0]),
        "devpi": lambda: backends.devpi(wheels, args.work, PROBE, BIG[0]),
        "pypiserver": lambda: backends.pypiserver(wheels, args.work, PROBE, BIG[0]),
        "http.server": lambda: backends.http_server(root, args.work, PROBE, BIG[0]),
    }
    running: dict[str, Backend] = {}
    pages: dict[str, Path] = {}
    failed: list[str] = []
    with ExitStack() as stack:
        for key, start in starters.items():
            if args.only and key not in args.only:
                continue
            print(f"{key}: starting", file=sys.stderr)
            try:
                backend = stack.enter_context(start())
                check_pages(backend.index_url, projects)
            except Exception as exc:  # one server failing must not stop the others
                print(f"{key}: failed: {exc}", file=sys.stderr)
                failed.append(key)
                continue
            running[key] = backend
            pages[key] = page_paths(args.work, key, backend.index_url, projects)
        results = measure(running, pages, args)
    load = os.getloadavg()[0]
    update = add_one_wheel(root, args.work)
    print_table(results, update, len(wheels), len(projects), args.rounds, load)
    ok = print_goals(results, update)
    if args.json:
        print(json.dumps({"baseline": BASELINE, "projects": len(projects), "servers": results,
                          "add_one_wheel": update}, indent=2))  # fmt: skip
    return 0 if ok and not failed else 1


def measure(
    running: dict[str, Backend], pages: dict[str, Path], args: argparse.Namespace
) -> dict[str, dict[str, float | str]]:
    """Every server in every round, in turn, so that a change in the machine's load (other
    work on a shared host) hits all servers alike; each figure is the median of the rounds.
    Pages: wrk walks every project page in turn; wheels: one 1 MiB wheel."""
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in running}
    for r in range(args.rounds):
        for key, b in running.items():
            print(f"round {r + 1}/{args.rounds}: {key}", file=sys.stderr)
            page = wrk(b.index_url, args.duration, args.connections, pages[key])
            files = wrk(b.wheel_url, args.duration, args.connections)
            got = {"page_rps": page["rps"], "page_p99_ms": page["p99_ms"],
                   "page_requests": page["requests"], "page_non2xx": page["non2xx"],
                   "file_rps": files["rps"], "file_p99_ms": files["p99_ms"]}  # fmt: skip
            for metric, value in got.items():
                samples[key].setdefault(metric, []).append(value)
            for _ in range(args.installs):
                for tool in ("uv", "pip"):
                    samples[key].setdefault(f"{tool}_s", []).append(
                        timed_install(tool, b.index_url)
                    )
    return {
        key: {"name": running[key].name}
        | {m: statistics.median(values) for m, values in metrics.items()}
        for key, metrics in samples.items()
    }


def print_table(
    results: dict[str, dict[str, float | str]], update: dict[str, float], n: int, projects: int,
    rounds: int, load: float,
) -> None:  # fmt: skip
    print(f"\nIndex servers, {n} wheels; medians of {rounds} interleaved rounds; 2 cores shared "
          f"with wrk; load average {load:.1f}. Pages: wrk walks all {projects} project pages in "
          f"turn; wheels: one 1 MiB wheel.\n")  # fmt: skip
    print(
        "| server | page req/s | page p99 | 1 MiB wheel req/s | uv install (8) | pip install (8) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for key, r in results.items():
        name = f"{r['name']} (baseline)" if key == BASELINE else r["name"]
        print(f"| {name} | {r['page_rps']:,.0f} | {r['page_p99_ms']:.1f} ms | "
              f"{r['file_rps']:,.0f} | {r['uv_s']:.2f} s | {r['pip_s']:.2f} s |")  # fmt: skip
    for r in results.values():
        if float(r["page_non2xx"]):
            print(f"\nnote: {r['name']} answered {r['page_non2xx']:,.0f} of "
                  f"{r['page_requests']:,.0f} page requests with an error status")  # fmt: skip
        elif float(r["page_requests"]) < projects:
            print(f"\nnote: {r['name']} got through {r['page_requests']:,.0f} of the "
                  f"{projects} pages in a run")  # fmt: skip
    print(
        f"\nAdd one wheel to the {n}-file index: publish {update['publish_ms']:.1f} ms + "
        f"index update {update['index_ms']:.1f} ms = {update['total_ms']:.1f} ms (median of 5)"
    )


def print_goals(results: dict[str, dict[str, float | str]], update: dict[str, float]) -> bool:
    """The goals, led by the ratios against the baseline, with what this run measured."""
    ours = results.get("prewheel")
    goals: list[tuple[str, str, bool | None]] = []

    def ratio(key: str, other: str, factor: float) -> tuple[str, bool | None]:
        if ours is None or other not in results or not float(results[other][key]):
            return "n/a", None
        got = float(ours[key]) / float(results[other][key])
        return f"{got:.2f}x" if got < 10 else f"{got:.0f}x", got >= factor

    labels = {BASELINE: "plain static", "nginx": "generated config"}
    for key, label in labels.items():
        goals.append((f"pages >= 0.5x nginx ({label}) req/s", *ratio("page_rps", key, 0.5)))
        goals.append((f"wheels >= 0.5x nginx ({label}) req/s", *ratio("file_rps", key, 0.5)))
    goals.append(("pages >= 10x devpi req/s", *ratio("page_rps", "devpi", 10)))
    if ours is None:
        goals.append(("page p99 < 50 ms", "n/a", None))
        goals.append(("every page answered without an error status", "n/a", None))
    else:
        p99 = float(ours["page_p99_ms"])
        goals.append(("page p99 < 50 ms", f"{p99:.1f} ms", p99 < 50))
        errors = float(ours["page_non2xx"])
        goals.append(("every page answered without an error status",
                      f"{errors:,.0f} errors", errors == 0))  # fmt: skip
    if ours is not None and "devpi" in results:
        uv, devpi_uv = float(ours["uv_s"]), float(results["devpi"]["uv_s"])
        goals.append(("uv install no slower than from devpi", f"{uv:.2f} s vs {devpi_uv:.2f} s",
                      uv <= devpi_uv))  # fmt: skip
    else:
        goals.append(("uv install no slower than from devpi", "n/a", None))
    total = update["total_ms"]
    goals.append(("add one wheel < 100 ms", f"{total:.1f} ms", total < 100))
    print("\n| goal (prewheel serve) | measured | result |\n|---|---:|---|")
    for text, measured, met in goals:
        print(f"| {text} | {measured} | {'n/a' if met is None else 'met' if met else 'MISSED'} |")
    return all(m is not False for _, _, m in goals)


if __name__ == "__main__":
    sys.exit(main())
