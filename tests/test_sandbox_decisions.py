"""The sandbox's and the wheelhouse's decisions, tested alone (no process started): what a
sandboxed command sees, its environment, the config keys, which build a page lists, which
wheel is refused. The reliability tests (tests/reliability/) prove the same for real."""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from builder.config import parse_config, parse_size
from builder.errors import ConfigError, StepError
from builder.index.pages import newest_builds
from builder.indexproxy import IndexProxy, internal
from builder.records import KeyInputs
from builder.sandbox import Isolation, Sandbox
from builder.wheelfile import check_wheel
from builder.wheelhouse import CatalogEntry

pytestmark = pytest.mark.usefixtures("no_processes")


def _box(tmp_path: Path, mode: str, **kw: object) -> Sandbox:
    iso = Isolation(
        mode=mode,  # type: ignore[arg-type]
        requested="auto",
        bwrap="/usr/bin/bwrap",
        unshare="/usr/bin/unshare",
    )
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return Sandbox(isolation=iso, workdir=work, **kw)  # type: ignore[arg-type]


def _mounts(argv: list[str]) -> list[tuple[str, ...]]:
    """bubblewrap's mount operations, in order."""
    out: list[tuple[str, ...]] = []
    i = 1
    while i < len(argv) and argv[i] != "--":
        op = argv[i]
        n = {"--ro-bind": 2, "--bind": 2, "--tmpfs": 1, "--remount-ro": 1, "--dir": 1,
             "--dev": 1, "--proc": 1, "--chdir": 1}.get(op, 0)  # fmt: skip
        out.append((op, *argv[i + 1 : i + 1 + n]))
        i += 1 + n
    return out


def test_bubblewrap_hides_the_wheelhouse_and_shows_the_build_its_own_dir(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    wh.mkdir()
    box = _box(tmp_path, "bwrap", hidden=(wh,), env={"PATH": "/usr/bin"})
    argv = box.wrap(["python", "-c", "pass"], box.workdir)
    assert argv[argv.index("--") + 1 :] == ["python", "-c", "pass"]
    mounts = _mounts(argv)
    pos = {m: i for i, m in enumerate(mounts)}
    assert pos[("--tmpfs", "/tmp")] < pos[("--bind", str(box.workdir), str(box.workdir))]
    assert pos[("--tmpfs", str(wh))] > pos[("--tmpfs", "/tmp")]
    assert ("--remount-ro", str(wh)) in mounts
    assert mounts[0] == ("--ro-bind", "/", "/")
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent", "--new-session"):
        assert flag in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"


def test_the_index_socket_and_the_forwarder(tmp_path: Path) -> None:
    sock = tmp_path / "work" / "index.sock"
    box = _box(tmp_path, "bwrap", index_socket=sock)
    assert box.index_url("https://pypi.org/simple/") == "http://127.0.0.1:@PORT@/simple/"
    argv = box.wrap(["pip", "install"], None)
    assert ("--bind", str(sock), "/tmp/.prewheel-index.sock") in _mounts(argv)
    inner = argv[argv.index("--") + 1 :]
    assert inner[inner.index("--socket") + 1] == "/tmp/.prewheel-index.sock"
    none = _box(tmp_path, "none", index_socket=sock)
    assert none.index_url("https://pypi.org/simple/") == "https://pypi.org/simple/"
    assert none.wrap(["pip", "install"], None) == ["pip", "install"]


def test_weaker_modes(tmp_path: Path) -> None:
    netns = _box(tmp_path, "netns")
    argv = netns.wrap(["true"], None)
    assert argv[:3] == ["/usr/bin/unshare", "--net", "--"] and argv[-2:] == ["--", "true"]
    assert argv[argv.index("-S") + 1].endswith("_forward.py")  # the loopback brought up
    env = netns.environment()
    assert env["HOME"] == str(netns.workdir / ".home")
    assert env["TMPDIR"] == str(netns.workdir / ".tmp")
    assert (
        Isolation(mode="none", requested="auto").key_settings()
        != Isolation(mode="bwrap", requested="auto").key_settings()
    )


def test_the_environment_is_fixed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DEVPI_PASSWORD", "AWS_SECRET_ACCESS_KEY", "GITHUB_TOKEN", "PIP_INDEX_URL"):
        monkeypatch.setenv(name, "secret")
    env = _box(tmp_path, "bwrap", env={"ANNOY_ARGS": "-O3"}).environment()
    assert not any(v == "secret" for v in env.values())
    assert env["ANNOY_ARGS"] == "-O3"
    assert env["LANG"] == "C.UTF-8" and env["HOME"] == "/tmp/home" and env["TMPDIR"] == "/tmp"


def test_config_memory_and_sandbox_keys() -> None:
    assert parse_size("4G") == 4 << 30 and parse_size("512M") == 512 << 20
    assert parse_size("none") is None and parse_size(0) is None
    assert parse_config({}, source="t").memory == 8 << 30
    assert parse_config({"build": {"memory": "1.5G"}}, source="t").memory == int(1.5 * (1 << 30))
    with pytest.raises(ConfigError) as err:
        parse_config({"build": {"memory": "lots", "sandbox": "bwarp"}}, source="t")
    text = str(err.value)
    assert "build.memory" in text and "build.sandbox" in text and "did you mean 'bwrap'" in text


def _entry(filename: str, listed: str | None, upload: str = "2024-01-01T00:00:00Z") -> CatalogEntry:
    return CatalogEntry(
        filename=filename, path=f"files/aa/{filename}", sha256="a" * 64, size=1, version="1.0",
        requires_python=None, metadata_sha256="b" * 64, upload_time=upload, accels=None,
        origin="built", listed=listed,
    )  # fmt: skip


def test_the_catalog_chooses_the_listed_build_not_the_tag_order() -> None:
    a = _entry("x-1.0-1_aaaaaaaaaaaa-py3-none-any.whl", "2024-01-02T00:00:00Z")
    b = _entry("x-1.0-1_ffffffffffff-py3-none-any.whl", "2024-01-01T00:00:00Z")
    assert newest_builds([a, b]) == [a]
    assert newest_builds([replace(b, listed="2024-01-03T00:00:00Z"), a])[0].filename == b.filename
    old = _entry("x-1.0-1700000000_cccccccccccc-py3-none-any.whl", None, "2023-01-01T00:00:00Z")
    assert newest_builds([old, b]) == [b]  # an entry from before `listed`: its upload time


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel(path: Path, members: dict[str, bytes], record: dict[str, bytes] | None = None) -> Path:
    di = "x-1.0.dist-info"
    members = {**members, f"{di}/METADATA": b"Metadata-Version: 2.1\nName: x\nVersion: 1.0\n"}
    rows = [
        f"{n},{_record_hash(d)},{len(d)}"
        for n, d in (members if record is None else record).items()
    ]
    if record is not None:
        rows.append(f"{di}/METADATA,{_record_hash(members[f'{di}/METADATA'])},")
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        zf.writestr(f"{di}/RECORD", "\n".join([*rows, f"{di}/RECORD,,"]) + "\n")
    return path


def test_downloaded_wheels_are_checked(tmp_path: Path) -> None:
    check_wheel(_wheel(tmp_path / "ok.whl", {"x/__init__.py": b"X = 1\n"}))
    cases = {
        "climbs out": _wheel(tmp_path / "slip.whl", {"x/../../evil.py": b"x"}),
        "not a relative path": _wheel(tmp_path / "abs.whl", {"/etc/evil.py": b"x"}),
        "does not match its RECORD": _wheel(
            tmp_path / "hash.whl", {"x/a.py": b"new"}, record={"x/a.py": b"old"}
        ),
        "is not in RECORD": _wheel(tmp_path / "extra.whl", {"x/a.py": b"a"}, record={}),
    }
    for why, wheel in cases.items():
        with pytest.raises(StepError, match=why) as err:
            check_wheel(wheel)
        assert err.value.step == "check"


def test_keys_hold_the_sandbox_settings_that_change_output() -> None:
    on = Isolation(mode="none", requested="none").key_settings()
    off = Isolation(mode="bwrap", requested="auto").key_settings()
    assert dict(on)["network"] == "on" and dict(off)["network"] == "off"
    fields = KeyInputs.__dataclass_fields__
    assert "sandbox" in fields


def test_the_index_proxy_fetches_no_private_address(tmp_path: Path) -> None:
    """A page that links the cloud metadata service or the builder's network gets nothing
    through the proxy; the upstream's own host is fine (tests serve it on 127.0.0.1)."""
    proxy = IndexProxy("http://127.0.0.1:3141/simple/", tmp_path / "index.sock")
    assert proxy._public("http://127.0.0.1:3141/files/x-1.0.tar.gz")
    for url in (
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/x.whl",
        "http://10.1.2.3/x.whl",
        "file:///etc/passwd",
    ):
        assert not proxy._public(url), url
    # localhost is the upstream's address, but not its port: another server, refused.
    inside = ("169.254.169.254", "127.0.0.2", "10.0.0.1", "172.20.1.1", "192.168.1.1",
              "100.64.0.1", "::1", "fe80::1", "fd00::1", "::ffff:10.0.0.1", "0.0.0.0")  # fmt: skip
    for addr in inside:
        assert internal(ipaddress.ip_address(addr)), addr
    # Public addresses, and the documentation range some networks route to their proxy.
    for addr in ("151.101.0.223", "2a04:4e42::223", "203.0.113.80"):
        assert not internal(ipaddress.ip_address(addr)), addr
    token = proxy.token("http://169.254.169.254/x-1.0.tar.gz")
    assert proxy.file_url(token, "x-1.0.tar.gz") is None
    ok = proxy.token("http://127.0.0.1:3141/files/x-1.0.tar.gz")
    assert proxy.file_url(ok, "x-1.0.tar.gz.metadata") == (
        "http://127.0.0.1:3141/files/x-1.0.tar.gz.metadata"
    )
    assert proxy.file_url(ok, "y-1.0.tar.gz") is None


def test_a_client_that_resets_the_proxy_prints_nothing(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """uv closes connections mid-request; the proxy says nothing on stderr (the standard
    library's server prints a traceback there by default)."""
    import socket

    with IndexProxy("http://127.0.0.1:3141/simple/", tmp_path / "index.sock") as proxy:
        for _ in range(3):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.connect(str(proxy.path))
                # A whole request (refused: not the index), closed before its answer is read:
                # the proxy's next read of the kept-alive connection is a reset.
                client.sendall(b"GET /elsewhere HTTP/1.1\r\nHost: sandbox\r\n\r\n")
                time.sleep(0.1)
        time.sleep(0.3)
    assert "Traceback" not in capfd.readouterr().err


def test_the_proxy_keeps_a_whole_sdist_and_nothing_else(tmp_path: Path) -> None:
    """What the index proxy keeps for the build: an sdist streamed whole, under its name;
    not a wheel, not a stream that ended early, and a copy that cannot be written never
    stops the stream (keeping is best effort)."""
    from builder.indexproxy import _KeptCopy

    keep = tmp_path / "kept"
    whole = _KeptCopy(keep, "https://files.example/p/p-1.0.tar.gz")
    whole.write(b"abc")
    whole.write(b"def")
    whole.finish()
    whole.drop()
    assert (keep / "p-1.0.tar.gz").read_bytes() == b"abcdef"

    cut = _KeptCopy(keep, "https://files.example/q/q-1.0.zip")
    cut.write(b"part")
    cut.drop()  # the stream failed before its end
    wheel = _KeptCopy(keep, "https://files.example/r/r-1.0-py3-none-any.whl")
    wheel.write(b"w")
    wheel.finish()
    assert sorted(p.name for p in keep.iterdir()) == ["p-1.0.tar.gz"]

    full = _KeptCopy(keep, "https://files.example/s/s-1.0.tar.gz")
    assert full.out is not None
    full.out.close()
    full.out = open("/dev/full", "wb", buffering=0)  # noqa: SIM115 (a write that fails: ENOSPC)
    full.write(b"x")
    full.finish()
    assert sorted(p.name for p in keep.iterdir()) == ["p-1.0.tar.gz"]
    (tmp_path / "file").write_text("not a directory")
    assert _KeptCopy(tmp_path / "file" / "sub", "https://f/t-1.tar.gz").out is None
