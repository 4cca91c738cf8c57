"""The base images a target's runtime stage starts from."""

from __future__ import annotations

from . import policy
from .model import Target

# The maintained manylinux build images, by the glibc they carry.
_BUILDER_IMAGES = ((2, 17, "manylinux2014"), (2, 28, "manylinux_2_28"), (2, 34, "manylinux_2_34"))


def builder_image(policy_name: str) -> str:
    """The newest pypa manylinux image whose glibc the policy allows."""
    glibc = policy.glibc_of(policy_name) or (2, 17)
    fits = [name for major, minor, name in _BUILDER_IMAGES if (major, minor) <= glibc]
    return f"quay.io/pypa/{(fits or ['manylinux2014'])[-1]}_{policy.ARCH}"


# The CUDA runtime images (nvidia/cuda:<version>-runtime-<os>) per toolkit: first patch
# release, which every variant has; Ubuntu 24.04 from CUDA 12.5 on (its python3 is 3.12),
# else 22.04 (python3.10).
def runtime_image(target: Target) -> str:
    """The base image a runtime stage for this target starts from."""
    if target.accel == "cpu":
        return python_image(target)
    ver = target.cuda_version or "0.0"
    major, minor = (int(x) for x in ver.split("."))
    py = target.python
    ubuntu = "ubuntu24.04" if (major, minor) >= (12, 5) and py != "3.10" else "ubuntu22.04"
    return f"nvidia/cuda:{ver}.0-runtime-{ubuntu}"


def python_image(target: Target) -> str:
    return f"python:{target.python}-slim"
