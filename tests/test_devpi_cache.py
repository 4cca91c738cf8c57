"""The shared remote cache: a second builder finds, by cache key, what the first one pushed."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from clitools import prewheel
from devpi_support import DevpiServer, key_of, publish_built, push
from indexkit import write_record_json
from packaging.tags import Tag, parse_tag
from upstream import Upstream, WriteConfig, make_wheel, sha256_of, static_server

from builder import index as index_lib
from builder.devpi.client import DevpiClient
from builder.devpi.push import push_wheelhouse
from builder.devpi.remote_cache import describe, download, find_cached, record_for
from builder.devpi.remote_check import check_remote
from builder.errors import HashMismatchError, UpstreamError
from builder.serve.server import running
from builder.wheelhouse import Wheelhouse

pytest_plugins = ["devpi_fixture"]

PURE: list[Tag] = [*parse_tag("py3-none-any")]
CP311: list[Tag] = [*parse_tag("cp311-cp311-manylinux_2_17_x86_64"), *PURE]
CP312: list[Tag] = [*parse_tag("cp312-cp312-manylinux_2_17_x86_64")]


@dataclasses.dataclass(frozen=True)
class Pushed:
    url: str
    wh: Wheelhouse
    user: str
    password: str


def builder_house(root: Path, name: str, key: str, *, source_key: str | None = None) -> Wheelhouse:
    """A wheelhouse as a builder leaves it: one built wheel with its build record."""
    wh = Wheelhouse(root / "wheelhouse")
    wh.ensure()
    module = name.replace("-", "_")
    wheel = make_wheel(root / "src", name, "1.0", {f"{module}/__init__.py": f"# {key}\n"})
    publish_built(wh, wheel, cache_key=key, source_key=source_key)
    return wh


@pytest.fixture
def pushed(devpi: DevpiServer, tmp_path: Path) -> Iterator[Pushed]:
    """Builder A built pw-cache (key "b...") and pushed it to USER/cpu."""
    user, password = devpi.new_user("cache")
    wh = builder_house(tmp_path / "a", "pw-cache", key_of("b"), source_key="src-" + key_of("5"))
    push_wheelhouse(wh, devpi.client(user, password), user=user)
    yield Pushed(url=devpi.simple_url(user, "cpu"), wh=wh, user=user, password=password)


def test_second_builder_downloads_instead_of_building(
    devpi: DevpiServer, pushed: Pushed, tmp_path: Path
) -> None:
    url, first, user, password = pushed.url, pushed.wh, pushed.user, pushed.password
    (entry,) = first.entries("pw-cache")
    remote = find_cached(url, "pw-cache", "1.0", key_of("b"), CP311)
    assert remote is not None
    assert remote.filename == entry.filename and remote.sha256 == entry.sha256
    assert remote.confirmed and remote.cache_key == key_of("b")  # by the pushed record
    assert remote.record is not None and remote.record["wheel"] == entry.filename
    assert "by record" in describe(remote)

    # Builder B: download, verify, publish; its push then uploads nothing.
    second = Wheelhouse(tmp_path / "b")
    second.ensure()
    path = download(remote, tmp_path / "dl")
    assert sha256_of(path) == entry.sha256
    got = second.publish(path, origin="built", accels=("cpu",), cache_key=remote.cache_key)
    write_record_json(second, remote.cache_key, record_for(remote) or {})
    assert got.sha256 == entry.sha256
    client = DevpiClient(devpi.url)
    files_before = client.list_files(user, "cpu", "pw-cache")
    report = push_wheelhouse(second, devpi.client(user, password), user=user)
    assert report.uploaded == [] and report.ok
    assert client.list_files(user, "cpu", "pw-cache") == files_before


def test_misses_other_keys_tags_versions_and_projects(pushed: Pushed) -> None:
    url = pushed.url
    # Same 12-hex prefix as the build tag, but the published record names another key.
    assert find_cached(url, "pw-cache", "1.0", key_of("c", key_of("b")[:12]), CP311) is None
    assert find_cached(url, "pw-cache", "1.0", key_of("c"), CP311) is None
    assert find_cached(url, "pw-cache", "1.0", key_of("b"), CP312) is None  # tags do not fit
    assert find_cached(url, "pw-cache", "2.0", key_of("b"), CP311) is None
    assert find_cached(url, "pw-nothing-here", "1.0", key_of("b"), CP311) is None


def test_pure_wheel_found_by_source_key(pushed: Pushed) -> None:
    url = pushed.url
    # Another Python's key, same sources: the record's source key finds the pure wheel.
    remote = find_cached(
        url, "pw-cache", "1.0", key_of("d"), CP311, source_key="src-" + key_of("5")
    )
    assert remote is not None and remote.confirmed and remote.cache_key == "src-" + key_of("5")
    assert find_cached(url, "pw-cache", "1.0", key_of("d"), CP311, source_key="src-x") is None


def test_download_refuses_other_bytes(pushed: Pushed, tmp_path: Path) -> None:
    url = pushed.url
    remote = find_cached(url, "pw-cache", "1.0", key_of("b"), CP311)
    assert remote is not None
    forged = dataclasses.replace(remote, sha256="0" * 64)
    with pytest.raises(HashMismatchError):
        download(forged, tmp_path / "dl")
    assert not any((tmp_path / "dl").iterdir())  # nothing half-written left behind


def test_unreachable_cache_is_an_upstream_error() -> None:
    from devpi_support import free_port

    with pytest.raises(UpstreamError):
        find_cached(f"http://127.0.0.1:{free_port()}/u/cpu/+simple/", "x", "1.0", "k", CP311)


@pytest.fixture
def static_tree(tmp_path: Path) -> Wheelhouse:
    wh = builder_house(tmp_path, "pw-static", key_of("e"))
    index_lib.rebuild(wh)
    return wh


def test_prewheel_served_index_by_record_then_build_tag(static_tree: Wheelhouse) -> None:
    """`prewheel serve` serves builds/<key>.json: the record confirms the key; without
    records, the build tag alone still finds the wheel (unconfirmed)."""
    with running(static_tree.root) as base:
        url = f"{base}/cpu/simple/"
        remote = find_cached(url, "pw-static", "1.0", key_of("e"), CP311)
        assert remote is not None and remote.confirmed
        for record in static_tree.builds_dir.glob("*.json"):
            record.unlink()
        remote = find_cached(url, "pw-static", "1.0", key_of("e"), CP311)
        assert remote is not None and not remote.confirmed
        assert remote.sha256 == static_tree.entries("pw-static")[0].sha256
        assert find_cached(url, "pw-static", "1.0", key_of("f"), CP311) is None


def test_static_tree_with_records_confirms_the_key(static_tree: Wheelhouse) -> None:
    """The tree behind any plain web server (nginx, S3): PEP 503 HTML and builds/<key>.json."""
    with static_server(static_tree.root) as base:
        url = f"{base}/cpu/simple/"
        remote = find_cached(url, "pw-static", "1.0", key_of("e"), CP311)
        assert remote is not None and remote.confirmed
        # A record under the asked key that names another wheel vetoes the tag match.
        other = key_of("e")[:12] + "0" * 52
        write_record_json(static_tree, other, {"cache_key": other, "wheel": "pw_static-9.whl"})
        assert find_cached(url, "pw-static", "1.0", other, CP311) is None


@pytest.mark.slow
def test_two_builders_one_devpi_build_once(
    devpi: DevpiServer, upstream: Upstream, tmp_path: Path, write_config: WriteConfig
) -> None:
    """`prewheel build --cache-from` end to end: B downloads what A built and pushed."""
    user, password = devpi.new_user("fanout")
    config = write_config(tmp_path)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-cext==1.0\n")
    cache = devpi.simple_url(user, "cpu")
    shas = {}
    for builder, expect in (("a", "built"), ("b", "cached")):
        wh = tmp_path / builder
        proc = prewheel(
            "build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--cache-from", cache, "--json"
        )
        assert proc.returncode == 0, proc.stderr
        (result,) = json.loads(proc.stdout)["results"]
        assert result["status"] == expect, result
        (entry,) = Wheelhouse(wh).entries("pw-cext")
        shas[builder] = entry.sha256
        pushed = push(devpi, user, password, wh, "--json")
        assert pushed.exit_code == 0, pushed.output
        uploaded = json.loads(pushed.stdout)["uploaded"]
        assert len(uploaded) == (1 if builder == "a" else 0)
    assert shas["a"] == shas["b"]  # the very bytes A built: one build for both


def test_remote_check_reports_what_installers_would_meet(static_tree: Wheelhouse) -> None:
    """`check_remote` (behind `prewheel index check --url`) on a served tree, then corrupted."""
    with static_server(static_tree.root) as base:
        url = f"{base}/cpu/simple/"
        problems = check_remote(url)
        assert problems == [f"{url}: no PEP 691 JSON root (got text/html)"]  # plain server
        (entry,) = static_tree.entries("pw-static")
        (static_tree.root / entry.path).write_bytes(b"not the wheel")
        problems = check_remote(url)
        assert any("served bytes hash to" in p and entry.filename in p for p in problems)
