"""`prewheel serve` from this checkout against the same from another checkout, side by side.

    python benchmarks/serve_ab.py --base /path/to/other/checkout [--work /tmp/prewheel-bench]
        [--rounds 10] [--duration 3] [--workers 0] [--quiet]

For changes to the server itself, where benchmarks/index_server.py's ratio to nginx moves with
whatever else the machine is doing. Both servers run at once on index_server.py's wheel set
(generated on first use); each round runs wrk against one, then the other (the order
alternates), for pages (every project page in turn) and for one 1 MiB wheel. Printed: req/s
medians, this/base ratios taken pair by pair (robust to drift in the machine's speed), and
the servers' CPU time per request (user + system of every worker, from /proc), which depends
least on other load. Access logs go to a file unless --quiet. Needs wrk (apt-get install wrk).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

import index_server as bench
from index_server_backends import REPO, free_port, wait_http


def cpu_seconds(pid: int) -> float:
    """User + system time of `pid` and its children (the worker processes), from /proc."""
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def start(
    checkout: Path, root: Path, work: Path, name: str, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [sys.executable, "-m", "builder", "serve", "--wheelhouse", str(root),
            "--port", str(port), "--workers", str(args.workers)]  # fmt: skip
    if args.quiet:
        argv.append("-q")
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    log = (work / f"ab-{name}.log").open("wb")
    proc = subprocess.Popen(argv, cwd=checkout, env=env, stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}/cpu/simple/"
    wait_http(base, proc)
    return proc, base


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base", type=Path, required=True, help="the other checkout")
    ap.add_argument("--work", type=Path, default=Path("/tmp/prewheel-bench"))
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--workers", type=int, default=0, help="0: one per core")
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    root = args.work / "wheelhouse"
    wheels = bench.generate(root, 2000, 5)
    projects = sorted({p.name for p in (root / "cpu" / "simple").iterdir() if p.is_dir()})
    big = next(w for w in wheels if w.name.startswith("bigpkg_0-"))
    wheel_path = "/" + str(big.relative_to(root))
    checkouts = {"base": args.base.resolve(), "this": REPO}
    procs, urls, pages = {}, {}, {}
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    try:
        for name, checkout in checkouts.items():
            procs[name], urls[name] = start(checkout, root, args.work, name, args)
            pages[name] = bench.page_paths(args.work, f"ab-{name}", urls[name], projects)
        for r in range(args.rounds):
            order = list(checkouts) if r % 2 == 0 else list(reversed(checkouts))
            for name in order:
                pid = procs[name].pid
                wheel_url = urls[name].split("/cpu/")[0] + wheel_path
                for kind, url, paths in (("page", urls[name], pages[name]),
                                         ("wheel", wheel_url, None)):  # fmt: skip
                    before = cpu_seconds(pid)
                    got = bench.wrk(url, args.duration, 16, paths)
                    used = cpu_seconds(pid) - before
                    per = used / got["requests"] * 1e6 if got["requests"] else float("nan")
                    samples.setdefault((name, kind), []).append((got["rps"], per))
            print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        for proc in procs.values():
            proc.terminate()
            proc.wait(15)
    print(f"\n`prewheel serve` this checkout vs {args.base}, {args.rounds} alternating rounds of "
          f"{args.duration}s, workers={args.workers or os.cpu_count()}, load average "
          f"{os.getloadavg()[0]:.1f}\n")  # fmt: skip
    print("| | base req/s | this req/s | this/base, pairwise median (min-max) | "
          "base CPU/request | this CPU/request |\n|---|---:|---:|---|---:|---:|")  # fmt: skip
    for kind in ("page", "wheel"):
        b, t = samples[("base", kind)], samples[("this", kind)]
        ratios = [x[0] / y[0] for x, y in zip(t, b, strict=True)]
        rps_b, rps_t = statistics.median(x[0] for x in b), statistics.median(x[0] for x in t)
        cpu_b, cpu_t = statistics.median(x[1] for x in b), statistics.median(x[1] for x in t)
        spread = f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
        cpu = f"{cpu_b:.1f} us | {cpu_t:.1f} us"
        print(f"| {kind}s | {rps_b:,.0f} | {rps_t:,.0f} | {spread} | {cpu} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
