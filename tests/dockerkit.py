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


def downloaded_once(name: str, *downloads: list[str], why: str) -> Path:
    """CACHE/name, made once (by this worker or another, for later runs too) by the `pip
    download` argument lists `downloads` into it, run with the machine's pip configuration
    (its CA bundle); a failure skips the test, saying `why` was needed."""
    cached = CACHE / name
    if not cached.is_dir():
        tmp = CACHE / f"{name}.{os.getpid()}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        for args in downloads:
            argv = [sys.executable, "-m", "pip", "download", "-q", "-d", str(tmp), *args]
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
            if proc.returncode != 0:
                shutil.rmtree(tmp, ignore_errors=True)
                missing(f"Docker tier skipped: cannot download {why}:\n{proc.stderr[-2000:]}")
        with contextlib.suppress(OSError):  # another worker got there first: the same files
            tmp.rename(cached)
        shutil.rmtree(tmp, ignore_errors=True)
    return cached


def offline_wheels(dest: Path) -> None:
    """prewheel's pinned dependencies as wheels, downloaded once per pin set."""
    pins = REPO / "requirements-builder.txt"
    cached = downloaded_once(
        f"wheels-{hashlib.sha256(pins.read_bytes()).hexdigest()[:16]}",
        [
            "-r", str(pins), "--only-binary=:all:", "--python-version", "3.11",
            "--implementation", "cp",
            "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
        ],
        why="prewheel's dependencies for the builder image",
    )  # fmt: skip
    shutil.copytree(cached, dest)


def run_serving(
    engine: Engine,
    image: str,
    project: Path,
    script: str,
    *,
    port: int,
    python: str = "python3",
    timeout: float = 400,
) -> subprocess.CompletedProcess[str]:
    """`script` in `image` with no network, `project` mounted at /project (the working
    directory), and its upstream/ served on 127.0.0.1:`port` by `python`'s http.server."""
    serve = (
        f"{python} -m http.server --bind 127.0.0.1 {port} --directory /project/upstream "
        ">/dev/null 2>&1 & "
        f"until {python} -c 'import urllib.request as u; "
        f'u.urlopen("http://127.0.0.1:{port}/simple/")\' 2>/dev/null; do sleep 0.2; done; '
    )
    return engine.run(
        "run", "--rm", "--network=none", "-v", f"{project}:/project", "-w", "/project",
        "--entrypoint", "/bin/sh", image, "-c", serve + script, timeout=timeout,
    )  # fmt: skip


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
