"""The static index: one PEP 503 / PEP 691 tree per accelerator, written from the catalog.

`pages` says what a page lists and renders it, `tree` writes the pages (incrementally,
atomically), `check` holds them against the store,
`status_page` and `targets_json` describe the wheelhouse for people and tools.
"""

from __future__ import annotations

from .check import CheckResult, check
from .tree import ensure, indexed_accelerators, listed_projects, rebuild, recover, update_project

__all__ = [
    "CheckResult",
    "check",
    "ensure",
    "indexed_accelerators",
    "listed_projects",
    "rebuild",
    "recover",
    "update_project",
]
