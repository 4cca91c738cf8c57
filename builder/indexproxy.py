"""The upstream index, read-only, for a resolver that runs in the sandbox with no network.

pip runs an sdist's `setup.py` while it resolves (to prepare metadata), so the resolver runs
in the sandbox, where package code has no network. It still needs the index: this proxy
serves it on a unix socket that is bind-mounted into the sandbox (`_forward.py` relays pip's
connections to it from 127.0.0.1 inside). It forwards only what a resolver needs and nothing
a build script could use to reach anything else:

- `GET /simple/<project>/`: the upstream project page (PEP 503 HTML or PEP 691 JSON), served
  as a PEP 503 page whose links point back at this proxy; `GET /<k>/simple/<project>/` the
  same from the k-th extra upstream (an accelerator's extra indexes);
- `GET /files/<token>/<filename>` (and `<filename>.metadata`, PEP 658): a file one of those
  pages linked, streamed from where the page said it is. Tokens are handed out only by pages
  served in this session, so no other URL can be asked for.

Every other method or path is refused (405 / 404), and so is a file on another host that
resolves to a loopback, private or link-local address (a page must not make the proxy fetch
from a cloud metadata service or the builder's own network). Hashes pass through in the
links, so pip checks the bytes as it would upstream.

With `keep`, an sdist streamed whole is also written there (under its file name, renamed
into place once complete): the build that follows takes it from there, its sha256 checked
against the index's, instead of downloading it a second time (`stages.fetch`).
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import http.server
import ipaddress
import json
import os
import re
import socket
import socketserver
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from .errors import UpstreamError
from .log import get_logger
from .simple import JSON_TYPE, LinkParser
from .upstream import ACCEPT, open_url

log = get_logger("indexproxy")

_PROJECT = re.compile(r"^(?:/([1-9][0-9]?))?/simple/([A-Za-z0-9][A-Za-z0-9._-]*)/$")
_FILE = re.compile(r"^/files/([0-9a-f]{24})/([^/]+)$")
CHUNK = 1 << 16


@dataclass(frozen=True, kw_only=True)
class _Link:
    url: str  # absolute, without the fragment
    filename: str
    fragment: str  # "sha256=..." or ""
    requires_python: str | None
    yanked: str | None  # the reason ("" for none given); None when not yanked
    core_metadata: str | None  # "true" or "sha256=..."; None when the index has none


def _links(body: bytes, ctype: str, page_url: str) -> list[_Link]:
    """The files a project page lists, from PEP 691 JSON or PEP 503 HTML."""
    out: list[_Link] = []
    if ctype.split(";")[0].strip() == JSON_TYPE:
        for f in json.loads(body).get("files", []):
            url = urllib.parse.urljoin(page_url, f["url"])
            hashes = f.get("hashes") or {}
            yanked = f.get("yanked")
            meta = f.get("core-metadata", f.get("dist-info-metadata"))
            out.append(
                _Link(
                    url=url.partition("#")[0],
                    filename=f["filename"],
                    fragment=f"sha256={hashes['sha256']}" if "sha256" in hashes else "",
                    requires_python=f.get("requires-python"),
                    yanked=(yanked if isinstance(yanked, str) else "") if yanked else None,
                    core_metadata=(
                        None
                        if not meta
                        else "sha256=" + meta["sha256"]
                        if isinstance(meta, dict) and "sha256" in meta
                        else "true"
                    ),
                )
            )
        return out
    parser = LinkParser()
    parser.feed(body.decode("utf-8", "replace"))
    for attrs in parser.links:
        href = attrs.get("href")
        if not href:
            continue
        url, _, frag = urllib.parse.urljoin(page_url, href).partition("#")
        yanked = attrs.get("data-yanked")
        out.append(
            _Link(
                url=url,
                filename=urllib.parse.unquote(url.rsplit("/", 1)[-1]),
                fragment=frag,
                requires_python=attrs.get("data-requires-python"),
                yanked=(yanked or "") if "data-yanked" in attrs else None,
                core_metadata=attrs.get("data-core-metadata")
                or attrs.get("data-dist-info-metadata"),
            )
        )
    return out


# The builder's own networks: loopback, link-local (cloud metadata services), RFC 1918, the
# carrier-grade NAT range, IPv6 unique-local. Not Python's wider `is_private`, which also
# counts the documentation ranges (203.0.113.0/24...) that some networks route to their proxy.
_INTERNAL = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)


def internal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether `ip` is on the builder's own machine or network (never fetched for a page)."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return True
    return any(ip.version == n.version and ip in n for n in _INTERNAL)


_ADDRESSES: dict[tuple[str, int | None], set[ipaddress.IPv4Address | ipaddress.IPv6Address]] = {}
_ADDRESSES_LOCK = threading.Lock()


def _addresses(host: str, port: int | None) -> set[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Every address `host` resolves to; empty when it does not resolve. A resolver asked
    by many threads at once fails some of them: an answer is kept for the process, a
    failure is asked again (three times in all)."""
    with _ADDRESSES_LOCK:
        known = _ADDRESSES.get((host, port))
    if known is not None:
        return known
    for attempt in range(3):
        try:
            infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
        except OSError:
            time.sleep(0.05 * (attempt + 1))
            continue
        found = {ipaddress.ip_address(sockaddr[0]) for *_, sockaddr in infos}
        with _ADDRESSES_LOCK:
            _ADDRESSES[(host, port)] = found
        return found
    return set()


def _port(parts: urllib.parse.SplitResult) -> int:
    return parts.port or (443 if parts.scheme == "https" else 80)


SUN_PATH_MAX = 107  # the bytes of a unix socket's address (`_forward.py` says so too)


class IndexProxy:
    """Serves `upstreams` (the first at `/simple/`, the k-th extra one at `/<k>/simple/`) on
    the unix socket `path` while the block runs."""

    def __init__(
        self, upstreams: str | Sequence[str], path: Path, *, keep: Path | None = None
    ) -> None:
        listed = [upstreams] if isinstance(upstreams, str) else list(upstreams)
        self.upstreams = [u if u.endswith("/") else u + "/" for u in listed]
        self.upstream = self.upstreams[0]
        self.path = path
        self.keep = keep
        self._files: dict[str, str] = {}  # token -> absolute URL
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._dir_fd: int | None = None
        self.refused: list[str] = []  # requests refused, for the log and the tests

    def __enter__(self) -> IndexProxy:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        address = str(self.path)
        if len(os.fsencode(address)) > SUN_PATH_MAX:  # a deep TMPDIR: bound through a dir fd
            self._dir_fd = os.open(self.path.parent, os.O_PATH | os.O_DIRECTORY)
            address = f"/proc/self/fd/{self._dir_fd}/{self.path.name}"
        self._server = _Server(address, _Handler)
        self._server.proxy = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
        self.path.unlink(missing_ok=True)

    def token(self, url: str) -> str:
        tok = hashlib.sha256(url.encode()).hexdigest()[:24]
        with self._lock:
            self._files[tok] = url
        return tok

    def upstream_url(self, url: str) -> str | None:
        """The upstream URL of a file URL this proxy served (`.../files/<token>/<name>`, as a
        resolver in the sandbox wrote it down); None for any other URL."""
        m = _FILE.match(urllib.parse.urlsplit(url).path)
        return self.file_url(m.group(1), urllib.parse.unquote(m.group(2))) if m else None

    def file_url(self, token: str, filename: str) -> str | None:
        """The upstream URL of a file a served page linked (`.metadata` beside it too)."""
        with self._lock:
            url = self._files.get(token)
        if url is None or not self._public(url):
            return None
        name = urllib.parse.unquote(url.rsplit("/", 1)[-1])
        if filename == name:
            return url
        if filename == name + ".metadata":
            return url + ".metadata"
        return None

    def _public(self, url: str) -> bool:
        """An http(s) URL on the upstream's own host, or on a host whose every address is a
        public one."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return False
        if any(parts.hostname == urllib.parse.urlsplit(u).hostname for u in self.upstreams):
            return True
        found = _addresses(parts.hostname, parts.port)
        if not found:
            return False
        # The upstream's own server under another name (a CDN host behind the same mirror
        # or intercepting proxy): the same addresses and port, nothing the user did not
        # already trust.
        port = _port(parts)
        if {(ip, port) for ip in found} <= self._upstream_servers():
            return True
        return not any(internal(ip) for ip in found)

    def _upstream_servers(self) -> set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        out: set[tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = set()
        for u in self.upstreams:
            parts = urllib.parse.urlsplit(u)
            if parts.hostname:
                out |= {(ip, _port(parts)) for ip in _addresses(parts.hostname, parts.port)}
        return out

    def page(self, project: str, which: int = 0) -> bytes | None:
        """The project page of upstream `which`, its links pointing at this proxy; None when
        that upstream has none."""
        if which >= len(self.upstreams):
            raise FileNotFoundError(which)
        url = urllib.parse.urljoin(self.upstreams[which], project + "/")
        with open_url(url, ACCEPT) as resp:
            body, ctype, final = resp.read(), resp.headers.get("Content-Type", ""), resp.geturl()
        lines = ["<!DOCTYPE html>", "<html><body>"]
        for link in _links(body, ctype, final):
            href = f"/files/{self.token(link.url)}/{urllib.parse.quote(link.filename)}"
            if link.fragment:
                href += "#" + link.fragment
            attrs = [f'href="{html.escape(href)}"']
            if link.requires_python:
                attrs.append(f'data-requires-python="{html.escape(link.requires_python)}"')
            if link.yanked is not None:
                attrs.append(f'data-yanked="{html.escape(link.yanked)}"')
            if link.core_metadata:
                value = html.escape(link.core_metadata)
                attrs.append(f'data-core-metadata="{value}" data-dist-info-metadata="{value}"')
            lines.append(f"<a {' '.join(attrs)}>{html.escape(link.filename)}</a><br>")
        lines.append("</body></html>\n")
        return "\n".join(lines).encode()


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    proxy: IndexProxy

    def handle_error(self, request: object, client_address: object) -> None:
        """A resolver that closes a connection mid-request is normal; anything else is
        logged. Never the standard library's traceback on stderr, over the run's output."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("index proxy: the client went away: %s", exc)
        else:
            log.warning("index proxy: a request failed: %r", exc)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # a connection that stops talking does not hold a thread for ever
    server: _Server

    def address_string(self) -> str:
        return "sandbox"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("index proxy: " + format, *args)

    def _refuse(self, code: int, why: str) -> None:
        self.server.proxy.refused.append(f"{self.command} {self.path}: {why}")
        log.debug("index proxy refused %s %s: %s", self.command, self.path, why)
        body = f"{code} {why}\n".encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        proxy = self.server.proxy
        try:
            if m := _PROJECT.match(path):
                body = proxy.page(m.group(2), int(m.group(1) or 0))
                self._send(body, "text/html; charset=utf-8")
            elif (m := _FILE.match(path)) and (
                url := proxy.file_url(m.group(1), urllib.parse.unquote(m.group(2)))
            ):
                self._stream(url)
            else:
                self._refuse(404, "not a page or a file of the upstream index")
        except FileNotFoundError:
            self._refuse(404, "not found upstream")
        except (UpstreamError, OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                self._refuse(502, str(exc)[:200])

    def do_HEAD(self) -> None:
        self._refuse(405, "only GET")

    def _other(self) -> None:
        self._refuse(405, "only GET")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_CONNECT = _other

    def _send(self, body: bytes | None, ctype: str) -> None:
        if body is None:
            self._refuse(404, "not found upstream")
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, url: str) -> None:
        copy = _KeptCopy(self.server.proxy.keep, url)
        try:
            with open_url(url) as resp:
                self.send_response(200)
                self.send_header(
                    "Content-Type", resp.headers.get("Content-Type", "application/octet-stream")
                )
                length = resp.headers.get("Content-Length")
                if length is not None:
                    self.send_header("Content-Length", length)
                else:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                while chunk := resp.read(CHUNK):
                    self.wfile.write(chunk)
                    copy.write(chunk)
            copy.finish()
        finally:
            copy.drop()


SDISTS = (".tar.gz", ".zip")


class _KeptCopy:
    """A copy of the sdist at `url` written into `keep` as it is streamed, under its file
    name once whole (`finish`). Best effort: not an sdist, no `keep`, or a write that fails
    (a full disk) keeps nothing and never stops the stream; keeping saves a download, the
    resolver does not need it."""

    def __init__(self, keep: Path | None, url: str) -> None:
        self.name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        self.dest: Path | None = None
        self.tmp: Path | None = None
        self.out: BinaryIO | None = None
        if keep is None or not self.name.endswith(SDISTS) or self.name.startswith("."):
            return
        try:
            keep.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=keep, prefix=f".{self.name}.")
        except OSError:
            return
        self.dest, self.tmp, self.out = keep / self.name, Path(tmp), os.fdopen(fd, "wb")

    def write(self, chunk: bytes) -> None:
        if self.out is None:
            return
        try:
            self.out.write(chunk)
        except OSError:
            self.drop()

    def finish(self) -> None:
        """The whole file was streamed: in place under its name."""
        if self.out is None or self.tmp is None or self.dest is None:
            return
        with contextlib.suppress(OSError):
            self.out.close()
            self.tmp.replace(self.dest)
        self.out = None

    def drop(self) -> None:
        """Nothing kept (a stream that ended early, a failed write); done after `finish`."""
        if self.out is not None:
            with contextlib.suppress(OSError):
                self.out.close()
            self.out = None
        if self.tmp is not None:
            self.tmp.unlink(missing_ok=True)
            self.tmp = None


@contextlib.contextmanager
def serving(upstream: str, path: Path) -> Iterator[IndexProxy]:
    with IndexProxy(upstream, path) as proxy:
        yield proxy
