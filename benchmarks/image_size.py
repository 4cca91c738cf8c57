"""Image size: the prewheel runtime image against the same app built single-stage.

The Docker tier (tests/test_docker_tier.py) builds both images from the same requirements:
the runtime stage from `prewheel dockerfile` (wheels only, slim base, no compiler) and the
usual single-stage image (compiler and -dev packages kept, sdists built in place). This prints
their `docker image inspect` sizes and the difference, measured now; with --save it also
records them. Without an engine or the images it says so and prints no figure: CI must show
only what its own run measured. --allow-recorded (never passed by CI) falls back to the last
recorded figure, labelled with its date, for a developer without an engine at hand.

    python benchmarks/image_size.py [--runtime IMAGE] [--naive IMAGE] [--json]
        [--min-saving-mb 300] [--save FILE] [--allow-recorded]

Exit 0: the saving meets --min-saving-mb; 1: it does not; 2: nothing measured (and, with
--allow-recorded, no record either).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

RECORD = Path(os.environ.get("PREWHEEL_DOCKER_CACHE", "/var/tmp/prewheel-docker-cache")) / (
    "image_size.json"
)


def docker_client() -> str | None:
    found = os.environ.get("PREWHEEL_DOCKER")
    if found:
        return found
    return "/usr/bin/docker" if Path("/usr/bin/docker").is_file() else shutil.which("docker")


def image_size(client: str, image: str) -> int | None:
    proc = subprocess.run(
        [client, "image", "inspect", "-f", "{{.Size}}", image],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return int(proc.stdout.strip()) if proc.returncode == 0 else None


def measure(runtime: str, naive: str) -> dict[str, object] | None:
    client = docker_client()
    if client is None:
        return None
    sizes = {image: image_size(client, image) for image in (runtime, naive)}
    if None in sizes.values():
        return None
    return {
        "runtime_image": runtime,
        "runtime_bytes": sizes[runtime],
        "naive_image": naive,
        "naive_bytes": sizes[naive],
        "saving_bytes": int(sizes[naive] or 0) - int(sizes[runtime] or 0),
        "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def mb(n: object) -> str:
    return f"{int(str(n)) / 1e6:8.1f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runtime", default="prewheel-test/runtime:latest")
    ap.add_argument("--naive", default="prewheel-test/naive:latest")
    ap.add_argument("--min-saving-mb", type=float, default=300.0)
    ap.add_argument("--save", type=Path, default=None, help="also record the result here")
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--allow-recorded",
        action="store_true",
        help=f"with nothing to measure, print the last recorded figure ({RECORD})",
    )
    args = ap.parse_args()

    result = measure(args.runtime, args.naive)
    source = "measured now, docker image inspect"
    if result is None:
        if not (args.allow_recorded and RECORD.is_file()):
            why = (
                "no docker client"
                if docker_client() is None
                else f"the engine lacks {args.runtime} or {args.naive}, or does not answer"
            )
            print(
                f"no image size measured in this run: {why}; the Docker tier builds them "
                "(README, Image size):\n"
                '  eval "$(tests/docker/dockerd.sh start)"\n'
                "  .venv/bin/python -m pytest -p no:xdist -rA tests/test_docker_tier.py",
                file=sys.stderr,
            )
            return 2
        result = json.loads(RECORD.read_text())
        source = f"NOT measured in this run: recorded {result['measured_at']} in {RECORD}"
    elif args.save is not None:
        args.save.parent.mkdir(parents=True, exist_ok=True)
        args.save.write_text(json.dumps(result, indent=2) + "\n")

    ok = int(str(result["saving_bytes"])) >= args.min_saving_mb * 1e6
    if args.json:
        print(json.dumps({**result, "source": source, "goal_met": ok}, indent=2))
    else:
        print(f"image sizes ({source}):")
        print(f"  prewheel runtime stage  {mb(result['runtime_bytes'])}  {result['runtime_image']}")
        print(f"  single-stage (naive)    {mb(result['naive_bytes'])}  {result['naive_image']}")
        print(
            f"  difference              {mb(result['saving_bytes'])}  smaller "
            f"(goal: at least {args.min_saving_mb:.0f} MB: {'met' if ok else 'NOT met'})"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
