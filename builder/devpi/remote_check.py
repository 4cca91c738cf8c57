"""Check a served index (devpi, or prewheel's own tree behind a server) as installers see it.

`index.check` proves the static tree on disk is right; this proves what a server actually
answers is right: the root lists the projects, the PEP 503 and PEP 691 views of each project
agree, every file is reachable and hashes to what the page promises. It is what a CI pipeline
runs last, against the production index, after parallel jobs have pushed to it.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from ..errors import UpstreamError
from ..simple import JSON_TYPE, LinkParser
from ..upstream import project_files
from .client import Unreachable, http_request

HTML_ACCEPT = "text/html"


def _hrefs(page: bytes) -> list[str]:
    parser = LinkParser()
    parser.feed(page.decode("utf-8", "replace"))
    return [href for a in parser.links if (href := a.get("href"))]


def _get(url: str, accept: str, timeout: float) -> tuple[int, bytes, str]:
    try:
        resp = http_request("GET", url, headers={"Accept": accept}, timeout=timeout)
    except Unreachable as exc:
        raise UpstreamError(f"cannot reach {url}: {exc}") from exc
    return resp.status, resp.body, resp.content_type


def _root_projects(index_url: str, timeout: float, problems: list[str]) -> list[str]:
    status, body, ctype = _get(index_url, JSON_TYPE, timeout)
    if status != 200:
        raise UpstreamError(f"{index_url}: HTTP {status}", hint="is this the +simple/ URL?")
    if ctype.split(";")[0].strip() != JSON_TYPE:
        problems.append(f"{index_url}: no PEP 691 JSON root (got {ctype or 'no type'})")
        hrefs = _hrefs(body)
        return sorted({canonicalize_name(h.rstrip("/").rsplit("/", 1)[-1]) for h in hrefs})
    return sorted(canonicalize_name(p["name"]) for p in json.loads(body).get("projects", []))


def _html_files(url: str, timeout: float) -> dict[str, str]:
    """File name -> sha256 from the PEP 503 page, to compare with the JSON view."""
    status, body, _ = _get(url, HTML_ACCEPT, timeout)
    if status != 200:
        return {}
    out = {}
    for href in _hrefs(body):
        clean, _, frag = urllib.parse.urljoin(url, href).partition("#")
        name = urllib.parse.unquote(clean.rsplit("/", 1)[-1])
        out[name] = frag.partition("=")[2] if frag.startswith("sha256=") else ""
    return out


def _file_sha256(url: str, timeout: float) -> str | None:
    """Streamed: CUDA wheels run to hundreds of MB."""
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        return None
    h = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            while chunk := resp.read(1 << 20):
                h.update(chunk)
    except (urllib.error.URLError, OSError):
        return None
    return h.hexdigest()


def check_remote(
    index_url: str,
    *,
    projects: Sequence[str] | None = None,
    verify_files: bool = True,
    timeout: float = 120.0,
) -> list[str]:
    """Every problem an installer would meet on the served index at `index_url`.

    Raises `UpstreamError` only when the index root cannot be read at all.
    """
    url = index_url if index_url.endswith("/") else index_url + "/"
    problems: list[str] = []
    listed = _root_projects(url, timeout, problems)
    on_root = set(listed)
    for project in projects or listed:
        name = canonicalize_name(project)
        if name not in on_root:
            problems.append(f"{name}: not listed on the root page {url}")
        page = urllib.parse.urljoin(url, f"{name}/")
        try:
            files = project_files(url, name, fresh=True)
        except UpstreamError as exc:
            problems.append(f"{name}: {exc.message}")
            continue
        if not files:
            problems.append(f"{name}: listed but its page {page} has no files")
            continue
        html_view = _html_files(page, timeout)
        json_view = {f.filename: f.sha256 or "" for f in files}
        if html_view and html_view != json_view:
            problems.append(f"{name}: the PEP 503 and PEP 691 pages list different files/hashes")
        for f in files:
            where = f"{name}/{f.filename}"
            try:
                parse_wheel_filename(f.filename)
            except InvalidWheelFilename:
                if not f.is_sdist:
                    problems.append(f"{where}: not a valid wheel or sdist file name")
            if not f.sha256:
                problems.append(f"{where}: no sha256 on the page")
            if f.requires_python:
                try:
                    SpecifierSet(f.requires_python)
                except InvalidSpecifier:
                    problems.append(f"{where}: invalid requires-python {f.requires_python!r}")
            if verify_files:
                got = _file_sha256(f.url, timeout)
                if got is None:
                    problems.append(f"{where}: {f.url} is not reachable")
                elif f.sha256 and got != f.sha256:
                    problems.append(f"{where}: served bytes hash to {got}, page says {f.sha256}")
    return problems
