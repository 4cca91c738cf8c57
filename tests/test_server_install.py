"""Real clients against real servers: pip and uv install from `prewheel serve` and from nginx
running the generated configuration; Chromium renders the status page."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from httpkit import nginx_server
from indexkit import sample_wheelhouse, write_record_json
from needs import declared, machine

from builder import index
from builder.cli import main
from builder.serve.server import running
from builder.wheelhouse import Wheelhouse

PIP_ACCEPT = (
    "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, "
    "text/html; q=0.01"
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "UV_"))}
    return env | {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "UV_NO_CONFIG": "1",
    }


def _installed(target: Path) -> set[str]:
    return {p.name.split("-")[0] for p in target.glob("*.dist-info")}


def pip_install(index_url: str, target: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "--isolated", "install", "--no-cache-dir", "--quiet",
         "--only-binary=:all:", "--index-url", index_url, "--target", str(target), "alpha"],
        check=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert _installed(target) == {"alpha", "beta"}


def uv_install(index_url: str, target: Path) -> None:
    uv = declared("uv")
    subprocess.run(
        [uv, "pip", "install", "--no-config", "--no-cache", "--quiet", "--python", sys.executable,
         "--only-binary=:all:", "--index-url", index_url, "--target", str(target), "alpha"],
        check=True, env=_env(), timeout=120,
    )  # fmt: skip
    assert _installed(target) == {"alpha", "beta"}


@pytest.fixture(scope="module")
def wh(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    wh = sample_wheelhouse(tmp_path_factory.mktemp("install") / "wh")
    index.rebuild(wh)
    return wh


def test_pip_and_uv_install_from_embedded_server(wh: Wheelhouse, tmp_path: Path) -> None:
    with running(wh.root) as url:
        pip_install(f"{url}/cpu/simple/", tmp_path / "pip")
        uv_install(f"{url}/cu128/simple/", tmp_path / "uv")


@pytest.fixture(scope="module")
def nginx(wh: Wheelhouse, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with nginx_server(wh.root, tmp_path_factory.mktemp("nginx")) as server:
        yield server.url


def test_pip_and_uv_install_from_nginx(nginx: str, tmp_path: Path) -> None:
    pip_install(f"{nginx}/cpu/simple/", tmp_path / "pip")
    uv_install(f"{nginx}/cu128/simple/", tmp_path / "uv")


def _get(url: str, path: str, method: str = "GET", **headers: str) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection(urlsplit(url).netloc, timeout=10)
    conn.request(method, path, headers={k.replace("_", "-"): v for k, v in headers.items()})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


@pytest.mark.parametrize(
    "accept",
    [PIP_ACCEPT, "", "text/html", "application/vnd.pypi.simple.v1+html", "application/xml",
     "text/html;q=0.2, application/vnd.pypi.simple.latest+json;q=0.3", "*/*", "application/*"],
)  # fmt: skip
def test_nginx_negotiates_like_prewheel(wh: Wheelhouse, nginx: str, accept: str) -> None:
    with running(wh.root) as ours:
        for path in ("/cpu/simple/", "/cpu/simple/alpha/"):
            mine, theirs = _get(ours, path, Accept=accept), _get(nginx, path, Accept=accept)
            assert (mine.status, mine.getheader("Content-Type")) == (
                theirs.status,
                theirs.getheader("Content-Type"),
            ), (path, accept)
            assert "Accept" in ",".join(theirs.headers.get_all("Vary") or [])


@pytest.mark.parametrize(
    "query",
    ["?format=application/vnd.pypi.simple.v1%2Bjson", "?format=application/vnd.pypi.simple.v1+json",
     "?a=b&format=text/html", "?format=application/vnd.pypi.simple.latest+html",
     "?format=application/xml", "?format=*/*", "?format=", "?other=1",
     "?format&format=application/vnd.pypi.simple.v1+json"],
)  # fmt: skip
def test_nginx_format_parameter_like_prewheel(wh: Wheelhouse, nginx: str, query: str) -> None:
    with running(wh.root) as ours:
        for path in ("/cpu/simple/", "/cpu/simple/alpha/"):
            mine = _get(ours, path + query, Accept=PIP_ACCEPT)
            theirs = _get(nginx, path + query, Accept=PIP_ACCEPT)
            assert (mine.status, mine.getheader("Content-Type")) == (
                theirs.status,
                theirs.getheader("Content-Type"),
            ), (path, query)


def test_nginx_headers_like_prewheel(wh: Wheelhouse, nginx: str) -> None:
    entry = wh.find("alpha-1.0-py3-none-any.whl")
    assert entry is not None
    wheel = "/" + entry.path
    page = _get(nginx, "/cpu/simple/alpha/", Accept=PIP_ACCEPT)
    assert page.getheader("Cache-Control") == "public, max-age=10"
    etag = page.getheader("ETag") or ""
    assert _get(nginx, "/cpu/simple/alpha/", Accept=PIP_ACCEPT, If_None_Match=etag).status == 304
    f = _get(nginx, wheel)
    assert f.getheader("Cache-Control") == "public, max-age=31536000, immutable"
    assert f.getheader("Content-Type") == "application/octet-stream"
    r = _get(nginx, wheel, Range="bytes=0-9")
    assert r.status == 206 and r.getheader("Content-Range", "").startswith("bytes 0-9/")
    assert _get(nginx, wheel, "HEAD").getheader("Content-Length") == str(entry.size)
    meta = _get(nginx, wheel + ".metadata")
    assert meta.getheader("Content-Type") == "text/plain; charset=utf-8"
    post = _get(nginx, "/cpu/simple/", "POST")
    assert post.status == 405 and post.getheader("Allow") == "GET, HEAD"
    assert _get(nginx, "/cpu/simple/Alpha/").status == 301
    gz = _get(nginx, "/cpu/simple/alpha/", Accept=PIP_ACCEPT, Accept_Encoding="gzip")
    assert gz.getheader("Content-Encoding") == "gzip"
    outside = wh.root.parent / "outside.whl"
    outside.write_text("secret")
    (wh.files_dir / "zz").mkdir(exist_ok=True)
    (wh.files_dir / "zz" / "evil.whl").unlink(missing_ok=True)
    (wh.files_dir / "zz" / "evil.whl").symlink_to(outside)
    for path in ("/cpu/simple/..%2f..%2fetc/passwd", "/catalog/alpha.json", "/nope",
                 "/files/..%2f..%2f..%2fetc/passwd", "/files/zz/evil.whl"):  # fmt: skip
        assert _get(nginx, path).status in (400, 403, 404), path
    assert _get(nginx, "/").getheader("Content-Type") == "text/html; charset=utf-8"
    write_record_json(wh, "k9", {"name": "alpha"})
    (wh.root / "targets.json").write_text("{}")
    for path in ("/builds/k9.json", "/targets.json"):
        got = _get(nginx, path)
        assert (got.status, got.getheader("Content-Type")) == (200, "application/json"), path


def test_status_page_in_headless_chromium(wh: Wheelhouse, tmp_path: Path) -> None:
    exe = machine("chromium", "apt-get install chromium")
    shot = tmp_path / "status.png"
    with running(wh.root) as url:
        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"]  # fmt: skip
        dom = subprocess.run(
            [*args, "--dump-dom", f"{url}/"], capture_output=True, text=True, timeout=60
        )
        subprocess.run([*args, f"--screenshot={shot}", f"{url}/"], capture_output=True, timeout=60)
    assert "<h1>prewheel wheelhouse</h1>" in dom.stdout, dom.stderr[-2000:]
    assert 'id="p-gamma-cuda"' in dom.stdout and "downloaded" in dom.stdout
    assert shot.is_file() and shot.stat().st_size > 1000


def test_print_nginx_config(wh: Wheelhouse) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--wheelhouse", str(wh.root), "--port", "9123", "--print-nginx-config"]
    )
    assert result.exit_code == 0, result.output
    assert "listen 127.0.0.1:9123 backlog=4096" in result.output
    assert f"root {wh.root.resolve()};" in result.output
    assert "perl_set $pypi_variant" in result.output


def test_print_nginx_config_carries_the_limits(wh: Wheelhouse) -> None:
    result = CliRunner().invoke(
        main,
        ["serve", "--wheelhouse", str(wh.root), "--print-nginx-config", "--max-connections",
         "300", "--header-timeout", "5"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for line in ("worker_connections 300;", "worker_rlimit_nofile 632;",
                 "client_header_timeout 5000ms;", "large_client_header_buffers 4 8k;",
                 "send_timeout 60s;", "max_ranges 1;"):  # fmt: skip
        assert line in result.output, line
    assert "simple/(?<pypi_project>[^/]+)" not in result.output  # only valid names echo back
    assert "(?<pypi_project>[A-Za-z0-9]" in result.output
