"""What the Docker-tier tests share: the engine (the one at $DOCKER_HOST, or a private one
started by tests/docker/dockerd.sh), the builder image's build context with prewheel's
dependencies as wheels (the image is built with --network=none), and the base-image cache."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from needs import missing

REPO = Path(__file__).resolve().parent.parent
HELPERS = REPO / "tests" / "docker"
CACHE = Path(os.environ.get("PREWHEEL_DOCKER_CACHE", "/var/tmp/prewheel-docker-cache"))


@dataclass(frozen=True)
class Engine:
    client: str
    env: dict[str, str]

    def run(
        self, *args: str, cwd: Path | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [self.client, *args],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} failed ({proc.returncode}):\n"
                f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def size(self, image: str) -> int:
        return int(self.run("image", "inspect", "-f", "{{.Size}}", image).stdout.strip())


def _client() -> str | None:
    found = os.environ.get("PREWHEEL_DOCKER")
    if found:
        return found
    # Debian's 20.10 client speaks BuildKit by itself; a newer one first on PATH may need buildx.
    return "/usr/bin/docker" if Path("/usr/bin/docker").is_file() else shutil.which("docker")


def _answers(client: str, env: dict[str, str]) -> bool:
    try:
        return (
            subprocess.run([client, "info"], env=env, capture_output=True, timeout=20).returncode
            == 0
        )
    except (OSError, subprocess.SubprocessError):
        return False


def engine_for_tests() -> Iterator[Engine]:
    """The engine at $DOCKER_HOST if one answers, else one started with dockerd.sh (and stopped
    after), else a skip with the reason (a failure under CI's strict mode)."""
    client = _client()
    if client is None:
        missing("Docker tier skipped: no docker client (apt-get install docker.io)")
    env = {**os.environ, "DOCKER_BUILDKIT": "1"}
    if os.environ.get("DOCKER_HOST") and _answers(client, env):
        yield Engine(client, env)
        return
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        missing(
            "Docker tier skipped: no engine at $DOCKER_HOST and dockerd cannot be "
            "started here (needs docker.io and root)"
        )
    state = Path(f"/tmp/prewheel-dockerd-{uuid.uuid4().hex[:8]}")
    script_env = {**env, "PREWHEEL_DOCKERD_DIR": str(state)}
    started = subprocess.run(
        [str(HELPERS / "dockerd.sh"), "start"],
        env=script_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if started.returncode != 0:
        missing(f"Docker tier skipped: dockerd would not start: {started.stderr.strip()}")
    env["DOCKER_HOST"] = f"unix://{state}/docker.sock"
    try:
        yield Engine(client, env)
    finally:
        subprocess.run([str(HELPERS / "dockerd.sh"), "stop"], env=script_env, timeout=120)


def offline_wheels(dest: Path) -> None:
    """prewheel's pinned dependencies as wheels, downloaded once per pin set."""
    pins = (REPO / "requirements-builder.txt").read_bytes()
    key = hashlib.sha256(pins).hexdigest()[:16]
    cached = CACHE / f"wheels-{key}"
    if not cached.is_dir():
        tmp = CACHE / f"wheels-{key}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        proc = subprocess.run(
            [
                sys.executable, "-m", "pip", "download", "-q", "-r",
                str(REPO / "requirements-builder.txt"), "-d", str(tmp), "--only-binary=:all:",
                "--python-version", "3.11", "--implementation", "cp",
                "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
            ],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if proc.returncode != 0:
            missing(
                "Docker tier skipped: cannot download prewheel's dependencies for the builder "
                f"image:\n{proc.stderr[-2000:]}"
            )
        with contextlib.suppress(OSError):  # another worker got there first: same pins
            tmp.rename(cached)
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(cached, dest)


def builder_context(ctx: Path) -> Path:
    """Dockerfile.builder's build context in `ctx`: prewheel's sources and its dependencies as
    wheels in offline-wheels/ (build with PIP_NO_INDEX=1 PIP_FIND_LINKS=/src/offline-wheels)."""
    for name in (
        "builder",
        "pyproject.toml",
        "requirements-builder.txt",
        ".dockerignore",
        "Dockerfile.builder",
        "README.md",
        "LICENSE",
    ):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, ctx / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            shutil.copy(src, ctx / name)
    if not (ctx / "README.md").exists():
        (ctx / "README.md").write_text("# prewheel\n")
    offline_wheels(ctx / "offline-wheels")
    return ctx
