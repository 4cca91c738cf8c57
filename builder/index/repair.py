"""`index check --repair`: make the wheelhouse true again, and say what was done.

What `check` finds is removed or published again, never guessed at:

- a publish a killed builder left half done: finished (its journal);
- temp files of killed writers, and builds staged for other builders that nobody holds: removed;
- a catalog entry whose file is missing or damaged: dropped, with the damaged file (the next
  build makes or downloads it again: the plan never calls it cached);
- a `.metadata` file missing or not the wheel's: written again from the wheel;
- a wheel in the store that no catalog lists: published again when a build record names it
  and it passes the wheel checks (a builder lost its catalog entry), removed otherwise; stray
  `.metadata` and other files: removed;
- every accelerator's pages: regenerated from the catalog.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from packaging.utils import canonicalize_name, parse_wheel_filename

from .. import locks
from ..errors import StepError
from ..records import ANY_ACCEL
from ..wheelfile import check_wheel, read_metadata
from ..wheelhouse import TEMP_SUFFIX, Wheelhouse, atomic_write_bytes, sha256_file
from .tree import rebuild, recover, update_project


def repair(wh: Wheelhouse) -> list[str]:
    """Repair `wh`; one line per thing done."""
    done = recover(wh)
    for leftover in wh.leftovers():
        leftover.unlink(missing_ok=True)
        done.append(f"removed {leftover.relative_to(wh.root)} (left by a killed writer)")
    done += _staging(wh)
    done += _entries(wh)
    done += _strays(wh)
    rebuild(wh)
    done.append("regenerated every index page and the status page from the catalog")
    return done


def _staging(wh: Wheelhouse) -> list[str]:
    done = []
    for d in sorted(wh.staging_dir.iterdir()) if wh.staging_dir.is_dir() else []:
        with locks.attempt(wh.root / ".locks" / f"build-{d.name}.lock") as free:
            if free:
                shutil.rmtree(d, ignore_errors=True)
                done.append(f"removed {d.relative_to(wh.root)} (a staged build nobody holds)")
    return done


def _entries(wh: Wheelhouse) -> list[str]:
    done = []
    for project, e in list(wh.all_entries()):
        path = wh.root / e.path
        digest = sha256_file(path) if path.is_file() else None
        if digest != e.sha256:
            why = "missing" if digest is None else "damaged"
            wh.remove_entry(project, e.filename)
            if digest is not None:
                path.unlink(missing_ok=True)
            path.with_name(path.name + ".metadata").unlink(missing_ok=True)
            update_project(wh, project)
            done.append(
                f"dropped {e.filename} from the catalog: its file is {why} "
                "(the next build makes it again)"
            )
            continue
        meta = path.with_name(path.name + ".metadata")
        wanted = read_metadata(path)
        if not meta.is_file() or meta.read_bytes() != wanted:
            atomic_write_bytes(meta, wanted)
            done.append(f"wrote {meta.relative_to(wh.root)} again from the wheel")
    return done


def _strays(wh: Wheelhouse) -> list[str]:
    done = []
    known = {e.path for _, e in wh.all_entries()}
    files = sorted(wh.files_dir.rglob("*")) if wh.files_dir.is_dir() else []
    for f in files:
        if f.is_dir() or f.name.endswith(TEMP_SUFFIX):
            continue
        rel = str(f.relative_to(wh.root))
        if f.name.endswith(".whl") and rel not in known:
            if _publish_again(wh, f):
                done.append(f"published {rel} again (a build record names it)")
            else:
                f.unlink(missing_ok=True)
                done.append(f"removed {rel} (in no catalog, and no build record names it)")
        elif f.name.endswith(".whl.metadata") and rel.removesuffix(".metadata") not in known:
            if not f.with_name(f.name.removesuffix(".metadata")).is_file():
                f.unlink(missing_ok=True)
                done.append(f"removed {rel} (its wheel is gone)")
        elif not f.name.endswith((".whl", ".whl.metadata")):
            f.unlink(missing_ok=True)
            done.append(f"removed {rel} (a stray file)")
    for d in sorted(wh.root.glob("*/simple/*")):
        for f in sorted(d.iterdir()) if d.is_dir() else []:
            if f.name not in ("index.html", "index.json") and not f.name.endswith(TEMP_SUFFIX):
                f.unlink(missing_ok=True)
                done.append(f"removed {f.relative_to(wh.root)} (a stray file)")
    return done


def _publish_again(wh: Wheelhouse, wheel: Path) -> bool:
    """Publish a wheel the catalog lost, when a successful build record names it, it sits
    where its bytes say and it passes the wheel checks."""
    name = parse_wheel_filename(wheel.name)[0]
    digest = sha256_file(wheel)
    if wheel.parent.name != digest[:2]:
        return False
    record = next(
        (
            r
            for r in wh.records(str(canonicalize_name(name)))
            if r.result == "ok" and r.wheel == wheel.name and r.sha256 in (None, digest)
        ),
        None,
    )
    if record is None:
        return False
    with contextlib.suppress(StepError):
        check_wheel(wheel)
        accel = record.inputs.accel
        wh.publish(
            wheel,
            origin="built",
            accels=None if accel == ANY_ACCEL else (accel,),
            cache_key=record.cache_key,
            sha256=digest,
            pages=lambda project: update_project(wh, project),
        )
        return True
    return False
