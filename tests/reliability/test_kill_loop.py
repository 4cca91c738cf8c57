"""`kill -9` of prewheel at random points of resolving, building and publishing.

After each kill: the index is consistent (`prewheel index check` passes), and no process of
the killed run is left. At the end a normal build completes and no scratch directory of a
killed run is left.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter
from pathlib import Path

import pytest
from clitools import lines_of, prewheel, start, wait_for
from reliakit import kill_marked, scratch_dirs, wait_gone
from reliakit import write_config as module_config
from upstream import Upstream

pytestmark = pytest.mark.slow

REQS = "pw-cext==1.0\npw-pure==1.0\npw-haswheel==1.0\n"
STEPS = {"fetch": "build", "build": "build", "repair": "build", "verify": "publish",
         "download": "publish", "relist": "publish"}  # fmt: skip
KILLS, MAX_ROUNDS = 4, 12


def _phase(lines: list[str]) -> str:
    """Where the run was: the step its last progress line names."""
    steps = [ln.rsplit(": ", 1)[-1].split()[0] for ln in lines if ln.startswith("[pw-")]
    return STEPS.get(steps[-1], "publish") if steps else "resolve"


def _config(root: Path, upstream: Upstream, i: int) -> Path:
    """Settings that change the keys of pw-cext and pw-pure: each round has builds to do."""
    env = {"env": {"PW_ROUND": str(i)}}
    return module_config(root, upstream.url, packages={"pw-cext": env, "pw-pure": env})


def test_kill_9_at_random_points_leaves_a_consistent_wheelhouse(
    upstream: Upstream, tmp_path: Path
) -> None:
    seed = int(os.environ.get("PREWHEEL_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    print(f"seed {seed} (PREWHEEL_KILL_SEED={seed} runs these rounds again)")
    wh, reqs = tmp_path / "wh", tmp_path / "requirements.txt"
    reqs.write_text(REQS)
    # Six rounds aimed at random points; a run that ended before its kill (fast steps) is
    # followed by more rounds, up to MAX_ROUNDS, until KILLS kills have landed.
    plan = ["resolve", "build", "publish"] * (MAX_ROUNDS // 3)
    rng.shuffle(plan)
    killed: Counter[str] = Counter()
    pids, ran = [], []
    for i, aim in enumerate(plan):
        if i >= 6 and sum(killed.values()) >= KILLS:
            break
        ran.append(aim)
        config = _config(tmp_path, upstream, i)
        extra = ["--refresh"] if aim == "resolve" else []
        proc = start("build", "-r", reqs, "-c", config, "--wheelhouse", wh, *extra)
        with lines_of(proc) as got:
            if aim == "resolve":
                wait_for(got, proc, rng.uniform(0.2, 3.0), "never printed")
            else:
                needle = ": verify" if aim == "publish" else ": build"
                assert wait_for(got, proc, 180, needle), "".join(got)
                wait_for(got, proc, rng.uniform(0.0, 2.5), "never printed")
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                killed[_phase(got)] += 1
                pids.append(proc.pid)
            proc.wait(timeout=30)
        mark = f"prewheel-{proc.pid}-"
        left = wait_gone(mark)
        kill_marked(mark)
        where = f"seed {seed}, round {i} ({aim})"
        assert not left, f"{where}: processes of the killed run are left: {left}"
        if wh.is_dir():
            check = prewheel("index", "check", "--wheelhouse", wh)
            assert check.returncode == 0, f"{where}: {check.stdout}{check.stderr}"
    print(f"killed during {dict(killed)} (aimed at {ran})")
    final = prewheel("build", "-r", reqs, "-c", _config(tmp_path, upstream, 99), "--wheelhouse", wh)
    assert final.returncode == 0, final.stdout + final.stderr
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 0, check.stdout + check.stderr
    leaked = [d for pid in pids for d in scratch_dirs(pid)]
    assert not leaked, f"scratch directories of killed runs were left: {leaked}"
    assert sum(killed.values()) >= KILLS, f"only {dict(killed)} of {len(ran)} runs were killed"
