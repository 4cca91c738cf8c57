"""The runtime stage: a Dockerfile that installs a target's prebuilt wheels and nothing else.

A runtime image gets no compiler and no `-dev` package, because every wheel it needs was built
once, elsewhere (the builder image), for exactly its target. So the stage starts from a slim
base, installs with `--only-binary=:all:` (an sdist can never sneak in and start a build), keeps
no pip cache and no wheel in any layer, runs as a non-root user and copies the app last, so a
code change rebuilds only the last layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from .. import __version__, compat
from ..errors import TargetError
from ..targets import Target, policy
from ..targets.images import cuda_image, cuda_runtime_os, image_glibc

VENV = "/opt/venv"
APP_DIR = "/app"
APP_USER = "app"
APP_UID = 10001
DEFAULT_INDEX_URL = "http://prewheel:8080/{accel}/simple/"


@dataclass(frozen=True, kw_only=True)
class RuntimeSpec:
    """What the generated runtime stage installs, from where, and what it runs."""

    target: Target
    index_url: str | None = None  # None: the default index URL for the target's accelerator
    wheelhouse: str | None = None  # a path inside the build context; wins over index_url
    requirements: str = "requirements.txt"  # inside the build context
    app: str | None = None  # a path inside the build context, copied to /app
    command: tuple[str, ...] = ()
    base: str | None = None  # an image that already has python3.X


def find_target(targets: list[Target], name: str) -> Target:
    """The configured target called `name`; a TargetError naming the known ones otherwise."""
    for target in targets:
        if target.name == name:
            return target
    known = ", ".join(t.name for t in targets) or "(none configured)"
    raise TargetError(
        f"unknown target '{name}'; known targets: {known}",
        hint="list them with `prewheel targets`, or add one to the config ([targets] python/accel)",
    )


def python_version(target: Target) -> str:
    """The X.Y a target's runtime needs, from its interpreter or, if missing here, its spec."""
    if target.interpreter is not None:
        return target.interpreter.short
    m = re.fullmatch(r"cp(\d)(\d+)t?", target.name.split("-", 1)[0])
    if m:
        return f"{m.group(1)}.{m.group(2)}"
    raise TargetError(
        f"target '{target.name}': cannot tell its Python version",
        hint='name the Python version in the config ([targets] python = ["3.12"])',
    )


def base_image(target: Target) -> str:
    """The slim image a target's runtime starts from: python:X.Y-slim, or a CUDA runtime."""
    py = python_version(target)
    abi = target.name.split("-", 1)[0]
    if abi.endswith("t") or (target.interpreter is not None and target.interpreter.gil_disabled):
        raise TargetError(
            f"target '{target.name}': no python:*-slim or nvidia/cuda image ships a "
            f"free-threaded Python {py}t",
            hint=f"pass --base with an image that has python{py}t as python3",
        )
    if target.accel == "cpu":
        return compat.load().python_tag.format(python=py)
    cuda = compat.cuda_of(target.accel) or (0, 0)
    os_name = cuda_runtime_os(py, cuda)
    if os_name is None:
        data = compat.load()
        known = ", ".join(
            f"{data.os[r.os].python} ({r.os}, CUDA {compat.show(r.first)}"
            + (f" to {compat.show(r.last)})" if r.last else " on)")
            for r in data.cuda_images
            if data.os[r.os].package_manager == "apt"
        )
        raise TargetError(
            f"target '{target.name}': no nvidia/cuda:{target.cuda_version}.*-runtime image "
            f"ships Python {py} (their Ubuntu releases ship {known})",
            hint="pass --base with a CUDA runtime image that already has python" + py,
        )
    return cuda_image(cuda, os_name)


def glibc_mismatch(target: Target, base: str) -> str | None:
    """Why a wheel the target accepts may not install on `base` (its glibc is older than the
    target's policy allows), or None; None too for an image prewheel does not know."""
    have = image_glibc(base)
    ceiling = policy.glibc_of(target.platform_ceiling)
    if have is None or ceiling is None or ceiling <= have:
        return None
    return (
        f"target {target.name} accepts wheels up to {target.platform_ceiling}, but {base} has "
        f"glibc {have[0]}.{have[1]}: pip refuses a wheel there that needs a newer glibc. Give "
        f"this target policy {policy.platform_tag((have[0], have[1]))} or older, or --base an "
        "image with a newer glibc"
    )


def warnings(spec: RuntimeSpec) -> tuple[str, ...]:
    """What a user should know before building `spec`'s stage (also atop the Dockerfile)."""
    why = glibc_mismatch(spec.target, spec.base or base_image(spec.target))
    return (why,) if why else ()


def _trusted_host(url: str) -> str | None:
    """pip ignores a plain-HTTP index unless its host is trusted; an in-cluster index is HTTP."""
    parts = urlsplit(url)
    return parts.hostname if parts.scheme == "http" else None


def _context_path(path: str, what: str) -> str:
    p = PurePosixPath(path.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts:
        raise TargetError(
            f"{what} '{path}' must be a relative path inside the Docker build context",
            hint="run docker build from a directory that contains it",
        )
    return str(p)


def _json_list(items: tuple[str, ...]) -> str:
    return (
        "["
        + ", ".join('"' + i.replace("\\", "\\\\").replace('"', '\\"') + '"' for i in items)
        + "]"
    )


def render(spec: RuntimeSpec) -> str:
    """The runtime Dockerfile for `spec`, as text; it passes hadolint and `lint-dockerfile`."""
    target = spec.target
    py = python_version(target)
    requirements = _context_path(spec.requirements, "requirements file")
    base = spec.base or base_image(target)
    needs_python = target.accel != "cpu" and spec.base is None
    python = f"python{py}" if needs_python else "python3"

    mounts = [f"--mount=type=bind,source={requirements},target=/tmp/requirements.txt"]
    args: list[str] = []
    if spec.wheelhouse is not None:
        wheelhouse = _context_path(spec.wheelhouse, "wheelhouse")
        mounts.insert(0, f"--mount=type=bind,source={wheelhouse},target=/wheelhouse")
        index = f"file:///wheelhouse/{target.accel}/simple/"
        pip_index = [f"--index-url {index}"]
        how = f"from the wheelhouse at ./{wheelhouse} (BuildKit bind mount; no wheel in a layer)"
        build = "DOCKER_BUILDKIT=1 docker build --network=none -t IMAGE ."
    else:
        url = spec.index_url or DEFAULT_INDEX_URL.format(accel=target.accel)
        args.append(f"ARG INDEX_URL={url}")
        host = _trusted_host(url)
        if host:
            args.append(f"ARG PIP_TRUSTED_HOST={host}")
        pip_index = ['--index-url "${INDEX_URL}"']
        how = f"from the index {url} (build arg INDEX_URL)"
        build = "DOCKER_BUILDKIT=1 docker build --build-arg INDEX_URL=URL -t IMAGE ."

    steps: list[str] = []
    if needs_python:
        steps += [
            "apt-get update",
            f"apt-get install -y --no-install-recommends python{py} python{py}-venv",
            "rm -rf /var/lib/apt/lists/*",
        ]
    steps += [
        f"{python} -m venv {VENV}",
        f"{VENV}/bin/pip install --no-cache-dir --only-binary=:all: "
        + " ".join(pip_index)
        + " -r /tmp/requirements.txt",
        f"useradd --system --uid {APP_UID} --no-create-home --shell /usr/sbin/nologin {APP_USER}",
    ]

    lines = [
        f"# Runtime stage for target {target.name}, generated by prewheel {__version__}.",
        f"# Installs prebuilt wheels only, {how};",
        "# no compiler, no -dev packages, no pip cache. Build with:",
        f"#   {build}",
        *(f"# WARNING: {w}" for w in warnings(spec)),
        f"ARG BASE_IMAGE={base}",
        "FROM ${BASE_IMAGE}",
        *args,
        "ENV PYTHONDONTWRITEBYTECODE=1 \\",
        "    PYTHONUNBUFFERED=1 \\",
        "    PIP_DISABLE_PIP_VERSION_CHECK=1 \\",
        f"    VIRTUAL_ENV={VENV} \\",
        f"    PATH={VENV}/bin:$PATH",
    ]
    if needs_python:
        lines.append("# hadolint ignore=DL3008")
    run = "RUN " + " \\\n    ".join(mounts) + " \\\n    " + " \\\n    && ".join(steps)
    lines.append(run)
    lines.append(f"WORKDIR {APP_DIR}")
    if spec.app is not None:
        app = _context_path(spec.app, "app")
        lines.append(f"COPY {app} {APP_DIR}/")
    lines.append(f"USER {APP_UID}")
    lines.append(f"CMD {_json_list(spec.command or ('python',))}")
    return "\n".join(lines) + "\n"
