"""The container route to old glibc: Dockerfile.builder on a Debian bullseye root (glibc 2.31,
gcc 10), `prewheel build` inside it on real C and C++ sdists, and their wheels tagged
manylinux_2_31 or older where this host (glibc 2.36, gcc 12) reaches only manylinux_2_34.

No image can be pulled here: the bullseye root is made with mmdebstrap from the Debian archive
the host's apt uses (tests/docker/make_bases.sh bullseye). Bullseye's python3 is 3.9, older than
prewheel needs, so the image compiles a CPython 3.11 for prewheel from Debian's own source
tarball of python3.11 (the same archive), given by PREWHEEL_PYTHON_SRC; that interpreter is
also the target. The real sdists (annoy, C++; python-Levenshtein, C) are downloaded from PyPI
once and served, with setuptools, from the project directory on 127.0.0.1 inside the
container, which runs with --network=none. The same annoy sdist is built on the host too, to
show what the host reaches; then the place of use: in the bullseye container, pip installs the
bullseye wheels into a fresh venv and they work, and refuses the host's annoy wheel.

Needs the Docker engine (tests/dockerkit.py), mmdebstrap, and the Debian archive and PyPI once
(cached in /var/tmp/prewheel-docker-cache).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel
from conftest import to_toml
from dockerkit import (
    CACHE,
    HELPERS,
    Engine,
    builder_context,
    downloaded_once,
    engine_for_tests,
    run_serving,
)
from needs import missing
from packaging.utils import canonicalize_name, parse_wheel_filename
from upstream import Upstream, build_dependency_wheels

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE = "prewheel-test/builder-bullseye:latest"
BUILDER = "prewheel-test/prewheel-bullseye:latest"
PYTHON = "/opt/prewheel-python/bin/python3.11"  # compiled in the image: prewheel's and the target
# Debian's source of python3.11 (bookworm's 3.11.2-6+deb12u8, whose orig tarball is CPython's
# release), with its sha256 from the archive's Sources index.
PYTHON_SRC = "pool/main/p/python3.11/python3.11_3.11.2.orig.tar.gz"
PYTHON_SRC_SHA256 = "2411c74bda5bbcfcddaf4531f66d1adc73f247f529aee981b029513aefdbf849"
# Real sdist-only releases (../shared/FINDINGS.md): the C++ one reaches only manylinux_2_34 with
# this host's gcc 12 and glibc 2.36.
REAL = {"annoy": "1.17.3", "python-Levenshtein": "0.12.2"}
# What their builds ask of the index besides setuptools (annoy's setup_requires), as wheels.
BUILD_WHEELS = ["nose==1.3.7"]
PORT = 8766
BULLSEYE_GLIBC = (2, 31)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    yield from engine_for_tests()


def _mirror() -> str:
    """The Debian archive the host's apt uses (as make_bases.sh finds it)."""
    if os.environ.get("PREWHEEL_MIRROR"):
        return os.environ["PREWHEEL_MIRROR"]
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in sources.read_text().splitlines():
            if line.startswith("URIs:"):
                return line.split()[1]
    with contextlib.suppress(OSError):
        for line in Path("/etc/apt/sources.list").read_text().splitlines():
            if line.startswith("deb "):
                return line.split()[1]
    return "http://deb.debian.org/debian"


def _python_source(dest: Path) -> None:
    cached = CACHE / Path(PYTHON_SRC).name
    if not cached.is_file():
        url = f"{_mirror().rstrip('/')}/{PYTHON_SRC}"
        tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        try:
            with urllib.request.urlopen(url, timeout=120) as resp, tmp.open("wb") as out:
                shutil.copyfileobj(resp, out)
        except OSError as exc:
            missing(f"bullseye route skipped: cannot download {url}: {exc}")
        digest = hashlib.sha256(tmp.read_bytes()).hexdigest()
        assert digest == PYTHON_SRC_SHA256, f"{url}: sha256 {digest}"
        tmp.rename(cached)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cached, dest)


def _real_sdists() -> list[Path]:
    """The REAL sdists from PyPI and BUILD_WHEELS, downloaded once."""
    pins = sorted(f"{n}=={v}" for n, v in REAL.items())
    key = hashlib.sha256(" ".join([*pins, *BUILD_WHEELS]).encode()).hexdigest()[:16]
    cached = downloaded_once(
        f"real-sdists-{key}",
        ["--no-deps", "--no-binary=:all:", *pins],
        ["--no-deps", "--only-binary=:all:", *BUILD_WHEELS],
        why=f"the real sdists of the bullseye route ({', '.join([*pins, *BUILD_WHEELS])})",
    )
    return sorted(cached.iterdir())


@pytest.fixture(scope="module")
def image(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> str:
    if shutil.which("mmdebstrap") is None:
        missing("bullseye route skipped: mmdebstrap is not installed (apt-get install mmdebstrap)")
    env = {**engine.env, "PREWHEEL_DOCKER": engine.client, "PREWHEEL_DOCKER_CACHE": str(CACHE)}
    proc = subprocess.run(
        [str(HELPERS / "make_bases.sh"), "bullseye"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    ctx = builder_context(tmp_path_factory.mktemp("bullseye-ctx"))
    src = f"python-src/{Path(PYTHON_SRC).name}"
    _python_source(ctx / src)
    engine.run(
        "build", "--network=none", "-f", "Dockerfile.builder", "-t", BUILDER,
        "--build-arg", f"BASE_IMAGE={BASE}", "--build-arg", f"PREWHEEL_PYTHON_SRC={src}",
        "--build-arg", "PIP_NO_INDEX=1", "--build-arg", "PIP_FIND_LINKS=/src/offline-wheels",
        ".", cwd=ctx, timeout=1500,
    )  # fmt: skip
    return BUILDER


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real sdists and setuptools as a PEP 503 index in upstream/, pins, a config."""
    root = tmp_path_factory.mktemp("bullseye-project")
    index = Upstream(root / "upstream")
    for path in [*_real_sdists(), *build_dependency_wheels()]:
        index.add_file(path)
    pins = [f"{n}=={v}" for n, v in REAL.items()]
    (root / "requirements.txt").write_text("\n".join(pins) + "\n")
    return root


def _config(path: Path, upstream: str, python: str) -> Path:
    targets = {"python": [python], "accel": ["cpu"], "policy": ["auto"]}
    path.write_text(to_toml({"index": {"upstream": upstream}, "targets": targets}))
    return path


def _in_container(engine: Engine, image: str, project: Path, script: str) -> str:
    """`script` in `image`, offline, with project/upstream served on 127.0.0.1."""
    proc = run_serving(engine, image, project, script, port=PORT, python=PYTHON, timeout=1500)
    return proc.stdout


@pytest.fixture(scope="module")
def bullseye(engine: Engine, image: str, project: Path) -> dict[str, Any]:
    """`prewheel build` in the bullseye image: its JSON results by package name."""
    _config(project / "bullseye.toml", f"http://127.0.0.1:{PORT}/simple/", PYTHON)
    out = _in_container(
        engine, image, project,
        "prewheel build -q --json -r requirements.txt -c bullseye.toml "
        "--wheelhouse /project/wheelhouse || true",
    )  # fmt: skip
    assert out.lstrip().startswith("{"), out[-3000:]
    return {canonicalize_name(r["name"]): r for r in json.loads(out)["results"]}


@pytest.fixture(scope="module")
def host(project: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The same annoy sdist built on this host (its gcc and glibc), for comparison."""
    root = tmp_path_factory.mktemp("host")
    (root / "requirements.txt").write_text(f"annoy=={REAL['annoy']}\n")
    with Upstream(project / "upstream") as index:
        config = _config(root / "prewheel.toml", index.url, sys.executable)
        proc = prewheel(
            "build", "-r", root / "requirements.txt", "-c", config,
            "--wheelhouse", root / "wh", "--json", timeout=1500,
        )  # fmt: skip
    assert proc.stdout.startswith("{"), proc.stderr[-3000:]
    results = {r["name"]: r for r in json.loads(proc.stdout)["results"]}
    return {"results": results, "wh": root / "wh"}


def _glibc(wheel: str) -> tuple[int, int]:
    """The glibc a wheel's manylinux tags ask for at least (the oldest tag)."""
    versions = []
    for tag in parse_wheel_filename(wheel)[3]:
        p = tag.platform
        if p.startswith("manylinux_"):
            major, minor = p.split("_")[1:3]
            versions.append((int(major), int(minor)))
        elif p.startswith("manylinux"):
            legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
            versions.append(legacy[p.split("_x86_64")[0]])
    assert versions, wheel
    return min(versions)


def test_the_image_runs_prewheel_on_its_own_python_and_bullseyes_glibc(
    engine: Engine, image: str
) -> None:
    out = engine.run(
        "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", image, "-c",
        "ldd --version | head -n1; gcc -dumpversion; /usr/bin/python3 -V; "
        "/opt/prewheel/bin/python -c 'import sys; print(sys.base_prefix)'; prewheel --version",
    ).stdout  # fmt: skip
    assert "2.31" in out.splitlines()[0], out
    assert out.splitlines()[1].startswith("10"), out
    assert "Python 3.9" in out, out  # the base's own python3, too old for prewheel
    assert "/opt/prewheel-python" in out and "prewheel" in out.splitlines()[-1], out


def test_real_c_and_cxx_wheels_reach_manylinux_2_31_or_older(
    bullseye: dict[str, Any], host: dict[str, Any]
) -> None:
    for name in REAL:
        r = bullseye[canonicalize_name(name)]
        print(f"bullseye: {r['wheel']} ({r['toolchain']})")
        assert r["status"] == "built", (name, r.get("error"), r.get("log"))
        assert _glibc(r["wheel"]) <= BULLSEYE_GLIBC, r["wheel"]
        assert "cp311-cp311" in r["wheel"], r["wheel"]
        assert r["toolchain"].startswith("host"), r["toolchain"]
    # Where the host reaches only a newer glibc with the same sdist.
    h = host["results"]["annoy"]
    print(f"host:     {h['wheel']} ({h['toolchain']})")
    assert h["status"] == "built", (h.get("error"), h.get("log"))
    assert _glibc(h["wheel"]) > BULLSEYE_GLIBC, h["wheel"]


def test_the_wheels_install_and_work_on_bullseye_and_the_hosts_do_not(
    engine: Engine, image: str, project: Path, bullseye: dict[str, Any], host: dict[str, Any]
) -> None:
    """In the bullseye container (glibc 2.31): pip installs the bullseye wheels from the
    wheelhouse into a fresh venv, no sdist allowed, and they work; it refuses the host's."""
    host_wheel = next((host["wh"] / "files").rglob(host["results"]["annoy"]["wheel"]))
    shutil.copy(host_wheel, project / host_wheel.name)
    wheels = " ".join(
        f"$(find /project/wheelhouse/files -name '{bullseye[canonicalize_name(n)]['wheel']}')"
        for n in REAL
    )
    code = (
        "from annoy import AnnoyIndex\n"
        "import Levenshtein\n"
        "i = AnnoyIndex(2, 'euclidean'); i.add_item(0, [0, 0]); i.add_item(1, [3, 4]); i.build(2)\n"
        "assert abs(i.get_distance(0, 1) - 5.0) < 1e-6\n"
        "assert Levenshtein.distance('kitten', 'sitting') == 3\n"
        "print('works')\n"
    )
    (project / "exercise.py").write_text(code)
    out = _in_container(
        engine, image, project,
        f"set -e; {PYTHON} -m venv /tmp/v; "
        f"/tmp/v/bin/pip install -q --no-index --only-binary=:all: {wheels} "
        "--find-links /project/upstream/files; "
        "cd /tmp && /tmp/v/bin/python /project/exercise.py; "
        f"if /tmp/v/bin/pip install --no-index --force-reinstall /project/{host_wheel.name} "
        ">/tmp/host.log 2>&1; then echo host-wheel-installed; else cat /tmp/host.log; fi",
    )  # fmt: skip
    assert "works" in out, out
    assert "host-wheel-installed" not in out
    assert "is not a supported wheel on this platform" in out, out
