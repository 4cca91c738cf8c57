"""`prewheel show PROJECT`: the build records, as a table or JSON, failures with their log tail."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from clitools import prewheel
from upstream import Upstream

pytestmark = pytest.mark.slow

RECORD_FIELDS = {
    "cache_key",
    "inputs",
    "tools",
    "build_deps",
    "started",
    "finished",
    "duration",
    "host",
    "log",
    "result",
}


@pytest.fixture(scope="module")
def wheelhouse(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("show")
    (root / "prewheel.toml").write_text(f'[index]\nupstream = "{upstream.url}"\n')
    (root / "requirements.txt").write_text("pw-pure==1.0\npw-broken==1.0\npw-haswheel==1.0\n")
    args = ["-r", root / "requirements.txt", "-c", root / "prewheel.toml"]
    proc = prewheel("build", *args, "--wheelhouse", root / "wh")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    return root / "wh"


def _show(wh: Path, *args: str) -> Any:
    return prewheel("show", *args, "--wheelhouse", wh)


def test_json_has_the_key_its_inputs_tools_times_host_log_and_result(wheelhouse: Path) -> None:
    proc = _show(wheelhouse, "pw-pure", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (rec,) = data["records"]  # a pure wheel's second record (by source key) is not repeated
    assert rec.keys() >= RECORD_FIELDS
    assert rec["result"] == "ok"
    inputs = rec["inputs"]
    assert inputs["sdist_sha256"] and inputs["interpreter"]["abi"].startswith("cp")
    for field in ("auditwheel", "repair", "recipe", "env", "config_settings", "policy", "arch"):
        assert field in inputs
    assert "setuptools" in rec["build_deps"]
    assert rec["tools"]["auditwheel"] == inputs["auditwheel"]
    assert rec["tools"]["uv"] not in (None, "missing")  # it made the build environment
    assert rec["tool_paths"]["uv"]
    assert (wheelhouse / rec["log"]).is_file()
    assert rec["wheel"] in {f["filename"] for f in data["files"]}
    assert rec["duration"] > 0


def test_failure_shows_error_and_log_tail(wheelhouse: Path) -> None:
    table = _show(wheelhouse, "pw_Broken")  # any spelling of the name
    assert table.returncode == 0, table.stderr
    assert "failed" in table.stdout and "build" in table.stdout
    assert "syntax error on purpose" in table.stdout  # from the log's tail
    data = json.loads(_show(wheelhouse, "pw-broken", "--json").stdout)
    (rec,) = data["records"]
    assert rec["result"] == "failed" and rec["error"]
    assert "syntax error on purpose" in rec["log_tail"]
    assert data["files"] == []


def test_table_lists_key_and_wheel(wheelhouse: Path) -> None:
    rec = json.loads(_show(wheelhouse, "pw-pure", "--json").stdout)["records"][0]
    table = _show(wheelhouse, "pw-pure")
    assert rec["cache_key"][:12] in table.stdout
    assert rec["wheel"] in table.stdout
    assert "setuptools==" in table.stdout


def test_downloaded_only_and_unknown_projects(wheelhouse: Path) -> None:
    downloaded = _show(wheelhouse, "pw-haswheel")
    assert downloaded.returncode == 0
    assert "no build records" in downloaded.stdout
    assert "pw_haswheel-1.0-py3-none-any.whl" in downloaded.stdout
    unknown = _show(wheelhouse, "no-such-project")
    assert unknown.returncode == 2
    assert "no-such-project" in unknown.stderr
