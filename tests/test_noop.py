"""The no-op fast path: a repeated build is answered from a stamp, and only when nothing changed.

A stamp may make a run faster, never give another answer. So most tests here change exactly
one thing a build depends on, after a stamp was written, and check that the next run is the
full one (and does what a full run does: rebuild what the change touched, or nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel, snapshot
from upstream import Upstream

from builder import stamp
from builder.config import parse_config
from builder.targets import resolve_targets

pytestmark = pytest.mark.slow

REQS = "pw-cext==1.0\npw-pure==1.0\n"
ARGS = ("-r", "requirements.txt", "-c", "prewheel.toml", "--wheelhouse", "wh")


def _config(url: str, extra: str = "") -> str:
    return f'[index]\nupstream = "{url}"\n{extra}'


class Project:
    """A directory with requirements, a config and a wheelhouse, built as a user builds."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        self.wh = root / "wh"
        self.env = env

    def build(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return prewheel("build", *ARGS, *args, cwd=self.root, env={**self.env, **(env or {})})

    def report(self, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        proc = self.build("--json", *args, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        data: dict[str, Any] = json.loads(proc.stdout)
        data["stderr"] = proc.stderr
        return data

    def stamps(self) -> list[Path]:
        return sorted((self.wh / "cache" / "noop").glob("*.stamp"))


def _statuses(report: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["status"] for r in report["results"]}


@pytest.fixture(scope="module")
def baseline(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noop-baseline")
    (root / "requirements.txt").write_text(REQS)
    (root / "prewheel.toml").write_text(_config(upstream.url))
    proc = Project(root, dict(os.environ)).build("--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert set(_statuses(json.loads(proc.stdout)).values()) == {"built"}
    return root


@pytest.fixture
def project(baseline: Path, tmp_path: Path) -> Project:
    """A copy of the built project, with an empty directory early on PATH (for the PATH test),
    after one no-op run has written its stamp."""
    root = tmp_path / "project"
    shutil.copytree(baseline, root)
    (tmp_path / "bin").mkdir()
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PREWHEEL_DEBUG": "1",
    }
    proj = Project(root, env)
    time.sleep(0.2)  # the copy is older than the racy margin when the stamp is written
    first = proj.report()
    assert first["fast_path"] is False and set(_statuses(first).values()) == {"cached"}
    assert len(proj.stamps()) == 1, first["stderr"]
    return proj


def test_a_repeated_noop_is_answered_from_the_stamp_and_writes_nothing(project: Project) -> None:
    before = snapshot(project.root)
    again = project.report()
    assert again["fast_path"] is True, again["stderr"]
    assert again["counts"] == {"built": 0, "downloaded": 0, "cached": 2, "skipped": 0, "failed": 0}
    assert _statuses(again) == {"pw-cext": "cached", "pw-pure": "cached"}
    # Output options are not part of the stamp: the table comes from it as well.
    human = project.build()
    assert human.returncode == 0, human.stderr
    assert "nothing changed since the last run: answered from wh/cache/noop/" in human.stdout
    for name in ("pw-cext", "pw-pure"):
        assert any(name in line and "cached" in line for line in human.stdout.splitlines())
    assert snapshot(project.root) == before


def _edit_requirements(p: Project) -> None:
    with (p.root / "requirements.txt").open("a") as fh:
        fh.write("# a comment\n")


def _touch_index_page(p: Project) -> None:
    page = p.wh / "cpu" / "simple" / "pw-pure" / "index.html"
    page.write_bytes(page.read_bytes())


def _remove_wheel(p: Project) -> None:
    catalog = json.loads((p.wh / "catalog" / "pw-pure.json").read_text())
    path = next(p.wh.glob(f"files/**/{catalog['files'][0]['filename']}"))
    path.unlink()


def _cc_on_path(p: Project) -> None:
    cc = shutil.which("cc")
    assert cc is not None
    (Path(p.env["PATH"].split(os.pathsep)[0]) / "cc").symlink_to(cc)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (_edit_requirements, "requirements.txt changed"),
        (_touch_index_page, "the wheelhouse changed"),
        (_remove_wheel, "the wheelhouse changed"),
        (_cc_on_path, "/bin changed"),
    ],
    ids=["requirements", "index-page", "wheel-removed", "compiler-on-path"],
)
def test_any_changed_input_runs_the_full_build(project: Project, change: Any, why: str) -> None:
    change(project)
    after = project.report()
    assert after["fast_path"] is False
    assert why in after["stderr"]
    assert after["counts"]["failed"] == 0


def test_removed_wheel_is_replaced_by_the_full_run(project: Project) -> None:
    _remove_wheel(project)
    after = project.report()
    assert after["fast_path"] is False and _statuses(after)["pw-pure"] == "built"


def test_environment_and_arguments_are_part_of_the_stamp(project: Project) -> None:
    changed = project.report(env={"PW_UNRELATED": "1"})
    assert changed["fast_path"] is False and "env changed (PW_UNRELATED)" in changed["stderr"]
    other_args = project.report("--target", "cp3*")
    assert other_args["fast_path"] is False and "no stamp" in other_args["stderr"]
    # One stamp per command line and directory: the last no-op's environment is the one held.
    back = project.report()
    assert back["fast_path"] is False and "env changed (PW_UNRELATED)" in back["stderr"]
    assert project.report()["fast_path"] is True
    assert project.report("--refresh")["fast_path"] is False  # --refresh always resolves


def test_config_env_change_rebuilds_only_that_package(project: Project) -> None:
    config = project.root / "prewheel.toml"
    config.write_text(config.read_text() + '[packages.pw-cext]\nenv = { PW_EXTRA = "1" }\n')
    after = project.report()
    assert after["fast_path"] is False and "prewheel.toml changed" in after["stderr"]
    assert _statuses(after) == {"pw-cext": "built", "pw-pure": "cached"}
    # A run that built something writes no stamp; the next, a no-op, writes one again.
    assert project.report()["fast_path"] is False
    assert project.report()["fast_path"] is True


def test_a_run_that_asks_the_network_is_never_stamped(project: Project) -> None:
    (project.root / "requirements.txt").write_text("pw-pure\n")
    for _ in range(2):
        report = project.report("--allow-unpinned")
        assert report["fast_path"] is False
        assert _statuses(report) == {"pw-pure": "cached"}
        assert report["unpinned"] == ["pw-pure"]  # and the human output says what to pin
    assert len(project.stamps()) == 1  # the plain command's, from before


_AUDIT = """
import atexit, json, sys
seen = []
def hook(event, args):
    if event in ("open", "subprocess.Popen", "os.listdir", "os.scandir") and args[0] is not None:
        seen.append([event, str(args[0])])
sys.addaudithook(hook)
log = sys.argv.pop(1)
atexit.register(lambda: open(log, "w").write(json.dumps({"seen": seen, "path": sys.path})))
from builder.entry import main
main()
"""


def test_every_file_the_full_run_reads_is_in_its_stamp(project: Project, tmp_path: Path) -> None:
    """Under an audit hook: each file the full no-op run opened, each program it ran and each
    directory it listed is in the stamp, unless it is the wheelhouse's or Python's own."""
    for old in project.stamps():
        old.unlink()
    log = tmp_path / "audit.json"
    proc = subprocess.run(
        [sys.executable, "-c", _AUDIT, str(log), "build", *ARGS],
        capture_output=True,
        text=True,
        cwd=project.root,
        env=project.env,
    )
    assert proc.returncode == 0, proc.stderr
    (written,) = project.stamps()
    watched = {path for _, path, _ in noop_stamp(written)["watched"]}
    own = [
        project.wh.resolve(),
        Path(sys.prefix),
        Path(sys.base_prefix),
        Path(stamp.__file__).parent,
        *(Path(p) for p in sys.path if p),
    ]
    audit = json.loads(log.read_text())
    import_path = {Path(project.root, p).resolve() for p in audit["path"]}
    missed = set()
    for event, raw in audit["seen"]:
        path = Path(project.root, raw).resolve() if not raw.isdigit() else None
        if path is None or path == log or not path.exists() or (path.is_dir() and event == "open"):
            continue  # descriptors, temporary files, directories opened to be listed
        if any(path.is_relative_to(o.resolve()) for o in own) and event != "subprocess.Popen":
            continue
        if event == "os.listdir" and path in import_path:
            continue  # the import system, looking for modules: the stamp has sys.path
        if str(path) not in watched and raw not in watched:
            missed.add(f"{event} {raw}")
    assert not missed, f"read by the full run but not in its stamp: {sorted(missed)}"


def noop_stamp(path: Path) -> dict[str, Any]:
    import marshal

    data: dict[str, Any] = marshal.loads(path.read_bytes())
    return data


def test_discovery_watches_where_it_looked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding an interpreter looks in pyenv's versions, /opt/python and PATH: each place is
    watched, so a Python installed there later is seen by the next run."""
    root = tmp_path / "pyenv"
    (root / "versions").mkdir(parents=True)
    monkeypatch.setenv("PYENV_ROOT", str(root))
    config = parse_config({"target": [{"python": "3.99", "accel": "cpu"}]}, source="<test>")
    with stamp.recording(tmp_path / "wh") as rec:
        (target,) = resolve_targets(config)
    assert target.missing
    paths = {path for _, path in rec.watched}
    assert str(root / "versions") in paths
    assert "/opt/python/cp399-cp399/bin/python" in paths
    for d in os.environ["PATH"].split(os.pathsep):
        assert (
            os.path.abspath(d) in paths and os.path.join(os.path.abspath(d), "python3.99") in paths
        )


def test_a_file_changed_moments_ago_is_not_stamped(tmp_path: Path) -> None:
    """Timestamps tick coarsely: a file written just before the stamp could change again
    without its times moving, so the stamp waits for a later run (git's racy-file rule)."""
    wh = tmp_path / "wh"
    wh.mkdir()
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\n")
    argv = ["build", "-r", "requirements.txt", "--wheelhouse", str(wh)]
    report = {"results": [], "counts": {}, "skipped_targets": []}
    with stamp.recording(wh, argv) as rec:
        stamp.watch_path(tool)
        assert rec.save(report) == "a file changed moments ago; the next run will stamp"
        time.sleep(0.2)
        assert rec.save(report) is None
    assert stamp.check(argv) == (report, False, stamp._stamp_path(str(wh), argv[1:]))
    tool.chmod(0o755)  # a mode change moves ctime: the stamp no longer holds
    assert stamp.check(argv) is None
