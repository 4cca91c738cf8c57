"""CI fan-out: `prewheel plan --matrix` and the GitHub / GitLab examples that consume it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from clitools import prewheel
from upstream import Upstream, WriteConfig

from builder.errors import ConfigError
from builder.stages.matrix import MAX_JOBS, matrix_from_plan

ROOT = Path(__file__).resolve().parent.parent
CI = ROOT / "examples" / "ci"

# What both CI systems accept: GitHub reads `include` (any other top-level key would become a
# matrix dimension); GitLab's parallel:matrix wants flat maps of strings, at most 200 jobs.
MATRIX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["include"],
    "additionalProperties": False,
    "properties": {
        "include": {
            "type": "array",
            "maxItems": MAX_JOBS,
            "items": {
                "type": "object",
                "required": ["target", "accel", "packages", "builds", "downloads", "batch", "name"],
                "additionalProperties": False,
                "patternProperties": {"^[a-z_]+$": {"type": "string"}},
            },
        }
    },
}


def item(target: str, name: str, action: str, version: str = "1.0") -> dict[str, str]:
    return {"target": target, "name": name, "version": version, "action": action}


T311 = "cp311-cpu-manylinux_2_5_x86_64"
T312 = "cp312-cu130-manylinux_2_34_x86_64"


def test_one_entry_per_target_with_work() -> None:
    items = [
        item(T311, "Pw_B", "build"),
        item(T311, "pw-a", "build"),
        item(T311, "pw-w", "download"),
        item(T312, "pw-a", "cached"),
        item(T312, "pw-w", "skip"),
        item("cp310-cpu-auto", "pw-x", "download"),
    ]
    matrix = matrix_from_plan(items, None)
    jsonschema.validate(matrix, MATRIX_SCHEMA)
    assert matrix["include"] == [
        {
            "target": T311,
            "accel": "cpu",
            "packages": "pw-a pw-b pw-w",
            "builds": "2",
            "downloads": "1",
            "batch": "1/1",
            "name": T311,
        },
        {
            "target": "cp310-cpu-auto",
            "accel": "cpu",
            "packages": "pw-x",
            "builds": "0",
            "downloads": "1",
            "batch": "1/1",
            "name": "cp310-cpu-auto",
        },
    ]  # T312 has only cached work: no job


def test_batches_split_builds_and_downloads_go_first() -> None:
    items = [item(T312, f"pw-{i}", "build") for i in range(5)]
    items.append({**item(T312, "pw-dl", "download"), "accel": "cu130"})
    include = matrix_from_plan(items, 2)["include"]
    assert [e["batch"] for e in include] == ["1/3", "2/3", "3/3"]
    assert [e["packages"] for e in include] == ["pw-0 pw-1 pw-dl", "pw-2 pw-3", "pw-4"]
    assert {e["accel"] for e in include} == {"cu130"}
    assert include[1]["name"] == f"{T312} 2/3"
    assert sum(int(e["builds"]) for e in include) == 5


def test_empty_plan_and_too_many_jobs() -> None:
    assert matrix_from_plan([], None) == {"include": []}
    many = [item(T311, f"pw-{i}", "build") for i in range(MAX_JOBS + 1)]
    with pytest.raises(ConfigError, match="larger batch size"):
        matrix_from_plan(many, 1)
    assert len(matrix_from_plan(many, None)["include"]) == 1


def test_plan_matrix_cli(upstream: Upstream, tmp_path: Path, write_config: WriteConfig) -> None:
    config = write_config(tmp_path)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("pw-app==1.0\n")
    proc = prewheel("plan", "-r", reqs, "-c", config, "--wheelhouse", tmp_path / "wh", "--matrix")
    assert proc.returncode == 0, proc.stderr
    matrix = json.loads(proc.stdout)
    jsonschema.validate(matrix, MATRIX_SCHEMA)
    (entry,) = matrix["include"]
    assert entry["packages"] == "pw-app pw-cext pw-haswheel pw-pure"
    assert (entry["builds"], entry["downloads"]) == ("3", "1")


def _yaml(path: Path) -> Any:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text())


def test_github_actions_example_fans_out_the_plan() -> None:
    wf = _yaml(CI / "github-actions.yml")
    jobs = wf["jobs"]
    plan_run = "\n".join(s.get("run", "") for s in jobs["plan"]["steps"])
    assert "prewheel plan" in plan_run and "--matrix" in plan_run
    build = jobs["build"]
    assert build["needs"] == "plan"
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    build_run = "\n".join(s.get("run", "") for s in build["steps"])
    assert '--target "${{ matrix.target }}"' in build_run
    assert "--cache-from" in build_run and "prewheel push" in build_run
    assert "--password-env DEVPI_PASSWORD" in build_run
    check_run = "\n".join(s.get("run", "") for s in jobs["check"]["steps"])
    assert "prewheel index check --url" in check_run and "+simple/" in check_run
    assert set(jobs["check"]["needs"]) == {"plan", "build"}


def test_gitlab_example_generates_a_valid_child_pipeline(tmp_path: Path) -> None:
    ci = _yaml(CI / "gitlab-ci.yml")
    assert ci["stages"] == ["plan", "build", "check"]
    script = "\n".join(ci["plan"]["script"])
    assert "prewheel plan" in script and "--matrix" in script
    generator = re.search(r"<<'PY'\n(.*?)\nPY", script, re.S)
    assert generator is not None
    code = generator.group(1)
    include = matrix_from_plan([item(T311, "pw-a", "build"), item(T312, "pw-b", "build")], None)
    for matrix, expect_build in ((include, True), ({"include": []}, False)):
        (tmp_path / "matrix.json").write_text(json.dumps(matrix))
        subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
        child = _yaml(tmp_path / "build-jobs.yml")
        if expect_build:
            assert child["build"]["parallel"]["matrix"] == matrix["include"]
            assert child["include"] == [{"local": "examples/ci/gitlab-build.yml"}]
            assert child["build"]["extends"] in _yaml(CI / "gitlab-build.yml")
        else:
            assert "build" not in child and child["nothing-to-build"]["script"]
    assert ci["build"]["trigger"]["strategy"] == "depend"
    template = _yaml(CI / "gitlab-build.yml")[".prewheel-build"]
    body = "\n".join(template["script"])
    assert '--target "$target"' in body and "--cache-from" in body and "prewheel push" in body
    assert "prewheel index check --url" in "\n".join(ci["check"]["script"])
