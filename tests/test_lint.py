"""The conventions are enforced, not just written down: ruff and mypy run with the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

from needs import declared

ROOT = Path(__file__).resolve().parent.parent


def _tool(name: str) -> list[str]:
    return [declared(name)]


def test_ruff_check() -> None:
    proc = subprocess.run([*_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_format() -> None:
    proc = subprocess.run(
        [*_tool("ruff"), "format", "--check", "."], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict() -> None:
    proc = subprocess.run(
        [*_tool("mypy"), "--strict", "builder"], cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
