"""Image archives written with tarfile, as `docker save` writes them, for audit-image tests:
small crafted images prove a case (overwrites, whiteouts, opaque directories) faster than a
real build. `docker load` accepts archives of this shape (CONTAINERS.md)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from needs import declared

# (path, content): bytes for a file, None for a directory, "->target" for a symlink,
# "=>target" for a hard link.
Item = tuple[str, "bytes | str | None"]


def layer_tar(items: Sequence[Item]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in items:
            info = tarfile.TarInfo(name)
            info.mtime = 1_577_836_800
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif isinstance(content, str) and content.startswith("->"):
                info.type, info.linkname = tarfile.SYMTYPE, content[2:]
                tar.addfile(info)
            elif isinstance(content, str) and content.startswith("=>"):
                info.type, info.linkname = tarfile.LNKTYPE, content[2:]
                tar.addfile(info)
            else:
                data = content if isinstance(content, bytes) else content.encode()
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1_577_836_800
    tar.addfile(info, io.BytesIO(data))


def docker_archive(
    path: Path,
    layers: Sequence[Sequence[Item]],
    *,
    tag: str = "prewheel-test/crafted:latest",
    repeat: Sequence[int] = (),
    link_repeats: bool = False,
) -> Path:
    """A legacy docker-archive (`<id>/layer.tar`, config JSON, manifest.json). `repeat` lists
    layer indexes used again at the end (as the same path in the manifest, or, with
    `link_repeats`, through a symlinked layer.tar as docker save writes one)."""
    blobs = [layer_tar(items) for items in layers]
    with tarfile.open(path, "w") as tar:
        names, diff_ids = [], []
        for blob in blobs:
            digest = hashlib.sha256(blob).hexdigest()
            _add(tar, f"{digest}/layer.tar", blob)
            names.append(f"{digest}/layer.tar")
            diff_ids.append(f"sha256:{digest}")
        for n, i in enumerate(repeat):
            if link_repeats:
                info = tarfile.TarInfo(f"repeat{n}/layer.tar")
                info.type, info.linkname = tarfile.SYMTYPE, f"../{names[i]}"
                tar.addfile(info)
                names.append(f"repeat{n}/layer.tar")
            else:
                names.append(names[i])
            diff_ids.append(diff_ids[i])
        config = _config(diff_ids)
        config_name = hashlib.sha256(config).hexdigest() + ".json"
        _add(tar, config_name, config)
        manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def _config(diff_ids: Sequence[str]) -> bytes:
    config: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": f"/bin/sh -c step {i}"} for i in range(len(diff_ids))],
    }
    return json.dumps(config).encode()


def oci_archive(path: Path, layers: Sequence[Sequence[Item]], *, with_manifest_json: bool) -> Path:
    """An OCI image layout tarball with gzip layers; with `with_manifest_json`, the
    manifest.json Docker 25+ adds beside index.json."""

    def blob(tar: tarfile.TarFile, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        _add(tar, f"blobs/sha256/{digest}", data)
        return digest

    with tarfile.open(path, "w") as tar:
        _add(tar, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        raw = [layer_tar(items) for items in layers]
        zipped = [gzip.compress(r, mtime=0) for r in raw]
        digests = [blob(tar, z) for z in zipped]
        config = _config([f"sha256:{hashlib.sha256(r).hexdigest()}" for r in raw])
        config_digest = blob(tar, config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{d}",
                    "size": len(z),
                }
                for d, z in zip(digests, zipped, strict=True)
            ],
        }
        mdata = json.dumps(manifest).encode()
        mdigest = blob(tar, mdata)
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{mdigest}",
                    "size": len(mdata),
                    "annotations": {"io.containerd.image.name": "prewheel-test/oci:latest"},
                }
            ],
        }
        _add(tar, "index.json", json.dumps(index).encode())
        if with_manifest_json:
            entry = {
                "Config": f"blobs/sha256/{config_digest}",
                "RepoTags": ["prewheel-test/oci:latest"],
                "Layers": [f"blobs/sha256/{d}" for d in digests],
            }
            _add(tar, "manifest.json", json.dumps([entry]).encode())
    return path


def dive_json(archive: Path, tmp: Path) -> dict[str, Any]:
    """What Dive itself reports for `archive` (its --json export)."""
    out = tmp / f"{archive.name}.dive.json"
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # CI=true would mean --ci
    proc = subprocess.run(
        [declared("dive"), "--source", "docker-archive", str(archive), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def assert_same_as_dive(ours: dict[str, Any], dive: dict[str, Any]) -> None:
    """Efficiency, wasted bytes, image and layer sizes, and the user-wasted ratio Dive's CI
    rule reads (its wasted bytes over every layer but the first), all exactly equal."""
    assert ours["dive"]["efficiency"] == dive["image"]["efficiencyScore"]
    assert ours["dive"]["wasted_bytes"] == dive["image"]["inefficientBytes"]
    assert ours["image"]["size"] == dive["image"]["sizeBytes"]
    assert [layer["size"] for layer in ours["layers"]] == [
        layer["sizeBytes"] for layer in dive["layer"]
    ]
    user = sum(layer["sizeBytes"] for layer in dive["layer"][1:])
    assert ours["dive"]["user_size"] == user
    if user:
        assert ours["dive"]["user_wasted_percent"] == dive["image"]["inefficientBytes"] / user
    # Every path Dive lists as inefficient, with its count and bytes (ours run with a --top
    # large enough to list them all).
    theirs = sorted((f["file"], f["count"], f["sizeBytes"]) for f in dive["image"]["fileReference"])
    mine = sorted((f["path"], f["count"], f["bytes"]) for f in ours["dive"]["inefficient_files"])
    assert mine == theirs
