"""`prewheel lint-dockerfile`: each rule with its line, clean files, parse errors, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder.cli import main
from builder.docker.lint import DockerfileParseError, lint
from builder.docker.parse import parse

REPO = Path(__file__).resolve().parent.parent
SEED = REPO / "examples" / "docker" / "Dockerfile.single-stage"


def rules(text: str) -> list[tuple[str, int]]:
    return [(f.rule, f.line) for f in lint(text)]


def test_seed_single_stage_dockerfile_lists_every_expected_finding() -> None:
    found = {(f.rule, f.line) for f in lint(SEED.read_text(), path=SEED)}
    expected = {
        ("no-dockerignore", 1),
        ("compiler-in-final", 3),  # FROM python:3.11: the full image ships gcc
        ("apt-lists", 4),
        ("apt-lists", 5),
        ("apt-recommends", 5),
        ("compiler-in-final", 5),  # build-essential, python3-dev, libffi-dev
        ("consecutive-run", 5),
        ("pip-cache", 8),
        ("pip-unpinned", 8),
        ("sdist-in-final", 8),
        ("consecutive-run", 9),
        ("pip-cache", 9),
        ("sdist-in-final", 9),
        ("consecutive-run", 10),
        ("pip-cache", 10),
        ("pip-unpinned", 10),
        ("sdist-in-final", 10),
    }
    assert found == expected


def test_build_stage_is_not_the_final_stage() -> None:
    text = """\
ARG BASE=python:3.12-slim
FROM python:3.12 AS build
RUN pip wheel --wheel-dir /w -r requirements.txt
RUN apt-get update && apt-get install -y gcc
FROM ${BASE}
RUN --mount=type=bind,from=build,source=/w,target=/w \\
    pip install --no-cache-dir --only-binary=:all: --no-index --find-links /w -r /w/req.txt \\
    && useradd app
USER app
"""
    # The build stage may hold compilers and build sdists (it is thrown away; `pip wheel` is not
    # an install); the habits that bloat any layer are still reported where they are.
    assert rules(text) == [("apt-lists", 4), ("apt-recommends", 4), ("consecutive-run", 4)]


def test_pip_rules() -> None:
    text = """\
FROM python:3.12-slim
RUN pip install --no-cache-dir --only-binary=:all: requests==2.32.3 'numpy>=2' \\
        flask -r requirements.txt ./local.whl git+https://x/y.git
ENV PIP_NO_CACHE_DIR=1
RUN python3 -m pip install --only-binary :all: -c constraints.txt flask
"""
    found = lint(text)
    # Line 5: pinned by the constraints file; no cache by ENV; ENV breaks the RUN sequence.
    assert [(f.rule, f.line) for f in found] == [("pip-unpinned", 2), ("pip-unpinned", 2)]
    unpinned = [f.message.split("'")[1] for f in found if f.rule == "pip-unpinned"]
    assert unpinned == ["numpy>=2", "flask"]


def test_pip_line_is_the_physical_line_of_the_command() -> None:
    text = """\
FROM python:3.12-slim
RUN set -e; \\
    echo start; \\
    pip install requests==2.32.3
"""
    assert ("pip-cache", 4) in rules(text)
    assert ("sdist-in-final", 4) in rules(text)


def test_pip_cache_mount_or_env_satisfies_no_cache_dir() -> None:
    text = """\
FROM python:3.12-slim
RUN --mount=type=cache,target=/root/.cache/pip pip install --only-binary=:all: a==1
"""
    assert rules(text) == []
    text2 = "FROM python:3.12-slim\nRUN PIP_NO_CACHE_DIR=1 pip install --only-binary=:all: a==1\n"
    assert rules(text2) == []


def test_uv_pip_install() -> None:
    text = """\
FROM python:3.12-slim
RUN uv pip install --system flask==3.0.0
RUN uv pip install --system --no-cache --no-build flask==3.0.0
"""
    assert rules(text) == [("pip-cache", 2), ("sdist-in-final", 2), ("consecutive-run", 3)]


def test_apt_rules() -> None:
    text = """\
FROM debian:bookworm-slim
RUN apt-get update && apt-get -y install --no-install-recommends curl \\
    && rm -rf /var/lib/apt/lists/*
COPY x /x
RUN apt-get update && apt-get install -y curl
COPY y /y
RUN apt-get -o APT::Install-Recommends=false install -y curl && rm -rf /var/lib/apt/lists/*
"""
    assert rules(text) == [("apt-lists", 5), ("apt-recommends", 5)]


def test_compilers_only_matter_in_the_final_stage() -> None:
    text = """\
FROM nvidia/cuda:12.8.1-devel-ubuntu24.04 AS build
RUN apt-get update && apt-get install -y --no-install-recommends g++ python3-dev \\
    && rm -rf /var/lib/apt/lists/*
FROM build
RUN apt-get update && apt-get install -y --no-install-recommends gcc-12 libssl-dev curl \\
    && rm -rf /var/lib/apt/lists/*
"""
    found = lint(text)
    assert [(f.rule, f.line) for f in found] == [("compiler-in-final", 5)]
    assert "gcc-12, libssl-dev" in found[0].message


@pytest.mark.parametrize(
    "image",
    [
        "nvidia/cuda:12.8.1-devel-ubuntu24.04",
        "python:3.12",
        "python",
        "buildpack-deps",
        "quay.io/pypa/manylinux_2_28_x86_64",
    ],
)
def test_final_stage_on_a_compiler_image(image: str) -> None:
    assert rules(f'FROM {image}\nCMD ["python"]\n') == [("compiler-in-final", 1)]


@pytest.mark.parametrize(
    "image", ["python:3.12-slim", "nvidia/cuda:12.8.1-runtime-ubuntu24.04", "debian:bookworm-slim"]
)
def test_runtime_images_are_fine(image: str) -> None:
    assert rules(f'FROM {image}\nCMD ["python"]\n') == []


def test_alpine_base_for_a_python_app() -> None:
    assert rules('FROM python:3.12-alpine\nCMD ["python"]\n') == [("alpine-python", 1)]
    assert rules("FROM alpine:3.20\nRUN apk add --no-cache python3\n") == [("alpine-python", 1)]
    assert rules("FROM alpine:3.20\nRUN apk add --no-cache curl\n") == []  # not a Python app


def test_apk_compilers_in_final_stage() -> None:
    text = "FROM alpine:3.20\nRUN apk add --no-cache build-base musl-dev python3\n"
    assert rules(text) == [("alpine-python", 1), ("compiler-in-final", 2)]


def test_consecutive_runs_with_different_mounts_are_not_joinable() -> None:
    text = """\
FROM debian:bookworm-slim
RUN --mount=type=cache,target=/var/cache/apt echo a
RUN echo b
RUN echo c
"""
    assert rules(text) == [("consecutive-run", 4)]


def test_exec_form_and_heredoc_are_read() -> None:
    text = """\
FROM python:3.12-slim
RUN ["pip", "install", "flask==3.0.0"]
COPY <<EOF /etc/motd
RUN this is text, not an instruction
EOF
RUN ["/bin/sh", "-c", "apt-get update && apt-get install -y curl"]
"""
    assert rules(text) == [
        ("pip-cache", 2),
        ("sdist-in-final", 2),
        ("apt-lists", 6),
        ("apt-recommends", 6),
    ]


def test_escape_directive_and_arg_defaults() -> None:
    text = "# escape=`\nARG PY=3.12\nFROM python:${PY}\nRUN echo a `\n    b\n"
    stages = parse(text)
    assert stages[0].base == "python:3.12"
    assert stages[0].instructions[0].args == "echo a      b"
    assert rules(text) == [("compiler-in-final", 3)]


def test_dockerignore_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile.prod"
    path.write_text("FROM python:3.12-slim\n")
    assert [f.rule for f in lint(path.read_text(), path=path)] == ["no-dockerignore"]
    (tmp_path / "Dockerfile.prod.dockerignore").write_text("*\n")
    assert lint(path.read_text(), path=path) == []


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("FROM python:3.12-slim\nRUN echo ok\nFOO bar\n", 3, "unknown instruction: FOO"),
        ("FROM python:3.12-slim\n\nRUN\n", 3, "RUN needs an argument"),
        ("RUN echo hi\nFROM python:3.12-slim\n", 1, "before the first FROM"),
        ("FROM a b c d\n", 1, "FROM takes IMAGE"),
        ("# only a comment\n", 1, "no FROM"),
        ("FROM a\nRUN cat <<EOF\nnever closed\n", 2, "heredoc 'EOF' is never closed"),
    ],
)
def test_parse_errors_carry_their_line(text: str, line: int, message: str) -> None:
    with pytest.raises(DockerfileParseError, match=message) as err:
        lint(text)
    assert err.value.line == line


def test_cli_exit_codes_and_output(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["lint-dockerfile", str(SEED)])
    assert result.exit_code == 1
    assert f"{SEED}:5: [apt-recommends]" in result.output

    result = runner.invoke(main, ["lint-dockerfile", "--json", str(SEED)])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert {"file", "line", "rule", "message"} <= data[0].keys()
    assert ("pip-unpinned", 10) in {(d["rule"], d["line"]) for d in data}

    clean = tmp_path / "Dockerfile"
    clean.write_text('FROM python:3.12-slim\nCMD ["python"]\n')
    (tmp_path / ".dockerignore").write_text(".git\n")
    result = runner.invoke(main, ["lint-dockerfile", "--json", str(clean)])
    assert result.exit_code == 0 and json.loads(result.output) == []

    broken = tmp_path / "Dockerfile.broken"
    broken.write_text("FROM python:3.12-slim\nRUNN echo\n")
    result = runner.invoke(main, ["lint-dockerfile", str(broken)])
    assert result.exit_code == 2
    assert f"{broken}:2: unknown instruction: RUNN" in result.output

    result = runner.invoke(main, ["lint-dockerfile", str(tmp_path / "missing")])
    assert result.exit_code == 2


def test_cli_reads_stdin() -> None:
    result = CliRunner().invoke(
        main, ["lint-dockerfile", "-"], input="FROM python:3.12-slim\nRUN pip install flask\n"
    )
    assert result.exit_code == 1
    assert "<stdin>:2: [pip-cache]" in result.output
