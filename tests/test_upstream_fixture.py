"""The local upstream index works the way tests rely on: pip finds, downloads and builds from it."""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
from needs import missing
from packaging.utils import parse_wheel_filename
from upstream import Upstream, WriteConfig, make_sdist, pip_isolated_env, sha256_of

from builder.config import load_config
from builder.targets import find_interpreter

LINK = re.compile(r'<a href="\.\./\.\./files/([^"#]+)#sha256=([0-9a-f]{64})"([^>]*)>')


def pip(python: str | Path | list[str], *args: str, cwd: Path | None = None) -> str:
    """`pip --isolated ARGS` for `python` (an interpreter, or the argv that runs its pip)."""
    argv = python if isinstance(python, list) else [str(python), "-m", "pip"]
    proc = subprocess.run(
        [*argv, "--isolated", *args],
        env=pip_isolated_env(),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        body: bytes = resp.read()
    return body.decode()


def test_root_page_lists_normalized_projects(upstream: Upstream) -> None:
    root = get(upstream.url)
    for project in ("pw-cext", "pw-pure", "pw-haswheel", "pw-app", "pw-broken", "pw-badimport"):
        assert f'href="{project}/"' in root
    assert 'href="setuptools/"' in root


def test_pages_carry_correct_sha256(upstream: Upstream) -> None:
    for project in ("pw-cext", "pw-haswheel", "setuptools"):
        links = LINK.findall(get(f"{upstream.url}{project}/"))
        assert links
        for filename, digest, attrs in links:
            assert digest == sha256_of(upstream.root / "files" / filename)
            assert "data-requires-python=" in attrs
    cext = {name for name, _, _ in LINK.findall(get(f"{upstream.url}pw-cext/"))}
    assert cext == {"pw_cext-1.0.tar.gz", "pw_cext-1.1.tar.gz"}


def test_sdists_are_deterministic(tmp_path: Path) -> None:
    files = {"m/__init__.py": "x = 1\n"}
    a = make_sdist(tmp_path / "a", "Some.Name", "2.0", files)
    b = make_sdist(tmp_path / "b", "Some.Name", "2.0", files)
    assert a.name == "some_name-2.0.tar.gz"
    assert sha256_of(a) == sha256_of(b)
    with tarfile.open(a) as tar:
        assert "some_name-2.0/PKG-INFO" in tar.getnames()


def test_add_sdist_updates_page(fresh_upstream: Upstream) -> None:
    fresh_upstream.add_sdist("pw-extra", "0.1", {"pw_extra/__init__.py": ""})
    assert "pw_extra-0.1.tar.gz" in get(f"{fresh_upstream.url}pw-extra/")
    assert 'href="pw-extra/"' in get(fresh_upstream.url)


def test_pip_downloads_sdist(upstream: Upstream, tmp_path: Path) -> None:
    pip(
        sys.executable,
        "download",
        "--no-deps",
        "--index-url",
        upstream.url,
        "pw-cext==1.0",
        "-d",
        str(tmp_path),
    )
    assert [p.name for p in tmp_path.iterdir()] == ["pw_cext-1.0.tar.gz"]


def test_pip_resolves_app_closure(upstream: Upstream, tmp_path: Path) -> None:
    pip(
        sys.executable,
        "download",
        "--index-url",
        upstream.url,
        "pw-app==1.0",
        "-d",
        str(tmp_path),
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "pw_app-1.0.tar.gz",
        "pw_cext-1.0.tar.gz",
        "pw_haswheel-1.0-py3-none-any.whl",
        "pw_pure-1.0.tar.gz",
    ]


def test_pip_builds_c_extension_offline(upstream: Upstream, tmp_path: Path) -> None:
    """Build isolation installs setuptools from the local index, then the wheel imports."""
    pip(
        sys.executable,
        "wheel",
        "--no-deps",
        "--index-url",
        upstream.url,
        "pw-cext==1.0",
        "-w",
        str(tmp_path),
    )
    (wheel,) = tmp_path.glob("*.whl")
    assert parse_wheel_filename(wheel.name)[0] == "pw-cext"
    assert any(n.endswith(".so") for n in zipfile.ZipFile(wheel).namelist())
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--isolated",
            "--no-index",
            "--target",
            str(tmp_path / "site"),
            str(wheel),
        ],
        env=pip_isolated_env(),
        check=True,
        capture_output=True,
    )
    code = "import pw_cext; assert pw_cext.add(2, 3) == 5 and pw_cext.VERSION == '1.0'"
    subprocess.run([sys.executable, "-c", code], cwd=tmp_path / "site", check=True)


@pytest.mark.slow
@pytest.mark.parametrize("version", [f"3.{minor}" for minor in range(9, 14)])
def test_build_dependencies_serve_every_python(
    upstream: Upstream, tmp_path: Path, version: str
) -> None:
    """Each Python 3.9-3.13 finds a setuptools it accepts; the broken sdists fail as meant.
    The interpreters are found the way prewheel finds a target's (pyenv, /opt/python, PATH),
    and run pip as prewheel does (theirs, or ours with --python where they have none)."""
    interp, why = find_interpreter(version)
    if interp is None:
        missing(f"needs CPython {version}: {why}")
    pip(
        interp.pip(),
        "wheel",
        "--no-deps",
        "--index-url",
        upstream.url,
        "pw-cext==1.0",
        "pw-badimport==1.0",
        "-w",
        str(tmp_path),
    )
    assert len(list(tmp_path.glob("*.whl"))) == 2
    proc = subprocess.run(
        [
            *interp.pip(),
            "--isolated",
            "wheel",
            "--no-deps",
            "--index-url",
            upstream.url,
            "pw-broken==1.0",
            "-w",
            str(tmp_path / "broken"),
        ],
        env=pip_isolated_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "pw_broken.c" in proc.stdout + proc.stderr


def test_write_config_points_at_upstream(
    write_config: WriteConfig,
    upstream: Upstream,
    tmp_path: Path,
) -> None:
    path = write_config(
        tmp_path,
        build={"jobs": 2},
        packages={"pw-cext": {"env": {"CFLAGS": "-O0"}}},
        target=[{"python": "3.12", "accel": "cpu"}],
    )
    config = load_config(path)
    assert config.upstream == upstream.url
    assert config.jobs == 2
    assert config.package("pw-cext").env == {"CFLAGS": "-O0"}
    assert [t.python for t in config.targets] == ["3.12"]


def test_build_wheel_from_extracted_sdist(upstream: Upstream, tmp_path: Path) -> None:
    """`python -m build --wheel` accepts the sdists; its isolated env reads PIP_INDEX_URL."""
    with tarfile.open(upstream.root / "files" / "pw_cext-1.1.tar.gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path, filter="data")
        else:  # Pythons before the extraction filters (3.11.2, Debian bookworm's)
            tar.extractall(tmp_path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--outdir",
            str(tmp_path / "out"),
            str(tmp_path / "pw_cext-1.1"),
        ],
        env=pip_isolated_env({"PIP_INDEX_URL": upstream.url}),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((tmp_path / "out").glob("pw_cext-1.1-*.whl"))) == 1
