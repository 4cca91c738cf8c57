"""What uv's answer settles without reading the index again (pure decisions, no process):
which members' files come from uv's pylock, which members' pages are read, and how a
pylock is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_decisions import target

from builder.errors import ResolutionError
from builder.stages.closures import answer_covers, settled_by_answer
from builder.stages.resolve import _from_uv
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
