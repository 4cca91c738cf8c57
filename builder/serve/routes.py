"""What the index server answers for a request: routing, negotiation, validators, caching.

Kept apart from the HTTP plumbing in `server.py` so the rules (which URL maps to which file,
which representation a client gets, when it gets 304, 206 or 406) are plain functions that
tests call directly and that `nginx.py` mirrors.
"""

# Paths stay `str` on the request path: building `Path` objects per request is measurable.
# ruff: noqa: PTH116, PTH118, PTH123

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import re
import stat
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Literal
from urllib.parse import unquote_to_bytes

from packaging.utils import canonicalize_name

from ..index.status_page import render_status, status_inputs
from ..index.tree import RESERVED
from ..simple import HTML_TYPE, JSON_TYPE
from ..wheelhouse import Wheelhouse

TEXT_HTML = "text/html"
# Server preference on equal q, as PyPI (warehouse) breaks ties: legacy HTML first.
OFFERS = (TEXT_HTML, HTML_TYPE, JSON_TYPE)
_ALIASES = {
    "application/vnd.pypi.simple.latest+json": JSON_TYPE,
    "application/vnd.pypi.simple.latest+html": HTML_TYPE,
}
CONTENT_TYPES = {
    TEXT_HTML: "text/html; charset=utf-8",
    HTML_TYPE: HTML_TYPE,
    JSON_TYPE: JSON_TYPE,
}
PAGE_CACHE_CONTROL = "public, max-age=10"
FILE_CACHE_CONTROL = "public, max-age=31536000, immutable"
LOG_CACHE_CONTROL = "no-cache"
ALLOW = "GET, HEAD"
TARGETS = "/targets.json"
_NO_MATCH = "none/none"  # negotiates to nothing: 406
_NEG_CACHE_MAX = 512
_KNOWN_MAX = 16384
# A project name as PEP 508 allows it, and an index (accelerator) directory the same way: only
# such names are looked up or echoed in a Location, so no request can put a CR, LF, NUL or a
# non-ASCII character into a response header.
NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


# -- negotiation -------------------------------------------------------------------------------


def parse_accept(header: str) -> list[tuple[str, float]]:
    """Media ranges with their q-values; malformed ranges are dropped, not guessed at."""
    out = []
    for part in header.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        if "/" not in media:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = -1.0
        if 0.0 <= q <= 1.0:
            out.append((_ALIASES.get(media.lower(), media.lower()), q))
    return out


def _quality(offer: str, ranges: list[tuple[str, float]]) -> float:
    """q of the most specific range that matches `offer` (RFC 9110, 12.5.1)."""
    major = offer.split("/")[0]
    best, specificity = 0.0, -1
    for media, q in ranges:
        if media == offer:
            rank = 2
        elif media == f"{major}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        if rank > specificity:
            best, specificity = q, rank
    return best


def negotiate(accept: str | None) -> str | None:
    """The media type to send for a simple page, or None for 406."""
    if not accept or not accept.strip():
        return TEXT_HTML
    ranges = parse_accept(accept)
    choice, best_q = None, 0.0
    for offer in OFFERS:
        q = _quality(offer, ranges)
        if q > best_q:
            choice, best_q = offer, q
    return choice


def format_parameter(query: str) -> str | None:
    """The media type a `?format=` query names (PEP 691's optional URL parameter), or None
    when there is none. One exact type only: a wildcard, list or parameter asks for 406.
    A `+` stays a `+` (`v1+json` is how people type it), unlike in form encoding."""
    for part in query.split("&"):
        name, eq, value = part.partition("=")
        if name == "format" and eq:  # as the nginx configuration's pattern, `format=`
            media = unquote_to_bytes(value).decode("utf-8", "replace").strip()
            return _NO_MATCH if any(c in media for c in "*,;") else media.lower()
    return None


def accepts_gzip(header: str | None) -> bool:
    if not header:
        return False
    for part in header.split(","):
        coding, *params = (p.strip() for p in part.split(";"))
        if coding.lower() in ("gzip", "x-gzip", "*"):
            q = 1.0
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        q = float(value)
                    except ValueError:
                        q = 0.0
            return q > 0
    return False


def etag_matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/ prefixes are ignored."""
    if header.strip() == "*":
        return True
    mine = etag.removeprefix("W/")
    return any(t.strip().removeprefix("W/") == mine for t in header.split(","))


def parse_range(header: str, size: int) -> tuple[int, int] | Literal[False] | None:
    """(first, last) for one satisfiable byte range, None to ignore, False for 416.

    Several ranges, or a syntax we do not know, are ignored: a full 200 is always allowed.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:
            n = int(last_s)
            if n <= 0:
                return False
            return (max(0, size - n), size - 1) if size else False
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        return False
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


# -- responses ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Response:
    """Status, headers and either an in-memory body or a slice of a file to send."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    file: str | None = None
    offset: int = 0
    length: int = 0  # of the file slice
    head: bytes | None = None  # `headers` already serialized, Content-Length included

    @property
    def content_length(self) -> int:
        return self.length if self.file is not None else len(self.body)


@dataclass(frozen=True)
class _Page:
    key: tuple[int, int, int]
    body: bytes
    gz: bytes
    etag: str
    # Serialized response headers per (content type, gzip, cache-control, vary): a page is
    # asked for far more often than it changes, so its headers are built once.
    heads: dict[tuple[str, bool, str, str], tuple[tuple[tuple[str, str], ...], bytes]] = field(
        default_factory=dict
    )


REASONS = {
    200: "OK",
    206: "Partial Content",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    408: "Request Timeout",
    414: "URI Too Long",
    416: "Range Not Satisfiable",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
    505: "HTTP Version Not Supported",
}


def serialize_headers(headers: tuple[tuple[str, str], ...], length: int | None = None) -> bytes:
    """Header lines as sent, with Content-Length when `length` is given. The one place header
    bytes are made: a value with CR, LF or NUL (it would end the line and start a header of
    the client's choosing) or a non-ASCII character raises ValueError instead."""
    lines = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"{name}: {value!r}")
        lines.append(f"{name}: {value}\r\n")
    if length is not None:
        lines.append(f"Content-Length: {length}\r\n")
    try:
        return "".join(lines).encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"non-ASCII header value: {exc.object[exc.start : exc.end]!r}") from exc


def error_response(status: int, extra: tuple[tuple[str, str], ...] = ()) -> Response:
    body = f"{status} {REASONS[status]}\n".encode()
    return Response(
        status=status,
        headers=(("Content-Type", "text/plain; charset=utf-8"), *extra),
        body=body,
    )


NOT_FOUND = error_response(404)


class Routes:
    """Maps request targets to responses, caching page bytes, gzip and ETags by file identity."""

    def __init__(self, root: Path) -> None:
        self.wh = Wheelhouse(root)
        self.root = os.path.realpath(root)
        self._pages: dict[str, _Page] = {}
        # Clients send a handful of distinct headers: parse each once.
        self._negotiate = functools.lru_cache(maxsize=_NEG_CACHE_MAX)(negotiate)
        self._wants_gzip = functools.lru_cache(maxsize=_NEG_CACHE_MAX)(accepts_gzip)
        self._status: tuple[tuple[int, ...], float, _Page] | None = None
        self._known: dict[str, str] = {}  # request target -> page directory, once validated

    # -- helpers ---------------------------------------------------------------

    def _inside(self, path: str) -> bool:
        real = os.path.realpath(path)
        return real == self.root or real.startswith(self.root + os.sep)

    def _page(self, path: str) -> _Page | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size, st.st_ino)
        page = self._pages.get(path)
        if page is not None and page.key == key:
            return page
        if not stat.S_ISREG(st.st_mode) or not self._inside(path):
            return None
        with open(path, "rb") as fh:
            body = fh.read()
        page = _make_page(key, body)
        self._pages[path] = page
        return page

    def _send_page(
        self, page: _Page, ctype: str, headers: dict[str, str], cache: str, vary: str
    ) -> Response:
        gz = self._wants_gzip(headers.get("accept-encoding"))
        etag = f'"{page.etag}-gz"' if gz else f'"{page.etag}"'
        common = (("ETag", etag), ("Cache-Control", cache), ("Vary", vary))
        inm = headers.get("if-none-match")
        if inm is not None and etag_matches(inm, etag):
            return Response(status=304, headers=common)
        body = page.gz if gz else page.body
        hkey = (ctype, gz, cache, vary)
        prepared = page.heads.get(hkey)
        if prepared is None:
            out = [("Content-Type", ctype), *common]
            if gz:
                out.append(("Content-Encoding", "gzip"))
            out.append(("Content-Length", str(len(body))))
            head = serialize_headers(tuple(out))
            prepared = page.heads[hkey] = (tuple(out), head)
        return Response(status=200, headers=prepared[0], body=body, head=prepared[1])

    # -- routes ----------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str]) -> Response:
        """The response to one request; HEAD gets GET's headers (the caller drops the body).
        An OSError reading the tree (out of file descriptors) is the caller's to answer."""
        if method not in ("GET", "HEAD"):
            return error_response(405, (("Allow", ALLOW),))
        if "?" in target:
            fmt = format_parameter(target.split("?", 1)[1].split("#", 1)[0])
            if fmt is not None:  # it replaces the Accept header's choice
                headers = {**headers, "accept": fmt}
        base = self._known.get(target)
        if base is not None:
            return self._simple_page(base, headers)
        raw = target.split("?", 1)[0].split("#", 1)[0]
        if raw.startswith(("http://", "https://")):
            raw = "/" + raw.split("/", 3)[3] if raw.count("/") >= 3 else "/"
        try:
            path = unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return NOT_FOUND  # no file or project of ours has such a name
        if not path.startswith("/") or "\0" in path or "\\" in path:
            return NOT_FOUND
        parts = path[1:].split("/")
        if any(p in (".", "..") for p in parts) or "" in parts[:-1]:
            return NOT_FOUND
        if path == "/":
            return self._status_page(headers)
        if len(parts) >= 2 and parts[1] == "simple":
            return self._simple(parts, headers, target)
        static_dir = parts[0] in ("files", "logs", "builds") and len(parts) >= 2 and parts[-1]
        if static_dir or path == TARGETS:
            return self._file(parts, headers)
        return NOT_FOUND

    def _simple(self, parts: list[str], headers: dict[str, str], target: str) -> Response:
        accel = parts[0]
        if accel in RESERVED or not NAME.fullmatch(accel):
            return NOT_FOUND
        if len(parts) == 2:  # no trailing slash
            return _redirect(f"/{accel}/simple/")
        name = parts[2]
        if name and not NAME.fullmatch(name):
            return NOT_FOUND  # not a project name (and never echoed back in a Location)
        if len(parts) == 3:
            if name:
                return _redirect(f"/{accel}/simple/{name}/")
            base = os.path.join(self.root, accel, "simple")
        elif len(parts) == 4 and parts[3] == "":
            project = canonicalize_name(name)
            if project != name:
                return _redirect(f"/{accel}/simple/{project}/")
            base = os.path.join(self.root, accel, "simple", project)
        else:
            return NOT_FOUND
        resp = self._simple_page(base, headers)
        if resp.status != 404:  # parsing and validating this target again would be the same
            if len(self._known) > _KNOWN_MAX:
                self._known.clear()
            self._known[target] = base
        return resp

    def _simple_page(self, base: str, headers: dict[str, str]) -> Response:
        choice = self._negotiate(headers.get("accept"))
        if choice is None:
            if self._page(os.path.join(base, "index.html")) is None:
                return NOT_FOUND
            return error_response(406, (("Vary", "Accept"),))
        name = "index.json" if choice == JSON_TYPE else "index.html"
        page = self._page(os.path.join(base, name))
        if page is None:
            return NOT_FOUND
        vary = "Accept, Accept-Encoding"
        return self._send_page(page, CONTENT_TYPES[choice], headers, PAGE_CACHE_CONTROL, vary)

    def _status_page(self, headers: dict[str, str]) -> Response:
        now = time.monotonic()
        cached = self._status
        if cached is None or now - cached[1] > 1.0:
            inputs = status_inputs(self.wh)
            if cached is None or cached[0] != inputs:
                body = render_status(self.wh)
                cached = (inputs, now, _make_page((0, 0, 0), body))
            else:
                cached = (inputs, now, cached[2])
            self._status = cached
        ctype = "text/html; charset=utf-8"
        return self._send_page(cached[2], ctype, headers, "no-cache", "Accept-Encoding")

    def _file(self, parts: list[str], headers: dict[str, str]) -> Response:
        path = os.path.join(self.root, *parts)
        try:
            st = os.stat(path)
        except OSError:
            return NOT_FOUND
        if not stat.S_ISREG(st.st_mode) or not self._inside(path):
            return NOT_FOUND
        name = parts[-1]
        if parts[0] == "logs":
            ctype, cache = "text/plain; charset=utf-8", LOG_CACHE_CONTROL
        elif len(parts) == 1 or (parts[0] == "builds" and name.endswith(".json")):
            # /targets.json, rewritten by every build; builds/<key>.json for --cache-from
            ctype, cache = "application/json", LOG_CACHE_CONTROL
        elif name.endswith(".whl"):
            ctype, cache = "application/octet-stream", FILE_CACHE_CONTROL
        elif name.endswith(".metadata"):
            ctype, cache = "text/plain; charset=utf-8", FILE_CACHE_CONTROL
        else:
            return NOT_FOUND
        etag = f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'
        common = (
            ("ETag", etag),
            ("Cache-Control", cache),
            ("Last-Modified", formatdate(st.st_mtime, usegmt=True)),
            ("Accept-Ranges", "bytes"),
        )
        inm = headers.get("if-none-match")
        if inm is not None and etag_matches(inm, etag):
            return Response(status=304, headers=common)
        size = st.st_size
        rng = headers.get("range")
        if rng is not None and headers.get("if-range", etag) == etag:
            span = parse_range(rng, size)
            if span is False:
                return Response(
                    status=416,
                    headers=(*common, ("Content-Range", f"bytes */{size}")),
                    body=b"",
                )
            if span:
                first, last = span
                return Response(
                    status=206,
                    headers=(
                        ("Content-Type", ctype),
                        *common,
                        ("Content-Range", f"bytes {first}-{last}/{size}"),
                    ),
                    file=path,
                    offset=first,
                    length=last - first + 1,
                )
        return Response(
            status=200, headers=(("Content-Type", ctype), *common), file=path, length=size
        )


def _make_page(key: tuple[int, int, int], body: bytes) -> _Page:
    gz = gzip.compress(body, compresslevel=6, mtime=0)
    return _Page(key, body, gz, hashlib.sha256(body).hexdigest()[:32])


def _redirect(location: str) -> Response:
    return Response(
        status=301,
        headers=(("Location", location), ("Content-Type", "text/plain; charset=utf-8")),
        body=f"moved to {location}\n".encode(),
    )
