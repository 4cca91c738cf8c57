"""Logging that names the package being worked on, even with builds in parallel."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator

_current: contextvars.ContextVar[str] = contextvars.ContextVar("prewheel_package", default="")

logger = logging.getLogger("prewheel")


class _PackageFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        pkg = _current.get()
        record.package = f"[{pkg}] " if pkg else ""
        return True


@contextlib.contextmanager
def working_on(package: str) -> Iterator[None]:
    """Tag every log line emitted inside the block with `package`."""
    token = _current.set(package)
    try:
        yield
    finally:
        _current.reset(token)


def current_package() -> str:
    return _current.get()


def get_logger(name: str) -> logging.Logger:
    log = logging.getLogger(f"prewheel.{name}")
    if not any(isinstance(f, _PackageFilter) for f in log.filters):
        log.addFilter(_PackageFilter())
    return log
