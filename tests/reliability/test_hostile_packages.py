"""A corpus of hostile sdists and wheels, built the way a user would build them.

Each package does one kind of harm, while pip resolves (metadata preparation) and while it
builds: write outside its tree (a canary directory, the real home, the wheelhouse, a published
wheel), reach the network (a canary server, the index proxy for anything but the index),
read secrets from the environment, hang, leave a `setsid` child behind, eat memory, slip a
member out of its archive. Everything the sandbox must stop is checked from outside; the
built wheel of the package that builds says what it saw inside.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel, snapshot
from needs import bubblewrap
from reliakit import Canary, bad_wheel, kill_marked, own_traceback, tar_sdist, wait_gone
from reliakit import write_config as module_config
from upstream import Upstream, WriteConfig

pytestmark = pytest.mark.slow

SECRETS = {"DEVPI_PASSWORD": "s3cret-devpi", "AWS_SECRET_ACCESS_KEY": "s3cret-aws"}

# Tries every kind of harm it can, at metadata time and at build time. At build time it also
# writes what it saw into its own module (the wheel carries it out); what it does at
# metadata time leaves no trace but the harm, which the test looks for.
ESCAPE_SETUP = """\
import json, os, socket, sys, urllib.request
from setuptools import setup

CANARY_DIR, HOME_FILE, WHEELHOUSE, PUBLISHED, PORT = {consts!r}
phase = "build" if "bdist_wheel" in sys.argv else "metadata"
seen = {{"phase": phase}}

def attempt(name, fn):
    try:
        fn()
        seen[name] = "done"
    except Exception as exc:
        seen[name] = type(exc).__name__

def write(path):
    with open(path, "w") as fh:
        fh.write("pwned at " + phase)

def append(path):
    with open(path, "ab") as fh:
        fh.write(b"x")

def connect():
    socket.create_connection(("127.0.0.1", PORT), timeout=3).close()

def index_port():
    pid = os.getpid()
    while pid > 1:
        args = open(f"/proc/{{pid}}/cmdline", "rb").read().split(b"\\0")
        for a in args:
            if a.startswith(b"http://127.0.0.1:") and b"/simple/" in a:
                return a.decode().split(":")[2].split("/")[0]
        pid = int(open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()[1])
    raise LookupError("no index URL")

def proxy_elsewhere():
    port = index_port()
    for path in ("/files/000000000000000000000000/x.whl", "/../../etc/passwd",
                 f"http://127.0.0.1:{{PORT}}/"):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{{port}}{{path}}", timeout=3).read()
            seen.setdefault("proxy_passed", []).append(path)
        except Exception:
            pass
    if seen.get("proxy_passed"):
        raise RuntimeError("the proxy forwarded " + repr(seen["proxy_passed"]))

attempt("canary_dir", lambda: write(os.path.join(CANARY_DIR, "pwned-" + phase)))
attempt("real_home", lambda: write(HOME_FILE + "-" + phase))
attempt("wheelhouse", lambda: write(os.path.join(WHEELHOUSE, "files", "pwned-" + phase)))
attempt("published_wheel", lambda: append(PUBLISHED))
if phase == "build":  # its build environment: hard links into the shared wheel cache
    import setuptools
    attempt("build_env", lambda: append(setuptools.__file__))
attempt("network", connect)
if phase == "metadata":
    attempt("proxy", proxy_elsewhere)
attempt("read_secret", lambda: open(HOME_FILE + "-secret").read())
try:
    seen["home_listing"] = os.listdir(os.path.dirname(HOME_FILE))
except OSError as exc:
    seen["home_listing"] = type(exc).__name__
seen["env"] = sorted(os.environ)
seen["secrets"] = [k for k in ("DEVPI_PASSWORD", "AWS_SECRET_ACCESS_KEY") if k in os.environ]
seen["home"] = os.environ.get("HOME")
seen["lang"] = os.environ.get("LANG")
if phase == "build":
    os.makedirs("pw_h_escape", exist_ok=True)
    with open("pw_h_escape/__init__.py", "w") as fh:
        fh.write("SEEN = " + repr(json.dumps(seen)) + "\\n")
setup(packages=["pw_h_escape"])
"""

HANG_BUILD_SETUP = """\
import sys, time
from setuptools import setup
if "bdist_wheel" in sys.argv:
    time.sleep(600)
setup()
"""

SETSID_SETUP = """\
import subprocess, sys
from setuptools import setup
if "bdist_wheel" in sys.argv:
    # A daemon in a session of its own that keeps the build's output open.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", {mark!r}],
                     start_new_session=True)
setup()
"""

MEMORY_SETUP = """\
import sys
from setuptools import setup
if "bdist_wheel" in sys.argv:
    hog = bytearray(3 << 30)
setup()
"""

HANG_METADATA_SETUP = """\
import subprocess, sys, time
from setuptools import setup
if "bdist_wheel" not in sys.argv:
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", {mark!r}],
                     start_new_session=True)
    time.sleep(600)
setup()
"""


def _pure(module: str) -> dict[str, str]:
    return {f"{module}/__init__.py": "X = 1\n"}


@pytest.fixture(scope="module")
def corpus(
    upstream: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """One wheelhouse with a published wheel, then one build of the whole hostile corpus."""
    bubblewrap()
    root = tmp_path_factory.mktemp("hostile")
    wh, canary_dir = root / "wh", root / "canary"
    canary_dir.mkdir()
    home = Path.home()
    home_file = home / f"pw-hostile-{os.getpid()}-{root.name}"
    Path(f"{home_file}-secret").write_text("a credential the build must not see\n")
    mark = f"pw-hostile-mark-{os.getpid()}-{root.name}"
    server = Canary()
    first = root / "first.txt"
    first.write_text("pw-pure==1.0\n")
    config = module_config(
        root,
        upstream.url,
        build={"memory": "1G", "jobs": 2},
        packages={"pw-h-hangbuild": {"timeout": 15}},
    )
    done = prewheel("build", "-r", first, "-c", config, "--wheelhouse", wh, "--json")
    assert done.returncode == 0, done.stderr
    (published,) = wh.glob("files/*/pw_pure-*.whl")
    consts = (str(canary_dir), str(home_file), str(wh), str(published), server.port)
    escape = ESCAPE_SETUP.format(consts=consts)
    upstream.add_sdist("pw-h-escape", "1.0", {"setup.py": escape, **_pure("pw_h_escape")})
    upstream.add_sdist("pw-h-hangbuild", "1.0", {"setup.py": HANG_BUILD_SETUP, **_pure("pw_h_hb")})
    setsid = SETSID_SETUP.format(mark=mark)
    upstream.add_sdist("pw-h-setsid", "1.0", {"setup.py": setsid, **_pure("pw_h_setsid")})
    upstream.add_sdist("pw-h-memory", "1.0", {"setup.py": MEMORY_SETUP, **_pure("pw_h_memory")})
    tar_sdist(upstream, "pw-h-passwd", "1.0", _pure("pw_h_passwd"),
              links={"pw_h_passwd/passwd": "/etc/passwd"})  # fmt: skip
    for kind in ("slip", "record", "link"):
        bad_wheel(upstream, f"pw-hw-{kind}", "1.0", kind)
    names = [
        "pw-h-escape", "pw-h-hangbuild", "pw-h-setsid", "pw-h-memory", "pw-h-passwd",
        "pw-hw-slip", "pw-hw-record", "pw-hw-link", "pw-pure",
    ]  # fmt: skip
    reqs = root / "requirements.txt"
    reqs.write_text("".join(f"{n}==1.0\n" for n in names))
    before = published.read_bytes()
    proc = prewheel(
        "build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json",
        env={**os.environ, **SECRETS},
    )  # fmt: skip
    yield {
        "proc": proc,
        "wh": wh,
        "canary_dir": canary_dir,
        "home_file": home_file,
        "server": server,
        "published": published,
        "before": before,
        "mark": mark,
        "results": {r["name"]: r for r in json.loads(proc.stdout or '{"results": []}')["results"]},
    }
    server.close()
    kill_marked(mark)
    for f in home.glob(f"{home_file.name}*"):
        f.unlink()


def test_the_corpus_fails_package_by_package(corpus: dict[str, Any]) -> None:
    proc, results = corpus["proc"], corpus["results"]
    assert proc.returncode == 1, proc.stderr
    status = {n: r["status"] for n, r in results.items()}
    print("statuses:", json.dumps(status, sort_keys=True))
    assert status == {
        "pw-h-escape": "built",
        "pw-h-setsid": "built",
        "pw-pure": "cached",
        "pw-h-hangbuild": "failed",
        "pw-h-memory": "failed",
        "pw-h-passwd": "failed",
        "pw-hw-slip": "failed",
        "pw-hw-record": "failed",
        "pw-hw-link": "failed",
    }
    assert not own_traceback(proc.stderr)
    assert "ran past its time limit of 15s" in results["pw-h-hangbuild"]["error"]
    assert "MemoryError" in (results["pw-h-memory"].get("tail") or ""), results["pw-h-memory"]
    assert "points outside the tree" in results["pw-h-passwd"]["error"]
    assert "climbs out" in results["pw-hw-slip"]["error"]
    assert "does not match its RECORD" in results["pw-hw-record"]["error"]
    assert "is a link" in results["pw-hw-link"]["error"]
    wh = corpus["wh"]
    for name in ("slip", "record", "link"):
        assert not list(wh.glob(f"files/*/pw_hw_{name}-*")), f"pw-hw-{name} was published"
    check = prewheel("index", "check", "--wheelhouse", wh)
    assert check.returncode == 0, check.stdout + check.stderr


def test_nothing_outside_was_written_or_reached(corpus: dict[str, Any]) -> None:
    """Neither at metadata time nor at build time."""
    assert not list(corpus["canary_dir"].iterdir())
    home_file: Path = corpus["home_file"]
    written = {p.name for p in home_file.parent.glob(f"{home_file.name}*")}
    assert written == {f"{home_file.name}-secret"}  # the test's own file, nothing else
    wh: Path = corpus["wh"]
    assert not list(wh.glob("files/pwned*"))
    assert corpus["published"].read_bytes() == corpus["before"]
    cached = list(wh.glob("cache/uv/**/setuptools/__init__.py"))
    assert cached, "the shared wheel cache holds setuptools"
    assert not [p for p in cached if p.read_bytes().endswith(b"x")], "the cache was written"
    print("canary server connections:", corpus["server"].hits)
    assert corpus["server"].hits == 0


def test_the_build_saw_no_secret_no_home_and_no_network(corpus: dict[str, Any]) -> None:
    (wheel,) = corpus["wh"].glob("files/*/pw_h_escape-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read("pw_h_escape/__init__.py").decode()
    seen = json.loads(text.split("=", 1)[1].strip().strip("'"))
    print("the build saw:", json.dumps(seen, sort_keys=True))
    assert seen["phase"] == "build"
    harms = ("canary_dir", "real_home", "wheelhouse", "published_wheel", "network", "read_secret",
             "build_env")  # fmt: skip
    for harm in harms:
        assert seen[harm] != "done", f"{harm}: the build could do it"
    # The real home is an empty, read-only directory there (but for the paths the build
    # needs: the interpreter, PATH entries).
    secret = corpus["home_file"].name + "-secret"
    assert secret not in seen["home_listing"]
    assert seen["secrets"] == []
    assert not set(seen["env"]) & set(SECRETS)
    assert seen["home"] != str(Path.home())
    assert seen["lang"] == "C.UTF-8"
    record = next(
        json.loads(p.read_text())
        for p in (corpus["wh"] / "builds").glob("*.json")
        if json.loads(p.read_text())["name"] == "pw-h-escape"
    )
    assert record["sandbox"]["mode"] == "bwrap" and record["inputs"]["sandbox"]["network"] == "off"


def test_a_setsid_child_neither_hangs_the_run_nor_survives_it(corpus: dict[str, Any]) -> None:
    assert corpus["results"]["pw-h-setsid"]["status"] == "built"
    left = wait_gone(corpus["mark"])
    assert not left, f"the setsid child of pw-h-setsid still runs: {left}"


def test_a_hang_at_metadata_time_is_bounded_by_the_configured_limit(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    mark = f"pw-hang-meta-{os.getpid()}-{tmp_path.name}"
    upstream.add_sdist(
        "pw-h-hangmeta", "1.0",
        {"setup.py": HANG_METADATA_SETUP.format(mark=mark), **_pure("pw_h_hm")},
    )  # fmt: skip
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-h-hangmeta==1.0\n")
    # pip runs setup.py to prepare this sdist's metadata; uv reads its PKG-INFO instead (no
    # package code at resolution: the hang then comes at the build, bounded the same way).
    config = write_config(tmp_path, build={"timeout": 10}, index={"resolver": "pip"})
    try:
        proc = prewheel(
            "build", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh", timeout=120
        )
    finally:
        left = wait_gone(mark)
        kill_marked(mark)
    assert proc.returncode == 2, proc.stderr
    assert "ran past its time limit of 10s" in proc.stderr
    assert not own_traceback(proc.stderr)
    assert not left, f"processes of the metadata step still run: {left}"


def test_the_resolver_cannot_follow_a_symlinked_directory_out(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """pip 23.2 writes through a symlinked directory of an sdist while it unpacks it to
    prepare metadata; in the sandbox it finds nothing there to write to."""
    bubblewrap()
    canary = tmp_path / "canary"
    canary.mkdir()
    tar_sdist(
        upstream, "pw-h-symdir", "1.0", _pure("pw_h_symdir"),
        links={"escape": str(canary)}, raw={"pw_h_symdir-1.0/escape/pwned.txt": "pwned\n"},
    )  # fmt: skip
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-h-symdir==1.0\n")
    config = write_config(tmp_path)
    before = snapshot(tmp_path)
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh")
    assert proc.returncode in (1, 2), proc.stderr
    assert not own_traceback(proc.stderr)
    assert not list(canary.iterdir())
    after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("wh/")}
    assert after == before


def test_tar_and_zip_slips_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    """prewheel's own unpack (the Python of bookworm has no tarfile data filter): each
    hostile archive is a clean error naming the member, and nothing lands outside."""
    from builder.archive import unpack_sdist
    from builder.errors import StepError

    index = Upstream(tmp_path / "index")
    out = tmp_path / "out"
    cases = {
        "dotdot": {"raw": {"pw_x-1.0/../../evil.txt": "x"}},
        "absolute": {"raw": {"/tmp/pw-evil-absolute.txt": "x"}},
        "link-out": {"links": {"link": "/etc/passwd"}},
        "link-up": {"links": {"up": "../../.."}},
        "through-link": {
            "links": {"d": "sub"},
            "raw": {"pw_x-1.0/d/evil.txt": "x"},
        },
    }
    refused = 0
    for case, kinds in cases.items():
        sdist = tar_sdist(index, "pw-x", "1.0", {"a.txt": "a"}, **kinds)
        dest = out / case
        with pytest.raises(StepError) as err:
            unpack_sdist(sdist, dest)
        assert err.value.step == "unpack", case
        assert not dest.exists() or not any(dest.rglob("*")), f"{case}: something was written"
        refused += 1
    assert not Path("/tmp/pw-evil-absolute.txt").exists()
    assert not list(tmp_path.rglob("evil.txt"))
    # A link that stays inside the tree is fine.
    ok = tar_sdist(index, "pw-x", "1.0", {"a.txt": "a"}, links={"b.txt": "a.txt"})
    assert (unpack_sdist(ok, out / "ok") / "b.txt").read_text() == "a"
    print(f"hostile archives refused: {refused}")
