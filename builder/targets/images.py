"""The base images a target builds in and runs on, and the glibc each carries.

Every fact here (which Ubuntu releases nvidia/cuda publishes for a CUDA version, which Debian
is under python:X.Y-slim, each one's glibc) comes from `builder/data/images.toml` through
`compat`; this module only chooses among them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import compat
from . import policy
from .model import Target


@dataclass(frozen=True, kw_only=True)
class BaseImage:
    """A runtime base a target may start from, and what decides whether its wheels fit."""

    image: str
    os: compat.OsRelease
    apt_python: bool  # its package manager installs the target's Python (no --base needed)


def builder_image(policy_name: str) -> str:
    """The newest pypa manylinux image whose glibc the policy allows."""
    glibc = policy.glibc_of(policy_name) or (2, 17)
    images = compat.load().manylinux
    fits = [image for image, have in images if have <= glibc] or [images[0][0]]
    return fits[-1].format(arch=policy.ARCH)


def cuda_image(cuda: compat.Version, os_key: str) -> str:
    return compat.load().cuda_image_tag.format(cuda=compat.show(cuda[:2]), os=os_key)


def cuda_runtime_os(python: str, cuda: compat.Version) -> str | None:
    """The Ubuntu release whose own python3 is `python` and that has nvidia/cuda runtime
    images of `cuda`: a runtime stage there installs Python with apt. None when none has."""
    data = compat.load()
    for rng in data.cuda_images:
        found = data.os[rng.os]
        if found.package_manager == "apt" and found.python == python and rng.has(cuda):
            return rng.os
    return None


def runtime_image(target: Target) -> str:
    """The base image a runtime stage for this target starts from: python:X.Y-slim for cpu;
    for CUDA the nvidia/cuda runtime image whose Ubuntu ships that Python, else the newest
    Ubuntu with that CUDA (whose Python a --base must bring)."""
    if target.accel == "cpu":
        return python_image(target)
    cuda = compat.cuda_of(target.accel) or (0, 0)
    os_key = cuda_runtime_os(target.python, cuda)
    if os_key is None:
        data = compat.load()
        ubuntu = [r.os for r in data.cuda_images if r.os.startswith("ubuntu") and r.has(cuda)]
        os_key = max(ubuntu, key=lambda k: data.os[k].glibc) if ubuntu else "ubuntu22.04"
    return cuda_image(cuda, os_key)


def python_image(target: Target) -> str:
    return compat.load().python_tag.format(python=target.python)


def image_os(image: str) -> compat.OsRelease | None:
    """The operating system under a known base image name (nvidia/cuda:*-runtime-<os>,
    python:X.Y-slim[-<codename>], debian:<codename>, ubuntu:<release>); None if unknown."""
    data = compat.load()
    name, _, tag = image.partition(":")
    key: str | None = None
    if name.endswith("nvidia/cuda"):
        key = tag.rsplit("-", 1)[-1]
    elif name.rsplit("/", 1)[-1] == "python":
        codename = re.search(r"-(\w+)$", tag)
        key = data.python_variants.get(codename.group(1)) if codename else None
        if key is None and re.fullmatch(r"[\d.]+(-slim)?", tag):
            key = data.python_os
    elif name.rsplit("/", 1)[-1] == "debian":
        key = data.python_variants.get(tag.split("-")[0])
    elif name.rsplit("/", 1)[-1] == "ubuntu":
        key = f"ubuntu{tag}"
    return data.os.get(key) if key else None


def image_glibc(image: str) -> compat.Version | None:
    """The glibc of a known base image (see `image_os`)."""
    found = image_os(image)
    return found.glibc if found else None


def runtime_bases(target: Target) -> list[BaseImage]:
    """Every base image prewheel knows for this target's runtime stage, newest glibc first:
    python:X.Y-slim and its -slim-<codename> variants for cpu, the nvidia/cuda runtime images
    of the target's CUDA version otherwise."""
    data = compat.load()
    out: list[BaseImage] = []
    if target.accel == "cpu":
        tags = [python_image(target)] + [
            f"{python_image(target)}-{codename}" for codename in data.python_variants
        ]
        for tag in tags:
            found = image_os(tag)
            if found is not None:
                out.append(BaseImage(image=tag, os=found, apt_python=True))
    else:
        cuda = compat.cuda_of(target.accel) or (0, 0)
        for rng in data.cuda_images:
            if rng.has(cuda):
                found = data.os[rng.os]
                apt = found.package_manager == "apt" and found.python == target.python
                out.append(BaseImage(image=cuda_image(cuda, rng.os), os=found, apt_python=apt))
    return sorted(out, key=lambda b: b.os.glibc, reverse=True)
