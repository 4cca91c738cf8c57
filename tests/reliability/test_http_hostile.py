"""A corpus of hostile and broken HTTP requests, sent as raw bytes to `prewheel serve` and to
nginx running the configuration prewheel generates: header injection through redirects,
non-ASCII names, huge heads in one read and across reads, bare LF and CR, pipelined junk,
absurd ranges, odd methods and versions, smuggling attempts, traversal encodings.

For every request: an HTTP answer with an allowed status within the timeout (never a hang,
never a dropped connection, never a 5xx), header lines of printable ASCII with nothing
injected, nothing from outside the wheelhouse, and the server still answering afterwards.
Each server's counts are printed."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from httpkit import Exchange, Server, exchange, get_status, nginx_server, prewheel_server, request
from indexkit import sample_wheelhouse

from builder import index
from builder.wheelhouse import Wheelhouse

PAGE = "/cpu/simple/alpha/"
NOT_FOUND = {400, 404}
HEADER_LINE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+: [\x20-\x7e]*")
INJECTED = {"set-cookie", "x-injected"}


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes | list[bytes]  # a list: one write each, read separately by the server
    allowed: frozenset[int]  # the first answer's status
    count: int = 1  # answers expected at least
    head_only: bool = False
    closes: bool = True  # the server closes after answering (Connection: close, or an error)
    timeout: float = 5


def case(name: str, data: bytes | list[bytes], allowed: set[int] | int, **kw: float) -> Case:
    return Case(name, data, frozenset({allowed} if isinstance(allowed, int) else allowed), **kw)


def corpus(wheel: str) -> list[Case]:
    big = "a" * 65536
    across = [b"GET /cpu/simple/ HTTP/1.1\r\nHost: x\r\n"]
    across += [f"X-Pad-{i}: {'b' * 1000}\r\n".encode() for i in range(48)]
    across.append(b"\r\n")
    many = "".join(f"X-H{i}: v\r\n" for i in range(4000))
    one = b"GET /cpu/simple/ HTTP/1.1\r\nHost: x\r\n\r\n"
    ranges = ",".join(f"{i}-{i}" for i in range(1000))
    return [
        # header injection: every place a request's text could reach a response header
        case(
            "inject: project redirect",
            request("GET", "/cpu/simple/A%0d%0aSet-Cookie:%20x=1/"),
            NOT_FOUND,
        ),
        case(
            "inject: slash redirect",
            request("GET", "/cpu/simple/A%0d%0aSet-Cookie:%20x=1"),
            NOT_FOUND,
        ),
        case("inject: index name", request("GET", "/cpu%0d%0aSet-Cookie:%20x=1/simple"), NOT_FOUND),
        case(
            "inject: index, project",
            request("GET", "/cpu%0d%0aSet-Cookie:%20x=1/simple/Alpha/"),
            NOT_FOUND,
        ),
        case("inject: LF only", request("GET", "/cpu/simple/A%0aX-Injected:%20y/"), NOT_FOUND),
        case("inject: NUL", request("GET", "/cpu/simple/A%00B/"), NOT_FOUND),
        case(
            "inject: format query",
            request("GET", PAGE + "?format=%0d%0aX-Injected:%20y"),
            {406, 400},
        ),
        # non-ASCII names: 404, never a dropped connection
        case("non-ASCII: euro", request("GET", "/cpu/simple/%E2%82%AC/"), 404),
        case("non-ASCII: euro, no slash", request("GET", "/cpu/simple/%E2%82%AC"), 404),
        case("non-ASCII: accented", request("GET", "/cpu/simple/caf%C3%A9/"), 404),
        case("non-ASCII: to canonicalize", request("GET", "/cpu/simple/%E2%82%ACAlpha/"), 404),
        case("non-ASCII: index", request("GET", "/%E2%82%AC/simple/alpha/"), 404),
        case("non-ASCII: not UTF-8", request("GET", "/cpu/simple/%FF%FE/"), NOT_FOUND),
        case(
            "non-ASCII: raw bytes",
            b"GET /cpu/simple/\xe2\x82\xac/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            NOT_FOUND,
        ),
        case("non-ASCII: header value", request("GET", PAGE, "Accept: text/html\xe9"), {200, 406}),
        # sizes: limits hold in one read and across reads
        case(
            "huge: header line, one read",
            request("GET", "/cpu/simple/", f"X-Big: {big}"),
            {400, 431},
        ),
        case("huge: headers across reads", across, {400, 431}),
        case("huge: many headers", request("GET", "/cpu/simple/", many), {400, 431}),
        case("huge: URL", request("GET", "/cpu/simple/" + big + "/"), {400, 414}),
        # line endings
        case("bare LF", b"GET /cpu/simple/ HTTP/1.1\nHost: x\nConnection: close\n\n", {200, 400}),
        case(
            "bare LF, keep-alive",
            b"GET /cpu/simple/ HTTP/1.1\nHost: x\n\n",
            {200, 400},
            closes=False,
            timeout=2,
        ),
        case("bare CR", b"GET /cpu/simple/ HTTP/1.1\rHost: x\r\r", 400),
        case("obsolete line fold", request("GET", PAGE, "X-A: b", " c"), 400),
        case("space before colon", request("GET", PAGE, "Host : x"), 400),
        case("NUL in header value", request("GET", PAGE, "X-A: b\x00c"), 400),
        # pipelining
        case("pipelined junk", one + b"\x00\x01\x02junk\r\n\r\n", 200, count=1),
        case("pipelined: 100", one * 99 + request("GET", "/cpu/simple/"), 200, count=100),
        case("TLS handshake", b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(32), 400),
        # ranges
        case(
            "range: huge end", request("GET", wheel, "Range: bytes=0-" + "9" * 30), {200, 206, 416}
        ),
        case(
            "range: huge suffix",
            request("GET", wheel, "Range: bytes=-" + "9" * 30),
            {200, 206, 416},
        ),
        case(
            "range: huge start", request("GET", wheel, "Range: bytes=" + "9" * 30 + "-"), {200, 416}
        ),
        case(
            "range: 5000 digits",
            request("GET", wheel, "Range: bytes=0-" + "9" * 5000),
            {200, 206, 416},
        ),
        case("range: 1000 ranges", request("GET", wheel, f"Range: bytes={ranges}"), {200, 206}),
        case("range: backwards", request("GET", wheel, "Range: bytes=5-2"), {200, 416}),
        case("range: garbage", request("GET", wheel, "Range: bytes=--1,x"), {200, 416}),
        # methods and versions
        case(
            "POST with body", request("POST", "/cpu/simple/", "Content-Length: 5") + b"hello", 405
        ),
        case("PUT", request("PUT", PAGE, "Content-Length: 0"), 405),
        case("DELETE", request("DELETE", PAGE), 405),
        case("OPTIONS", request("OPTIONS", "*"), {400, 404, 405}),
        case("TRACE", request("TRACE", PAGE), 405),
        case("CONNECT", request("CONNECT", "localhost:443"), {400, 405}),
        case("PROPFIND", request("PROPFIND", PAGE), 405),
        case("unknown method", request("FROB", PAGE), {400, 405, 501}),
        case("lower-case method", request("get", PAGE), {400, 405}),
        case("HEAD", request("HEAD", PAGE), 200, head_only=True),
        case("HTTP/2.0 text", request("GET", PAGE, version="HTTP/2.0"), {400, 505}),
        case("not HTTP", request("GET", PAGE, version="FOO/1.1"), 400),
        case("Upgrade", request("GET", PAGE, "Upgrade: websocket", "Connection: upgrade"), 200),
        case("Expect 100-continue", request("GET", PAGE, "Expect: 100-continue"), 200),
        # request smuggling
        case(
            "CL and TE",
            request("POST", PAGE, "Content-Length: 3", "Transfer-Encoding: chunked") + b"0\r\n\r\n",
            400,
        ),
        case(
            "two CL", request("POST", PAGE, "Content-Length: 3", "Content-Length: 4") + b"abcd", 400
        ),
        case(
            "TE not chunked", request("POST", PAGE, "Transfer-Encoding: xchunked"), {400, 405, 501}
        ),
        # traversal encodings: nothing outside the wheelhouse
        *(
            case(f"traversal: {path}", request("GET", path), {400, 403, 404})
            for path in (
                "/files/..%2f..%2f..%2f..%2fetc/passwd",
                "/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                "/files/../../../../etc/passwd",
                "/%2e%2e/%2e%2e/etc/passwd",
                "//etc/passwd",
                "/files/..%c0%af..%c0%afetc/passwd",
                "/files/%252e%252e/%252e%252e/etc/passwd",
                "/cpu/simple/..%5c..%5c..%5cetc%5cpasswd",
                "/logs/%2e%2e%2f%2e%2e%2fetc/passwd",
                "/files/....//....//etc/passwd",
                "/cpu/simple/..;/..;/etc/passwd",
                "/cpu/simple/%2e%2e/%2e%2e/%2e%2e/etc/passwd/",
                "/files/ab/x.whl%00.metadata",
                "http://localhost/../../etc/passwd",
            )
        ),
    ]


def problems_with(case: Case, got: Exchange) -> list[str]:
    found = []
    final = [r for r in got.responses if r.status >= 200]  # 1xx are interim answers
    if not final:
        how = "closed" if got.closed else "hung (no answer, not closed)"
        return [f"{case.name}: {how}; got {got.data[:80]!r}"]
    first = final[0].status
    if first not in case.allowed:
        found.append(f"{case.name}: status {first}, expected one of {sorted(case.allowed)}")
    if len(final) < case.count:
        found.append(f"{case.name}: {len(final)} answers, expected {case.count}")
    for resp in got.responses:
        if resp.status >= 500 and resp.status not in (501, 505):  # unsupported, not a fault
            found.append(f"{case.name}: {resp.status}")
        for line in resp.raw_head.decode("latin-1").split("\r\n")[1:]:
            if not HEADER_LINE.fullmatch(line):
                found.append(f"{case.name}: unsafe header line {line[:80]!r}")
        names = {k.lower() for k, _ in resp.headers}
        if names & INJECTED:
            found.append(f"{case.name}: injected header {sorted(names & INJECTED)}")
        if b"root:" in resp.body:
            found.append(f"{case.name}: served /etc/passwd")
    if case.closes and not got.closed:
        found.append(f"{case.name}: answered but not closed within the timeout")
    return found


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Wheelhouse:
    wh = sample_wheelhouse(tmp_path_factory.mktemp("hostile") / "wh")
    index.rebuild(wh)
    return wh


@pytest.fixture(scope="module", params=["prewheel", "nginx"])
def server(
    request: pytest.FixtureRequest, wheelhouse: Wheelhouse, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    state = tmp_path_factory.mktemp(request.param)
    if request.param == "prewheel":
        with prewheel_server(wheelhouse.root, state / "stderr.log") as srv:
            yield srv
    else:
        with nginx_server(wheelhouse.root.resolve(), state) as srv:
            yield srv


def test_hostile_requests(server: Server, wheelhouse: Wheelhouse) -> None:
    entry = wheelhouse.find("alpha-1.0-py3-none-any.whl")
    assert entry is not None
    cases = corpus("/" + entry.path)
    problems: list[str] = []
    statuses: Counter[int] = Counter()
    answered = closed = 0
    for item in cases:
        got = exchange(server.port, item.data, head_only=item.head_only, timeout=item.timeout)
        problems += problems_with(item, got)
        answered += bool(got.responses)
        closed += got.closed
        statuses.update([s for s in got.statuses if s >= 200][:1])
    alive = get_status(server.port, "/cpu/simple/")
    print(
        f"\n{server.name}: {len(cases)} hostile requests: {answered} answered, {closed} closed, "
        f"{len(problems)} problems; first statuses "
        + ", ".join(f"{s} x{n}" for s, n in sorted(statuses.items()))
        + f"; a normal request afterwards: {alive}"
    )
    assert not problems, "\n".join(problems)
    assert alive == 200
    assert server.proc.poll() is None, server.stderr()[-2000:]


def test_header_injection_leaves_only_safe_locations(server: Server) -> None:
    """The redirects that do happen carry a Location built from a validated name only."""
    for path, location in [
        ("/cpu/simple", "/cpu/simple/"),
        ("/cpu/simple/Alpha/", "/cpu/simple/alpha/"),
        ("/cpu/simple/Foo.Bar_baz", "/cpu/simple/Foo.Bar_baz/"),
    ]:
        got = exchange(server.port, request("GET", path))
        assert got.statuses[:1] == [301], (path, got.data[:200])
        assert dict(got.responses[0].headers)["Location"] == location


def test_oversized_head_sent_slowly_is_refused(server: Server) -> None:
    """A head that grows past the limit a little at a time is refused as soon as it passes
    the limit, not when (or if) it ends."""
    parts = [b"GET /cpu/simple/ HTTP/1.1\r\nHost: x\r\nX-Long: "]
    parts += [b"c" * 2048 for _ in range(40)]  # 80 KiB of one header line, never ended
    got = exchange(server.port, parts, pause=0.005, timeout=10)
    print(f"\n{server.name}: an 80 KiB header line in {len(parts)} writes: {got.statuses}, "
          f"closed={got.closed}")  # fmt: skip
    assert got.closed, "the server waited for the rest of an oversized head"
    assert all(s in (400, 431) for s in got.statuses), got.statuses


def test_paths_that_must_not_be_served(server: Server, wheelhouse: Wheelhouse) -> None:
    """Sanity for the corpus: the wheelhouse's own files still answer 200 through all this."""
    entry = wheelhouse.find("beta-2.0-py3-none-any.whl")
    assert entry is not None
    assert get_status(server.port, "/" + entry.path) == 200
    assert get_status(server.port, PAGE) == 200
    assert Path(wheelhouse.root / entry.path).is_file()
