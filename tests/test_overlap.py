"""Everything overlapped: the builds of a target whose closure is resolved start while other
targets still resolve (`plan.plan_waves`, `Scheduler`), and the run ends as the same plan run
whole would (one build of a pure wheel for both Pythons, the same results). An sdist the
resolver fetched (through the index proxy) is not downloaded again for its build.

The local upstream holds the cp312 target's resolution up: the page of a project only its
closure has (a `python_version >= "3.12"` dependency) is answered only once the cp311
build's log exists in the wheelhouse. A run that resolved every target before building
would never see that log while the page waits; the page gives up waiting after a bound (the
resolver's own HTTP timeout is 30 s) and says so, and the test fails on that.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from clitools import prewheel
from needs import missing
from upstream import Upstream

from builder.targets import interpreters

pytestmark = pytest.mark.slow

PYTHONS = ("3.11", "3.12")
HOLD = 20.0  # the longest the gated page waits for the build (uv gives up at 30 s)


class _Gate:
    """Holds the gated page until a cp311 build log of pw-ovl appears under `logs`."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.asked = threading.Event()
        self.released_by_build: bool | None = None
        self.stop = threading.Event()

    def wait(self) -> None:
        self.asked.set()
        seen = False
        for _ in range(int(HOLD / 0.05)):
            seen = any(self.logs.glob("pw-ovl-1.0-cp311-*.log"))
            if seen or self.stop.wait(0.05):
                break
        if self.released_by_build is None:
            self.released_by_build = seen


class _Handler(SimpleHTTPRequestHandler):
    gate: _Gate

    def do_GET(self) -> None:
        if self.path.startswith("/simple/pw-ovl-gate/"):
            self.gate.wait()
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def gated(fresh_upstream: Upstream, tmp_path: Path) -> Iterator[tuple[str, _Gate, Path]]:
    fresh_upstream.add_sdist("pw-ovl-gate", "1.0", {"pw_ovl_gate/__init__.py": ""})
    fresh_upstream.add_sdist(
        "pw-ovl",
        "1.0",
        {"pw_ovl/__init__.py": "VALUE = 1\n"},
        deps=["pw-ovl-gate==1.0; python_version >= '3.12'"],
    )
    wh = tmp_path / "wh"
    gate = _Gate(wh / "logs")
    handler = type("Handler", (_Handler,), {"gate": gate})
    with _serving(handler, fresh_upstream.root) as url:
        try:
            yield url, gate, wh
        finally:
            gate.stop.set()


@contextlib.contextmanager
def _serving(handler: type[SimpleHTTPRequestHandler], root: Path) -> Iterator[str]:
    """`root` served by `handler` on 127.0.0.1 while the block runs; yields its index URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=partial(server.serve_forever, poll_interval=0.05), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/simple/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_resolved_targets_builds_start_while_another_target_resolves(
    gated: tuple[str, _Gate, Path], tmp_path: Path
) -> None:
    for py in PYTHONS:
        if interpreters.find_interpreter(py)[0] is None:
            missing(f"CPython {py} is not installed (pyenv install {py})")
    url, gate, wh = gated
    config = tmp_path / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{url}"\n[targets]\npython = {json.dumps(list(PYTHONS))}\n'
        'accel = ["cpu"]\npolicy = ["auto"]\n'
    )
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-ovl==1.0\n")
    proc = prewheel(
        "build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json", "--allow-unpinned",
        "--jobs", "2",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    assert gate.asked.is_set(), "the cp312 resolution never asked for the gated page"
    assert gate.released_by_build, (
        "the cp311 build did not start while the cp312 target was still resolving"
    )
    results = json.loads(proc.stdout)["results"]
    got = {(r["target"], r["name"]): r["status"] for r in results}
    # One build of the pure wheel serves both Pythons ("cached" for the second, as when the
    # plan is run whole), though cp312 was planned after that build had started.
    assert got == {
        ("cp311-cpu-auto", "pw-ovl"): "built",
        ("cp312-cpu-auto", "pw-ovl"): "cached",
        ("cp312-cpu-auto", "pw-ovl-gate"): "built",
    }, got
    assert len(list(wh.glob("logs/pw-ovl-1.0-*.log"))) == 1


def test_a_later_target_that_fails_to_resolve_stops_the_run_and_publishes_nothing(
    fresh_upstream: Upstream, tmp_path: Path
) -> None:
    for py in PYTHONS:
        if interpreters.find_interpreter(py)[0] is None:
            missing(f"CPython {py} is not installed (pyenv install {py})")
    fresh_upstream.add_sdist(
        "pw-ovl-bad",
        "1.0",
        {"pw_ovl_bad/__init__.py": ""},
        deps=["pw-ovl-nonesuch==1.0; python_version >= '3.12'"],
    )
    config = tmp_path / "prewheel.toml"
    config.write_text(
        f'[index]\nupstream = "{fresh_upstream.url}"\n[targets]\n'
        f'python = {json.dumps(list(PYTHONS))}\naccel = ["cpu"]\npolicy = ["auto"]\n'
    )
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-ovl-bad==1.0\n")
    wh = tmp_path / "wh"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "cp312" in proc.stderr and "pw-ovl-nonesuch" in proc.stderr, proc.stderr
    # The cp311 build may have run meanwhile: its wheel may wait in staging/ (the next run
    # takes it, verified, instead of building again), but nothing is published.
    assert not list((wh / "files").rglob("*.whl")), "published though the plan failed"
    assert not (wh / "cpu" / "simple" / "pw-ovl-bad").exists()


class _Counting(SimpleHTTPRequestHandler):
    got: list[str]

    def do_GET(self) -> None:
        self.got.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_an_sdist_the_resolver_fetched_is_not_downloaded_again(
    fresh_upstream: Upstream, tmp_path: Path
) -> None:
    """With the network off for the resolver, it reads the sdist (its metadata needs it)
    through the index proxy; the proxy keeps the bytes, and the build takes them (their
    sha256 checked) instead of fetching the same file from the upstream a second time."""
    from builder.sandbox import isolation

    if not isolation("auto").network_off:
        missing("no sandbox with the network off here: the resolver reads the upstream itself")
    sdist = fresh_upstream.add_sdist("pw-once", "1.0", {"pw_once/__init__.py": "VALUE = 1\n"})
    got: list[str] = []
    handler = type("Handler", (_Counting,), {"got": got})
    with _serving(handler, fresh_upstream.root) as url:
        config = tmp_path / "prewheel.toml"
        config.write_text(
            f'[index]\nupstream = "{url}"\n'
            '[targets]\npython = ["3.11"]\naccel = ["cpu"]\npolicy = ["auto"]\n'
        )
        reqs = tmp_path / "requirements.txt"
        reqs.write_text("pw-once==1.0\n")
        wh = tmp_path / "wh"
        proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.returncode == 0, proc.stderr + proc.stdout
    (result,) = json.loads(proc.stdout)["results"]
    assert result["status"] == "built", result
    fetched = [p for p in got if p.endswith(sdist.name)]
    assert len(fetched) == 1, f"{sdist.name} was fetched {len(fetched)} times: {got}"
    assert (wh / "sources" / sdist.name).read_bytes() == sdist.read_bytes()
