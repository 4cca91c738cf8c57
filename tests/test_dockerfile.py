"""`prewheel dockerfile`: the runtime stage it prints, checked without a Docker engine.

The Docker tier (test_docker_tier.py) builds and runs it; here its shape is pinned down: slim
base by target, wheels only, nothing copied but the app, non-root, and clean under hadolint,
dockerfile-parse and our own linter.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from needs import declared

from builder.cli import main
from builder.config import TargetSpec
from builder.docker.dockerfile import RuntimeSpec, base_image, find_target, glibc_mismatch, render
from builder.docker.lint import lint
from builder.errors import TargetError
from builder.targets import Target

REPO = Path(__file__).resolve().parent.parent


def target(python: str = "3.12", accel: str = "cpu", policy: str = "auto") -> Target:
    abi = "cp" + python.replace(".", "")  # "3.13t" -> "cp313t"
    return Target(
        name=f"{abi}-{accel}-{policy}",
        spec=TargetSpec(python=python, accel=accel, policy=policy),
        interpreter=None,
        toolkit=None,
        arch_list=(),
        repair_excludes=(),
        missing="not on this machine",
    )


def instructions(text: str) -> list[dict[str, object]]:
    dockerfile_parse = pytest.importorskip("dockerfile_parse")
    parser = dockerfile_parse.DockerfileParser(fileobj=io.BytesIO(text.encode()))
    return list(parser.structure)


def test_cpu_target_uses_slim_python_and_installs_wheels_only() -> None:
    text = render(RuntimeSpec(target=target("3.12"), app="src"))
    assert "ARG BASE_IMAGE=python:3.12-slim\nFROM ${BASE_IMAGE}\n" in text
    assert "--no-cache-dir --only-binary=:all:" in text
    assert '--index-url "${INDEX_URL}"' in text
    assert "ARG INDEX_URL=http://prewheel:8080/cpu/simple/" in text
    assert "ARG PIP_TRUSTED_HOST=prewheel" in text
    code = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    for banned in ("gcc", "build-essential", "-dev", "apt-get"):
        assert banned not in code
    kinds = [i["instruction"] for i in instructions(text)]
    assert kinds[-3:] == ["COPY", "USER", "CMD"], kinds  # the app last, then only metadata
    assert kinds.count("COPY") == 1 and "ADD" not in kinds
    assert "USER 10001" in text


def test_https_index_needs_no_trusted_host() -> None:
    text = render(RuntimeSpec(target=target(), index_url="https://pypi.example/cpu/simple/"))
    assert "ARG INDEX_URL=https://pypi.example/cpu/simple/" in text
    assert "PIP_TRUSTED_HOST" not in text


def test_wheelhouse_comes_through_a_bind_mount_not_a_layer() -> None:
    text = render(RuntimeSpec(target=target(accel="cu128"), wheelhouse="wh", base="my/cuda-py"))
    assert "--mount=type=bind,source=wh,target=/wheelhouse" in text
    assert "--index-url file:///wheelhouse/cu128/simple/" in text
    assert "INDEX_URL" not in text
    assert "ARG BASE_IMAGE=my/cuda-py" in text
    assert "apt-get" not in text  # --base brings its own Python
    assert not [i for i in instructions(text) if i["instruction"] in ("COPY", "ADD")]


@pytest.mark.parametrize(
    ("python", "accel", "image"),
    [
        ("3.12", "cu128", "nvidia/cuda:12.8.0-runtime-ubuntu24.04"),
        ("3.10", "cu126", "nvidia/cuda:12.6.0-runtime-ubuntu22.04"),
        ("3.12", "cu130", "nvidia/cuda:13.0.0-runtime-ubuntu24.04"),
        ("3.11", "cpu", "python:3.11-slim"),
    ],
)
def test_base_image_follows_the_target(python: str, accel: str, image: str) -> None:
    assert base_image(target(python, accel)) == image


def test_cuda_runtime_installs_python_without_recommends_and_cleans_lists() -> None:
    text = render(RuntimeSpec(target=target("3.12", "cu128")))
    assert "apt-get install -y --no-install-recommends python3.12 python3.12-venv" in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    assert "python3.12 -m venv /opt/venv" in text
    assert not [f for f in lint(text) if f.rule != "no-dockerignore"]


@pytest.mark.parametrize(
    ("python", "accel"), [("3.11", "cu128"), ("3.12", "cu124"), ("3.13t", "cu130")]
)
def test_cuda_target_without_a_distro_python_asks_for_base(python: str, accel: str) -> None:
    with pytest.raises(TargetError, match=f"ships (a free-threaded )?Python {python}") as err:
        render(RuntimeSpec(target=target(python, accel)))
    assert err.value.hint is not None and "--base" in err.value.hint


def test_paths_must_stay_inside_the_build_context() -> None:
    with pytest.raises(TargetError, match="inside the Docker build context"):
        render(RuntimeSpec(target=target(), wheelhouse="/srv/wheelhouse"))
    with pytest.raises(TargetError, match="inside the Docker build context"):
        render(RuntimeSpec(target=target(), app="../app"))


def test_unknown_target_names_the_known_ones() -> None:
    with pytest.raises(TargetError, match="known targets: cp312-cpu-auto"):
        find_target([target()], "cp399-cpu-auto")


@pytest.mark.parametrize(
    "spec",
    [
        RuntimeSpec(target=target(), app="app", command=("python", "-m", "app")),
        RuntimeSpec(target=target(), wheelhouse="wheelhouse", requirements="req/prod.txt"),
        RuntimeSpec(target=target("3.12", "cu128"), index_url="http://builder:8080/cu128/simple/"),
        RuntimeSpec(target=target("3.10", "cu126"), wheelhouse="wheelhouse", app="."),
    ],
)
def test_output_passes_hadolint_and_our_linter(spec: RuntimeSpec, tmp_path: Path) -> None:
    text = render(spec)
    path = tmp_path / "Dockerfile"
    path.write_text(text)
    (tmp_path / ".dockerignore").write_text(".git\n")
    assert lint(text, path=path) == []
    hadolint = declared("hadolint")
    proc = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cli_prints_the_dockerfile(tmp_path: Path) -> None:
    config = tmp_path / "prewheel.toml"
    config.write_text('[targets]\npython = ["3.12"]\naccel = ["cpu", "cu128"]\n')
    runner = CliRunner()
    result = runner.invoke(
        main,
        [
            "dockerfile",
            "-c",
            str(config),
            "--target",
            "cp312-cu128-auto",
            "--from-wheelhouse",
            "wheelhouse",
            "--app",
            "app",
            "--cmd",
            "python -m app",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Runtime stage for target cp312-cu128-auto")
    assert 'CMD ["python", "-m", "app"]' in result.output
    out = tmp_path / "Dockerfile"
    result = runner.invoke(
        main, ["dockerfile", "-c", str(config), "--target", "cp312-cpu-auto", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "python:3.12-slim" in out.read_text()


def test_cli_unknown_target_exits_2_listing_known(tmp_path: Path) -> None:
    config = tmp_path / "prewheel.toml"
    config.write_text('[targets]\npython = ["3.12"]\naccel = ["cpu", "cu128"]\n')
    result = CliRunner().invoke(main, ["dockerfile", "-c", str(config), "--target", "nope"])
    assert result.exit_code == 2
    assert "cp312-cpu-auto" in result.output and "cp312-cu128-auto" in result.output


def test_cli_index_url_and_wheelhouse_are_exclusive() -> None:
    result = CliRunner().invoke(
        main, ["dockerfile", "--target", "x", "--index-url", "http://a/", "--from-wheelhouse", "wh"]
    )
    assert result.exit_code == 2
    assert "not both" in result.output


def test_builder_dockerfile_passes_hadolint_and_our_linter() -> None:
    path = REPO / "Dockerfile.builder"
    assert lint(path.read_text(), path=path) == []
    stages = [i for i in instructions(path.read_text()) if i["instruction"] == "FROM"]
    assert len(stages) >= 2  # multi-stage: the install stage's tree stays behind
    hadolint = declared("hadolint")
    proc = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout


def test_builder_context_is_whitelisted() -> None:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    assert lines[lines.index("*") + 1 :][:2] == ["!builder/", "!pyproject.toml"]


@pytest.mark.parametrize(
    ("python", "accel", "policy", "warned"),
    [
        ("3.10", "cu126", "manylinux_2_36_x86_64", True),  # ubuntu22.04: glibc 2.35
        ("3.10", "cu126", "manylinux_2_35_x86_64", False),
        ("3.10", "cu126", "manylinux2014_x86_64", False),
        ("3.12", "cu128", "manylinux_2_36_x86_64", False),  # ubuntu24.04: glibc 2.39
        ("3.12", "cu128", "manylinux_2_40_x86_64", True),
        ("3.12", "cpu", "manylinux_2_40_x86_64", False),  # python:3.12-slim is Debian 13
    ],
)
def test_a_base_older_than_the_policy_is_warned_about(
    python: str, accel: str, policy: str, warned: bool
) -> None:
    t = target(python, accel, policy)
    why = glibc_mismatch(t, base_image(t))
    assert bool(why) == warned
    text = render(RuntimeSpec(target=t))
    assert ("# WARNING: " in text) == warned
    if why:
        assert f"accepts wheels up to {policy}" in why and "has glibc" in why
        assert not lint(text), lint(text)  # a comment: the stage itself is unchanged
