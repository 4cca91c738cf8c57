"""The status page at `/`: what this wheelhouse holds, for a person with a browser.

Plain HTML with inline CSS and no script, so it reads the same from the embedded server, from
nginx (as the static `status.html` that `index rebuild` writes) and from a file on disk.
It reads every catalog, so the server renders it on demand and caches it, and the pipeline
writes the static copy once per run rather than once per wheel.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..records import BuildRecord
from ..wheelhouse import CatalogEntry, Wheelhouse, sorted_versions, write_if_changed

STATUS_FILE = "status.html"
_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;width:100%}th,td{padding:.25em .6em;text-align:left;
vertical-align:top;border-bottom:1px solid #eee}th{background:#f6f6f6}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.92em}
.built{color:#0a6a2a}.downloaded{color:#555}.muted{color:#777}.failed{color:#a01010}
details summary{cursor:pointer}details table{margin:.3em 0 .8em}
"""


@dataclass
class _Project:
    name: str
    entries: list[CatalogEntry] = field(default_factory=list)

    @property
    def versions(self) -> list[str]:
        return sorted_versions(self.entries)


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _targets(wh: Wheelhouse) -> list[dict[str, Any]]:
    data = _read_json(wh.root / "targets.json")
    if isinstance(data, dict):
        data = data.get("targets", [])
    return [t for t in data or [] if isinstance(t, dict)]


def _provenance(wh: Wheelhouse, cache_key: str | None) -> str:
    """The cells that say where a built wheel came from: its build record (which holds the
    inputs, the tools and the whole SBOM), its log, what its SBOM lists, and whether a
    second build reproduced it. Empty cells for a downloaded wheel."""
    record = wh.read_record(cache_key) if cache_key else None
    if record is None or cache_key is None:
        return "<td></td><td></td><td></td>"
    links = [f'<a href="builds/{quote(cache_key)}.json">record</a>', _log_link(wh, record)]
    sbom = '<span class="muted">none</span>'
    if record.sbom_member:
        grafted = ", ".join(g.library for g in record.grafted)
        sbom = (
            f'<a href="builds/{quote(cache_key)}.json" title="{_e(record.sbom_member)}">'
            f"CycloneDX</a>: {len(record.build_deps)} build deps"
            + (f"; grafted {_e(grafted)}" if grafted else "")
        )
    rep = record.reproduction
    if rep is None:
        reproduced = '<span class="muted" title="build --check-reproducible">not checked</span>'
    elif rep.identical:
        reproduced = '<span class="built">yes</span>'
    else:
        what = ", ".join(rep.differs[:3]) or rep.detail or ""
        reproduced = f'<span class="failed" title="{_e(rep.summary())}">no: {_e(what)}</span>'
    return f"<td>{' '.join(x for x in links if x)}</td><td>{sbom}</td><td>{reproduced}</td>"


def _log_link(wh: Wheelhouse, record: BuildRecord) -> str:
    """A relative link to the build log of `record`, when it lies inside `logs/`."""
    log = record.log
    if not log:
        return ""
    path = Path(log) if Path(log).is_absolute() else wh.root / log
    try:
        rel = path.resolve().relative_to(wh.logs_dir.resolve())
    except (ValueError, OSError):
        return ""
    return f'<a href="logs/{quote(rel.as_posix())}">log</a>'


def _e(value: object) -> str:
    return html.escape(str(value))


def render_status(wh: Wheelhouse) -> bytes:
    projects = [_Project(p, wh.entries(p)) for p in wh.projects()]
    projects = [p for p in projects if p.entries]
    all_entries = [e for p in projects for e in p.entries]
    accels = wh.accelerators(all_entries)
    built = sum(1 for e in all_entries if e.origin == "built")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>prewheel wheelhouse</title><style>{_CSS}</style></head><body>",
        "<h1>prewheel wheelhouse</h1>",
        f'<p class="muted" id="summary">{len(projects)} projects, {len(all_entries)} wheels '
        f"({human_size(sum(e.size for e in all_entries))}); {built} built here, "
        f"{len(all_entries) - built} downloaded.</p>",
        '<h2>Accelerators</h2><table><tr><th>index</th><th class="n">wheels</th><th>use</th></tr>',
    ]
    for accel in accels:
        n = sum(1 for e in all_entries if e.listed_in(accel))
        url = f"{quote(accel)}/simple/"
        out.append(
            f'<tr><td><a href="{url}">{_e(accel)}</a></td><td class="n">{n}</td>'
            f"<td><code>pip install --index-url http://HOST/{_e(url)} "
            "--only-binary=:all: ...</code></td></tr>"
        )
    out.append("</table>")
    targets = _targets(wh)
    out.append("<h2>Targets</h2>")
    if targets:
        out.append(
            "<table><tr><th>target</th><th>python</th><th>accelerator</th><th>policy</th>"
            "<th>runtime image</th><th>state</th></tr>"
        )
        for t in targets:
            accel = t.get("accelerator") or t.get("accel") or ""
            state = "ready" if t.get("available", True) else f"missing: {t.get('missing')}"
            out.append(
                f"<tr><td><code>{_e(t.get('name', ''))}</code></td>"
                f"<td>{_e(t.get('python_version') or t.get('python') or '')}</td>"
                f'<td><a href="{_e(quote(str(accel)))}/simple/">{_e(accel)}</a></td>'
                f"<td>{_e(t.get('policy', ''))}</td>"
                f"<td><code>{_e(t.get('runtime_image') or '')}</code></td><td>{_e(state)}</td></tr>"
            )
        out.append('</table><p class="muted">Also as <a href="targets.json">targets.json</a>.</p>')
    else:
        out.append('<p class="muted">No targets.json in this wheelhouse.</p>')
    out.append(
        '<h2>Projects</h2><table id="projects"><tr><th>project</th><th>versions</th>'
        '<th class="n">wheels</th><th class="n">size</th><th class="n">built</th>'
        '<th class="n">downloaded</th></tr>'
    )
    for p in projects:
        nb = sum(1 for e in p.entries if e.origin == "built")
        out.append(
            f'<tr id="p-{_e(p.name)}"><td><details><summary>{_e(p.name)}</summary><table>'
            '<tr><th>wheel</th><th class="n">size</th><th>origin</th><th>indexes</th>'
            "<th>provenance</th><th>SBOM</th><th>reproduced</th></tr>"
        )
        for e in p.entries:
            where = ", ".join(e.accels) if e.accels is not None else "all"
            out.append(
                f'<tr><td><a href="{_e(quote(e.path))}">{_e(e.filename)}</a></td>'
                f'<td class="n">{human_size(e.size)}</td>'
                f'<td class="{_e(e.origin)}">{_e(e.origin)}</td><td>{_e(where)}</td>'
                f"{_provenance(wh, e.cache_key)}</tr>"
            )
        out.append(
            f"</table></details></td><td>{_e(', '.join(p.versions))}</td>"
            f'<td class="n">{len(p.entries)}</td>'
            f'<td class="n">{human_size(sum(e.size for e in p.entries))}</td>'
            f'<td class="n">{nb}</td><td class="n">{len(p.entries) - nb}</td></tr>'
        )
    out += ["</table>", "</body></html>", ""]
    return "\n".join(out).encode("utf-8")


def write_status(wh: Wheelhouse) -> Path:
    """Write the static `status.html`, for servers other than prewheel's own."""
    path = wh.root / STATUS_FILE
    write_if_changed(path, render_status(wh))
    return path


def status_inputs(wh: Wheelhouse) -> tuple[int, ...]:
    """What the page depends on, cheaply: directory and file mtimes change on every write."""
    key: list[int] = []
    for p in (
        wh.catalog_dir,
        wh.builds_dir,
        wh.root / "targets.json",
        wh.root / "accelerators.json",
    ):
        try:
            st = p.stat()
            key += [st.st_mtime_ns, st.st_size, st.st_ino]
        except OSError:
            key += [0, 0, 0]
    return tuple(key)
