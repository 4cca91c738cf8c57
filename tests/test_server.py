"""The embedded server over real HTTP: negotiation, validators, ranges, methods, traversal."""

from __future__ import annotations

import gzip
import http.client
import io
import json
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from clitools import readline
from indexkit import add_wheel, sample_record, sample_wheelhouse

from builder.cli import main
from builder.serve import routes
from builder.serve.server import running
from builder.wheelhouse import Wheelhouse

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)
JSON = "application/vnd.pypi.simple.v1+json"
V1HTML = "application/vnd.pypi.simple.v1+html"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Wheelhouse, str, io.StringIO]]:
    wh = sample_wheelhouse(tmp_path_factory.mktemp("served") / "wh")
    (wh.root / "targets.json").write_text(json.dumps({"targets": [
        {"name": "cp311-cu128-manylinux_2_28_x86_64", "python_version": "3.11.7",
         "accelerator": "cu128", "policy": "manylinux_2_28", "available": True}
    ]}))  # fmt: skip
    add_wheel(wh, wh.root.parent / "tmp", "epsilon", "1.0", origin="built", cache_key="k1")
    (wh.logs_dir / "k1.log").write_text("gcc -O2 ...\n")
    wh.write_record("k1", sample_record("epsilon", "1.0", cache_key="k1", log="logs/k1.log"))
    log = io.StringIO()
    with running(wh.root, access_log=log) as url:
        yield wh, url, log


def request(
    url: str, path: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp, body


def raw_request(url: str, data: bytes) -> bytes:
    host, port = urlsplit(url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, routes.TEXT_HTML),
        ("*/*", routes.TEXT_HTML),
        (PIP_ACCEPT, JSON),
        ("application/vnd.pypi.simple.latest+json", JSON),
        ("application/vnd.pypi.simple.v1+html", V1HTML),
        ("text/html", routes.TEXT_HTML),
        ("application/*", V1HTML),
        ("text/html;q=0.2, application/vnd.pypi.simple.v1+json;q=0.3", JSON),
        ("text/html;q=0.5, application/vnd.pypi.simple.v1+json;q=0.3", routes.TEXT_HTML),
        ("*/*;q=0.1, application/vnd.pypi.simple.v1+json;q=0", routes.TEXT_HTML),
        ("application/vnd.pypi.simple.v1+json;q=0, */*;q=0", None),
        ("application/xml", None),
        ("image/png, text/*;q=0.5", routes.TEXT_HTML),
        ("application/vnd.pypi.simple.v1+json;q=bogus", None),
    ],
)
def test_negotiate(accept: str | None, expected: str | None) -> None:
    assert routes.negotiate(accept) == expected


def test_content_negotiation(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    _, url, _ = served
    resp, body = request(url, "/cpu/simple/alpha/", headers={"Accept": PIP_ACCEPT})
    assert resp.status == 200 and resp.getheader("Content-Type") == JSON
    assert json.loads(body)["name"] == "alpha"
    assert "Accept" in (resp.getheader("Vary") or "")
    resp, body = request(url, "/cpu/simple/alpha/", headers={"Accept": "text/html"})
    assert resp.getheader("Content-Type") == "text/html; charset=utf-8"
    assert body.startswith(b"<!DOCTYPE html>")
    resp, _ = request(url, "/cpu/simple/alpha/", headers={"Accept": V1HTML})
    assert resp.getheader("Content-Type") == V1HTML
    resp, _ = request(url, "/cpu/simple/", headers={"Accept": "application/xml"})
    assert resp.status == 406
    resp, body = request(url, "/cpu/simple/", headers={"Accept": JSON})
    assert [p["name"] for p in json.loads(body)["projects"]] == ["alpha", "beta", "epsilon"]


@pytest.mark.parametrize(
    ("query", "accept", "expected"),
    [
        ("?format=application/vnd.pypi.simple.v1%2Bjson", "text/html", JSON),
        ("?format=application/vnd.pypi.simple.v1+json", "text/html", JSON),  # as typed
        ("?format=application/vnd.pypi.simple.latest+json", "", JSON),
        ("?format=text/html", PIP_ACCEPT, "text/html; charset=utf-8"),
        ("?x=1&format=application/vnd.pypi.simple.v1+html", "", V1HTML),
        ("?format=application/xml", PIP_ACCEPT, None),  # one exact type, or 406
        ("?format=*/*", "", None),
        ("?format=text/html,application/vnd.pypi.simple.v1+json", "", None),
        ("?other=1", JSON, JSON),  # no format: Accept decides
        ("?format&format=application/vnd.pypi.simple.v1+json", "text/html", JSON),
    ],
)
def test_format_parameter_overrides_accept(
    served: tuple[Wheelhouse, str, io.StringIO], query: str, accept: str, expected: str | None
) -> None:
    """PEP 691's optional `?format=`, for people exploring the API in a browser."""
    _, url, _ = served
    for path in ("/cpu/simple/", "/cpu/simple/alpha/"):
        resp, _ = request(url, path + query, headers={"Accept": accept})
        if expected is None:
            assert resp.status == 406, (path, query)
        else:
            assert (resp.status, resp.getheader("Content-Type")) == (200, expected), (path, query)


def test_etag_and_304(served: tuple[Wheelhouse, str, io.StringIO], tmp_path: Path) -> None:
    wh, url, _ = served
    resp, _ = request(url, "/cpu/simple/beta/", headers={"Accept": JSON})
    etag = resp.getheader("ETag")
    assert etag and etag.startswith('"') and resp.getheader("Cache-Control") == "public, max-age=10"
    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        resp, body = request(
            url, "/cpu/simple/beta/", headers={"Accept": JSON, "If-None-Match": inm}
        )
        assert resp.status == 304 and body == b"" and resp.getheader("ETag") == etag
    # the HTML representation has its own validator
    resp, _ = request(url, "/cpu/simple/beta/", headers={"If-None-Match": etag})
    assert resp.status == 200
    add_wheel(wh, tmp_path, "beta", "2.1")
    resp, body = request(url, "/cpu/simple/beta/", headers={"Accept": JSON, "If-None-Match": etag})
    assert resp.status == 200 and resp.getheader("ETag") != etag
    assert "beta-2.1-py3-none-any.whl" in body.decode()
    wheel = "/files/" + wh.find("alpha-1.0-py3-none-any.whl").path.split("/", 1)[1]  # type: ignore[union-attr]
    resp, _ = request(url, wheel)
    assert resp.getheader("Cache-Control") == "public, max-age=31536000, immutable"
    resp, _ = request(url, wheel, headers={"If-None-Match": resp.getheader("ETag") or ""})
    assert resp.status == 304


def _wheel_path(wh: Wheelhouse, name: str) -> str:
    entry = wh.find(name)
    assert entry is not None
    return "/" + entry.path


def test_range_and_head(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    wh, url, _ = served
    path = _wheel_path(wh, "alpha-1.0-py3-none-any.whl")
    whole = (wh.root / path[1:]).read_bytes()
    resp, body = request(url, path)
    assert resp.status == 200 and body == whole
    assert resp.getheader("Content-Type") == "application/octet-stream"
    assert resp.getheader("Accept-Ranges") == "bytes"
    etag = resp.getheader("ETag") or ""
    resp, body = request(url, path, headers={"Range": "bytes=0-9"})
    assert resp.status == 206 and body == whole[:10]
    assert resp.getheader("Content-Range") == f"bytes 0-9/{len(whole)}"
    resp, body = request(url, path, headers={"Range": "bytes=-5"})
    assert resp.status == 206 and body == whole[-5:]
    resp, body = request(url, path, headers={"Range": "bytes=100-"})
    assert resp.status == 206 and body == whole[100:]
    resp, _ = request(url, path, headers={"Range": f"bytes={len(whole)}-"})
    assert resp.status == 416 and resp.getheader("Content-Range") == f"bytes */{len(whole)}"
    resp, body = request(url, path, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert resp.status == 200 and body == whole
    resp, body = request(url, path, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status == 206
    resp, body = request(url, path, method="HEAD")
    assert (
        resp.status == 200 and body == b"" and resp.getheader("Content-Length") == str(len(whole))
    )
    resp, body = request(url, "/cpu/simple/alpha/", method="HEAD", headers={"Accept": JSON})
    assert body == b"" and int(resp.getheader("Content-Length") or 0) > 0
    meta, body = request(url, path + ".metadata")
    assert meta.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert body.startswith(b"Metadata-Version:")


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(served: tuple[Wheelhouse, str, io.StringIO], method: str) -> None:
    _, url, _ = served
    resp, _ = request(url, "/cpu/simple/", method=method)
    assert resp.status == 405 and resp.getheader("Allow") == "GET, HEAD"


TRAVERSALS = [
    "/cpu/simple/..%2f..%2fetc/passwd",
    "/cpu/simple/..%2F..%2F..%2F..%2Fetc%2Fpasswd/",
    "/files/..%2f..%2f..%2f..%2fetc/passwd",
    "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/files/../../../../etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/files//etc/passwd",
    "/files/%2fetc%2fpasswd",
    "/logs/..%2f..%2f..%2fetc%2fpasswd",
    "/cpu/simple/%00/",
    "/files/ab/x.whl%00.metadata",
    "/logs/%c0%ae%c0%ae/etc/passwd",
    "http://127.0.0.1/../../etc/passwd",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_traversal_is_refused(served: tuple[Wheelhouse, str, io.StringIO], path: str) -> None:
    _, url, _ = served
    reply = raw_request(
        url, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    status = int(reply.split(b" ", 2)[1])
    assert status in (400, 404), reply[:200]
    assert b"root:" not in reply


def test_symlinks_out_are_refused(tmp_path: Path) -> None:
    wh = sample_wheelhouse(tmp_path / "wh")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "index.html").write_text("secret")
    (outside / "x.whl").write_text("secret")
    (wh.files_dir / "zz").mkdir()
    (wh.files_dir / "zz" / "evil.whl").symlink_to(outside / "x.whl")
    (wh.root / "cpu/simple/evil").symlink_to(outside)
    (wh.root / "logs" / "evil").symlink_to(outside)
    with running(wh.root) as url:
        for path in ("/files/zz/evil.whl", "/cpu/simple/evil/", "/logs/evil/x.whl"):
            resp, body = request(url, path)
            assert resp.status == 404, path
            assert b"secret" not in body


@pytest.mark.parametrize(
    "path",
    ["/catalog/alpha.json", "/builds/", "/nope", "/cpu/simple/nope/", "/files/", "/gpu/simple/"],
)
def test_unknown_paths_are_404(served: tuple[Wheelhouse, str, io.StringIO], path: str) -> None:
    _, url, _ = served
    resp, _ = request(url, path)
    assert resp.status == 404


def test_redirects(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    _, url, _ = served
    for path, target in [
        ("/cpu/simple", "/cpu/simple/"),
        ("/cpu/simple/alpha", "/cpu/simple/alpha/"),
        ("/cpu/simple/Alpha/", "/cpu/simple/alpha/"),
    ]:
        resp, _ = request(url, path)
        assert resp.status == 301 and resp.getheader("Location") == target


def test_gzip(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    _, url, _ = served
    plain, body = request(url, "/cpu/simple/alpha/", headers={"Accept": JSON})
    resp, zipped = request(
        url, "/cpu/simple/alpha/", headers={"Accept": JSON, "Accept-Encoding": "gzip, br"}
    )
    assert resp.getheader("Content-Encoding") == "gzip"
    assert gzip.decompress(zipped) == body
    assert resp.getheader("ETag") != plain.getheader("ETag")
    assert "Accept-Encoding" in (resp.getheader("Vary") or "")
    resp, _ = request(url, "/cpu/simple/alpha/", headers={"Accept-Encoding": "gzip;q=0"})
    assert resp.getheader("Content-Encoding") is None


def test_keep_alive_and_pipelining(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    _, url, _ = served
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    for _ in range(3):
        conn.request("GET", "/cpu/simple/", headers={"Accept": JSON})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Connection") == "keep-alive"
        resp.read()
    conn.close()
    one = b"GET /cpu/simple/ HTTP/1.1\r\nHost: x\r\n\r\n"
    reply = raw_request(url, one + one + one.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert reply.count(b"HTTP/1.1 200 OK") == 3


def test_access_log(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    _, url, log = served
    request(url, "/cpu/simple/")
    time.sleep(0.1)
    line = [ln for ln in log.getvalue().splitlines() if '"GET /cpu/simple/ HTTP/1.1"' in ln][-1]
    assert re.fullmatch(
        r"127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "
        r'"GET /cpu/simple/ HTTP/1\.1" 200 \d+',
        line,
    ), line


def test_status_page(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    _, url, _ = served
    resp, body = request(url, "/")
    assert resp.status == 200 and resp.getheader("Content-Type") == "text/html; charset=utf-8"
    text = body.decode()
    for needle in ("alpha", "gamma-cuda", "cu128", "built", "downloaded", 'href="cpu/simple/"',
                   "cp311-cu128-manylinux_2_28_x86_64", 'href="logs/k1.log"'):  # fmt: skip
        assert needle in text
    assert "<script" not in text
    resp, body = request(url, "/logs/k1.log")
    assert (
        resp.getheader("Content-Type") == "text/plain; charset=utf-8" and body == b"gcc -O2 ...\n"
    )
    resp, body = request(url, "/builds/k1.json")
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body)["log"] == "logs/k1.log"
    resp, body = request(url, "/targets.json")
    assert resp.getheader("Content-Type") == "application/json"
    assert json.loads(body)["targets"][0]["accelerator"] == "cu128"


@pytest.mark.parametrize("accept", ["ACCEPT_JSON_ONLY", "ACCEPT_HTML_ONLY"])
def test_pypi_simple_parses(served: tuple[Wheelhouse, str, io.StringIO], accept: str) -> None:
    pypi_simple = pytest.importorskip("pypi_simple")
    _, url, _ = served
    with pypi_simple.PyPISimple(
        f"{url}/cpu/simple/", accept=getattr(pypi_simple, accept)
    ) as client:
        index = client.get_index_page()
        assert "alpha" in index.projects
        page = client.get_project_page("alpha")
        assert {p.version for p in page.packages} == {"1.0", "1.1"}
        for pkg in page.packages:
            assert pkg.digests["sha256"] and pkg.has_metadata and pkg.requires_python
            assert client.get_package_metadata(pkg).startswith("Metadata-Version")
        if accept == "ACCEPT_JSON_ONLY":
            assert page.versions == ["1.0", "1.1"]


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-0", 10, (0, 0)),
        ("bytes=5-100", 10, (5, 9)),
        ("bytes=-3", 10, (7, 9)),
        ("bytes=-30", 10, (0, 9)),
        ("bytes=10-", 10, False),
        ("bytes=-0", 10, False),
        ("bytes=0-1,3-4", 10, None),
        ("items=0-1", 10, None),
        ("bytes=x-1", 10, None),
        ("bytes=5-2", 10, None),
    ],
)
def test_parse_range(header: str, size: int, expected: object) -> None:
    assert routes.parse_range(header, size) == expected


def test_cli_serve_workers_log_and_sigterm(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    wh, _, _ = served
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "serve", "--wheelhouse", str(wh.root), "--port", "0",
         "--workers", "2"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        banner = readline(proc.stderr)
        url = re.search(r"http://[\d.]+:\d+", banner)
        assert url, banner
        for _ in range(4):
            resp, _ = request(url.group(0), "/cpu/simple/", headers={"Accept": JSON})
            assert resp.status == 200
        assert '"GET /cpu/simple/ HTTP/1.1" 200' in readline(proc.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_serve_answers_an_empty_wheelhouse(tmp_path: Path) -> None:
    (tmp_path / "wh").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "serve", "--wheelhouse", str(tmp_path / "wh"),
         "--port", "0", "--workers", "1", "-q"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = re.search(r"http://[\d.]+:\d+", readline(proc.stderr))
        assert url
        resp, body = request(url.group(0), "/cpu/simple/", headers={"Accept": JSON})
        assert resp.status == 200 and json.loads(body)["projects"] == []
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_port_in_use_is_refused(served: tuple[Wheelhouse, str, io.StringIO]) -> None:
    """Workers listen with SO_REUSEPORT; a second server on a taken port still fails, rather
    than quietly sharing the port with the first."""
    wh, url, _ = served
    port = urlsplit(url).port
    result = CliRunner().invoke(main, ["serve", "--wheelhouse", str(wh.root), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert "cannot listen" in result.output
