"""Shared fixtures: a local upstream index (offline), a wheelhouse dir, a config writer.

Helpers for test modules live in `upstream.py` (`from upstream import make_sdist, ...`).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from upstream import Upstream, WriteConfig, pip_isolated_env, standard_upstream

__all__ = ["pip_isolated_env"]


def refuse_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test of a decision that starts a process is a bug (cibuildwheel's
    mock_protection): `subprocess.Popen` raises for the rest of the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a unit test started a process: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", refuse)


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """`refuse_processes`, for a module of pure decisions:
    `pytestmark = pytest.mark.usefixtures("no_processes")`."""
    refuse_processes(monkeypatch)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The shared upstream index (`.url`, `.root`, `.add_sdist()`, ...), one per session.

    Shared by every test: add packages under new names, never replace the standard ones.
    A test that must replace or remove files uses `fresh_upstream`.
    """
    index = standard_upstream(tmp_path_factory.mktemp("upstream"))
    yield index
    index.stop()


@pytest.fixture
def fresh_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """A private copy of the standard upstream index for this test only (about 0.1 s)."""
    index = standard_upstream(tmp_path_factory.mktemp("fresh-upstream"))
    yield index
    index.stop()


@pytest.fixture
def tmp_wheelhouse(tmp_path: Path) -> Path:
    path = tmp_path / "wheelhouse"
    path.mkdir()
    return path


@pytest.fixture
def write_config(upstream: Upstream) -> WriteConfig:
    """`write_config(dir, **tables) -> dir/prewheel.toml`, upstream set to the local index.

    Each keyword is a top-level table: `build={"jobs": 2}`, `packages={"pw-cext": {...}}`,
    `target=[{...}]` for `[[target]]`; `index={...}` is merged over the default.
    """

    def write(directory: Path, **tables: Any) -> Path:
        tables["index"] = {"upstream": upstream.url, **tables.get("index", {})}
        path = directory / "prewheel.toml"
        path.write_text(to_toml(tables), encoding="utf-8")
        return path

    return write


def to_toml(tables: Mapping[str, Any]) -> str:
    """Just enough TOML for config files: tables, arrays of tables, inline values."""
    out: list[str] = []

    def table(prefix: str, body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not isinstance(v, Mapping)}
        if scalars or not body:
            out.append(f"[{prefix}]")
            out.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in scalars.items())
        for key, value in body.items():
            if isinstance(value, Mapping):
                table(f"{prefix}.{json.dumps(key)}", value)

    for name, body in tables.items():
        if isinstance(body, list):
            for entry in body:
                out.append(f"[[{name}]]")
                out.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in entry.items())
        else:
            table(json.dumps(name), body)
    return "\n".join(out) + "\n"


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items()) + "}"
    return "[" + ", ".join(_value(v) for v in value) + "]"
