"""Reading an upstream index (PEP 691 JSON, or PEP 503 HTML) and downloading from it."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import http.client
import json
import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, NamedTuple

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
from .threads import once

ACCEPT = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
TIMEOUT = 60
ATTEMPTS = 3


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


def file_from_lock(filename: str, url: str, sha256: str | None) -> UpstreamFile | None:
    """A file a lock names (pylock: its URL and hashes; the requires-python and yanked
    status already applied by the resolver that chose it); None for a name that is no
    wheel or sdist."""
    return _parse_file(filename, url, {"sha256": sha256} if sha256 else {}, None, False)


@once
def _ssl_context() -> ssl.SSLContext:
    """One context a run, made by the first connection: the threads that read the pages
    of a plan open theirs at the same moment, and each loading the CA bundle again cost
    0.03 s of CPU apiece."""
    return ssl.create_default_context(cafile=os.environ.get("PIP_CERT") or None)


@contextlib.contextmanager
def open_url(url: str, accept: str | None = None) -> Iterator[http.client.HTTPResponse]:
    """A GET response to read (streamed); FileNotFoundError on 404, UpstreamError otherwise."""
    stamp.volatile(url)
    req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with _urlopen(req) as resp:
        yield resp


def _urlopen(req: urllib.request.Request) -> http.client.HTTPResponse:
    """`urlopen`, a connection that failed (a name lookup among many at once, a reset)
    tried again, up to `ATTEMPTS` times; FileNotFoundError on 404, UpstreamError otherwise."""
    url = req.full_url
    for attempt in range(ATTEMPTS):
        try:
            resp: http.client.HTTPResponse = urllib.request.urlopen(
                req, timeout=TIMEOUT, context=_ssl_context()
            )
            return resp
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise FileNotFoundError(url) from exc
            raise UpstreamError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError) as exc:
            if attempt + 1 == ATTEMPTS:
                raise UpstreamError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from exc
            check_stop()
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


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


@dataclass(frozen=True, kw_only=True)
class Validator:
    """What a project page was when it was read: its HTTP validators and the sha256 of its
    body (`digest` None: the index did not know the project). A cached resolution keeps one
    per page it depends on and asks the index, with a conditional request, whether the page
    is still the same."""

    url: str
    etag: str | None
    last_modified: str | None
    digest: str | None

    def to_json(self) -> dict[str, str | None]:
        return {
            "url": self.url,
            "etag": self.etag,
            "last_modified": self.last_modified,
            "digest": self.digest,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Validator:
        return cls(
            url=d["url"], etag=d["etag"], last_modified=d["last_modified"], digest=d["digest"]
        )


def _project_url(index_url: str, project: str) -> str:
    base = index_url if index_url.endswith("/") else index_url + "/"
    return urllib.parse.urljoin(base, canonicalize_name(project) + "/")


class _Answer(NamedTuple):
    status: int
    headers: Message
    body: bytes
    url: str  # after redirects


# Index pages are read many at once (a closure's 100+ pages, 16 threads). A connection per
# request means a name lookup and a TLS handshake per page, and many lookups at once stall
# in the system's resolver (5 s timeouts, or failures): each thread keeps one connection
# per host open, and a host's addresses are looked up once per process.
_LOCAL = threading.local()
_DNS_LOCK = threading.Lock()
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


@functools.lru_cache(maxsize=64)
def _lookup(host: str, port: int) -> tuple[str, int]:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addr = info[0][4]
    return str(addr[0]), int(addr[1])


def _address(host: str, port: int) -> tuple[str, int]:
    with _DNS_LOCK:
        return _lookup(host, port)


def _connection(scheme: str, host: str, port: int) -> http.client.HTTPConnection:
    pool: dict[tuple[str, str, int], http.client.HTTPConnection] = _LOCAL.__dict__.setdefault(
        "pool", {}
    )
    conn = pool.get((scheme, host, port))
    if conn is None:
        if scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=_ssl_context())
        else:
            conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)

        def create(
            addr: tuple[str, int], timeout: float | None = None, source: Any = None
        ) -> socket.socket:
            return socket.create_connection(_address(*addr), timeout, source)

        conn._create_connection = create  # type: ignore[attr-defined]
        pool[(scheme, host, port)] = conn
    return conn


def _drop(scheme: str, host: str, port: int) -> None:
    conn = _LOCAL.__dict__.get("pool", {}).pop((scheme, host, port), None)
    if conn is not None:
        conn.close()


def _get(url: str, headers: dict[str, str]) -> _Answer:
    """A GET of a small resource (an index page), its status as it came (304, 404 too): on
    this thread's kept-alive connection to the host, or through urllib where a proxy is
    configured, the scheme is not HTTP, or the server redirects."""
    stamp.volatile(url)
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme, parts.hostname
    if scheme not in ("http", "https") or not host or scheme in urllib.request.getproxies():
        return _get_urllib(url, headers)
    port = parts.port or (443 if scheme == "https" else 80)
    path = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    for attempt in range(ATTEMPTS):
        conn = _connection(scheme, host, port)
        try:
            conn.request("GET", path, headers={"User-Agent": "prewheel", **headers})
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            _drop(scheme, host, port)  # a kept-alive connection the server closed, a reset
            if attempt + 1 == ATTEMPTS:
                raise UpstreamError(f"cannot read {url}: {exc}") from exc
            check_stop()
            continue
        if resp.will_close:
            _drop(scheme, host, port)
        if resp.status in _REDIRECTS:
            return _get_urllib(url, headers)
        return _Answer(resp.status, resp.headers, body, url)
    raise AssertionError("unreachable")


def _get_urllib(url: str, headers: dict[str, str]) -> _Answer:
    req = urllib.request.Request(url, headers=headers)
    try:
        with _urlopen(req) as resp:
            try:
                return _Answer(resp.status, resp.headers, resp.read(), resp.geturl())
            except OSError as exc:
                raise UpstreamError(f"cannot read {url}: {exc}") from exc
    except FileNotFoundError:
        return _Answer(404, Message(), b"", url)
    except UpstreamError as exc:
        cause = exc.__cause__
        if isinstance(cause, urllib.error.HTTPError) and cause.code == 304:
            return _Answer(304, Message(), b"", url)
        raise


def _read_page(url: str) -> _Answer | None:
    """The page's answer; None when the index does not know the project (404)."""
    answer = _get(url, {"Accept": ACCEPT})
    if answer.status == 404:
        return None
    if answer.status != 200:
        raise UpstreamError(f"{url}: HTTP {answer.status}")
    return answer


def _validator(url: str, answer: _Answer | None) -> Validator:
    if answer is None:
        return Validator(url=url, etag=None, last_modified=None, digest=None)
    return Validator(
        url=url,
        etag=answer.headers.get("ETag"),
        last_modified=_settled(answer.headers.get("Last-Modified"), answer.headers.get("Date")),
        digest=hashlib.sha256(answer.body).hexdigest(),
    )


# The validator of every page this process read for its files: `page_validator` takes it.
_READ: dict[tuple[str, str], Validator] = {}


@functools.lru_cache(maxsize=4096)
def project_page(index_url: str, project: str) -> tuple[tuple[UpstreamFile, ...] | None, Validator]:
    """All files of `project` on the index (None if the index does not know the project),
    and the page's validator."""
    url = _project_url(index_url, project)
    answer = _read_page(url)
    files = None
    if answer is not None:
        files = _page_files(answer.body, answer.headers.get("Content-Type", ""), answer.url)
    _READ[(index_url, project)] = validator = _validator(url, answer)
    return files, validator


@once
def page_validator(index_url: str, project: str) -> Validator:
    """The validator of `project`'s page, its files not parsed: what a cached resolution
    whose files came from the resolver's own answer keeps (a page of a big project lists
    tens of thousands of files). Read once per run: the targets resolved side by side share
    most of their closures, and a page two of them ask for at once is read once (a failed
    read is not remembered). A page already read for its files (a pin's, when the plan
    started) is not read again: its validator is older than the resolution, so a change
    made since is seen by the next run, which then resolves anew."""
    if (read := _READ.get((index_url, project))) is not None:
        return read
    url = _project_url(index_url, project)
    return _validator(url, _read_page(url))


# A Last-Modified this close to the response's Date may hide a change made in the same second
# (HTTP dates tick in seconds): not trusted, the body's sha256 decides (git's "racy" rule).
_RACY_SECONDS = 2


def _settled(modified: str | None, date: str | None) -> str | None:
    """`modified`, when it is far enough before the response's `date` to be trusted."""
    if not modified or not date:
        return None
    try:
        age = email.utils.parsedate_to_datetime(date) - email.utils.parsedate_to_datetime(modified)
    except (TypeError, ValueError):
        return None
    return modified if age.total_seconds() >= _RACY_SECONDS else None


def project_files(
    index_url: str, project: str, *, fresh: bool = False
) -> tuple[UpstreamFile, ...] | None:
    """All files of `project` on the index; None if the index does not know the project.
    Read once per process, unless `fresh` (an index that moves while this runs)."""
    read = project_page.__wrapped__ if fresh else project_page
    return read(index_url, project)[0]


def unchanged(validator: Validator) -> bool:
    """Whether the page is still what `validator` saw: a conditional GET (If-None-Match,
    If-Modified-Since; PEP 691 JSON asked for, as when it was read) answered 304, or a 200
    whose body has the same sha256 (an index that sends no validators)."""
    headers = {"Accept": ACCEPT}
    if validator.etag:
        headers["If-None-Match"] = validator.etag
    if validator.last_modified:
        headers["If-Modified-Since"] = validator.last_modified
    answer = _get(validator.url, headers)
    if answer.status == 404:
        return validator.digest is None
    if answer.status == 304:
        return validator.digest is not None
    if answer.status != 200:
        raise UpstreamError(f"{validator.url}: HTTP {answer.status}")
    return hashlib.sha256(answer.body).hexdigest() == validator.digest


def _page_files(body: bytes, ctype: str, final: str) -> tuple[UpstreamFile, ...]:
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
