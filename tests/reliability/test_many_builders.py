"""Many builders on one wheelhouse: no lost catalog entry, each cache key built once.

Real processes, started together: writers of one project's catalog through the library (the
read-modify-write that used to lose entries), then 2 and 4 `prewheel build` runs with
overlapping requirement sets.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from clitools import prewheel
from reliakit import write_config as module_config
from upstream import Upstream

# Each writer waits for the go file, then publishes its wheels of one project.
PUBLISHER = """\
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
from indexkit import wheel_bytes
from builder.stages.publish import Publisher
from builder.wheelhouse import Wheelhouse

wh_dir, go, first, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
publisher = Publisher(Wheelhouse(wh_dir))
tmp = wh_dir.parent / f"tmp-{{first}}"
tmp.mkdir()
while not go.exists():
    time.sleep(0.01)
for n in range(first, first + count):
    name, data = wheel_bytes("pw-crowd", f"1.{{n}}")
    (tmp / name).write_bytes(data)
    publisher.wheel(tmp / name, origin="downloaded", accels=None)
"""


def test_concurrent_publishers_lose_no_catalog_entry(tmp_path: Path) -> None:
    wh, go = tmp_path / "wh", tmp_path / "go"
    script = PUBLISHER.format(tests=str(Path(__file__).resolve().parents[1]))
    writers, per_writer = 4, 10
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(wh), str(go), str(i * per_writer), str(per_writer)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    time.sleep(1)  # every writer imported prewheel and waits
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    catalog = json.loads((wh / "catalog" / "pw-crowd.json").read_text())["files"]
    print(f"{writers} writers x {per_writer} wheels: {len(catalog)} catalog entries")
    assert len(catalog) == writers * per_writer
    page = json.loads((wh / "cpu" / "simple" / "pw-crowd" / "index.json").read_text())
    assert len(page["files"]) == writers * per_writer
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 0, check.stdout + check.stderr


def _pure(module: str) -> dict[str, str]:
    return {f"{module}/__init__.py": f"VALUE = {module!r}\n"}


@pytest.fixture(scope="module")
def crowd(upstream: Upstream) -> list[str]:
    names = [f"pw-mb-{c}" for c in "abcd"]
    for name in names:
        upstream.add_sdist(name, "1.0", _pure(name.replace("-", "_")))
    return names


def _run_builders(
    root: Path, upstream: Upstream, sets: list[list[str]]
) -> tuple[Path, list[dict[str, str]]]:
    wh = root / "wh"
    config = module_config(root, upstream.url, build={"jobs": 1})
    procs = []
    for i, names in enumerate(sets):
        reqs = root / f"requirements-{i}.txt"
        reqs.write_text("".join(f"{n}==1.0\n" for n in names))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "builder", "build", "-r", str(reqs), "-c", str(config),
                 "--wheelhouse", str(wh), "--json"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )  # fmt: skip
    statuses = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        statuses.append({r["name"]: r["status"] for r in json.loads(out)["results"]})
    return wh, statuses


@pytest.mark.slow
@pytest.mark.parametrize(
    "sets",
    [
        [["pw-mb-a", "pw-mb-b", "pw-mb-c"], ["pw-mb-c", "pw-mb-b", "pw-mb-d"]],
        [["pw-mb-a", "pw-mb-b"], ["pw-mb-b", "pw-mb-c"], ["pw-mb-c", "pw-mb-d"],
         ["pw-mb-d", "pw-mb-a"]],
    ],
    ids=["2-builders", "4-builders"],
)  # fmt: skip
def test_builders_sharing_a_wheelhouse_build_each_key_once(
    upstream: Upstream, crowd: list[str], tmp_path: Path, sets: list[list[str]]
) -> None:
    wh, statuses = _run_builders(tmp_path, upstream, sets)
    built = Counter(n for s in statuses for n, st in s.items() if st == "built")
    reused = Counter(n for s in statuses for n, st in s.items() if st == "cached")
    print(f"{len(sets)} builders: built {dict(built)}, reused {dict(reused)}")
    wanted = {n for s in sets for n in s}
    assert set(built) == wanted and set(built.values()) == {1}, statuses
    for name in wanted:
        catalog = json.loads((wh / "catalog" / f"{name}.json").read_text())["files"]
        assert len(catalog) == 1, catalog
    records = [json.loads(p.read_text()) for p in (wh / "builds").glob("*.json")]
    assert {r["name"] for r in records if r["result"] == "ok"} >= wanted
    for rec in records:  # each run writes logs of its own, named by its run
        assert (wh / rec["log"]).stat().st_size > 0
    assert len({p.name for p in (wh / "logs").iterdir()}) >= len(wanted)
    assert not list(wh.glob("staging/*/*.whl")), "a staged build was left behind"
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 0, check.stdout + check.stderr


# Makes and removes nested directories as fast as it can, until the stop file appears: another
# builder's uv making its `.tmp*` directories in the wheel cache, and removing them.
CHURN = """\
import os, shutil, sys
from pathlib import Path
roots, stop = [Path(a) for a in sys.argv[1:-1]], Path(sys.argv[-1])
n = 0
while not stop.exists():
    for root in roots:
        d = root / f".tmp{n}"
        os.makedirs(d / "a" / "b" / "c", exist_ok=True)
        (d / "a" / "f").write_bytes(b"x")
        shutil.rmtree(d, ignore_errors=True)
    n += 1
"""


def test_the_sweep_of_dead_writers_temp_files_outlives_another_builders_directories(
    tmp_path: Path,
) -> None:
    """The sweep a run starts with (`Wheelhouse.leftovers`) while another process makes and
    removes directories in the wheelhouse: no directory gone meanwhile ends it (a 4-builder
    run died of `FileNotFoundError` on one of uv's `.tmp*` in `cache/uv`). It finds a dead
    writer's temp file among the wheels, and leaves the tools' caches alone."""
    from builder.wheelhouse import Wheelhouse

    wh = Wheelhouse(tmp_path / "wh")
    dead = ".x.whl.pw999999999.abc123.tmp"  # no process has that pid
    for d in ("files/ab", "cache/uv", "cache/zig", "cache/noop"):
        (wh.root / d).mkdir(parents=True)
        (wh.root / d / dead).write_bytes(b"")
    stop = tmp_path / "stop"
    churn = subprocess.Popen(
        [sys.executable, "-c", CHURN, str(wh.root / "cache" / "uv"), str(wh.root / "files"),
         str(stop)]
    )  # fmt: skip
    try:
        for _ in range(300):
            found = wh.leftovers()
    finally:
        stop.touch()
        churn.wait(timeout=60)
    assert found == [wh.root / "cache/noop" / dead, wh.root / "files/ab" / dead], found
