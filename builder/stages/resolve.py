"""Resolving the pinned closure with the target's own interpreter: uv's resolver (seconds),
or pip's (the reference; `[index] resolver = "pip"`). uv answers with a pylock (PEP 751):
each member's version and the files it would install for this interpreter, so those need
not be read from the index again."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import re
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from packaging.utils import NormalizedName, canonicalize_name, parse_wheel_filename

from .. import scratch, stamp, tools
from ..cmd import run, uv_env
from ..config import RESOLVERS
from ..errors import CommandError, CommandTimeout, HashMismatchError, ResolutionError
from ..indexproxy import IndexProxy
from ..log import get_logger
from ..requirements import Pin
from ..sandbox import Policy, interpreter_paths
from ..targets import Target
from ..upstream import UpstreamFile, file_from_lock
from .fetch import fetch_ahead

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class AheadWheels(Protocol):
    """The wheels of some of the pins, built before resolving (`plan.start_ahead`): the
    resolver reads their metadata instead of running the sdists' metadata hooks. Asked (it
    may wait for the builds) only when the resolution needs package code run."""

    def ready(self, each: Callable[[Path], None] | None = None) -> list[Path]:
        """The wheels built by the time every build is done, or a slot is free while some
        still compile, or a while has passed; `each` hears every wheel as it comes."""

    def built(self) -> list[Path]:
        """The wheels built by now (no waiting)."""

    def pending(self) -> bool:
        """Whether some build is still under way."""

    def wait_all(self, until: threading.Event) -> bool:
        """Wait for the last build; False where `until` is set first."""


@dataclass(frozen=True, kw_only=True)
class Resolved:
    name: str
    version: str
    requested: bool


@dataclass(frozen=True, kw_only=True)
class Answer:
    """A resolver's answer: the closure and, from uv, each member's files as uv lists them
    (`files` None from pip): the wheels this interpreter accepts, and the sdist unless uv
    resolved with `--no-build`."""

    closure: list[Resolved]
    files: dict[str, list[UpstreamFile]] | None


def resolve_closure(
    target: Target,
    pins: list[Pin],
    upstreams: tuple[str, ...],
    *,
    policy: Policy,
    timeout: float,
    resolver: str = "uv",
    ahead: AheadWheels | None = None,
) -> Answer:
    """The closure of `pins` for `target`, with its own interpreter: `uv pip compile
    --python` (seconds) or `pip install --dry-run --ignore-installed --report` (the
    reference), against the target accelerator's indexes (the first, then the extra ones,
    searched as one pool, as pip does).

    Where uv fails (not for a timeout or a hash mismatch), pip's resolver tries: uv refuses
    some sdists that pip prepares, and an sdist that is bad is then refused at its own
    build, package by package, instead of failing the whole resolution.

    Markers are evaluated for that interpreter, so each target gets its own closure. Both
    resolvers run an sdist's build hooks to read its metadata when the index has none
    (PEP 658), so they run in the sandbox: no network but the upstream index through
    `IndexProxy`, no secrets, nothing writable but their own directory, and `timeout`
    seconds at most. Where the pins' own wheels were built `ahead`, the resolver reads those
    (`--find-links`) instead of preparing their metadata: when no other sdist is in the way,
    uv then resolves with no package code run at all.
    """
    assert resolver in RESOLVERS, resolver  # the config checked it
    if resolver == "uv":
        try:
            return _resolve_once(target, pins, upstreams, policy, timeout, "uv", ahead)
        except _UvFailed as exc:
            log.warning(
                "uv could not resolve for %s (%s); pip's resolver tries instead",
                target.name,
                exc,
            )
    return _resolve_once(target, pins, upstreams, policy, timeout, "pip", ahead)


class _UvFailed(Exception):
    """uv failed where pip may not (an sdist uv refuses to unpack): pip gets its turn."""


def _resolve_once(
    target: Target,
    pins: list[Pin],
    upstreams: tuple[str, ...],
    policy: Policy,
    timeout: float,
    resolver: str,
    ahead: AheadWheels | None,
) -> Answer:
    assert target.interpreter is not None
    stamp.volatile(f"{resolver} to resolve the closure for {target.name}")
    scratch.clean_stale()  # what killed runs left
    uv = tools.require(tools.UV) if resolver == "uv" else None
    # The attempts without builds share a uv cache for this resolution (the interpreter's
    # description, and the pages where the index lets them be kept), apart from the
    # sandboxed resolution's directory: package code there must not write what they read.
    with (
        tempfile.TemporaryDirectory(prefix="resolve-") as tmp,
        tempfile.TemporaryDirectory(prefix="resolve-cache-") as cache,
    ):
        reqs = Path(tmp) / "requirements.txt"
        reqs.write_text("".join(p.requirement + "\n" for p in pins), encoding="utf-8")
        out = Path(tmp) / ("pylock.toml" if uv else "report.json")
        requested = {canonicalize_name(p.name) for p in pins}

        reading = _PageReading(uv, target, upstreams, Path(cache), timeout, pins)

        def without_builds(links: Sequence[Path]) -> Answer | None:
            if uv is None:
                return None
            attempt = functools.partial(
                _without_builds, uv, target, upstreams, reqs, out, Path(cache), timeout, links
            )
            # With the wheels built ahead, first from the pages this resolution read (a round
            # trip a page saved); where those do not hold the answer, from the index.
            if links:
                reading.wait()
            if not (links and attempt(offline=True)) and not attempt():
                return None
            return _from_uv(out.read_text(encoding="utf-8"), requested, out, links)

        def sandboxed(links: Sequence[Path], cancel: threading.Event | None) -> Answer:
            # Its own answer's file: a race's attempt without builds writes `out` meanwhile.
            own = out.with_name("pylock.sandboxed.toml") if uv else out
            return _in_sandbox(target, upstreams, policy, timeout, uv, reqs, own, requested,
                               links, cancel)  # fmt: skip

        try:
            answer = without_builds([])
            if answer is not None:
                return answer
            if ahead is None:
                return sandboxed([], None)
            links = _link_dirs(ahead.ready(reading.closure_of))
            if uv is not None and ahead.pending():
                # No attempt without builds now: it would need the wheels still compiling
                # (their sdists are why the first one failed), so it would fail, late.
                return _racing(functools.partial(sandboxed, links), ahead, without_builds)
            answer = without_builds(links) if links else None
            if answer is not None:
                return answer
            return sandboxed(_link_dirs(ahead.built()), None)
        except CommandTimeout as exc:
            raise ResolutionError(
                f"resolving for {target.name} ran past its time limit of {timeout:.0f}s and was "
                f"stopped ({resolver} runs the build hooks of sdists to read their metadata): "
                f"{_reason(exc.tail)}",
                hint="raise [build] timeout if resolving is just slow",
            ) from exc
        except CommandError as exc:
            if "DO NOT MATCH THE HASHES" in exc.tail or "Hash mismatch" in exc.tail:
                raise HashMismatchError(
                    f"{resolver} refused a file while resolving for {target.name}: its bytes do "
                    f"not match the sha256 the index gave: {_hash_lines(exc.tail)}",
                    step="resolve",
                    hint="the upstream file changed after the index listed it; nothing was "
                    "published",
                ) from exc
            if resolver == "uv" and _unsatisfiable(exc.tail):
                raise _unsatisfiable_error(target, exc.tail) from exc
            if resolver == "uv":
                raise _UvFailed(_reason(exc.tail)) from exc
            raise ResolutionError(
                f"{resolver} could not resolve the requirements for {target.name}: "
                f"{_reason(exc.tail)}{_subprocess_output(exc.tail)}",
                hint="check that every pin exists on the upstream index for this Python",
            ) from exc
        finally:
            reading.close()  # before its cache goes


class _PageReading:
    """The index pages of each wheel's closure, read into the resolution's cache as its build
    ahead ends, while others still compile: `uv pip compile --no-build` of the wheel's own
    pin. The resolution after the builds then answers from those pages (`--offline`) instead
    of reading them one round trip after another at the end; and the wheels of that closure
    are fetched meanwhile (`fetch.fetch_ahead`). The answer itself is not used; a failure
    only leaves a page unread."""

    def __init__(
        self,
        uv: Path | None,
        target: Target,
        upstreams: tuple[str, ...],
        cache: Path,
        timeout: float,
        pins: list[Pin],
    ) -> None:
        assert target.interpreter is not None
        self._uv = uv
        self._python = target.interpreter.path
        self._urls = list(upstreams)
        self._cache = cache
        self._timeout = timeout
        self._pins = {canonicalize_name(p.name): p.requirement for p in pins}
        self._pool: ThreadPoolExecutor | None = None
        self._reads: list[Future[None]] = []

    def closure_of(self, wheel: Path) -> None:
        """Start reading the pages of `wheel`'s closure (not waited for)."""
        requirement = self._pins.get(parse_wheel_filename(wheel.name)[0])
        if self._uv is None or requirement is None:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="pages")
        self._reads.append(
            self._pool.submit(contextvars.copy_context().run, self._read, requirement, wheel)
        )

    def _read(self, requirement: str, wheel: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="pages-") as tmp:
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text(requirement + "\n", encoding="utf-8")
            out = Path(tmp) / "pylock.toml"
            assert self._uv is not None
            argv = _uv_argv(
                self._uv, self._python, self._urls, reqs, out, self._cache, [wheel.parent]
            )
            argv.append("--no-build")
            try:
                run(argv, step="resolve", cwd=Path(tmp), env=uv_env(), timeout=self._timeout)
                found = _from_uv(out.read_text(encoding="utf-8"), set(), out, [wheel.parent])
            except (CommandError, ResolutionError, OSError):
                return
        # Its members' wheels, fetched meanwhile: the plan's downloads take them (one a
        # member, the one this interpreter takes; a member with several is left to the plan).
        for files in (found.files or {}).values():
            wheels = [f for f in files if f.is_wheel and f.url.startswith(("https:", "http:"))]
            if len(wheels) == 1:
                fetch_ahead(wheels[0])

    def wait(self) -> None:
        """Wait for the reads under way."""
        for read in self._reads:
            read.exception()  # done, whatever it found

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _link_dirs(wheels: list[Path]) -> list[Path]:
    return sorted({w.parent for w in wheels})


def _racing(
    sandboxed: Callable[[threading.Event], Answer],
    ahead: AheadWheels,
    without_builds: Callable[[Sequence[Path]], Answer | None],
) -> Answer:
    """The sandboxed resolution, started at once beside the builds ahead that still compile
    (a slot is free), raced against them: where they are all done first and their wheels let
    uv resolve without builds, that answer, and the sandboxed resolution (the metadata hooks
    of the sdists not built yet: seconds) is stopped; else the sandboxed answer."""
    cancel = threading.Event()
    done = threading.Event()

    def resolve() -> Answer:
        try:
            return sandboxed(cancel)
        finally:
            done.set()

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="resolve")
    try:
        racing = pool.submit(contextvars.copy_context().run, resolve)
        if ahead.wait_all(until=done) and not done.is_set():
            answer = without_builds(_link_dirs(ahead.built()))
            if answer is not None:
                log.debug("the builds ahead were done first: the metadata hooks were stopped")
                return answer
        return racing.result()
    finally:
        cancel.set()  # an answer not needed (or an error): its process tree ends
        pool.shutdown(wait=True)


def _in_sandbox(
    target: Target,
    upstreams: tuple[str, ...],
    policy: Policy,
    timeout: float,
    uv: Path | None,
    reqs: Path,
    out: Path,
    requested: set[NormalizedName],
    links: Sequence[Path],
    cancel: threading.Event | None,
) -> Answer:
    """The resolution that may run package code (metadata hooks), in the sandbox (the
    attempts without builds run none, and finding what isolation this machine allows starts
    processes of its own): it reads the index through `IndexProxy` where the sandbox has no
    network, and the wheels built ahead in `links`."""
    assert target.interpreter is not None
    tmp = out.parent
    box = policy.box(
        tmp,
        readable=[*interpreter_paths(target.interpreter.path), *links],
        index_socket=tmp / "index.sock",
    )
    urls = box.index_urls(upstreams)
    if uv is not None:
        argv = _uv_argv(uv, target.interpreter.path, urls, reqs, out, tmp / "uv-cache", links)
    else:
        argv = _pip_argv(target.interpreter.pip(), urls, reqs, out, links)
    socket = box.index_socket
    proxy = (
        IndexProxy(upstreams, socket, keep=scratch.kept_files()) if socket and box.proxied else None
    )
    with proxy or contextlib.nullcontext():
        run(argv, step="resolve", cwd=tmp, timeout=timeout, sandbox=box, cancel=cancel)
    text = out.read_text(encoding="utf-8")
    if uv is None:
        return Answer(closure=_from_pip(json.loads(text)), files=None)
    answer = _from_uv(text, requested, out, links)
    if proxy is None:  # uv read the upstream index itself: its URLs are the upstream's
        return answer
    # In the sandbox uv read the index through the proxy: the URLs it wrote name the
    # proxy's address, gone now; the proxy knows the upstream file each one stood for.
    return _upstream_files(answer, proxy)


def _upstream_files(answer: Answer, proxy: IndexProxy) -> Answer:
    """`answer` with its files' proxy URLs turned back into the upstream URLs they stood for
    (the sha256 uv checked stays); where any cannot be, no files (the pages give them)."""
    if answer.files is None:
        return Answer(closure=answer.closure, files=None)
    files: dict[str, list[UpstreamFile]] = {}
    for name, found in answer.files.items():
        files[name] = []
        for f in found:
            url = proxy.upstream_url(f.url)
            if url is None:
                return Answer(closure=answer.closure, files=None)
            files[name].append(replace(f, url=url))
    return Answer(closure=answer.closure, files=files)


def _without_builds(
    uv: Path,
    target: Target,
    upstreams: tuple[str, ...],
    reqs: Path,
    out: Path,
    cache: Path,
    timeout: float,
    links: Sequence[Path] = (),
    *,
    offline: bool = False,
) -> bool:
    """First, `uv pip compile --no-build` straight against the index (and the wheels built
    ahead in `links`): it runs no package code (an sdist whose metadata needs a build fails
    it), so it needs no sandbox and reads the index with uv's own connections. True when
    that resolved everything; any failure leaves the answer to the sandboxed resolution,
    which may run metadata hooks. `offline`: only the pages in `cache`, which this
    resolution's earlier attempts read (seconds ago); a failure then proves nothing."""
    assert target.interpreter is not None
    argv = _uv_argv(uv, target.interpreter.path, list(upstreams), reqs, out, cache, links)
    argv += ["--no-build", *(["--offline"] if offline else [])]
    try:
        run(argv, step="resolve", cwd=out.parent, env=uv_env(), timeout=timeout)
    except CommandTimeout:
        raise
    except CommandError as exc:
        if offline:
            log.debug("the pages read so far did not resolve it: %s", _reason(exc.tail))
            out.unlink(missing_ok=True)
            return False
        if _unsatisfiable(exc.tail) and "build" not in exc.tail.lower():
            # Proved without a single sdist in the way: building would not change it.
            raise _unsatisfiable_error(target, exc.tail) from exc
        log.debug("resolving without builds did not do: %s", _reason(exc.tail))
        out.unlink(missing_ok=True)
        return False
    return True


def _find_links(links: Sequence[Path]) -> list[str]:
    return [a for d in links for a in ("--find-links", str(d))]


def _pip_argv(
    pip: list[str], urls: list[str], reqs: Path, report: Path, links: Sequence[Path] = ()
) -> list[str]:
    return [
        *pip,
        "install",
        "--dry-run",
        "--ignore-installed",
        "--quiet",
        "--report",
        str(report),
        "--index-url",
        urls[0],
        *(a for u in urls[1:] for a in ("--extra-index-url", u)),
        *_find_links(links),
        "-r",
        str(reqs),
    ]


def _uv_argv(
    uv: Path,
    python: Path,
    urls: list[str],
    reqs: Path,
    out: Path,
    cache: Path,
    links: Sequence[Path] = (),
) -> list[str]:
    """`uv pip compile` as close to pip's resolution as uv goes: no config files, the
    target's interpreter (its markers), every index one pool (`unsafe-best-match`, pip's
    rule), no interpreter downloads, a cache of this resolution's own (`cache`, never a
    longer-lived one: each resolution reads the index anew); a pylock out, whose files
    (URLs, sha256) spare reading the members' pages again."""
    return [
        str(uv),
        "pip",
        "compile",
        "--no-config",
        "--quiet",
        "--no-progress",
        "--no-python-downloads",
        "--python",
        str(python),
        "--index-url",
        urls[0],
        *(a for u in urls[1:] for a in ("--extra-index-url", u)),
        "--index-strategy",
        "unsafe-best-match",
        *_find_links(links),
        "--cache-dir",
        str(cache),
        "--no-header",
        "--no-annotate",
        "--format",
        "pylock.toml",
        "--output-file",
        str(out),
        str(reqs),
    ]


def _from_pip(report: dict[str, Any]) -> list[Resolved]:
    return [
        Resolved(
            name=canonicalize_name(item["metadata"]["name"]),
            version=item["metadata"]["version"],
            requested=bool(item.get("requested")),
        )
        for item in report.get("install", [])
    ]


def _from_uv(
    text: str, requested: set[NormalizedName], where: Path, links: Sequence[Path] = ()
) -> Answer:
    """The packages of uv's pylock, each with its files; a pin of the input is
    `requested`, as in pip's report. A wheel built ahead (in `links`) is not an upstream
    file: left out, its member's files are read from its page."""
    try:
        packages = tomllib.loads(text).get("packages", [])
        closure: list[Resolved] = []
        files: dict[str, list[UpstreamFile]] = {}
        for pkg in packages:
            name = canonicalize_name(pkg["name"])
            if "version" not in pkg:
                raise ResolutionError(f"uv locked {name} without a version (a direct URL?)")
            closure.append(Resolved(name=name, version=pkg["version"], requested=name in requested))
            entries = [*pkg.get("wheels", []), *([pkg["sdist"]] if "sdist" in pkg else [])]
            found = [_lock_file(e, links) for e in entries]
            files[name] = [f for f in found if f is not None]
    except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ResolutionError(f"uv wrote a pylock prewheel cannot read ({where}): {exc}") from exc
    return Answer(closure=closure, files=files)


def _lock_file(entry: dict[str, Any], links: Sequence[Path] = ()) -> UpstreamFile | None:
    url = entry.get("url")
    if not isinstance(url, str):
        return None
    if url.startswith("file:") and _local(url).parent in links:
        return None
    name = entry.get("name") or urllib.parse.unquote(url.rsplit("/", 1)[-1])
    return file_from_lock(name, url, entry.get("hashes", {}).get("sha256"))


def _subprocess_output(output: str) -> str:
    """When a package's own code failed while pip prepared its metadata, what it printed
    (pip says only "see above"), indented under the error."""
    if "originates from a subprocess" not in output:
        return ""
    lines = output.rstrip().splitlines()
    start = next((i for i, ln in enumerate(lines) if "─> [" in ln), max(0, len(lines) - 15))
    end = next((i for i in range(start, len(lines)) if "[end of output]" in lines[i]), start + 20)
    shown = [ln.rstrip() for ln in lines[start : min(end, start + 20) + 1] if ln.strip()]
    return "\n" + "\n".join(f"    {ln.strip()}" for ln in shown)


log = get_logger("resolve")

# How pip's and uv's error lines start (uv: "x No solution found", its tree of reasons).
_ERROR_STARTS = ("ERROR:", "error:", "\u00d7", "\u2570\u2500\u25b6", "\u2502")


def _reason(output: str) -> str:
    """pip's ERROR lines, or uv's error and its explanation, or the last lines."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(_ERROR_STARTS)]
    picked = errors or lines[-3:]
    return re.sub(r"\s+", " ", " / ".join(picked))[:600]


# uv's words for a package it could not read (an sdist it would not build or unpack, bad
# metadata): pip's resolver may still get through those, so it gets its turn.
_UNREADABLE = (
    "Failed to build",
    "Failed to prepare",
    "Failed to download",
    "Failed to read",
    "Failed to parse",
    "Failed to extract",
    "Failed to fetch",
    "invalid metadata",
)


def _unsatisfiable(output: str) -> bool:
    """Whether uv proved the pins cannot be satisfied for this interpreter (its "No solution
    found" with a cause), rather than failing to read a package pip may read."""
    return "No solution found" in output and not any(w in output for w in _UNREADABLE)


def _unsatisfiable_error(target: Target, output: str) -> ResolutionError:
    """uv's proof as the error: its error with its cause and hint (which name the conflict
    or, say, the Python ABI tags the pinned version has wheels for), as one line."""
    lines = output.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.strip().startswith(_ERROR_STARTS)), 0)
    text = re.sub(r"\s+", " ", " ".join(ln.strip() for ln in lines[start:]).strip())
    said = re.sub(r"^(error:|\u00d7)\s*", "", text)[:900]
    return ResolutionError(
        f"uv could not resolve the requirements for {target.name}: {said}",
        hint="check that every pin exists on the upstream index for this Python and that the "
        "pins agree with each other's requirements",
    )


def _hash_lines(output: str) -> str:
    """pip's lines that name the file, the expected and the actual sha256."""
    keep = ("Expected", "Got", " from ", "Hash mismatch", "Computed", "sha256:")
    lines = [ln.strip() for ln in output.splitlines() if any(k in ln for k in keep)]
    return re.sub(r"\s+", " ", " / ".join(lines))[:600] or _reason(output)


def _local(url: str) -> Path:
    return Path(urllib.parse.unquote(urllib.parse.urlparse(url).path))
