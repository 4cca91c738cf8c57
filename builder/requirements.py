"""Pinned requirements in: requirements.txt (with `--hash` pins) or pylock.toml."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import stamp
from .errors import RequirementsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True, kw_only=True)
class Pin:
    """One requirement line. `version` is None only for unpinned input."""

    name: str
    requirement: str
    version: str | None
    hashes: frozenset[str] = frozenset()
    marker: str | None = None
    where: str = ""


def read_requirements(path: Path) -> list[Pin]:
    """Parse a requirements file or a pylock.toml; errors name the file and line."""
    data = stamp.watch_file(path)
    if data is None:
        raise RequirementsError(f"{path}: no such file")
    if path.name.startswith("pylock.") and path.suffix == ".toml":
        return _read_pylock(path, _text(path, data))
    return _read_txt(path, _text(path, data), seen=set())


def _text(path: Path, data: bytes) -> str:
    """The file's text: UTF-8, with the byte-order mark editors on Windows write dropped
    (pip reads such files too)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RequirementsError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc


def unpinned(pins: list[Pin]) -> list[Pin]:
    return [p for p in pins if p.version is None]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    buf, start = "", 0
    for lineno, line in enumerate(text.splitlines(), 1):
        if not buf:
            start = lineno
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        out.append((start, buf + line))
        buf = ""
    if buf:
        out.append((start, buf))
    return out


def _strip_comment(line: str) -> str:
    for i, ch in enumerate(line):
        if ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def _read_txt(path: Path, text: str, *, seen: set[Path]) -> list[Pin]:
    seen.add(path.resolve())
    pins: list[Pin] = []
    for lineno, raw in _logical_lines(text):
        line = _strip_comment(raw)
        if not line:
            continue
        where = f"{path}:{lineno}"
        if line.startswith(("-r ", "--requirement ", "-r", "--requirement=")):
            included = _option_value(line, ("-r", "--requirement"), where)
            inc_path = (path.parent / included).resolve()
            data = stamp.watch_file(inc_path)
            if inc_path in seen:
                raise RequirementsError(f"{where}: recursive include of {included}")
            if data is None:
                raise RequirementsError(f"{where}: included file {included} not found")
            pins += _read_txt(inc_path, _text(inc_path, data), seen=seen)
            continue
        if line.startswith("-"):
            option = line.split()[0].split("=", 1)[0]
            raise RequirementsError(
                f"{where}: option not supported here: {option}",
                hint=_OPTION_HINTS.get(option, _INDEX_HINT),
            )
        pins.append(_parse_line(line, where))
    return pins


def _option_value(line: str, names: tuple[str, ...], where: str) -> str:
    for name in names:
        if line.startswith(name + "="):
            return line[len(name) + 1 :].strip()
        if line.startswith(name):
            rest = line[len(name) :].strip()
            if rest:
                return rest
    raise RequirementsError(f"{where}: {names[0]} needs a file name")


_OPTION = re.compile(r"(?:^|\s)(--?[A-Za-z][\w-]*)(?:[= ]\s*(\S+))?")


_INDEX_HINT = "set the upstream index in config/prewheel.toml ([index] upstream)"
_LOCAL_HINT = (
    "prewheel builds pinned releases from the upstream index; build a local project with "
    "`python -m build --wheel` in its own stage, or publish its sdist to the index and pin it"
)
_CONSTRAINT_HINT = "pin the versions in the requirements file itself (`name==version`)"
# What to do instead, for the pip options a requirements file may hold.
_OPTION_HINTS = {
    "-e": _LOCAL_HINT,
    "--editable": _LOCAL_HINT,
    "-c": _CONSTRAINT_HINT,
    "--constraint": _CONSTRAINT_HINT,
    "-f": _INDEX_HINT,
    "--find-links": _INDEX_HINT,
}


def _parse_line(line: str, where: str) -> Pin:
    """A requirement followed by options; only `--hash=sha256:...` options are allowed."""
    m = re.search(r"(?:^|\s)--?[A-Za-z]", line)
    text, options = (line[: m.start()], line[m.start() :]) if m else (line, "")
    hashes: set[str] = set()
    for opt in _OPTION.finditer(options):
        name, value = opt.group(1), opt.group(2) or ""
        if name != "--hash":
            raise RequirementsError(f"{where}: unsupported option {name!r}")
        algo, _, digest = value.partition(":")
        if algo != "sha256" or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            raise RequirementsError(
                f"{where}: only --hash=sha256:<64 hex digits> is supported, got {value!r}"
            )
        hashes.add(digest.lower())
    text = text.strip()
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise RequirementsError(f"{where}: not a valid requirement: {text!r} ({exc})") from exc
    if req.url:
        raise RequirementsError(f"{where}: direct URL requirements are not supported: {text!r}")
    return Pin(
        name=canonicalize_name(req.name),
        requirement=str(req),
        version=_pinned_version(req),
        hashes=frozenset(hashes),
        marker=str(req.marker) if req.marker else None,
        where=where,
    )


def _pinned_version(req: Requirement) -> str | None:
    specs = list(req.specifier)
    if len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version:
        return specs[0].version
    return None


def _read_pylock(path: Path, text: str) -> list[Pin]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RequirementsError(f"{path}: not valid TOML: {exc}") from exc
    packages = data.get("packages")
    if not isinstance(packages, list):
        raise RequirementsError(f"{path}: no [[packages]] array")
    pins: list[Pin] = []
    for i, pkg in enumerate(packages):
        where = f"{path}:packages[{i}]"
        if not isinstance(pkg, dict) or "name" not in pkg:
            raise RequirementsError(f"{where}: a package needs a name")
        name, version = str(pkg["name"]), pkg.get("version")
        if not isinstance(version, str):
            raise RequirementsError(f"{where}: {name} has no version (pylock entries must pin)")
        marker = pkg.get("marker")
        if marker is not None:
            Marker(marker)
        hashes: set[str] = set()
        files = [pkg.get("sdist"), *pkg.get("wheels", [])]
        for f in files:
            if isinstance(f, dict):
                digest = f.get("hashes", {}).get("sha256")
                if digest:
                    hashes.add(str(digest).lower())
        req = f"{name}=={version}" + (f"; {marker}" if marker else "")
        pins.append(
            Pin(
                name=canonicalize_name(name),
                requirement=req,
                version=version,
                hashes=frozenset(hashes),
                marker=marker,
                where=where,
            )
        )
    return pins
