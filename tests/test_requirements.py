"""Parsing requirements files and pylock.toml: pins, hashes, markers, includes, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import RequirementsError
from builder.requirements import read_requirements, unpinned

HASH = "a" * 64


def test_pins_hashes_markers_and_includes(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("six==1.17.0\n")
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(
        "# comment\n"
        "-r base.txt\n"
        "Foo_Bar==1.0 \\\n"
        f"    --hash=sha256:{HASH}\n"
        'numpy==2.1.0; python_version >= "3.10"  # trailing comment\n'
        "loose>=1\n"
    )
    pins = read_requirements(reqs)
    by_name = {p.name: p for p in pins}
    assert list(by_name) == ["six", "foo-bar", "numpy", "loose"]
    assert by_name["foo-bar"].version == "1.0"
    assert by_name["foo-bar"].hashes == frozenset({HASH})
    assert by_name["numpy"].marker == 'python_version >= "3.10"'
    assert [p.name for p in unpinned(pins)] == ["loose"]
    assert by_name["foo-bar"].where == f"{reqs}:3"


@pytest.mark.parametrize(
    "text,needle",
    [
        ("good==1\nbad===\n", ":2: not a valid requirement"),
        ("x==1 --hash=md5:abc\n", ":1: only --hash=sha256"),
        ("--index-url https://example.org/simple\n", ":1: option not supported"),
        ("-r missing.txt\n", ":1: included file missing.txt not found"),
        ("pkg @ https://example.org/pkg.tar.gz\n", ":1: direct URL requirements"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, needle: str) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(text)
    with pytest.raises(RequirementsError) as err:
        read_requirements(reqs)
    assert str(reqs) in err.value.message and needle in err.value.message


@pytest.mark.parametrize(
    "line,option,hint",
    [
        ("--index-url https://example.org/simple", "--index-url", "[index] upstream"),
        ("-e .", "-e", "python -m build --wheel"),
        ("--editable=./lib", "--editable", "python -m build --wheel"),
        ("-c constraints.txt", "-c", "pin the versions in the requirements file"),
    ],
)
def test_an_unsupported_option_says_what_to_do_instead(
    tmp_path: Path, line: str, option: str, hint: str
) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text(f"six==1.16.0\n{line}\n")
    with pytest.raises(RequirementsError) as err:
        read_requirements(reqs)
    assert err.value.message.endswith(f":2: option not supported here: {option}")
    assert err.value.hint is not None and hint in err.value.hint


def test_a_windows_file_reads_as_pip_reads_it(tmp_path: Path) -> None:
    """A byte-order mark, CRLF line ends, a continuation line and names in any case."""
    reqs = tmp_path / "requirements.txt"
    reqs.write_bytes(
        b"\xef\xbb\xbf# pinned\r\nPython_Levenshtein==0.12.2  # C\r\n\r\nSix \\\r\n  ==1.16.0\r\n"
    )
    pins = read_requirements(reqs)
    assert [(p.name, p.version) for p in pins] == [
        ("python-levenshtein", "0.12.2"),
        ("six", "1.16.0"),
    ]


def test_bytes_that_are_not_utf8_name_the_line(tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_bytes(b"six==1.16.0\nbad\xff==1\n")
    with pytest.raises(RequirementsError) as err:
        read_requirements(reqs)
    assert err.value.message == f"{reqs}:2: not UTF-8 text (invalid start byte)"


def test_pylock(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text(
        'lock-version = "1.0"\ncreated-by = "test"\n'
        "[[packages]]\n"
        'name = "Six"\nversion = "1.17.0"\n'
        f'sdist = {{ name = "six-1.17.0.tar.gz", hashes = {{ sha256 = "{HASH}" }} }}\n'
        "[[packages]]\n"
        'name = "numpy"\nversion = "2.1.0"\nmarker = "python_version >= \'3.10\'"\n'
    )
    pins = read_requirements(lock)
    assert [(p.name, p.version) for p in pins] == [("six", "1.17.0"), ("numpy", "2.1.0")]
    assert pins[0].hashes == frozenset({HASH})
    assert pins[1].requirement == "numpy==2.1.0; python_version >= '3.10'"


def test_pylock_without_version_is_an_error(tmp_path: Path) -> None:
    lock = tmp_path / "pylock.toml"
    lock.write_text('[[packages]]\nname = "six"\n')
    with pytest.raises(RequirementsError, match="packages\\[0\\]: six has no version"):
        read_requirements(lock)
