"""`python -m MODULE` started ahead (`cmd.spare`): the command `run(..., spare=tag)` runs in
it, as `python -m` would have run it (its arguments, environment, directory, output appended
to the log after the `$` line, exit status), with the imports it was given already done; a
spare not needed ends (`drop_spares`), and one that is gone leaves the command to start as
any other. The repair's auditwheel runs this way (`stages.repair.prepare`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from builder import cmd
from builder.errors import CommandError

# Run by `python -m timeit` (the standard library's: `-I` keeps the tests off sys.path): it
# prints whether `decimal` was imported (timeit never imports it), its parent (the launcher),
# its directory and a variable of its environment.
SAYS = (
    "import os, sys; print('decimal', 'decimal' in sys.modules, 'parent', os.getppid(), "
    "'cwd', os.getcwd(), 'mark', os.environ.get('PW_SPARE_MARK'), flush=True)"
)


def _timeit(statement: str) -> list[str]:
    return [sys.executable, "-m", "timeit", "-n", "1", "-r", "1", statement]


def test_a_command_runs_in_the_spare_started_for_it(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    cmd.spare("timeit", ["timeit", "decimal"], tag="a", env=dict(os.environ))
    launcher = cmd._spares[("timeit", "a")]  # it imports before it reads what to run
    env = {**os.environ, "PW_SPARE_MARK": "told"}
    done = cmd.run(_timeit(SAYS), step="t", log_file=log, env=env, cwd=tmp_path, spare="a")
    assert done.returncode == 0
    text = log.read_text()
    said = f"decimal True parent {launcher.pid} cwd {tmp_path} mark told"
    assert said in done.stdout and said in text, text
    assert text.startswith(f"$ {sys.executable} -m timeit"), text
    assert "[exit 0 after" in text
    assert ("timeit", "a") not in cmd._spares
    assert launcher.poll() == 0


def test_a_failure_in_a_spare_is_the_commands_own(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    cmd.spare("timeit", ["timeit"], tag="b", env=dict(os.environ))
    with pytest.raises(CommandError) as caught:
        cmd.run(_timeit("raise ValueError('no good')"), step="t", log_file=log, spare="b")
    assert caught.value.log == str(log)
    assert "ValueError: no good" in caught.value.tail
    assert "ValueError: no good" in log.read_text()


def test_without_a_spare_or_with_one_gone_the_command_starts_as_any_other(
    tmp_path: Path,
) -> None:
    """No spare for the tag: started anew (its parent is not a spare). A spare killed
    before it was told: the same. A spare not needed ends at `drop_spares`."""
    log = tmp_path / "c.log"
    done = cmd.run(_timeit(SAYS), step="t", log_file=log, spare="none")
    assert "decimal False" in done.stdout
    cmd.spare("timeit", ["timeit", "decimal"], tag="c", env=dict(os.environ))
    cmd._spares[("timeit", "c")].kill()
    cmd._spares[("timeit", "c")].wait()
    done = cmd.run(_timeit(SAYS), step="t", log_file=log, spare="c")
    assert "decimal False" in done.stdout

    cmd.spare("timeit", ["timeit"], tag="d", env=dict(os.environ))
    waiting = cmd._spares[("timeit", "d")]
    cmd.drop_spares()
    assert waiting.poll() is not None and not cmd._spares


def test_spares_are_bounded_one_a_tag_and_at_most_spares_kept() -> None:
    """A second spare for a tag ends the first; past `SPARES_KEPT` the oldest ends."""
    env = dict(os.environ)
    cmd.spare("timeit", ["timeit"], tag="x", env=env)
    first = cmd._spares[("timeit", "x")]
    cmd.spare("timeit", ["timeit"], tag="x", env=env)
    assert first.poll() is not None and cmd._spares[("timeit", "x")] is not first
    for n in range(cmd.SPARES_KEPT):
        cmd.spare("timeit", ["timeit"], tag=f"y{n}", env=env)
    assert ("timeit", "x") not in cmd._spares and len(cmd._spares) == cmd.SPARES_KEPT
    kept = list(cmd._spares.values())
    cmd.drop_spares()
    assert all(p.poll() is not None for p in kept)
