"""Each target's closure: resolved (uv or pip; every target at once), kept in the wheelhouse's
cache keyed on the requirements, the config and the target, and reused while the index pages
of its members are unchanged.

Resolving takes seconds to minutes; a warm run should take neither. A closure whose every
member the input pins cannot change: it is reused without asking anything. Any other closure
can change when upstream does, so a warm run asks the index, with one conditional request per
member's page (ETag / If-Modified-Since), whether any changed, and resolves again only when
one did. Pages of projects outside the closure cannot change its answer unless a member's
page changes first (a new version, a new dependency), so they are not asked about.

uv's answer names each member's files for the target's interpreter: where those settle what
the plan takes (a wheel the target accepts), the member's page is only hashed for its
validator, never parsed; pip's answer, or a member those files do not settle, has its page
read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

from packaging import tags
from packaging.version import Version

from ..config import Config
from ..errors import WheelhouseWriteError
from ..requirements import Pin
from ..sandbox import Policy, policy
from ..targets import Target
from ..targets.policy import platforms
from ..threads import in_threads
from ..upstream import UpstreamFile, Validator, page_validator, project_page, unchanged
from ..wheelhouse import Wheelhouse, atomic_write_json
from . import constraints
from .resolve import AheadWheels, Answer, Resolved, resolve_closure

Progress: TypeAlias = Callable[[str], None]
Closure: TypeAlias = tuple[list[Resolved], dict[str, list[UpstreamFile]]]
# A closure as resolved: with the validators of the pages it was read from.
Resolution: TypeAlias = tuple[list[Resolved], dict[str, list[UpstreamFile]], list[Validator]]

CACHE_FORMAT = 2
# Index pages read at once: each is one small request, mostly waiting on the network.
PAGE_THREADS = 16


def _quiet(_: str) -> None:
    pass


def sandbox_policy(config: Config, wh: Wheelhouse) -> Policy:
    """The sandbox of every run of package code for this config and wheelhouse."""
    return policy(config.sandbox, memory=config.memory, wheelhouse=wh.root)


def upstream_files(upstreams: tuple[str, ...], name: str) -> list[UpstreamFile] | None:
    """A project's files on every index of `upstreams`; None when none knows it."""
    found = [project_page(u, name)[0] for u in upstreams]
    if all(f is None for f in found):
        return None
    return [f for files in found for f in files or ()]


def _pages(
    upstreams: tuple[str, ...], closure: Iterable[Resolved]
) -> tuple[dict[str, list[UpstreamFile]], list[Validator]]:
    """Each member's files at its version, and the validators of every page read."""
    members = list(closure)
    pairs = [(u, r.name) for r in members for u in upstreams]
    read = in_threads(lambda p: project_page(*p), pairs, PAGE_THREADS)
    pages = dict(zip(pairs, read, strict=True))
    files = {
        r.name: [
            f
            for u in upstreams
            for f in pages[(u, r.name)][0] or ()
            if f.version == Version(r.version)
        ]
        for r in members
    }
    return files, [pages[p][1] for p in pairs]


def settled_by_answer(
    target: Target, files: list[UpstreamFile] | None, *, force_build: bool, hashes: bool
) -> bool:
    """Whether uv's files for a member choose what its page's files would: a wheel the
    target accepts is among them (uv lists every wheel the interpreter accepts, the target's
    tags being a part of those), or the member is built and uv named its `.tar.gz` sdist.
    `--hash` pins choose among every file of the page: those members read it."""
    if files is None or hashes:
        return False
    if not force_build and any(f.is_wheel and target.accepts(f.filename) for f in files):
        return True
    return any(f.is_sdist and f.filename.endswith(".tar.gz") for f in files)


def answer_covers(target: Target, upstreams: tuple[str, ...]) -> bool:
    """Whether uv's answer can stand for the pages at all: one index (with more, the pages
    of all are merged, uv takes one), and every platform of the target's policy one the
    interpreter accepts on this machine (uv lists the wheels for the interpreter)."""
    if len(upstreams) != 1:
        return False
    here = set(tags.platform_tags())
    return all(p in here for p in platforms(target.policy))


def _files(
    target: Target,
    pins: list[Pin],
    config: Config,
    answer: Answer,
    *,
    validators: bool,
    say: Progress,
) -> tuple[dict[str, list[UpstreamFile]], list[Validator]]:
    """Each member's files: uv's where they settle the plan's choice, else its page's; and
    the validator of every member's page (`validators`: a closure the pins fix needs none)."""
    upstreams = config.upstreams(target.accel)
    given = answer.files if answer.files is not None and answer_covers(target, upstreams) else {}
    hashed = {p.name for p in pins if p.hashes}
    settled = {
        r.name
        for r in answer.closure
        if settled_by_answer(
            target,
            given.get(r.name),
            force_build=config.package(r.name).force_build,
            hashes=r.name in hashed,
        )
    }
    unsettled = [r for r in answer.closure if r.name not in settled]
    if unsettled:
        say(f"{target.name}: reading the index pages of {len(unsettled)} project(s)")
    files, read = _pages(upstreams, unsettled)
    files.update({n: given[n] for n in settled})
    if not validators:
        return files, []
    hashed_only = [(u, n) for n in sorted(settled) for u in upstreams]
    if hashed_only:
        say(f"{target.name}: noting the state of {len(hashed_only)} index page(s)")
    return files, read + in_threads(lambda p: page_validator(*p), hashed_only, PAGE_THREADS)


def still_valid(validators: Sequence[Validator]) -> bool:
    """Whether every page is as it was (conditional requests, side by side)."""
    return all(in_threads(unchanged, validators, PAGE_THREADS))


def resolution_key(target: Target, pins: list[Pin], config: Config) -> str:
    """What a resolution depends on: the requirements (with their --hash pins: a lock that
    changes a file's hash must not reuse the cached listing that still names the old bytes),
    the interpreter, the indexes and the resolver."""
    assert target.interpreter is not None
    return hashlib.sha256(
        json.dumps(
            {
                "pins": sorted(f"{p.requirement} {sorted(p.hashes)}" for p in pins),
                "interpreter": [str(target.interpreter.path), list(target.interpreter.version)],
                "upstream": list(config.upstreams(target.accel)),
                "resolver": config.resolver,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()


# Closures resolved in this process: targets that differ only in accelerator or policy share
# an interpreter, hence a closure (markers cannot see the accelerator); resolve it once.
_RESOLVED: dict[str, Closure] = {}
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _lock(key: str) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(key, threading.Lock())


def _read(data: dict[str, Any]) -> Closure:
    return [Resolved(**r) for r in data["closure"]], {
        n: [UpstreamFile.from_json(f) for f in fs] for n, fs in data["files"].items()
    }


def _cached(path: Path, *, target: Target, progress: Progress) -> Closure | None:
    """The cached closure when it still holds: pinned, or every page unchanged."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        return None
    if data["pinned"]:
        return _read(data)
    validators = [Validator.from_json(v) for v in data["validators"]]
    progress(f"{target.name}: asking the index whether {len(validators)} page(s) changed")
    if still_valid(validators):
        return _read(data)
    progress(f"{target.name}: the index changed since the closure was resolved")
    return None


def resolve_cached(
    target: Target,
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    *,
    refresh: bool,
    progress: Progress = _quiet,
    write: bool | None = None,
    ahead: Callable[[], AheadWheels] | None = None,
) -> Closure:
    """The closure and each member's upstream files: from the wheelhouse's cache while it
    holds (`refresh` resolves again anyway), else resolved and cached (`write`; by default
    when the wheelhouse exists: `plan` alone creates none). A resolution starts the builds
    `ahead` of it at once (the resolver reads their wheels when it needs package code run)."""
    key = resolution_key(target, pins, config)
    path = wh.root / "cache" / f"resolve-{key}.json"
    with _lock(key):
        if not refresh and key in _RESOLVED:
            return _RESOLVED[key]
        found = None if refresh else _cached(path, target=target, progress=progress)
        if found is None:
            keep = write if write is not None else wh.root.is_dir()
            built = ahead() if ahead is not None else None
            fresh = _resolve(target, pins, config, wh, progress, validators=keep, ahead=built)
            if keep:
                _write(path, fresh, pins)
            found = fresh[:2]
        _RESOLVED[key] = found
        return found


def _resolve(
    target: Target,
    pins: list[Pin],
    config: Config,
    wh: Wheelhouse,
    say: Progress,
    *,
    validators: bool,
    ahead: AheadWheels | None = None,
) -> Resolution:
    """The closure, its members' files, and (`validators`: for a resolution to be kept) the
    validators of their pages."""
    upstreams = config.upstreams(target.accel)
    say(f"{target.name}: {config.resolver} resolves {len(pins)} pin(s) against "
        f"{' + '.join(upstreams)}")  # fmt: skip
    answer = resolve_closure(
        target,
        pins,
        upstreams,
        policy=sandbox_policy(config, wh),
        timeout=config.resolve_timeout,
        resolver=config.resolver,
        ahead=ahead,
    )
    closure = answer.closure
    # A closure the config's `requires` refuse is bad input: refused before it is cached.
    constraints.check(target, {r.name: r.version for r in closure}, config, pins)
    keep = validators and not _pinned(closure, pins)
    return (closure, *_files(target, pins, config, answer, validators=keep, say=say))


def _pinned(closure: list[Resolved], pins: list[Pin]) -> bool:
    """Whether the input pins the whole closure (no page can change it)."""
    return {r.name for r in closure} <= {p.name for p in pins if p.version}


def _write(path: Path, found: Resolution, pins: list[Pin]) -> None:
    closure, files, validators = found
    pinned = _pinned(closure, pins)
    with contextlib.suppress(WheelhouseWriteError):  # read-only: resolved again next time
        atomic_write_json(
            path,
            {
                "format": CACHE_FORMAT,
                "pinned": pinned,
                "closure": [
                    {"name": r.name, "version": r.version, "requested": r.requested}
                    for r in closure
                ],
                "files": {n: [f.to_json() for f in fs] for n, fs in files.items()},
                "validators": [] if pinned else [v.to_json() for v in validators],
            },
        )
