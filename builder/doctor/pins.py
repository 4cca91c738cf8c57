"""Pinned ML frameworks against a target: does the pinned release exist for its CUDA variant?

A `torch==2.5.1` pin on a cu128 target fails only at install time, deep inside a Docker build,
with "no matching distribution"; TensorFlow built for CUDA 12 in a CUDA 13 image fails only
when it first loads its libraries. Both are known from the releases alone
(`builder/data/frameworks.toml`), so the doctor says so before anything is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from packaging.utils import canonicalize_name

from .. import compat
from ..compat import Compat, cuda_of, show
from ..requirements import Pin
from ..targets import Target
from .report import Problem

_TORCH = "torch"
_TENSORFLOW = ("tensorflow", "tensorflow-cpu", "tensorflow-gpu")
_VARIANT_LABEL = re.compile(r"cpu|cu\d{3,}")
_Emit = Callable[[Literal["warning", "error"], str, str], list[Problem]]


def _local(version: str) -> str | None:
    """The local label of a pin (`2.5.1+cu121` -> cu121) when it names a build variant."""
    _, sep, label = version.partition("+")
    return label if sep and _VARIANT_LABEL.fullmatch(label) else None


def _known_torch(data: Compat) -> str:
    keys = sorted(data.torch, key=compat.parse_version)
    return f"{keys[0]} to {keys[-1]}"


def check_pins(
    pins: Sequence[Pin], targets: Sequence[Target], data: Compat | None = None
) -> list[Problem]:
    """Every pin that has no build for a target (an error), and every one prewheel cannot
    check or that would pull another variant than the target's (a warning)."""
    data = data or compat.load()
    out: list[Problem] = []
    for target in targets:
        for pin in pins:
            out += _check(pin, target, data)
    return out


def _check(pin: Pin, target: Target, data: Compat) -> list[Problem]:
    name = canonicalize_name(pin.name)
    where = f"{pin.where}: " if pin.where else ""
    accel = target.accel

    def problem(level: Literal["warning", "error"], code: str, message: str) -> list[Problem]:
        return [Problem(level=level, code=code, message=where + message, target=target.name)]

    if pin.version is None:
        if name == _TORCH or name in _TENSORFLOW:
            return problem(
                "warning", "pin-unpinned", f"{pin.name} is not pinned: its builds are not checked"
            )
        return []
    label = _local(pin.version)
    if label is not None and label != accel:
        return problem(
            "error",
            "pin-variant-mismatch",
            f"{pin.name}=={pin.version} is the {label} build, but target {target.name} is "
            f"{accel}: pin {pin.version.split('+')[0]}+{accel} (or no local label) for it",
        )
    if name == _TORCH:
        return _torch(pin, target, label, data, problem)
    if name in _TENSORFLOW and name != "tensorflow-cpu":
        return _tensorflow(pin, target, data, problem)
    return []


def _torch(
    pin: Pin, target: Target, label: str | None, data: Compat, problem: _Emit
) -> list[Problem]:
    assert pin.version is not None
    accel = target.accel
    release = data.torch_release(pin.version)
    if release is None:
        return problem(
            "warning",
            "pin-unknown",
            f"torch {pin.version} is not in prewheel's table (builder/data/frameworks.toml "
            f"knows {_known_torch(data)}): its CUDA builds are not checked",
        )
    if accel not in release.variants:
        return problem(
            "error",
            "pin-no-build",
            f"torch=={pin.version} has no {accel} build: PyTorch publishes torch "
            f"{release.minor}.x for {', '.join(release.variants)} "
            f"({data.torch_index.format(variant='<variant>')})",
        )
    if label is None and release.pypi is not None and release.pypi != accel:
        return problem(
            "warning",
            "pin-pypi-variant",
            f"torch=={pin.version} from PyPI is its {release.pypi} build; target "
            f"{target.name} wants {accel}: resolve torch from "
            f"{data.torch_index.format(variant=accel)} ([index] upstream)",
        )
    return []


def _tensorflow(pin: Pin, target: Target, data: Compat, problem: _Emit) -> list[Problem]:
    assert pin.version is not None
    cuda = cuda_of(target.accel)
    release = data.tensorflow_release(pin.version)
    if release is None:
        known = sorted(data.tensorflow, key=compat.parse_version)
        return problem(
            "warning",
            "pin-unknown",
            f"tensorflow {pin.version} is not in prewheel's table (it knows {known[0]} to "
            f"{known[-1]}): its CUDA needs are not checked",
        )
    if cuda is None:
        return []
    built = f"CUDA {show(release.cuda)} with cuDNN {show(release.cudnn)}"
    if cuda[0] != release.cuda[0]:
        same = [
            tk.variant
            for tk in data.toolkits.values()
            if tk.version[0] == release.cuda[0] and tk.version >= release.cuda
        ]
        return problem(
            "error",
            "pin-no-build",
            f"{pin.name}=={pin.version} is built for {built}; target {target.name} is CUDA "
            f"{show(cuda)}: TensorFlow loads libcudart.so.{release.cuda[0]} and the cuDNN of "
            f"that release, which a CUDA {cuda[0]} runtime does not provide. Use a CUDA "
            f"{release.cuda[0]}.x target ({', '.join(same)})",
        )
    if cuda < release.cuda:
        return problem(
            "warning",
            "pin-cuda-older",
            f"{pin.name}=={pin.version} is built for {built}; target {target.name} provides "
            f"CUDA {show(cuda)}: it needs the {show(release.cuda)} libraries (tensorflow"
            "[and-cuda] installs them) and a driver for them",
        )
    return []


def allowed_variants(
    pins: Sequence[Pin], data: Compat | None = None
) -> tuple[set[str] | None, str]:
    """The CUDA variants the pinned frameworks publish (None: no limit), and how to say it
    ("for torch 2.5.1"), so the recommendation names one the pins can install."""
    data = data or compat.load()
    allowed: set[str] | None = None
    said = []
    for pin in pins:
        name = canonicalize_name(pin.name)
        if pin.version is None:
            continue
        variants: set[str] | None = None
        if name == _TORCH and (rel := data.torch_release(pin.version)) is not None:
            variants = {v for v in rel.variants if cuda_of(v)}
        elif name in _TENSORFLOW and (tf := data.tensorflow_release(pin.version)) is not None:
            variants = {
                tk.variant
                for tk in data.toolkits.values()
                if tk.version[0] == tf.cuda[0] and tk.version >= tf.cuda
            }
        if variants is not None:
            allowed = variants if allowed is None else allowed & variants
            said.append(f"{pin.name} {pin.version}")
    return allowed, (f" with a build for {' and '.join(said)}" if said else "")
