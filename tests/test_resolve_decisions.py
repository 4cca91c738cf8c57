"""What uv's answer settles without reading the index again (pure decisions, no process):
which members' files come from uv's pylock, which members' pages are read, and how a
pylock is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_decisions import target

from builder.errors import ResolutionError
from builder.indexproxy import IndexProxy
from builder.stages.closures import answer_covers, settled_by_answer
from builder.stages.resolve import _from_uv, _upstream_files
from builder.upstream import UpstreamFile, file_from_lock

PYLOCK = """
lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "Charset_Normalizer"
version = "3.5.3"
sdist = { url = "https://f.example/charset_normalizer-3.5.3.tar.gz", hashes = { sha256 = "aa" } }
wheels = [
    { url = "https://f.example/charset_normalizer-3.5.3-py3-none-any.whl", hashes = {sha256="bb"} },
]

[[packages]]
name = "idna"
version = "3.20"
wheels = [{ url = "https://f.example/idna-3.20-py3-none-any.whl", hashes = { sha256 = "cc" } }]
"""


def test_a_pylock_gives_the_closure_and_each_members_files() -> None:
    answer = _from_uv(PYLOCK, {"idna"}, Path("pylock.toml"))  # type: ignore[arg-type]
    assert [(r.name, r.version, r.requested) for r in answer.closure] == [
        ("charset-normalizer", "3.5.3", False),
        ("idna", "3.20", True),
    ]
    assert answer.files is not None
    files = answer.files["charset-normalizer"]
    assert [(f.filename, f.sha256, f.is_wheel) for f in files] == [
        ("charset_normalizer-3.5.3-py3-none-any.whl", "bb", True),
        ("charset_normalizer-3.5.3.tar.gz", "aa", False),
    ]
    assert files[0].url == "https://f.example/charset_normalizer-3.5.3-py3-none-any.whl"
    assert [f.filename for f in answer.files["idna"]] == ["idna-3.20-py3-none-any.whl"]


def test_a_wheel_built_ahead_is_no_upstream_file_of_its_member(tmp_path: Path) -> None:
    """uv lists a wheel it read from the builds ahead (`--find-links`) as the member's only
    file: not an upstream file to download, so the member's files come from its page; a
    `file:` URL elsewhere (a local upstream index) stays."""
    ahead = tmp_path / "ahead" / "k1" / "dist"
    built = (ahead / "pw_a-1.0-py3-none-any.whl").as_uri()
    local = (tmp_path / "index" / "pw_b-2.0-py3-none-any.whl").as_uri()
    lock = (
        'lock-version = "1.0"\ncreated-by = "uv"\n\n[[packages]]\nname = "pw-a"\n'
        f'version = "1.0"\nwheels = [{{ url = "{built}" }}]\n'
        '\n[[packages]]\nname = "pw-b"\nversion = "2.0"\n'
        f'wheels = [{{ url = "{local}" }}]\n'
    )
    answer = _from_uv(lock, {"pw-a"}, Path("pylock.toml"), [ahead])  # type: ignore[arg-type]
    assert [(r.name, r.version) for r in answer.closure] == [("pw-a", "1.0"), ("pw-b", "2.0")]
    assert answer.files is not None
    assert answer.files["pw-a"] == []
    assert [f.filename for f in answer.files["pw-b"]] == ["pw_b-2.0-py3-none-any.whl"]


def test_a_pylock_prewheel_cannot_read_is_a_resolution_error() -> None:
    with pytest.raises(ResolutionError, match="pylock"):
        _from_uv("[[packages]]\nversion = 1\n", set(), Path("pylock.toml"))
    with pytest.raises(ResolutionError, match="without a version"):
        _from_uv('[[packages]]\nname = "x"\n', set(), Path("pylock.toml"))


def test_uvs_files_settle_a_member_only_where_they_choose_what_its_page_would() -> None:
    t = target()

    def lock_file(name: str) -> UpstreamFile:
        found = file_from_lock(name, f"http://upstream/files/{name}", "ab" * 32)
        assert found is not None
        return found

    wheel = lock_file("pw_a-1.0-py3-none-any.whl")
    foreign = lock_file("pw_a-1.0-cp311-cp311-win_amd64.whl")
    tar = lock_file("pw_a-1.0.tar.gz")
    zip_ = lock_file("pw_a-1.0.zip")

    def settled(
        files: list[UpstreamFile] | None, *, force: bool = False, hashes: bool = False
    ) -> bool:
        return settled_by_answer(t, files, force_build=force, hashes=hashes)

    assert settled([wheel])  # a wheel the target takes: the page cannot choose another kind
    assert settled([foreign, tar])  # built: uv named the .tar.gz the plan prefers
    assert not settled([foreign])  # no wheel it takes, no sdist (uv's --no-build answer)
    assert not settled([zip_])  # a .tar.gz beside it on the page would be preferred
    assert settled([wheel, tar], force=True)  # forced to build: the sdist settles it
    assert not settled([wheel], force=True)
    assert not settled([wheel, tar], hashes=True)  # --hash pins choose among every file
    assert not settled(None)  # pip's answer names no files


def test_uvs_answer_stands_for_one_index_and_platforms_the_machine_takes() -> None:
    t = target()
    assert answer_covers(t, ("http://upstream/simple/",))
    assert not answer_covers(t, ("http://upstream/simple/", "http://extra/simple/"))


def test_a_sandboxed_answers_proxy_urls_become_the_upstream_files_they_stood_for(
    tmp_path: Path,
) -> None:
    """In the sandbox uv reads the index through the proxy, so its pylock names the proxy's
    file URLs; the proxy (not started: only its token table) turns them back, and one it did
    not serve leaves the files to the pages."""
    proxy = IndexProxy(["https://f.example/simple/"], tmp_path / "index.sock")
    real = {
        "charset_normalizer-3.5.3.tar.gz": "https://f.example/charset_normalizer-3.5.3.tar.gz",
        "charset_normalizer-3.5.3-py3-none-any.whl": (
            "https://f.example/charset_normalizer-3.5.3-py3-none-any.whl"
        ),
        "idna-3.20-py3-none-any.whl": "https://f.example/idna-3.20-py3-none-any.whl",
    }
    served = PYLOCK
    for name, url in real.items():
        served = served.replace(url, f"http://127.0.0.1:4321/files/{proxy.token(url)}/{name}")
    assert "f.example" not in served
    answer = _upstream_files(_from_uv(served, set(), Path("pylock.toml")), proxy)  # type: ignore[arg-type]
    assert answer.files is not None
    got = {f.filename: (f.url, f.sha256) for fs in answer.files.values() for f in fs}
    assert got == {
        "charset_normalizer-3.5.3.tar.gz": (real["charset_normalizer-3.5.3.tar.gz"], "aa"),
        "charset_normalizer-3.5.3-py3-none-any.whl": (
            real["charset_normalizer-3.5.3-py3-none-any.whl"],
            "bb",
        ),
        "idna-3.20-py3-none-any.whl": (real["idna-3.20-py3-none-any.whl"], "cc"),
    }
    stranger = served.replace(proxy.token(real["idna-3.20-py3-none-any.whl"]), "0" * 24)
    unknown = _upstream_files(_from_uv(stranger, set(), Path("pylock.toml")), proxy)  # type: ignore[arg-type]
    assert unknown.files is None and [r.name for r in unknown.closure] == [
        "charset-normalizer",
        "idna",
    ]
