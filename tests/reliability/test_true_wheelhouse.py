"""A wheelhouse that stays true: a damaged wheel is never called cached, `index check` finds
stray files and passes on an empty wheelhouse, `--repair` puts things right and says how; and
without bubblewrap the build still works, saying once what it could not do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel
from reliakit import write_config as module_config
from upstream import Upstream

REQS = "pw-pure==1.0\npw-haswheel==1.0\n"


def test_index_check_passes_on_an_empty_wheelhouse(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    wh.mkdir()
    proc = prewheel("index", "check", "--wheelhouse", wh)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "index OK" in proc.stdout
    gone = prewheel("index", "check", "--wheelhouse", tmp_path / "nowhere")
    assert gone.returncode == 2 and "no wheelhouse at" in gone.stderr


@pytest.fixture(scope="module")
def built(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("true")
    reqs = root / "requirements.txt"
    reqs.write_text(REQS)
    config = module_config(root, upstream.url)
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", root / "wh", "--json")
    assert proc.returncode == 0, proc.stderr
    return {"root": root, "reqs": reqs, "config": config}


def _copy(built: dict[str, Any], tmp_path: Path) -> Path:
    wh = tmp_path / "wh"
    shutil.copytree(built["root"] / "wh", wh, symlinks=True)
    for stamp in wh.glob("cache/noop/*"):
        stamp.unlink()
    return wh


def _build(built: dict[str, Any], wh: Path) -> dict[str, str]:
    proc = prewheel(
        "build", "-r", built["reqs"], "-c", built["config"], "--wheelhouse", wh, "--json"
    )
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}


@pytest.mark.slow
def test_a_damaged_wheel_is_not_called_cached(built: dict[str, Any], tmp_path: Path) -> None:
    wh = _copy(built, tmp_path)
    (pure,) = wh.glob("files/*/pw_pure-*.whl")
    (haswheel,) = wh.glob("files/*/pw_haswheel-*.whl")
    good = pure.read_bytes(), haswheel.read_bytes()
    for wheel in (pure, haswheel):
        with wheel.open("ab") as fh:
            fh.write(b"x")  # what a hostile build did to a published wheel
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 1 and check.stderr.count("sha256") >= 2, check.stderr
    assert _build(built, wh) == {"pw-pure": "built", "pw-haswheel": "downloaded"}
    assert haswheel.read_bytes() == good[1]  # the same bytes again, under the same name
    assert pure.exists()  # the same key, the same file name: replaced
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 0, check.stdout + check.stderr
    assert _build(built, wh) == {"pw-pure": "cached", "pw-haswheel": "cached"}


@pytest.mark.slow
def test_check_finds_strays_and_repair_puts_them_right(
    built: dict[str, Any], tmp_path: Path
) -> None:
    wh = _copy(built, tmp_path)
    (pure,) = wh.glob("files/*/pw_pure-*.whl")
    (haswheel,) = wh.glob("files/*/pw_haswheel-*.whl")
    # A wheel whose catalog entry was lost (a builder killed between file and catalog, before
    # journals), a stray file, a metadata file with no wheel, a damaged wheel, a stale page.
    catalog = wh / "catalog" / "pw-pure.json"
    catalog.unlink()
    (wh / "files" / "ab").mkdir(exist_ok=True)
    (wh / "files" / "ab" / "notes.txt").write_text("stray")
    (wh / "files" / "ab" / "gone-1.0-py3-none-any.whl.metadata").write_text("stray")
    with haswheel.open("ab") as fh:
        fh.write(b"x")
    (wh / "cpu" / "simple" / "pw-haswheel" / "index.html").write_text("stale")
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 1
    problems = [ln for ln in check.stderr.splitlines() if ln.startswith("problem:")]
    print(f"check found {len(problems)} problems")
    for needle in (pure.name, "notes.txt", "gone-1.0", "sha256", "index.html"):
        assert any(needle in p for p in problems), (needle, problems)
    repaired = prewheel("index", "check", "--repair", "--wheelhouse", wh)
    lines = [ln for ln in repaired.stdout.splitlines() if ln.startswith("repair:")]
    print("repair said:", *lines, sep="\n  ")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert any("published" in ln and pure.name in ln for ln in lines)
    assert any("dropped" in ln and haswheel.name in ln for ln in lines)
    assert any("notes.txt" in ln for ln in lines) and any("gone-1.0" in ln for ln in lines)
    assert json.loads(catalog.read_text())["files"][0]["filename"] == pure.name
    assert not haswheel.exists()
    # The next build downloads the dropped wheel again; nothing else.
    assert _build(built, wh) == {"pw-pure": "cached", "pw-haswheel": "downloaded"}
    assert prewheel("index", "check", "--wheelhouse", wh).returncode == 0


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["netns", "none"])
def test_without_bubblewrap_the_build_works_and_says_so_once(
    upstream: Upstream, tmp_path: Path, mode: str
) -> None:
    """`[build] sandbox` below bubblewrap: what a machine without it gets. Package code still
    finds a loopback interface, as under bubblewrap (netifaces' smoke test asks for it):
    `unshare --net` alone leaves it down."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-pure==1.0\npw-cext==1.0\n")
    loopback = (  # bind alone passes with the interface down; connect does not
        "import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n"
        "socket.create_connection(s.getsockname()).close()\n"
    )
    config = module_config(
        tmp_path, upstream.url, build={"sandbox": mode}, packages={"pw-pure": {"smoke": loopback}}
    )
    wh = tmp_path / "wh"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.returncode == 0, proc.stderr
    said = [ln for ln in proc.stderr.splitlines() if "sandbox:" in ln]
    assert len(said) == 1, proc.stderr
    assert f"sandbox: {mode}" in said[0]
    records = [json.loads(p.read_text()) for p in (wh / "builds").glob("*.json")]
    assert {r["sandbox"]["mode"] for r in records} == {mode}
    assert all(r["sandbox"]["missing"] for r in records)
    network = {r["inputs"]["sandbox"]["network"] for r in records}
    assert network == {"off" if mode == "netns" else "on"}  # and so in the cache key


def _cut_publish(tmp_path: Path, first: str, second: str, cut: str) -> tuple[Any, str, str]:
    """A wheelhouse with `first` 1.0 published and listed, then the publish of a `second`
    wheel by a process that is gone by now: `cut` (a line of Python, `wh` and `tree` at hand)
    makes it exit 9 half way. Returns the wheelhouse and the two file names."""
    import subprocess
    import sys

    from indexkit import wheel_bytes

    from builder import index
    from builder.wheelhouse import Wheelhouse

    wh = Wheelhouse(tmp_path / "wh")
    wh.ensure()
    names = []
    for project, version in ((first, "1.0"), (second, "2.0")):
        name, data = wheel_bytes(project, version)
        (tmp_path / name).write_bytes(data)
        names.append(name)
    wh.publish(tmp_path / names[0], origin="downloaded", accels=None)
    index.update_project(wh, first)
    script = (
        "import sys\nfrom pathlib import Path\nfrom builder.wheelhouse import Wheelhouse\n"
        "from builder.index import tree\n"
        f"wh = Wheelhouse(Path(sys.argv[1]))\n{cut}\n"
        "wh.publish(Path(sys.argv[2]), origin='downloaded', accels=None,\n"
        "           pages=lambda project: tree.update_project(wh, project))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(wh.root), str(tmp_path / names[1])])
    assert done.returncode == 9
    assert [p.name for p in wh.pending()], "the journal of the cut publish"
    return wh, names[0], names[1]


def test_a_publish_cut_short_is_finished_by_the_next_check(tmp_path: Path) -> None:
    """A builder killed between storing a wheel and writing its catalog entry and pages left
    its journal: `index check` (like the next build) finishes that publish first."""
    wh, first, cut = _cut_publish(
        tmp_path, "pw-cut", "pw-cut", "wh._finish = lambda *_: sys.exit(9)"
    )
    assert [e.filename for e in wh.entries("pw-cut")] == [first]
    check = prewheel("index", "check", "--wheelhouse", wh.root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"finished the interrupted publish of {cut}" in check.stderr
    assert sorted(e.filename for e in wh.entries("pw-cut")) == sorted([first, cut])
    assert not wh.pending()


def test_a_publish_cut_between_its_page_and_the_root_list_is_finished_with_the_root_list(
    tmp_path: Path,
) -> None:
    """A builder killed after a new project's page was written and before the root list named
    it (seen in the kill loop): the page alone says the project is listed, so finishing the
    publish writes the root lists whatever the page says."""
    wh, _, cut = _cut_publish(
        tmp_path, "pw-first", "pw-new", "tree.write_root = lambda *_: sys.exit(9)"
    )
    root = wh.root / "cpu" / "simple"
    assert (root / "pw-new" / "index.html").is_file(), "the page was written"
    assert "pw-new" not in (root / "index.html").read_text(), "the root list was not"
    check = prewheel("index", "check", "--wheelhouse", wh.root)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"finished the interrupted publish of {cut}" in check.stderr
    assert "pw-new" in (root / "index.html").read_text()
    assert "pw-new" in (root / "index.json").read_text()
    assert not wh.pending()


def test_a_stop_undoes_a_publish_before_it_is_visible_and_waits_for_one_that_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal while a wheel is being stored: the publish is undone (no file, no journal, no
    entry). A signal while its catalog entry and pages are written: the stop waits for them,
    and nothing is published after it."""
    import signal
    import threading

    from indexkit import wheel_bytes

    from builder import cmd, wheelhouse
    from builder.errors import Interrupted
    from builder.wheelhouse import Wheelhouse

    wh = Wheelhouse(tmp_path / "wh")
    wh.ensure()
    name, data = wheel_bytes("pw-stop", "1.0")
    (tmp_path / name).write_bytes(data)
    read_metadata = wheelhouse.read_metadata

    def stop_once_stored(path: Path) -> bytes:
        if path.parent.parent.name == "files":  # the stored copy: the signal comes now
            cmd.request_stop(signal.SIGTERM)
        return read_metadata(path)

    monkeypatch.setattr(wheelhouse, "read_metadata", stop_once_stored)
    try:
        with pytest.raises(Interrupted):
            wh.publish(tmp_path / name, origin="built", accels=None)
    finally:
        cmd.reset_stop()
    monkeypatch.undo()
    assert wh.entries("pw-stop") == [] and wh.pending() == []
    assert not [p for p in (wh.root / "files").rglob("*") if p.is_file()]

    writing, release, stopped = threading.Event(), threading.Event(), threading.Event()

    def slow_pages(project: str) -> None:
        writing.set()
        release.wait(10)

    def stop() -> None:
        writing.wait(10)
        cmd.request_stop(signal.SIGTERM)
        stopped.set()

    stopper = threading.Thread(target=stop)
    stopper.start()
    try:
        publish = threading.Thread(
            target=wh.publish, args=(tmp_path / name,),
            kwargs={"origin": "built", "accels": None, "pages": slow_pages},
        )  # fmt: skip
        publish.start()
        assert writing.wait(10)
        assert not stopped.wait(0.5), "the stop did not wait for the visible step"
        release.set()
        publish.join(10)
        stopper.join(10)
        assert stopped.is_set()
        assert [e.filename for e in wh.entries("pw-stop")] == [name] and wh.pending() == []
        name2, data2 = wheel_bytes("pw-stop", "2.0")
        (tmp_path / name2).write_bytes(data2)
        with pytest.raises(Interrupted):
            wh.publish(tmp_path / name2, origin="built", accels=None)
        assert [e.filename for e in wh.entries("pw-stop")] == [name]
    finally:
        release.set()
        cmd.reset_stop()
