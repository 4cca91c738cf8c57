"""Reading an image archive: `docker save` (legacy docker-archive, or the OCI layout Docker 25+
writes, both with a manifest.json) or an OCI image layout tarball (index.json only).

An archive is read as it is, without a Docker engine: each layer becomes the list of its tar
entries, in order, with the few small files the audit reads the content of (the dpkg and apk
databases). Layers stay compressed inside the archive and are streamed once; nothing is
unpacked to disk.
"""

from __future__ import annotations

import gzip
import json
import posixpath
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import ImageError

Kind = Literal["file", "dir", "symlink", "hardlink", "other"]
# Files whose content the audit reads (package databases); larger ones are not kept.
WATCHED = frozenset({"var/lib/dpkg/status", "lib/apk/db/installed"})
_WATCH_LIMIT = 64 * 1024 * 1024
_GZIP, _ZSTD = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One tar entry of a layer. `path` is cleaned as Dive cleans it (no leading `./` or
    `/`); `size` is the header's size, the number Dive sums."""

    path: str
    size: int
    kind: Kind
    linkname: str = ""


@dataclass(frozen=True, kw_only=True)
class Layer:
    index: int
    name: str  # its path inside the archive (a layer.tar, or blobs/sha256/<digest>)
    command: str  # the history entry that made it, as `docker history` shows it
    entries: tuple[Entry, ...]
    contents: Mapping[str, bytes] = field(default_factory=dict)  # WATCHED files it writes


@dataclass(frozen=True, kw_only=True)
class Image:
    archive: str
    format: Literal["docker-archive", "oci"]
    tags: tuple[str, ...]
    layers: tuple[Layer, ...]
    notes: tuple[str, ...] = ()


def clean(name: str) -> str:
    """A tar member name as Go's path.Clean leaves it, without the leading slash: `./usr/`
    -> `usr`, `a/../b` -> `b`; "" for the root itself."""
    return posixpath.normpath("/" + name).lstrip("/") if name.strip("/.") else ""


def read_archive(path: Path) -> Image:
    """The image in a `docker save` or OCI archive (`-`: standard input)."""
    with _plain_tar(path) as tar_path, _open_outer(path, tar_path) as outer:
        members = {clean(m.name): m for m in outer.getmembers()}
        if "manifest.json" in members:
            return _docker_archive(path, outer, members)
        if "index.json" in members:
            return _oci_layout(path, outer, members)
        raise ImageError(
            f"{path}: neither manifest.json nor index.json in the archive: not an image",
            hint="`docker save -o image.tar IMAGE` writes one",
        )


def _open_outer(path: Path, tar_path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(tar_path, "r:")
    except (tarfile.TarError, OSError) as exc:
        raise ImageError(
            f"{path}: not a tar archive: {exc}",
            hint="give the file `docker save -o image.tar IMAGE` writes, or an OCI layout tar",
        ) from exc


@contextmanager
def _plain_tar(path: Path) -> Iterator[Path]:
    """The archive as an uncompressed file, since layers are read by seeking: standard input
    and `docker save | gzip` output are copied to a temporary file first."""
    with tempfile.TemporaryDirectory(prefix="prewheel-audit-") as tmp:
        src = path
        if str(path) == "-":
            src = Path(tmp) / "stdin.tar"
            with src.open("wb") as out:
                shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        try:
            with src.open("rb") as fh:
                magic = fh.read(2)
            if magic == _GZIP:
                dest = Path(tmp) / "image.tar"
                with gzip.open(src) as unzipped, dest.open("wb") as out:
                    shutil.copyfileobj(unzipped, out, 1 << 20)
                src = dest
        except (OSError, EOFError) as exc:
            raise ImageError(f"{path}: cannot read: {exc}") from exc
        yield src


def _json(outer: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str) -> Any:
    member = members.get(clean(name))
    fh = outer.extractfile(member) if member is not None else None
    if fh is None:
        raise ImageError(f"the archive lists {name} but does not hold it")
    try:
        return json.loads(fh.read())
    except ValueError as exc:
        raise ImageError(f"{name} in the archive is not valid JSON: {exc}") from exc


def _commands(config: Mapping[str, Any], count: int) -> list[str]:
    """One history line per layer: history entries with `empty_layer` made none."""
    lines = []
    for entry in config.get("history") or []:
        if not entry.get("empty_layer"):
            created = str(entry.get("created_by") or "")
            lines.append(created.removeprefix("/bin/sh -c ").removeprefix("#(nop) ").strip())
    return (lines + ["(missing)"] * count)[:count]


def _docker_archive(
    path: Path, outer: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]
) -> Image:
    manifest = _json(outer, members, "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise ImageError(f"{path}: manifest.json lists no image")
    first = manifest[0]
    names = [str(n) for n in first.get("Layers") or []]
    config = _json(outer, members, str(first.get("Config")))
    commands = _commands(config, len(names))
    notes = []
    if len(manifest) > 1:
        notes.append(f"the archive holds {len(manifest)} images; audited the first")
    cache: dict[str, Layer] = {}
    layers = []
    for i, name in enumerate(names):
        if name not in cache:
            cache[name] = _read_layer(outer, members, name, i, commands[i])
        layer = cache[name]
        layers.append(
            Layer(
                index=i,
                name=name,
                command=commands[i],
                entries=layer.entries,
                contents=layer.contents,
            )
        )
    fmt: Literal["docker-archive", "oci"] = "oci" if "index.json" in members else "docker-archive"
    return Image(
        archive=str(path),
        format=fmt,
        tags=tuple(first.get("RepoTags") or ()),
        layers=tuple(layers),
        notes=tuple(notes),
    )


def _oci_layout(
    path: Path, outer: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo]
) -> Image:
    index = _json(outer, members, "index.json")
    manifest, tags, notes = _pick_manifest(outer, members, index)
    config = _json(outer, members, _blob(manifest["config"]["digest"]))
    names = [_blob(layer["digest"]) for layer in manifest.get("layers") or []]
    commands = _commands(config, len(names))
    layers = [_read_layer(outer, members, n, i, commands[i]) for i, n in enumerate(names)]
    return Image(archive=str(path), format="oci", tags=tags, layers=tuple(layers), notes=notes)


def _blob(digest: str) -> str:
    algo, _, hexa = digest.partition(":")
    return f"blobs/{algo}/{hexa}"


def _pick_manifest(
    outer: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], index: Mapping[str, Any]
) -> tuple[Mapping[str, Any], tuple[str, ...], tuple[str, ...]]:
    """The image manifest an OCI index points at (following a nested index): the one for
    linux on this machine's architecture when there are several."""
    notes: list[str] = []
    for _ in range(4):
        entries = index.get("manifests") or []
        if not entries:
            raise ImageError("index.json lists no manifest")
        chosen = entries[0]
        if len(entries) > 1:
            arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(_machine(), _machine())
            chosen = next(
                (m for m in entries if (m.get("platform") or {}).get("architecture") == arch),
                entries[0],
            )
            notes.append(f"the index lists {len(entries)} manifests; audited {chosen['digest']}")
        annotations = chosen.get("annotations") or {}
        tags = tuple(
            str(v)
            for k, v in annotations.items()
            if k in ("io.containerd.image.name", "org.opencontainers.image.ref.name")
        )
        doc = _json(outer, members, _blob(chosen["digest"]))
        if "layers" in doc:
            return doc, tags, tuple(notes)
        index = doc  # a nested image index
    raise ImageError("index.json: image indexes nested too deep")


def _machine() -> str:
    import platform

    return platform.machine()


def _read_layer(
    outer: tarfile.TarFile,
    members: Mapping[str, tarfile.TarInfo],
    name: str,
    index: int,
    command: str,
) -> Layer:
    member = members.get(clean(name))
    if member is None:
        raise ImageError(f"the manifest lists layer {name}, which the archive does not hold")
    if not member.isreg():
        # docker save links a layer that repeats an earlier one; Dive reads such a link as
        # an empty layer, and so does this audit, to report the same numbers.
        return Layer(index=index, name=name, command=command, entries=())
    fh = outer.extractfile(member)
    assert fh is not None
    magic = fh.read(4)
    fh.seek(0)
    if magic == _ZSTD and sys.version_info < (3, 14):
        raise ImageError(
            f"layer {name} is zstd-compressed, which this Python cannot read (3.14 can)",
            hint="save the image with gzip or uncompressed layers (docker save does)",
        )
    mode = "r:gz" if magic[:2] == _GZIP else "r:zst" if magic == _ZSTD else "r:"
    entries: list[Entry] = []
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=fh, mode=mode) as layer:  # type: ignore[call-overload]
            for m in layer:
                path = clean(m.name)
                if not path:
                    continue
                kind: Kind = (
                    "file" if m.isreg() else "dir" if m.isdir() else "symlink" if m.issym()
                    else "hardlink" if m.islnk() else "other"
                )  # fmt: skip
                entries.append(Entry(path=path, size=m.size, kind=kind, linkname=m.linkname))
                if path in WATCHED and m.isreg() and m.size <= _WATCH_LIMIT:
                    data = layer.extractfile(m)
                    contents[path] = data.read() if data else b""
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ImageError(f"layer {name}: not a readable tar: {exc}") from exc
    return Layer(index=index, name=name, command=command, entries=tuple(entries), contents=contents)
