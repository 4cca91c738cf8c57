"""What the README promises about `build`, each checked as a user would meet it.

The build's network is off; `--package` builds one batch; `PREWHEEL_WHEELHOUSE` and the
default `config/prewheel.toml` are found without options.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from clitools import prewheel
from needs import network_namespace
from upstream import Upstream, WriteConfig

pytestmark = pytest.mark.slow

# setup.py tries to reach the upstream index while the backend runs (and while pip resolves
# the closure; both in the sandbox) and writes what it found into the package, so the built
# wheel tells where its build ran.
NETPROBE_SETUP = """\
import os, socket, urllib.parse
from setuptools import setup

url = urllib.parse.urlsplit(os.environ.get("PROBE_URL", "http://127.0.0.1:9/"))
try:
    socket.create_connection((url.hostname, url.port), timeout=5).close()
    reached = True
except OSError:
    reached = False
os.makedirs("pw_netprobe", exist_ok=True)
with open("pw_netprobe/__init__.py", "w") as fh:
    fh.write(f"REACHED = {reached!r}\\n")
setup(packages=["pw_netprobe"])
"""


def test_the_build_backend_runs_without_network(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    network_namespace()
    upstream.add_sdist("pw-netprobe", "1.0", {"setup.py": NETPROBE_SETUP})
    config = write_config(tmp_path, packages={"pw-netprobe": {"env": {"PROBE_URL": upstream.url}}})
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-netprobe==1.0\n")
    wh = tmp_path / "wh"
    proc = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert proc.returncode == 0, proc.stderr
    (wheel,) = wh.glob("files/*/pw_netprobe-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("pw_netprobe/__init__.py").decode() == "REACHED = False\n"
    # The upstream answered on the host all along: the build, not the probe, had no network.
    assert (
        subprocess.run(
            [sys.executable, "-c", NETPROBE_SETUP.split("os.makedirs")[0]],
            env={**os.environ, "PROBE_URL": upstream.url},
        ).returncode
        == 0
    )


def test_package_builds_only_the_batch_named(write_config: WriteConfig, tmp_path: Path) -> None:
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-cext==1.0\npw-pure==1.0\npw-haswheel==1.0\n")
    wh = tmp_path / "wh"
    proc = prewheel(
        "build", "-r", reqs, "-c", write_config(tmp_path), "--wheelhouse", wh,
        "--package", "pw-pure", "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    status = {r["name"]: r["status"] for r in json.loads(proc.stdout)["results"]}
    assert status == {"pw-pure": "built", "pw-haswheel": "downloaded"}
    assert not list(wh.glob("files/*/pw_cext-*.whl"))


def test_package_verifies_against_the_whole_closure_pins(
    upstream: Upstream, write_config: WriteConfig, tmp_path: Path
) -> None:
    """`--package` narrows what is built, not the closure verify installs at: a dependency
    left out of the batch is still pinned, so the wheelhouse's other version of it is not
    taken in its place."""
    upstream.add_sdist("pw-pk-lib", "1.0", {"pw_pk_lib/__init__.py": "V = 1\n"})
    upstream.add_sdist("pw-pk-lib", "2.0", {"pw_pk_lib/__init__.py": "V = 2\n"})
    upstream.add_sdist("pw-pk-app", "1.0", {"pw_pk_app/__init__.py": ""}, deps=["pw-pk-lib"])
    config, wh = write_config(tmp_path), tmp_path / "wh"
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-pk-lib==2.0\n")
    first = prewheel("build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--json")
    assert first.returncode == 0, first.stderr
    reqs.write_text("pw-pk-app==1.0\npw-pk-lib==1.0\n")
    proc = prewheel(
        "build", "-r", reqs, "-c", config, "--wheelhouse", wh, "--package", "pw-pk-app", "--json"
    )
    results = {r["name"]: r for r in json.loads(proc.stdout)["results"]}
    assert set(results) == {"pw-pk-app"}, proc.stdout
    app = results["pw-pk-app"]
    assert app["status"] == "failed" and app["check"] == "install", app
    assert not list(wh.glob("files/*/pw_pk_app-*.whl"))


def test_default_config_and_wheelhouse_from_the_environment(
    upstream: Upstream, tmp_path: Path
) -> None:
    """No -c and no --wheelhouse: ./config/prewheel.toml and $PREWHEEL_WHEELHOUSE."""
    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    # Without this config the upstream would be PyPI, which has no pw-pure.
    (project / "config" / "prewheel.toml").write_text(f'[index]\nupstream = "{upstream.url}"\n')
    (project / "requirements.txt").write_text("pw-pure==1.0\n")
    elsewhere = tmp_path / "shared-wheelhouse"
    env = {**os.environ, "PREWHEEL_WHEELHOUSE": str(elsewhere)}
    proc = prewheel("build", "-r", "requirements.txt", "--json", cwd=project, env=env)
    assert proc.returncode == 0, proc.stderr
    assert [r["status"] for r in json.loads(proc.stdout)["results"]] == ["built"]
    assert list(elsewhere.glob("files/*/pw_pure-1.0-*.whl"))
    assert not (project / "wheelhouse").exists()
    shown = prewheel("show", "pw-pure", "--json", cwd=project, env=env)
    assert shown.returncode == 0 and json.loads(shown.stdout)["project"] == "pw-pure"
