"""Reading an upstream index (PEP 691 JSON, or PEP 503 HTML) and downloading from it."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    canonicalize_name,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from . import stamp
from .atomic import write_error
from .cmd import check_stop
from .errors import HashMismatchError, UpstreamError
from .simple import JSON_TYPE, LinkParser

ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
TIMEOUT = 60


@dataclass(frozen=True, kw_only=True)
class UpstreamFile:
    filename: str
    url: str
    sha256: str | None
    requires_python: str | None
    yanked: bool
    version: Version | None
    is_wheel: bool

    @property
    def is_sdist(self) -> bool:
        return not self.is_wheel and self.version is not None

    def to_json(self) -> dict[str, object]:
        return {
            "filename": self.filename,
            "url": self.url,
            "sha256": self.sha256,
            "requires_python": self.requires_python,
            "yanked": self.yanked,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> UpstreamFile:
        parsed = _parse_file(
            d["filename"],
            d["url"],
            {"sha256": d["sha256"]} if d["sha256"] else {},
            d["requires_python"],
            d["yanked"],
        )
        assert parsed is not None
        return parsed


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


def _open(url: str, accept: str | None = None) -> tuple[bytes, str, str]:
    """The body, content type and final URL of a page; FileNotFoundError on 404."""
    with open_url(url, accept) as resp:
        try:
            return resp.read(), resp.headers.get("Content-Type", ""), resp.geturl()
        except OSError as exc:
            raise UpstreamError(f"cannot read {url}: {exc}") from exc


@contextlib.contextmanager
def open_url(url: str, accept: str | None = None) -> Iterator[http.client.HTTPResponse]:
    """A GET response to read (streamed); FileNotFoundError on 404, UpstreamError otherwise."""
    stamp.volatile(url)
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT, context=_ssl_context())
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FileNotFoundError(url) from exc
        raise UpstreamError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise UpstreamError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
    with resp:
        yield resp


def _parse_file(
    filename: str, url: str, hashes: dict[str, str], requires_python: str | None, yanked: object
) -> UpstreamFile | None:
    try:
        if filename.endswith(".whl"):
            version: Version | None = parse_wheel_filename(filename)[1]
            is_wheel = True
        elif filename.endswith((".tar.gz", ".zip")):
            version = parse_sdist_filename(filename)[1]
            is_wheel = False
        else:
            return None
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        return None
    return UpstreamFile(
        filename=filename,
        url=url,
        sha256=hashes.get("sha256"),
        requires_python=requires_python or None,
        yanked=bool(yanked),
        version=version,
        is_wheel=is_wheel,
    )


@functools.lru_cache(maxsize=4096)
def project_files(index_url: str, project: str) -> tuple[UpstreamFile, ...] | None:
    """All files of `project` on the index; None if the index does not know the project."""
    base = index_url if index_url.endswith("/") else index_url + "/"
    url = urllib.parse.urljoin(base, canonicalize_name(project) + "/")
    try:
        body, ctype, final = _open(url, ACCEPT)
    except FileNotFoundError:
        return None
    files: list[UpstreamFile] = []
    if ctype.split(";")[0].strip() == JSON_TYPE:
        data = json.loads(body)
        for f in data.get("files", []):
            parsed = _parse_file(
                f["filename"],
                urllib.parse.urljoin(final, f["url"]),
                f.get("hashes", {}),
                f.get("requires-python"),
                f.get("yanked"),
            )
            if parsed:
                files.append(parsed)
        return tuple(files)
    parser = LinkParser()
    parser.feed(body.decode("utf-8", "replace"))
    for attrs in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        full = urllib.parse.urljoin(final, href)
        clean, _, frag = full.partition("#")
        algo, _, digest = frag.partition("=")
        filename = urllib.parse.unquote(clean.rsplit("/", 1)[-1])
        parsed = _parse_file(
            filename,
            clean,
            {algo: digest} if digest else {},
            attrs.get("data-requires-python"),
            "data-yanked" in attrs,
        )
        if parsed:
            files.append(parsed)
    return tuple(files)


def download(url: str, dest: Path, *, expect: set[str]) -> str:
    """Stream `url` to `dest` (via a temp name of this process), hashing as it goes.

    `expect` holds acceptable sha256 digests (index hash, lock pins); an empty set accepts
    any. On mismatch the file is removed and HashMismatchError raised. A local write that
    fails (disk full, read-only) raises `WheelhouseWriteError` naming the path; a read that
    fails, `UpstreamError`. Checks for a stop request between chunks.
    """
    h = hashlib.sha256()
    stamp.volatile(url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.pw{os.getpid()}.")
    except OSError as exc:
        raise write_error(dest, exc) from None
    tmp = Path(name)
    try:
        # Unbuffered: a full disk fails the write below, never the close of the block.
        with open_url(url) as resp, os.fdopen(fd, "wb", buffering=0) as out:
            while True:
                check_stop()
                try:
                    chunk = resp.read(1 << 20)
                except OSError as exc:
                    raise UpstreamError(f"download of {url} failed: {exc}") from exc
                if not chunk:
                    break
                h.update(chunk)
                try:
                    view = memoryview(chunk)
                    while view:  # a raw file: `write` may write less than asked
                        view = view[out.write(view) or 0 :]
                except OSError as exc:
                    raise write_error(dest, exc) from None
        digest = h.hexdigest()
        if expect and digest not in expect:
            raise HashMismatchError(
                f"{dest.name}: sha256 {digest} does not match the expected "
                f"{', '.join(sorted(expect))}",
                step="fetch",
                hint="the upstream file changed or a --hash pin is wrong; nothing was published",
            )
        try:
            tmp.replace(dest)
        except OSError as exc:
            raise write_error(dest, exc) from None
    except FileNotFoundError as exc:
        raise UpstreamError(f"download of {url} failed: not found (404)") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return digest
