"""The simple repository API (PEP 503 HTML, PEP 691 JSON): its media types and version, and
reading the links of an HTML page. Shared by what writes an index, what serves one and what
reads one (the upstream, a devpi index being checked)."""

from __future__ import annotations

from html.parser import HTMLParser

API_VERSION = "1.1"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
HTML_TYPE = "application/vnd.pypi.simple.v1+html"


class LinkParser(HTMLParser):
    """The attributes of every anchor in a page (PEP 503 links and their data- attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.links.append(dict(attrs))
