"""Tiny valid wheels, written directly (no build), and a wheelhouse filled with them.

Shared by the index and server tests and by benchmarks/index_server.py.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zipfile
from pathlib import Path

from builder import index
from builder.records import BuildRecord, InterpreterKey, KeyInputs, RepairOptions, utcnow
from builder.wheelhouse import Wheelhouse, atomic_write_json


def wheel_bytes(
    name: str,
    version: str,
    *,
    build: str = "",
    tag: str = "py3-none-any",
    requires_python: str | None = ">=3.8",
    requires: tuple[str, ...] = (),
    payload: int = 0,
    extra: dict[str, bytes] | None = None,
) -> tuple[str, bytes]:
    """A wheel that pip and uv install: one module, METADATA, WHEEL and a correct RECORD;
    `extra` adds files (a shared object, say) by path."""
    dist = name.replace("-", "_")
    di = f"{dist}-{version}.dist-info"
    meta = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
    if requires_python:
        meta.append(f"Requires-Python: {requires_python}")
    meta += [f"Requires-Dist: {r}" for r in requires]
    files: dict[str, bytes] = {
        f"{dist}/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{di}/METADATA": ("\n".join(meta) + "\n\n").encode(),
        f"{di}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: prewheel-tests\nRoot-Is-Purelib: true\n"
            f"Tag: {tag}\n" + (f"Build: {build}\n" if build else "")
        ).encode(),
        **(extra or {}),
    }
    if payload:
        # Incompressible, deterministic filler so the file really is `payload` bytes big.
        seed = hashlib.sha256(f"{name}{version}".encode()).digest()
        blocks = (payload + 31) // 32
        files[f"{dist}/blob.bin"] = b"".join(
            hashlib.sha256(seed + i.to_bytes(8, "big")).digest() for i in range(blocks)
        )[:payload]
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{di}/RECORD,,")
    files[f"{di}/RECORD"] = ("\n".join(record) + "\n").encode()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for path, data in files.items():
            zf.writestr(zipfile.ZipInfo(path, date_time=(2024, 1, 1, 0, 0, 0)), data)
    parts = [dist, version] + ([build] if build else []) + [tag]
    return "-".join(parts) + ".whl", buf.getvalue()


def add_wheel(
    wh: Wheelhouse,
    tmp: Path,
    name: str,
    version: str,
    *,
    accels: tuple[str, ...] | None = None,
    origin: str = "downloaded",
    update: bool = True,
    cache_key: str | None = None,
    **kw: object,
) -> Path:
    """Write a wheel, publish it, and (by default) update the index as the pipeline does."""
    filename, data = wheel_bytes(name, version, **kw)  # type: ignore[arg-type]
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / filename
    path.write_bytes(data)
    wh.publish(path, origin=origin, accels=accels, cache_key=cache_key)
    os.unlink(path)
    if update:
        index.update_project(wh, name)
    return wh.root / wh.find(filename).path  # type: ignore[union-attr]


def sample_wheelhouse(root: Path) -> Wheelhouse:
    """A small wheelhouse: a pure project in two versions, a dependency, a cu128-only wheel."""
    wh = Wheelhouse(root)
    wh.ensure()
    tmp = root.parent / (root.name + "-tmp")
    add_wheel(wh, tmp, "alpha", "1.0", requires=("beta>=2",))
    add_wheel(wh, tmp, "alpha", "1.1", requires=("beta>=2",), requires_python=">=3.8,<4")
    add_wheel(wh, tmp, "beta", "2.0")
    add_wheel(wh, tmp, "beta", "2.0+local.1")
    add_wheel(wh, tmp, "gamma-cuda", "0.5", accels=("cu128",), origin="built")
    return wh


def write_record_json(wh: Wheelhouse, cache_key: str, data: dict[str, object]) -> None:
    """A build record file as another builder, or a test, wrote it: any JSON, not only what
    this prewheel's `BuildRecord` writes (readers must cope with both)."""
    atomic_write_json(wh.record_path(cache_key), data)


def sample_record(
    name: str,
    version: str,
    *,
    cache_key: str,
    source_key: str | None = None,
    log: str | None = None,
) -> BuildRecord:
    """A build record as the pipeline starts one; the key inputs are of the right shape, what
    they say does not matter to the tests that use it."""
    inputs = KeyInputs(
        recipe="test",
        name=name,
        version=version,
        sdist_sha256="0" * 64,
        env=(),
        config_settings=(),
        build_requires=(),
        build_constraints_sha256=None,
        patches_sha256=(),
        auditwheel="6",
        repair=RepairOptions(plat="auto", strip=False, exclude=()),
        interpreter=InterpreterKey(implementation="cpython", version="3.11.7", abi="cp311"),
        policy="auto",
        arch="x86_64",
        accel="any",
        toolkit=None,
        arch_list=None,
        compiler=None,
    )
    return BuildRecord(
        name=name,
        version=version,
        target="cp311-cpu-auto",
        targets=("cp311-cpu-auto",),
        cache_key=cache_key,
        source_key=source_key or "",
        inputs=inputs,
        tools={},
        tool_paths={},
        host="test",
        started=utcnow(),
        log=log or f"logs/{name}.log",
        sdist=None,
    )
