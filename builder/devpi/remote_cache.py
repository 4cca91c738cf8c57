"""A shared cache across builders: find a wheel already built under a cache key on a remote index.

Builders on different machines push to one index (devpi, or a prewheel static tree). Before a
build, the pipeline asks that index whether a wheel for the same cache key exists. The key is
discoverable in two ways, and we use both:

- the wheel's build tag, `<unix-time>_<first 12 hex of the key>`, from the listing alone;
- a published build record naming the full key: on devpi, the JSON that `prewheel push`
  attaches to the wheel; on a prewheel static tree, `<root>/builds/<key>.json`.

A record that names another key vetoes a build-tag match (12 hex digits is a prefix, not a
proof). Pure wheels reused across Pythons are found by their source key, through records only.
The bytes are always checked against the index's sha256 while downloading.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.tags import Tag
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from ..errors import UpstreamError
from ..upstream import UpstreamFile, project_files
from ..upstream import download as _download
from .client import RECORD_KIND, Unreachable, files_from_project_json, http_request

KEY_PREFIX = 12


@dataclass(frozen=True, kw_only=True)
class RemoteWheel:
    """A wheel on a remote index that was built under the key asked for."""

    filename: str
    url: str  # absolute
    sha256: str
    index_url: str
    cache_key: str  # the key (or source key) it matched
    confirmed: bool  # True: a published record names that key; False: build tag prefix only
    record: dict[str, Any] | None  # the build record, when the index publishes it


def _get_json(url: str, timeout: float, accept: str = "application/json") -> Any:
    try:
        resp = http_request("GET", url, headers={"Accept": accept}, timeout=timeout)
    except Unreachable:
        return None
    return resp.json_if_ok()


def _records(index_url: str, project: str, version: str, timeout: float) -> dict[str, list[Any]]:
    """Build records attached to each file on a devpi index (by file name); {} elsewhere."""
    if not index_url.endswith("/+simple/"):
        return {}
    base = index_url[: -len("+simple/")]
    data = _get_json(f"{base}{canonicalize_name(project)}/{version}", timeout)
    if not isinstance(data, dict) or not isinstance(data.get("result"), dict):
        return {}
    files = files_from_project_json({version: data["result"]})
    out: dict[str, list[Any]] = {}
    for f in files.values():
        for href in f.record_urls:
            att = _get_json(href, timeout, accept="*/*")  # the stored bytes, not devpi's view
            if isinstance(att, dict) and att.get("kind") == RECORD_KIND:
                out.setdefault(f.filename, []).append(att)
    return out


def _static_record(index_url: str, key: str, timeout: float) -> dict[str, Any] | None:
    """`builds/<key>.json` beside a prewheel static tree (`<root>/<accel>/simple/`)."""
    parts = urllib.parse.urlsplit(index_url)
    segs = parts.path.rstrip("/").split("/")
    if len(segs) < 2 or segs[-1] != "simple":
        return None
    root_path = "/".join(segs[:-2]) + "/"
    url = urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, f"{root_path}builds/{key}.json", "", "")
    )
    data = _get_json(url, timeout)
    return data if isinstance(data, dict) else None


def _tag_rank(filename: str, tags: Sequence[Tag]) -> int | None:
    """Position of the wheel's best tag in the target's preference list; None if unusable."""
    wtags = parse_wheel_filename(filename)[3]
    ranks = [i for i, t in enumerate(tags) if t in wtags]
    return min(ranks) if ranks else None


def _build_key_prefix(filename: str) -> str | None:
    build = parse_wheel_filename(filename)[2]
    if not build:
        return None
    prefix = build[1].lstrip("_")
    return prefix if len(prefix) >= KEY_PREFIX else None


def _candidates(
    files: Sequence[UpstreamFile], project: str, version: str, tags: Sequence[Tag]
) -> list[tuple[int, UpstreamFile]]:
    want_name, want_version = canonicalize_name(project), Version(version)
    out = []
    for f in files:
        if not f.is_wheel or f.yanked or not f.sha256 or f.version != want_version:
            continue
        try:
            if canonicalize_name(parse_wheel_filename(f.filename)[0]) != want_name:
                continue
        except InvalidWheelFilename:
            continue
        rank = _tag_rank(f.filename, tags)
        if rank is not None:
            out.append((rank, f))
    return sorted(out, key=lambda rf: (rf[0], rf[1].filename))


def find_cached(
    url: str,
    project: str,
    version: str,
    cache_key: str,
    tags: Sequence[Tag],
    *,
    source_key: str | None = None,
    timeout: float = 30.0,
) -> RemoteWheel | None:
    """The wheel on index `url` built under `cache_key` (or, for pure wheels, `source_key`).

    `tags` is the target's tag list, most preferred first (`Target.tag_set()`). Returns None
    when the index lacks the project or no wheel matches. Raises `UpstreamError` when the
    index cannot be read, so the caller can choose to build instead.
    """
    index_url = url if url.endswith("/") else url + "/"
    try:
        Version(version)
    except InvalidVersion:
        return None
    files = project_files(index_url, project, fresh=True)  # uncached: the index moves
    if not files:
        return None
    cands = _candidates(files, project, version, tags)
    if not cands:
        return None
    attached = _records(index_url, project, version, timeout)
    static: dict[str, dict[str, Any] | None] = {}

    def static_record(key: str) -> dict[str, Any] | None:
        if key not in static:
            static[key] = _static_record(index_url, key, timeout)
        return static[key]

    for _, f in cands:
        assert f.sha256 is not None
        recs = [
            (a.get("cache_key"), a.get("record"))
            for a in attached.get(f.filename, [])
            if a.get("sha256") == f.sha256
        ]
        for key in (cache_key, source_key):
            if key is None:
                continue
            rec = static_record(key)
            if not rec or rec.get("result", "ok") != "ok":
                continue
            if rec.get("wheel") == f.filename and rec.get("sha256") in (None, f.sha256):
                recs.append((rec.get("cache_key"), rec))
            elif key == cache_key:
                recs.append((None, None))  # the key's record names another wheel: a veto
        match = _match(f, recs, cache_key, source_key)
        if match is not None:
            key, confirmed, record = match
            return RemoteWheel(
                filename=f.filename,
                url=f.url,
                sha256=f.sha256,
                index_url=index_url,
                cache_key=key,
                confirmed=confirmed,
                record=record,
            )
    return None


def _match(
    f: UpstreamFile,
    recs: list[tuple[Any, Any]],
    cache_key: str,
    source_key: str | None,
) -> tuple[str, bool, dict[str, Any] | None] | None:
    """(matched key, confirmed by a record, record) for one candidate file, or None."""
    for key, rec in recs:
        record = rec if isinstance(rec, dict) else None
        if key == cache_key:
            return cache_key, True, record
        if (
            source_key
            and record
            and record.get("source_key") == source_key
            and record.get("result", "ok") == "ok"
        ):
            return source_key, True, record
    prefix = _build_key_prefix(f.filename)
    if prefix and cache_key.startswith(prefix) and not recs:
        return cache_key, False, None
    return None


def download(remote: RemoteWheel, dest_dir: Path) -> Path:
    """Stream the wheel into `dest_dir` under its own name, checking the index's sha256.

    Raises `HashMismatchError` (nothing is left behind) or `UpstreamError`.
    """
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / remote.filename
    _download(remote.url, dest, expect={remote.sha256})
    return dest


def record_for(remote: RemoteWheel) -> dict[str, Any] | None:
    """The build record to store beside the downloaded wheel, marked as fetched, not built."""
    if remote.record is None:
        return None
    return {**remote.record, "fetched_from": remote.index_url, "fetched_url": remote.url}


def describe(remote: RemoteWheel) -> str:
    how = "record" if remote.confirmed else "build tag"
    return f"{remote.filename} from {remote.index_url} (key {remote.cache_key[:12]}, by {how})"


__all__ = [
    "RemoteWheel",
    "UpstreamError",
    "describe",
    "download",
    "find_cached",
    "record_for",
]
