"""What an index page says: the newest build of each wheel a project lists for an
accelerator, rendered as PEP 503 HTML and PEP 691 JSON. Pure functions of catalog entries: the
tree writer, the checker and nothing else call them."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Iterator
from urllib.parse import quote

from packaging.utils import parse_wheel_filename

from ..simple import API_VERSION
from ..wheelhouse import CatalogEntry, sorted_versions


def newest_builds(entries: Iterable[CatalogEntry]) -> list[CatalogEntry]:
    """Keep, for each (version, tags), only the build chosen last (`CatalogEntry.chosen`:
    published or listed again most recently).

    Build tags derive from the cache key, so their order says nothing about which build is
    current; the catalog does. Listing one build per version and tags keeps pages short and
    leaves installers no choice to make.
    """
    best: dict[tuple[str, frozenset[str]], CatalogEntry] = {}
    for e in entries:
        _, version, _, wtags = parse_wheel_filename(e.filename)
        key = (str(version), frozenset(str(t) for t in wtags))
        cur = best.get(key)
        if cur is None or (e.chosen, e.filename) > (cur.chosen, cur.filename):
            best[key] = e
    return sorted(best.values(), key=lambda e: e.filename)


def listed(entries: Iterable[CatalogEntry], accel: str) -> list[CatalogEntry]:
    """The wheels among `entries` that the `accel` index lists: the newest build of each."""
    return newest_builds(e for e in entries if e.listed_in(accel))


def chain(catalog: dict[str, list[CatalogEntry]]) -> Iterator[CatalogEntry]:
    return (e for entries in catalog.values() for e in entries)


def file_url(entry: CatalogEntry) -> str:
    """A link from a project page to the file, relative so the tree can move."""
    head, _, name = entry.path.rpartition("/")
    return f"../../../{quote(head)}/{quote(name, safe='')}"


# -- rendering ---------------------------------------------------------------------------------


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def render_project_html(project: str, entries: list[CatalogEntry]) -> bytes:
    name = html.escape(project)
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        f"<title>Links for {name}</title>",
        "</head>",
        "<body>",
        f"<h1>Links for {name}</h1>",
    ]
    for e in entries:
        attrs = [f'href="{_attr(file_url(e))}#sha256={e.sha256}"']
        if e.requires_python:
            attrs.append(f'data-requires-python="{_attr(e.requires_python)}"')
        attrs.append(f'data-dist-info-metadata="sha256={e.metadata_sha256}"')
        attrs.append(f'data-core-metadata="sha256={e.metadata_sha256}"')
        if e.yanked is not False:
            reason = "" if e.yanked is True else str(e.yanked)
            attrs.append(f'data-yanked="{_attr(reason)}"')
        attrs.append(f'data-size="{e.size}"')
        attrs.append(f'data-upload-time="{_attr(e.upload_time)}"')
        lines.append(f"<a {' '.join(attrs)}>{html.escape(e.filename)}</a><br>")
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def _file_json(e: CatalogEntry) -> dict[str, object]:
    d: dict[str, object] = {
        "filename": e.filename,
        "url": file_url(e),
        "hashes": {"sha256": e.sha256},
    }
    if e.requires_python:
        d["requires-python"] = e.requires_python
    d["core-metadata"] = {"sha256": e.metadata_sha256}
    d["size"] = e.size
    d["upload-time"] = e.upload_time
    d["yanked"] = e.yanked
    return d


def render_project_json(project: str, entries: list[CatalogEntry]) -> bytes:
    versions = sorted_versions(entries)
    doc = {
        "meta": {"api-version": API_VERSION},
        "name": project,
        "versions": versions,
        "files": [_file_json(e) for e in entries],
    }
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")


def render_root_html(projects: list[str]) -> bytes:
    lines = [
        "<!DOCTYPE html>",
        "<html>",
        "<head>",
        f'<meta name="pypi:repository-version" content="{API_VERSION}">',
        "<title>Simple index</title>",
        "</head>",
        "<body>",
    ]
    lines += [f'<a href="{quote(p)}/">{html.escape(p)}</a><br>' for p in projects]
    lines += ["</body>", "</html>", ""]
    return "\n".join(lines).encode("utf-8")


def render_root_json(projects: list[str]) -> bytes:
    doc = {"meta": {"api-version": API_VERSION}, "projects": [{"name": p} for p in projects]}
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")
