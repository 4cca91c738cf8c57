"""A run's scratch directory: what a `kill -9` at any moment leaves, the next run removes.

Pure file operations, no process started: a run killed while it removed its own scratch
directory, or between making it and marking it, is stood in for by the state it would leave.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from builder import scratch

pytestmark = pytest.mark.usefixtures("no_processes")


def _dead_pid() -> int:
    """A pid no process has now."""
    return next(p for p in range(4_194_000, 1, -1) if not Path(f"/proc/{p}").exists())


def test_a_run_killed_while_removing_its_own_leaves_it_marked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner file goes last: a kill in the middle of the removal (here the first
    subdirectory's) leaves the directory marked, so the next run's `clean_stale` takes it."""
    root = scratch.make(tmp_path)
    for name in ("build-a", "build-b", "verify-c"):
        (root / name / "env").mkdir(parents=True)
    (root / "index.sock").write_text("")

    class Killed(BaseException):
        pass

    def killed(path: object, ignore_errors: bool = False) -> None:
        raise Killed

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(Killed):
        scratch._remove(root)
    monkeypatch.undo()
    assert (root / scratch.OWNER).is_file(), "the owner file went before the rest"
    (root / scratch.OWNER).write_text(f"{_dead_pid()} 12345\n")  # its owner is gone now
    assert scratch.clean_stale(tmp_path) == [root]
    assert not root.exists()


def test_an_unmarked_directory_is_removed_when_the_pid_in_its_name_is_gone(
    tmp_path: Path,
) -> None:
    """A run killed between making its directory and writing its owner file: the pid in the
    name says whose it was. One whose pid still runs is left alone (it may be marking it)."""
    gone = tmp_path / f"{scratch.PREFIX}{_dead_pid()}-abcd1234"
    (gone / "build-x").mkdir(parents=True)
    live = tmp_path / f"{scratch.PREFIX}{os.getpid()}-efgh5678"
    live.mkdir()
    assert scratch.clean_stale(tmp_path) == [gone]
    assert live.is_dir()


def test_a_session_removes_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    with scratch.session() as root:
        (root / "build-a" / "env" / "lib").mkdir(parents=True)
        (root / "build-a" / "env" / "lib" / "x.py").write_text("")
        (root / "log.txt").write_text("")
    assert not root.exists()
    assert list(tmp_path.iterdir()) == []
