"""Reading and rewriting wheels: one place that knows the zip layout."""

from __future__ import annotations

import base64
import hashlib
import os
import time
import zipfile
from pathlib import Path

from packaging.metadata import Metadata
from packaging.utils import canonicalize_name, parse_wheel_filename

from .errors import WheelhouseError


def dist_info_dir(zf: zipfile.ZipFile) -> str:
    names = {n.split("/")[0] for n in zf.namelist() if n.split("/")[0].endswith(".dist-info")}
    if len(names) != 1:
        raise WheelhouseError(f"{zf.filename}: expected one .dist-info directory, found {names}")
    return names.pop()


def read_metadata(wheel: Path) -> bytes:
    """The exact METADATA bytes of a wheel (served as PEP 658 `.metadata`)."""
    with zipfile.ZipFile(wheel) as zf:
        return zf.read(f"{dist_info_dir(zf)}/METADATA")


def top_level_modules(wheel: Path) -> list[str]:
    """Importable top-level names: top_level.txt if present, else what the RECORD holds."""
    with zipfile.ZipFile(wheel) as zf:
        di = dist_info_dir(zf)
        names = zf.namelist()
        if f"{di}/top_level.txt" in names:
            listed = zf.read(f"{di}/top_level.txt").decode().split()
            found = [n for n in listed if n]
            if found:
                return sorted({n.replace("/", ".") for n in found})
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
    return sorted(m for m in mods if m.isidentifier())


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


def set_build_tag(wheel: Path, build_tag: str, outdir: Path) -> Path:
    """Write a copy of `wheel` whose file name and WHEEL file carry `build_tag`.

    The copy is re-zipped deterministically with a fresh RECORD.
    """
    parse_wheel_filename(wheel.name)  # validates
    parts = wheel.name[:-4].split("-")
    tag_part = "-".join(parts[-3:])
    new_name = f"{parts[0]}-{parts[1]}-{build_tag}-{tag_part}.whl"
    out = outdir / new_name
    with zipfile.ZipFile(wheel) as src:
        di = dist_info_dir(src)
        entries = [(i, src.read(i)) for i in src.infolist() if i.filename != f"{di}/RECORD"]
    rewritten: list[tuple[zipfile.ZipInfo, bytes]] = []
    for info, data in entries:
        if info.filename == f"{di}/WHEEL":
            lines = [ln for ln in data.decode().splitlines() if not ln.startswith("Build:")]
            lines.append(f"Build: {build_tag}")
            data = ("\n".join(lines) + "\n").encode()
        rewritten.append((info, data))
    record_lines = []
    for info, data in rewritten:
        if info.is_dir():
            continue  # RECORD lists files only; auditwheel reads a directory row as a file
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record_lines.append(f"{info.filename},sha256={digest},{len(data)}")
    record_lines.append(f"{di}/RECORD,,")
    rewritten.append((zipfile.ZipInfo(f"{di}/RECORD"), ("\n".join(record_lines) + "\n").encode()))
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "315532800"))
    date_time = time.gmtime(max(epoch, 315532800))[:6]
    tmp = out.with_name(out.name + ".part")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as dst:
        for info, data in rewritten:
            zi = zipfile.ZipInfo(info.filename, date_time=date_time)
            zi.external_attr = info.external_attr or (0o644 << 16)
            zi.compress_type = zipfile.ZIP_DEFLATED
            dst.writestr(zi, data)
    tmp.replace(out)
    return out
