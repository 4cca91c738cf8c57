"""`prewheel audit-image`: where an image's bytes go, Dive's measures, and what a runtime image
should not carry.

Per layer: the bytes it adds, and the bytes of lower layers it overwrites or deletes (hidden
from every container, still shipped), with overlay semantics: a whiteout deletes a whole
directory, an opaque directory hides everything below it. Then Dive's efficiency and wasted
bytes (`dive`, the same numbers as `dive --ci`), and what Dive does not show: compilers,
headers, -dev packages, package-manager caches, bytecode caches, static libraries, build
trees and archives left in the final image.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from .archive import Entry, Image, Layer
from .dive import DiveMeasures, dive_measures
from .rules import Rule, Verdict, evaluate, rules_json

CATEGORIES = (
    "compilers",
    "headers",
    "dev-packages",
    "pip-cache",
    "apt-cache",
    "pycache",
    "static-libs",
    "build-trees",
    "archives",
)
_COMPILER = re.compile(
    r"(?:[\w.+]+-linux-gnu-)?"
    r"(?:gcc|g\+\+|c\+\+|cc|cpp|clang|clang\+\+|gfortran|nvcc|rustc|as|ld|ld\.bfd|ld\.gold)"
    r"(?:-\d+(?:\.\d+)*)?"
)
_PIP_CACHE = re.compile(r"(?:^|/)\.cache/(?:pip|uv|pypoetry)/")
_APT_CACHE = re.compile(
    r"^var/cache/apt/archives/[^/]+\.deb$|^var/cache/apt/[^/]+\.bin$"
    r"|^var/lib/apt/lists/(?!lock$|partial(?:/|$)).+|^var/cache/(?:apk|dnf|yum)/."
)
_BUILD_TREE = re.compile(
    r"(?:^|/)(?:CMakeFiles|build/(?:temp|lib|bdist)\.[^/]+)/|^tmp/pip-[^/]+/|\.o$|\.obj$"
)
# Object files a -dev package installs (crt1.o in libc6-dev) are counted with the package.
_SYSTEM_LIBS = ("usr/lib/", "usr/lib64/", "lib/", "lib64/")
_ARCHIVE_DIRS = ("tmp/", "root/", "wheels/", "wheelhouse/", "dist/", "src/")
# Wheels an OS package ships on purpose: Debian's python3-venv, ensurepip's own.
_BUNDLED_WHEELS = re.compile(r"^usr/share/python-wheels/|/ensurepip/_bundled/")
_SITE = ("site-packages/", "dist-packages/")


@dataclass(frozen=True, kw_only=True)
class LayerStats:
    index: int
    name: str
    command: str
    size: int  # Dive's layer size: every entry's header size
    files: int
    added: int  # bytes of regular files it writes
    overwritten: int  # bytes of lower files it replaces
    deleted: int  # bytes of lower files its whiteouts and opaque directories hide


@dataclass(frozen=True, kw_only=True)
class Finding:
    category: str
    count: int
    bytes: int
    examples: tuple[tuple[str, int], ...]  # the largest paths (or packages), with their bytes


@dataclass(frozen=True, kw_only=True)
class Audit:
    image: Image
    layers: tuple[LayerStats, ...]
    dive: DiveMeasures
    findings: tuple[Finding, ...]
    verdicts: tuple[Verdict, ...] = ()
    denied: tuple[str, ...] = ()  # categories that fail the audit when found

    @property
    def hidden_bytes(self) -> int:
        return sum(s.overwritten + s.deleted for s in self.layers)

    @property
    def failures(self) -> list[str]:
        out = [f"{v.rule.name}: {v.message}" for v in self.verdicts if v.status == "fail"]
        out += [
            f"{f.category}: {f.count} found ({f.bytes:,} bytes), denied"
            for f in self.findings
            if f.category in self.denied
        ]
        return out

    def to_json(self, top: int = 20) -> dict[str, Any]:
        pct = self.dive.user_wasted_percent
        return {
            "image": {
                "archive": self.image.archive,
                "format": self.image.format,
                "tags": list(self.image.tags),
                "layers": len(self.layers),
                "size": self.dive.size,
                "notes": list(self.image.notes),
            },
            "layers": [
                {
                    "index": s.index,
                    "name": s.name,
                    "command": s.command,
                    "size": s.size,
                    "files": s.files,
                    "added": s.added,
                    "overwritten": s.overwritten,
                    "deleted": s.deleted,
                }
                for s in self.layers
            ],
            "dive": {
                "efficiency": self.dive.efficiency,
                "wasted_bytes": self.dive.wasted_bytes,
                "user_size": self.dive.user_size,
                "user_wasted_percent": None if math.isnan(pct) or math.isinf(pct) else pct,
                "inefficient_files": [
                    {"path": x.path, "count": x.count, "bytes": x.size}
                    for x in self.dive.inefficiencies[:top]
                ],
            },
            "hidden_bytes": self.hidden_bytes,
            "findings": [
                {
                    "category": f.category,
                    "count": f.count,
                    "bytes": f.bytes,
                    "denied": f.category in self.denied,
                    "examples": [{"path": p, "bytes": b} for p, b in f.examples],
                }
                for f in self.findings
            ],
            "rules": rules_json(list(self.verdicts)),
            "failures": self.failures,
            "passed": not self.failures,
        }


class _Overlay:
    """The image as a container sees it, built layer by layer with overlay semantics."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Entry, int]] = {}  # path -> (entry, layer index)
        self.children: dict[str, set[str]] = {"": set()}

    def _link(self, path: str) -> None:
        parent, _, _ = path.rpartition("/")
        if parent and parent not in self.children:
            self._link(parent)
        self.children.setdefault(parent, set()).add(path)
        self.children.setdefault(path, set())

    def drop(self, path: str) -> int:
        """Remove `path` and everything below it; the bytes of regular files removed."""
        freed = 0
        stack = [path]
        while stack:
            p = stack.pop()
            stack.extend(self.children.pop(p, ()))
            found = self.entries.pop(p, None)
            if found and found[0].kind == "file":
                freed += found[0].size
        parent = path.rpartition("/")[0]
        self.children.get(parent, set()).discard(path)
        return freed

    def clear_below(self, path: str) -> int:
        return sum(self.drop(child) for child in list(self.children.get(path, ())))

    def put(self, entry: Entry, layer: int) -> int:
        """Write `entry`; the bytes of what it replaces."""
        old = self.entries.get(entry.path)
        hidden = 0
        if old is not None:
            if old[0].kind == "dir" and entry.kind == "dir":
                pass  # a directory over a directory merges
            elif old[0].kind == "dir":
                hidden = self.drop(entry.path)
            elif old[0].kind == "file":
                hidden = old[0].size
        self._link(entry.path)
        self.entries[entry.path] = (entry, layer)
        return hidden


def _apply(overlay: _Overlay, layer: Layer) -> tuple[int, int, int]:
    """Whiteouts first (they apply to the layers below only), then the layer's entries."""
    deleted = overwritten = added = 0
    for e in layer.entries:
        parent, _, name = e.path.rpartition("/")
        if name == ".wh..wh..opq":
            deleted += overlay.clear_below(parent)
        elif name.startswith(".wh."):
            target = f"{parent}/{name[4:]}" if parent else name[4:]
            if target in overlay.entries or target in overlay.children:
                deleted += overlay.drop(target)
    for e in layer.entries:
        if PurePosixPath(e.path).name.startswith(".wh."):
            continue
        overwritten += overlay.put(e, layer.index)
        added += e.size if e.kind == "file" else 0
    return added, overwritten, deleted


def _category(path: str, entry: Entry) -> str | None:
    name = PurePosixPath(path).name
    parent = PurePosixPath(path).parent.name
    if (
        entry.kind in ("file", "symlink", "hardlink")
        and parent == "bin"
        and _COMPILER.fullmatch(name)
    ):
        return "compilers"
    if entry.kind != "file":
        return None
    if path.startswith(("usr/lib/gcc/", "usr/libexec/gcc/")):
        return "compilers"
    in_site = any(s in path for s in _SITE)
    if _PIP_CACHE.search(path):
        return "pip-cache"
    if _APT_CACHE.search(path):
        return "apt-cache"
    if "/__pycache__/" in f"/{path}" or name.endswith(".pyc"):
        return "pycache"
    if not in_site and path.startswith(("usr/", "opt/")) and "/include/" in path:
        return "headers"
    if name.endswith(".a"):
        return "static-libs"
    if _BUILD_TREE.search(path) and not (name.endswith(".o") and path.startswith(_SYSTEM_LIBS)):
        return "build-trees"
    if (name.endswith(".whl") and not _BUNDLED_WHEELS.search(path)) or (
        path.startswith(_ARCHIVE_DIRS) and name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".zip"))
    ):
        return "archives"
    return None


def _packages(contents: dict[str, bytes]) -> list[tuple[str, int]]:
    """Installed -dev packages (and build-essential, build-base) with their installed size,
    from the final image's dpkg status or apk database."""
    found = []
    status = contents.get("var/lib/dpkg/status", b"").decode("utf-8", "replace")
    for para in re.split(r"\n\s*\n", status):
        fields = dict(re.findall(r"^([\w-]+):\s*(.*)$", para, re.MULTILINE))
        name = fields.get("Package", "")
        if fields.get("Status", "").endswith(" installed") and _dev(name):
            size = fields.get("Installed-Size", "0")
            found.append((name, int(size) * 1024 if size.isdigit() else 0))
    apk = contents.get("lib/apk/db/installed", b"").decode("utf-8", "replace")
    for para in re.split(r"\n\s*\n", apk):
        fields = dict(re.findall(r"^([A-Za-z]):(.*)$", para, re.MULTILINE))
        name = fields.get("P", "")
        if _dev(name):
            size = fields.get("I", "0")
            found.append((name, int(size) if size.isdigit() else 0))
    return sorted(found, key=lambda p: (-p[1], p[0]))


def _dev(package: str) -> bool:
    return package.endswith("-dev") or package in ("build-essential", "build-base")


def _findings(overlay: _Overlay, contents: dict[str, bytes], top: int) -> list[Finding]:
    groups: dict[str, list[tuple[str, int]]] = {c: [] for c in CATEGORIES}
    for path, (entry, _) in overlay.entries.items():
        category = _category(path, entry)
        if category is not None:
            groups[category].append(("/" + path, entry.size if entry.kind == "file" else 0))
    groups["dev-packages"] = _packages(contents)
    out = []
    for category, items in groups.items():
        if items:
            items.sort(key=lambda p: (-p[1], p[0]))
            out.append(
                Finding(
                    category=category,
                    count=len(items),
                    bytes=sum(b for _, b in items),
                    examples=tuple(items[:top]),
                )
            )
    return out


def audit(
    image: Image,
    *,
    rules: Iterable[Rule] = (),
    denied: Sequence[str] = (),
    top: int = 5,
) -> Audit:
    """The whole audit of `image`, judged by `rules` (Dive's) and the `denied` categories."""
    overlay = _Overlay()
    stats = []
    contents: dict[str, bytes] = {}
    for layer in image.layers:
        added, overwritten, deleted = _apply(overlay, layer)
        contents.update(layer.contents)
        stats.append(
            LayerStats(
                index=layer.index,
                name=layer.name,
                command=layer.command,
                size=sum(e.size for e in layer.entries),
                files=sum(
                    1
                    for e in layer.entries
                    if e.kind == "file" and not PurePosixPath(e.path).name.startswith(".wh.")
                ),
                added=added,
                overwritten=overwritten,
                deleted=deleted,
            )
        )
    # A package database deleted later no longer describes the image.
    contents = {p: c for p, c in contents.items() if p in overlay.entries}
    measures = dive_measures([layer.entries for layer in image.layers])
    return Audit(
        image=image,
        layers=tuple(stats),
        dive=measures,
        findings=tuple(_findings(overlay, contents, top)),
        verdicts=tuple(evaluate(list(rules), measures)),
        denied=tuple(denied),
    )
