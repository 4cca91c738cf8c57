"""Reading and rewriting wheels: one place that knows the zip layout."""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from packaging.metadata import Metadata
from packaging.utils import canonicalize_name, parse_wheel_filename

from .errors import StepError, WheelhouseError


def dist_info_dir(zf: zipfile.ZipFile) -> str:
    names = {n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")}
    if len(names) != 1:
        raise WheelhouseError(f"{zf.filename}: expected one .dist-info directory, found {names}")
    return names.pop()


def dist_info_name(wheel: Path) -> str:
    """The wheel's `.dist-info` directory name."""
    with zipfile.ZipFile(wheel) as zf:
        return dist_info_dir(zf)


def read_metadata(wheel: Path) -> bytes:
    """The exact METADATA bytes of a wheel (served as PEP 658 `.metadata`)."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(f"{dist_info_dir(zf)}/METADATA")


def top_level_modules(wheel: Path) -> list[str]:
    """Importable top-level names: those of top_level.txt the wheel holds (it lists what the
    project declared, an optional extension that did not build included); all it lists when
    it holds none of them (a broken wheel, which the import shows); else what it holds."""
    with zipfile.ZipFile(wheel) as zf:
        di = dist_info_dir(zf)
        names = zf.namelist()
        listed = (
            zf.read(f"{di}/top_level.txt").decode().split()
            if f"{di}/top_level.txt" in names
            else []
        )
    present = _present_modules(names)
    declared = {n.replace("/", ".") for n in listed if n}
    kept = {n for n in declared if n.split(".")[0] in present}
    return sorted(kept or declared or present)


def _present_modules(names: list[str]) -> set[str]:
    """The top-level modules and packages among a wheel's members."""
    mods: set[str] = set()
    for n in names:
        first = n.split("/")[0]
        if first.endswith((".dist-info", ".data")) or first.endswith(".libs"):
            continue
        if "/" in n:
            if (n.count("/") == 1 and n.endswith("/__init__.py")) or first.isidentifier():
                mods.add(first)
        elif n.endswith(".py"):
            mods.add(n[:-3])
        elif n.endswith(".so"):
            mods.add(n.split(".")[0])
    return {m for m in mods if m.isidentifier()}


def member_sizes(wheel: Path) -> dict[str, int]:
    """Each file in the wheel and its uncompressed size."""
    with zipfile.ZipFile(wheel) as zf:
        return {i.filename: i.file_size for i in zf.infolist() if not i.is_dir()}


def is_shared_object(member: str) -> bool:
    """`pkg/_ext.cpython-312-x86_64-linux-gnu.so`, `pkg.libs/libfoo-1a2b3c4d.so.1.2`."""
    base = member.rsplit("/", 1)[-1]
    return base.endswith(".so") or ".so." in base


def is_pure(wheel: Path) -> bool:
    _, _, _, wtags = parse_wheel_filename(wheel.name)
    return all(t.platform == "any" for t in wtags)


def is_abi3(wheel: Path) -> bool:
    return any(t.abi == "abi3" for t in parse_wheel_filename(wheel.name)[3])


def requires_names(wheel: Path) -> set[str] | None:
    """The names a wheel requires (any extra or marker: a superset), or None when its
    metadata cannot be read."""
    try:
        meta = Metadata.from_email(read_metadata(wheel), validate=False)
        return {canonicalize_name(r.name) for r in meta.requires_dist or ()}
    except Exception:  # unreadable metadata: the caller decides what that means
        return None


# The oldest time a zip member can carry (1980-01-01); SOURCE_DATE_EPOCH below it is raised.
ZIP_EPOCH = 315532800


def set_build_tag(
    wheel: Path,
    build_tag: str,
    outdir: Path,
    *,
    epoch: int | None = None,
    extra: Mapping[str, bytes] | None = None,
    platforms: Sequence[str] = (),
) -> Path:
    """Write a copy of `wheel` whose file name and WHEEL file carry `build_tag`, with the
    `extra` members (`.dist-info/...` paths relative to the dist-info directory) added;
    `platforms`, when given, replace its platform tags (in the name and the `Tag:` lines).

    The one place a wheel is rewritten: unpacked, its RECORD written again, re-zipped
    normalised (`normalised_zip`) with member times from `epoch` (the build's
    SOURCE_DATE_EPOCH; else the environment's), so the same inputs give the same bytes.
    """
    parse_wheel_filename(wheel.name)  # validates
    parts = wheel.name[:-4].split("-")
    if platforms:
        parts[-1] = ".".join(platforms)
    tag_part = "-".join(parts[-3:])
    new_name = f"{parts[0]}-{parts[1]}-{build_tag}-{tag_part}.whl"
    out = outdir / new_name
    with zipfile.ZipFile(wheel) as src:
        di = dist_info_dir(src)
        skip = {f"{di}/RECORD", *(f"{di}/{n}" for n in extra or {})}
        files = {
            i.filename: (_mode(i), src.read(i))
            for i in src.infolist()
            if not i.is_dir() and i.filename not in skip
        }
    wheel_file = f"{di}/WHEEL"
    if wheel_file in files:
        mode, data = files[wheel_file]
        lines = [ln for ln in data.decode().splitlines() if not ln.startswith("Build:")]
        if platforms:
            lines = _with_platforms(lines, platforms)
        lines.append(f"Build: {build_tag}")
        files[wheel_file] = (mode, ("\n".join(lines) + "\n").encode())
    for name, data in (extra or {}).items():
        files[f"{di}/{name}"] = (0o644, data)
    if epoch is None:
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH", str(ZIP_EPOCH)))
    normalised_zip(files, di, out, epoch=epoch)
    return out


def _with_platforms(lines: list[str], platforms: Sequence[str]) -> list[str]:
    """WHEEL's lines with each `Tag: py-abi-platform` line made one per `platforms`."""
    out: list[str] = []
    for ln in lines:
        if not ln.startswith("Tag:"):
            out.append(ln)
            continue
        py, abi, _ = ln.partition(":")[2].strip().split("-")
        out += [t for p in platforms if (t := f"Tag: {py}-{abi}-{p}") not in out]
    return out


def _mode(info: zipfile.ZipInfo) -> int:
    """0o755 for a member any execute bit is set on, else 0o644: the umask of the build
    machine never reaches the wheel."""
    return 0o755 if (info.external_attr >> 16) & 0o111 else 0o644


def _member_order(name: str, di: str) -> tuple[int, str]:
    """Sorted by name, the `.dist-info` files after the rest and RECORD last (the wheel
    spec's recommendation, so a streaming installer sees the files before their record)."""
    if name == f"{di}/RECORD":
        return (2, name)
    return (1 if name.startswith(f"{di}/") else 0, name)


def normalised_zip(
    files: Mapping[str, tuple[int, bytes]], di: str, out: Path, *, epoch: int
) -> None:
    """Write `files` ({member: (mode, bytes)}) as a wheel at `out`, atomically: a fresh
    RECORD, members in a fixed order, every time `epoch`, modes 0o644/0o755, no directory
    entries, deflate at one level. Nothing of the machine or the moment reaches the bytes."""
    body = {n: v for n, v in files.items() if n != f"{di}/RECORD"}
    record_lines = []
    for name in sorted(body, key=lambda n: _member_order(n, di)):
        data = body[name][1]
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{name},sha256={digest},{len(data)}")
    record_lines.append(f"{di}/RECORD,,")
    body[f"{di}/RECORD"] = (0o644, ("\n".join(record_lines) + "\n").encode())
    date_time = time.gmtime(max(epoch, ZIP_EPOCH))[:6]
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as dst:
        for name in sorted(body, key=lambda n: _member_order(n, di)):
            mode, data = body[name]
            zi = zipfile.ZipInfo(name, date_time=date_time)
            zi.external_attr = (0o100000 | mode) << 16
            zi.create_system = 3  # Unix, whatever the host: the mode bits are read as such
            zi.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(zi, data, compress_type=zipfile.ZIP_DEFLATED, compresslevel=6)
    tmp.replace(out)


def member_digests(wheel: Path) -> dict[str, str]:
    """Each file of a wheel and the sha256 of its bytes: what two builds are compared by."""
    with zipfile.ZipFile(wheel) as zf:
        return {
            i.filename: hashlib.sha256(zf.read(i)).hexdigest()
            for i in zf.infolist()
            if not i.is_dir()
        }


def read_member(wheel: Path, name: str) -> bytes | None:
    """One member's bytes, or None when the wheel lacks it."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(name)
        except KeyError:
            return None


_SIGNATURES = ("RECORD", "RECORD.jws", "RECORD.p7s")
_WEAK = ("md5", "sha1")


def _member_problem(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if not name or "\x00" in name or "\\" in name or name.startswith("/") or ":" in name[:2]:
        return "is not a relative path"
    if ".." in name.split("/"):
        return "climbs out of the install directory"
    kind = (info.external_attr >> 16) & 0o170000
    if kind not in (0, 0o100000, 0o040000):
        return "is a link or a special file"
    return None


def check_wheel(path: Path) -> None:
    """Refuse a wheel that would install anything outside its place, or whose RECORD does
    not hold its members: every member a relative path inside the tree (no `..`, no absolute
    path, no link, no device), no name twice, one `.dist-info`, and every file listed in
    RECORD with the sha256 (or stronger) and the size of its bytes. A downloaded wheel is
    someone else's archive: checked like this before it is published."""
    where = path.name
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            seen: set[str] = set()
            for info in infos:
                problem = _member_problem(info)
                if problem:
                    raise StepError(f"{where}: member {info.filename!r} {problem}", step="check")
                if info.filename in seen:
                    raise StepError(f"{where}: member {info.filename!r} twice", step="check")
                seen.add(info.filename)
            di = dist_info_dir(zf)
            rows = _record_rows(zf.read(f"{di}/RECORD").decode("utf-8"), where)
            for info in infos:
                if info.is_dir() or info.filename in {f"{di}/{s}" for s in _SIGNATURES}:
                    continue
                row = rows.get(info.filename)
                if row is None:
                    raise StepError(f"{where}: {info.filename} is not in RECORD", step="check")
                _check_row(zf, info, row, where)
            missing = sorted(set(rows) - seen)
            if missing:
                raise StepError(
                    f"{where}: RECORD lists files the wheel lacks: {', '.join(missing[:5])}",
                    step="check",
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, KeyError, UnicodeDecodeError) as exc:
        raise StepError(f"{where}: not a valid wheel: {exc}", step="check") from exc
    except WheelhouseError as exc:
        raise StepError(exc.message, step="check") from exc


def _record_rows(text: str, where: str) -> dict[str, tuple[str, str]]:
    rows: dict[str, tuple[str, str]] = {}
    for row in csv.reader(text.splitlines()):
        if not row:
            continue
        if len(row) != 3:
            raise StepError(f"{where}: RECORD row {row!r} is not path,hash,size", step="check")
        path, digest, size = row
        rows[path] = (digest, size)
    return rows


def _check_row(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, row: tuple[str, str], where: str
) -> None:
    digest, size = row
    algo, _, expected = digest.partition("=")
    if algo not in hashlib.algorithms_guaranteed or algo in _WEAK or not expected:
        raise StepError(
            f"{where}: RECORD gives {info.filename} no usable hash ({digest!r})", step="check"
        )
    h = hashlib.new(algo)
    length = 0
    with zf.open(info) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            length += len(chunk)
    actual = base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()
    if actual != expected or (size and size != str(length)):
        raise StepError(
            f"{where}: {info.filename} does not match its RECORD hash and size", step="check"
        )
