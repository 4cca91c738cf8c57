"""The Docker tier: the builder image and the runtime stage, built for real, offline.

No image can be pulled here, so two stand-in bases are made with mmdebstrap (cached by content
in /var/tmp/prewheel-docker-cache): a builder base with a compiler and a runtime base without one.
Then: Dockerfile.builder is built on the builder base; `prewheel build` runs inside it on
generated sdists served from the build context on 127.0.0.1; the runtime Dockerfile that
`prewheel dockerfile` prints is built on the runtime base from that wheelhouse with
--network=none (and again from the index `prewheel serve` serves from the builder image); the
image imports every package, holds no compiler and no wheel in any layer; and the same app built
the naive single-stage way is compared by size (benchmarks/image_size.py); and `prewheel
audit-image` reads both images as `docker save` writes them, prints its report, and must agree
with `dive` on each, the runtime stage passing Dive's own CI defaults.

Uses the engine at $DOCKER_HOST if one answers, else starts one with tests/docker/dockerd.sh
(and stops it), else skips with the reason.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from dockerkit import CACHE, HELPERS, REPO, Engine, builder_context, engine_for_tests, run_serving
from imagekit import assert_same_as_dive, dive_json
from needs import declared, missing
from packaging.utils import parse_wheel_filename
from upstream import Upstream, pip_isolated_env, populate

pytestmark = pytest.mark.docker

EXAMPLE = REPO / "examples" / "docker"  # the app and its pins
BUILDER_BASE = "prewheel-test/builder-base:latest"
RUNTIME_BASE = "prewheel-test/runtime-base:latest"
BUILDER = "prewheel-test/builder:latest"
RUNTIME = "prewheel-test/runtime:latest"
NAIVE = "prewheel-test/naive:latest"
UPSTREAM_PORT = 8765
MIN_SAVING = 300 * 1000 * 1000  # bytes, as `docker images` counts MB


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    yield from engine_for_tests()


@pytest.fixture(scope="module")
def bases(engine: Engine) -> tuple[str, str]:
    if shutil.which("mmdebstrap") is None:
        missing("Docker tier skipped: mmdebstrap is not installed (apt-get install mmdebstrap)")
    env = {**engine.env, "PREWHEEL_DOCKER": engine.client, "PREWHEEL_DOCKER_CACHE": str(CACHE)}
    proc = subprocess.run(
        [str(HELPERS / "make_bases.sh")], env=env, capture_output=True, text=True, timeout=400
    )
    assert proc.returncode == 0, proc.stderr
    return BUILDER_BASE, RUNTIME_BASE


@pytest.fixture(scope="module")
def builder_image(
    engine: Engine, bases: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> str:
    ctx = builder_context(tmp_path_factory.mktemp("builder-ctx"))
    engine.run(
        "build",
        "--network=none",
        "-f",
        "Dockerfile.builder",
        "-t",
        BUILDER,
        "--build-arg",
        f"BASE_IMAGE={bases[0]}",
        "--build-arg",
        "PIP_NO_INDEX=1",
        "--build-arg",
        "PIP_FIND_LINKS=/src/offline-wheels",
        ".",
        cwd=ctx,
    )
    return BUILDER


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The user's project: the example app and pins, the upstream sdists, a prewheel config."""
    root = tmp_path_factory.mktemp("project")
    populate(Upstream(root / "upstream"))
    shutil.copy(EXAMPLE / "requirements.txt", root / "requirements.txt")
    shutil.copytree(EXAMPLE / "app", root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "prewheel.toml").write_text(
        f'[index]\nupstream = "http://127.0.0.1:{UPSTREAM_PORT}/simple/"\n\n'
        '[targets]\npython = ["/usr/bin/python3"]\naccel = ["cpu"]\n'
    )
    (root / ".dockerignore").write_text("wheelhouse/logs\nwheelhouse/builds\n")
    return root


def _in_builder(engine: Engine, project: Path, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in the builder image, offline, with the upstream served on 127.0.0.1."""
    return run_serving(engine, BUILDER, project, script, port=UPSTREAM_PORT)


@pytest.fixture(scope="module")
def wheelhouse(engine: Engine, builder_image: str, project: Path) -> Path:
    started = time.monotonic()
    proc = _in_builder(
        engine,
        project,
        "prewheel build -q -r requirements.txt -c prewheel.toml --wheelhouse /project/wheelhouse",
    )
    print(f"prewheel build in the builder image: {time.monotonic() - started:.1f}s")
    print(proc.stdout[-3000:])
    return project / "wheelhouse"


@pytest.fixture(scope="module")
def runtime_image(engine: Engine, bases: tuple[str, str], wheelhouse: Path, project: Path) -> str:
    name = "cp311-cpu-auto"  # the builder base is Debian bookworm: /usr/bin/python3 is 3.11
    dockerfile = _in_builder(
        engine,
        project,
        f"prewheel dockerfile -c prewheel.toml --target {name} --from-wheelhouse wheelhouse "
        "--app app --cmd 'python /app'",
    ).stdout
    (project / "Dockerfile").write_text(dockerfile)
    engine.run(
        "build",
        "--network=none",
        "-t",
        RUNTIME,
        "--build-arg",
        f"BASE_IMAGE={bases[1]}",
        ".",
        cwd=project,
    )
    return RUNTIME


@pytest.fixture(scope="module")
def naive_image(
    engine: Engine, bases: tuple[str, str], project: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    ctx = tmp_path_factory.mktemp("naive-ctx")
    for name in ("upstream", "app"):
        shutil.copytree(project / name, ctx / name)
    shutil.copy(project / "requirements.txt", ctx / "requirements.txt")
    shutil.copy(HELPERS / "Dockerfile.naive", ctx / "Dockerfile")
    engine.run(
        "build",
        "--network=none",
        "-t",
        NAIVE,
        "--build-arg",
        f"BASE_IMAGE={bases[0]}",
        ".",
        cwd=ctx,
    )
    return NAIVE


def test_builder_image_runs_prewheel(engine: Engine, builder_image: str) -> None:
    out = engine.run("run", "--rm", "--network=none", builder_image, "--version").stdout
    assert "prewheel" in out
    config = json.loads(engine.run("image", "inspect", builder_image).stdout)[0]["Config"]
    assert config["Entrypoint"] == ["prewheel"]
    assert "/wheelhouse" in (config.get("Volumes") or {})


def test_prewheel_build_in_builder_image(wheelhouse: Path) -> None:
    wheels = [parse_wheel_filename(p.name) for p in (wheelhouse / "files").rglob("*.whl")]
    cext = [tags for name, _, _, tags in wheels if name == "pw-cext"]
    assert cext, wheels
    assert all(t.abi == "cp311" and t.platform.startswith("manylinux") for t in cext[0])
    for project in ("pw-app", "pw-cext", "pw-pure", "pw-haswheel"):
        assert (wheelhouse / "cpu" / "simple" / project / "index.html").is_file(), project


def test_runtime_image_imports_everything_without_compiler(
    engine: Engine, runtime_image: str
) -> None:
    out = engine.run("run", "--rm", "--network=none", runtime_image).stdout
    assert "pw_cext.add(2, 3) = 5" in out
    check = (
        "set -e; for c in gcc cc g++ c++ cpp clang x86_64-linux-gnu-gcc; do "
        "if command -v $c; then echo compiler: $c; exit 1; fi; done; "
        "test ! -e /usr/include/python3.11/Python.h; "
        "test -z \"$(find / -xdev -name 'pw_*.whl' -o -xdev -name 'pw_*.tar.gz')\"; "
        'test "$(id -u)" = 10001; echo clean'
    )
    out = engine.run(
        "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", runtime_image, "-c", check
    ).stdout
    assert out.strip().endswith("clean"), out


def test_runtime_layers_hold_no_wheels(engine: Engine, runtime_image: str, tmp_path: Path) -> None:
    """The wheels came in through a bind mount: no layer, not even a deleted file, has one."""
    archive = tmp_path / "runtime.tar"
    engine.run("save", "-o", str(archive), runtime_image)
    found: list[str] = []
    with tarfile.open(archive) as outer:
        for member in outer.getmembers():
            if not member.name.endswith("layer.tar"):
                continue
            layer = outer.extractfile(member)
            assert layer is not None
            with tarfile.open(fileobj=layer) as inner:
                found += [
                    n
                    for n in inner.getnames()
                    if Path(n).name.startswith("pw_") and n.endswith((".whl", ".tar.gz"))
                ]
    assert found == []
    history = engine.run(
        "history", "--no-trunc", "--format", "{{.CreatedBy}}", runtime_image
    ).stdout
    copies = [line for line in history.splitlines() if line.startswith(("COPY", "ADD"))]
    assert copies == ["COPY app /app/ # buildkit"], copies


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_runtime_image_from_the_index_served_by_the_builder_image(
    engine: Engine, bases: tuple[str, str], wheelhouse: Path, project: Path, tmp_path: Path
) -> None:
    """The other way in: `prewheel serve` in the builder image, the runtime stage's pip on it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/cpu/simple/"
    server = engine.run(
        "run", "-d", "--rm", "--network=host", "-v", f"{wheelhouse}:/wheelhouse", BUILDER,
        "serve", "--host", "127.0.0.1", "--port", str(port),
    ).stdout.strip()  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url + "pw-cext/", timeout=2) as resp:
                    assert resp.status == 200
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        ctx = tmp_path / "ctx"
        shutil.copytree(project / "app", ctx / "app")
        shutil.copy(project / "requirements.txt", ctx / "requirements.txt")
        (ctx / ".dockerignore").write_text(".git\n")
        dockerfile = _in_builder(
            engine, project,
            f"prewheel dockerfile -c prewheel.toml --target cp311-cpu-auto --index-url {url} "
            "--app app --cmd 'python /app'",
        ).stdout  # fmt: skip
        assert f"ARG INDEX_URL={url}" in dockerfile
        (ctx / "Dockerfile").write_text(dockerfile)
        image = "prewheel-test/runtime-index:latest"
        engine.run("build", "--network=host", "-t", image, "--build-arg",
                   f"BASE_IMAGE={bases[1]}", ".", cwd=ctx)  # fmt: skip
        out = engine.run("run", "--rm", "--network=none", image).stdout
        assert "pw_cext.add(2, 3) = 5" in out
    finally:
        engine.run("stop", "-t", "2", server, check=False)


def test_generated_dockerfile_passes_linters(project: Path, runtime_image: str) -> None:
    lint = subprocess.run(
        [sys.executable, "-m", "builder", "lint-dockerfile", str(project / "Dockerfile")],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=pip_isolated_env(),
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    proc = subprocess.run(
        [declared("hadolint"), str(project / "Dockerfile")], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout


def test_runtime_image_is_much_smaller_than_single_stage(
    engine: Engine, runtime_image: str, naive_image: str
) -> None:
    env = {**engine.env, "PREWHEEL_DOCKER": engine.client}
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "image_size.py"),
            "--runtime",
            runtime_image,
            "--naive",
            naive_image,
            "--save",
            str(CACHE / "image_size.json"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The naive image can still compile; the runtime one cannot.
    out = engine.run(
        "run",
        "--rm",
        "--network=none",
        "--entrypoint",
        "/bin/sh",
        naive_image,
        "-c",
        "command -v gcc",
    ).stdout
    assert out.strip()
    saving = engine.size(naive_image) - engine.size(runtime_image)
    assert saving >= MIN_SAVING, f"only {saving / 1e6:.0f} MB smaller"


def _audit(archive: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "builder", "audit-image", *args, str(archive)],
        capture_output=True,
        text=True,
        cwd=archive.parent,  # no .dive-ci there: --ci means Dive's defaults
        timeout=300,
    )


def test_audit_image_on_the_runtime_stage_and_the_single_stage_image(
    engine: Engine, runtime_image: str, naive_image: str, tmp_path: Path
) -> None:
    """Both images audited and printed; Dive's numbers equal dive's own on each archive; the
    runtime stage passes `dive --ci`'s defaults (efficiency 0.9, user-wasted 0.1) and holds
    no compiler, header or -dev package, while the single-stage image holds all three."""
    found = {}
    for label, image in (("runtime", runtime_image), ("single-stage", naive_image)):
        archive = tmp_path / f"{label}.tar"
        engine.run("save", "-o", str(archive), image, timeout=600)
        report = _audit(archive, "--ci")
        print(f"== prewheel audit-image --ci ({label} image {image})\n{report.stdout}")
        data = json.loads(_audit(archive, "--ci", "--json", "--top", "1000000").stdout)
        assert_same_as_dive(data, dive_json(archive, tmp_path))
        found[label] = (report.returncode, {f["category"] for f in data["findings"]})
    code, runtime = found["runtime"]
    assert code == 0, "the runtime stage fails Dive's CI defaults"
    assert not runtime & {"compilers", "headers", "dev-packages", "pip-cache", "archives"}
    assert {"compilers", "headers", "dev-packages"} <= found["single-stage"][1]
