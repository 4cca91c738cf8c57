"""Warm runs that ask little: a cached resolution, revalidated with conditional requests for
the closure's pages only, reused while none changed; `--refresh` resolves again."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from clitools import prewheel
from upstream import Upstream

pytestmark = pytest.mark.slow

HOUR_AGO = time.time() - 3600
AGENTS: list[tuple[str, int, str]] = []  # every request's User-Agent, for the cache test


class _Counting(SimpleHTTPRequestHandler):
    """A static index server that remembers every request: path, status, conditional."""

    seen: list[tuple[str, int, bool]]
    agents: list[tuple[str, int, str]]  # path, status, User-Agent

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        conditional = "If-None-Match" in self.headers or "If-Modified-Since" in self.headers
        self.seen.append((self.path, int(code), conditional))
        self.agents.append((self.path, int(code), self.headers.get("User-Agent", "")))

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def counted(fresh_upstream: Upstream) -> Iterator[tuple[str, list[tuple[str, int, bool]]]]:
    """`fresh_upstream`'s tree, with pw-loose (pw-pure>=1.0), behind a server that records
    requests; its pages an hour old (an older Last-Modified is trusted: upstream._settled)."""
    fresh_upstream.add_sdist("pw-loose", "1.0", {"pw_loose/__init__.py": ""}, deps=["pw-pure>=1.0"])
    _age(fresh_upstream)
    seen: list[tuple[str, int, bool]] = []
    handler = type("Handler", (_Counting,), {"seen": seen, "agents": AGENTS})
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(fresh_upstream.root))
    )
    server.daemon_threads = True
    threading.Thread(target=partial(server.serve_forever, poll_interval=0.05), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/simple/", seen
    finally:
        server.shutdown()
        server.server_close()


def _age(index: Upstream) -> None:
    for page in (index.root / "simple").rglob("index.html"):
        os.utime(page, (HOUR_AGO, HOUR_AGO))


def _plan(root: Path, url: str, reqs: str, *args: str) -> dict[str, str]:
    (root / "prewheel.toml").write_text(f'[index]\nupstream = "{url}"\n')
    (root / "requirements.txt").write_text(reqs)
    (root / "wh").mkdir(exist_ok=True)  # `plan` caches only in an existing wheelhouse
    proc = prewheel(
        "plan", "-r", root / "requirements.txt", "-c", root / "prewheel.toml",
        "--wheelhouse", root / "wh", "--json", *args,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {i["name"]: i["version"] for i in json.loads(proc.stdout)["items"]}


def _pages(seen: list[tuple[str, int, bool]]) -> list[tuple[str, int, bool]]:
    return [s for s in seen if s[0].startswith("/simple/")]


def test_a_warm_run_revalidates_the_closure_and_resolves_only_after_a_change(
    counted: tuple[str, list[tuple[str, int, bool]]], fresh_upstream: Upstream, tmp_path: Path
) -> None:
    url, seen = counted
    closure = {"pw-loose": "1.0", "pw-pure": "1.0"}
    # Only the top level is pinned: the closure is resolved, then cached with validators.
    assert _plan(tmp_path, url, "pw-loose==1.0\n") == closure
    assert len(list((tmp_path / "wh" / "cache").glob("resolve-*.json"))) == 1

    # Warm: one conditional request per closure page, each answered 304, no resolver (which
    # would read the root's pages without conditions, and the files' metadata).
    seen.clear()
    assert _plan(tmp_path, url, "pw-loose==1.0\n") == closure
    pages = _pages(seen)
    assert sorted(p for p, _, _ in pages) == sorted(f"/simple/{n}/" for n in closure)
    assert all(code == 304 and conditional for _, code, conditional in pages), pages

    # A new version of a closure member: its page changes, the closure is resolved again.
    fresh_upstream.add_sdist("pw-pure", "1.1", {"pw_pure/__init__.py": "VALUE = 11\n"})
    seen.clear()
    assert _plan(tmp_path, url, "pw-loose==1.0\n")["pw-pure"] == "1.1"
    assert any(p == "/simple/pw-pure/" and code == 200 for p, code, _ in _pages(seen))

    # Unchanged again (a page read within 2 s of its change is compared by its bytes, so
    # 304 or 200 with the same bytes): one request per page, the cached closure reused.
    (cache,) = (tmp_path / "wh" / "cache").glob("resolve-*.json")
    written = cache.stat().st_mtime_ns
    seen.clear()
    _plan(tmp_path, url, "pw-loose==1.0\n")
    assert sorted(p for p, _, _ in _pages(seen)) == sorted(f"/simple/{n}/" for n in closure)
    assert cache.stat().st_mtime_ns == written, "resolved again although nothing changed"
    seen.clear()
    _plan(tmp_path, url, "pw-loose==1.0\n", "--refresh")
    assert any(code == 200 for _, code, _ in _pages(seen)), "--refresh resolved nothing"


def test_a_fully_pinned_closure_asks_nothing(
    counted: tuple[str, list[tuple[str, int, bool]]], tmp_path: Path
) -> None:
    url, seen = counted
    reqs = "pw-loose==1.0\npw-pure==1.0\n"
    first = _plan(tmp_path, url, reqs)
    seen.clear()
    assert _plan(tmp_path, url, reqs) == first
    assert seen == [], "a locked closure is reused without asking the index"


def _build(root: Path, url: str, reqs: str) -> dict[str, dict[str, object]]:
    (root / "prewheel.toml").write_text(f'[index]\nupstream = "{url}"\n')
    (root / "requirements.txt").write_text(reqs)
    proc = prewheel(
        "build", "-r", root / "requirements.txt", "-c", root / "prewheel.toml",
        "--wheelhouse", root / "wh", "--json", "--allow-unpinned",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {r["name"]: r for r in json.loads(proc.stdout)["results"]}


def test_build_environments_come_from_one_shared_wheel_cache(
    counted: tuple[str, list[tuple[str, int, bool]]], tmp_path: Path
) -> None:
    """Two runs, four builds that each need setuptools: its wheel is downloaded by the first
    build environment, into `cache/uv` of the wheelhouse; the next run's three build
    environments are filled from there without asking the index for it."""
    url, _ = counted
    AGENTS.clear()

    def setuptools_requests() -> list[tuple[str, int, str]]:
        return [a for a in AGENTS if "setuptools" in a[0] and a[2].startswith("uv/")]

    first = _build(tmp_path, url, "pw-pure==1.0\n")
    assert first["pw-pure"]["status"] == "built"
    assert setuptools_requests(), "the first build environment downloads setuptools"
    AGENTS.clear()
    second = _build(tmp_path, url, "pw-loose==1.0\npw-app==1.0\n")
    built = {n for n, r in second.items() if r["status"] == "built"}
    assert built == {"pw-loose", "pw-app", "pw-cext"}
    assert setuptools_requests() == [], "later build environments come from the cache"
    cached = list((tmp_path / "wh" / "cache" / "uv").rglob("setuptools*"))
    assert cached, "the shared wheel cache holds setuptools"
    records = [json.loads(p.read_text()) for p in (tmp_path / "wh" / "builds").glob("*.json")]
    assert records and all("setuptools" in (r["build_deps"] or {}) for r in records)


def test_a_page_read_for_its_files_is_not_read_again_for_its_validator(
    counted: tuple[str, list[tuple[str, int, bool]]], tmp_path: Path
) -> None:
    """A cold build of a pin that is an sdist: prewheel reads its page once (to build it
    ahead), and the cached resolution keeps that read's validator; the page of the member
    only the resolution found (pw-pure) is read by prewheel once too, for its validator.
    The warm run after it still revalidates both."""
    url, seen = counted
    AGENTS.clear()
    first = _build(tmp_path, url, "pw-loose==1.0\n")
    assert {n: r["status"] for n, r in first.items()} == {"pw-loose": "built", "pw-pure": "built"}
    own = [p for p, _, agent in AGENTS if p.startswith("/simple/") and agent == "prewheel"]
    assert sorted(own) == ["/simple/pw-loose/", "/simple/pw-pure/"], own
    seen.clear()
    second = _build(tmp_path, url, "pw-loose==1.0\n")
    assert {r["status"] for r in second.values()} == {"cached"}
    pages = _pages(seen)
    assert sorted(p for p, _, _ in pages) == ["/simple/pw-loose/", "/simple/pw-pure/"], pages
    assert all(code == 304 and conditional for _, code, conditional in pages), pages
