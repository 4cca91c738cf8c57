"""Logging that names the package being worked on, even with builds in parallel."""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import TextIO

_current: contextvars.ContextVar[str] = contextvars.ContextVar("prewheel_package", default="")

logger = logging.getLogger("prewheel")
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(package)s%(message)s"
_handler: logging.Handler | None = None


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


def configure(debug: bool, stream: TextIO | None = None) -> None:
    """Log to `stream` (standard error), every line (prewheel's, and its libraries' at INFO
    and above, such as `build`'s "Building wheel...") tagged with the package it is about.
    Called again, it replaces the handler it added before."""
    global _handler
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(stream)
    _handler.setFormatter(logging.Formatter(_FORMAT))
    _handler.addFilter(_PackageFilter())
    root.addHandler(_handler)
    # Debugging shows prewheel's own detail, and what its libraries say at INFO and above
    # (not their own debugging: cyclonedx alone writes hundreds of lines per wheel).
    root.setLevel(logging.INFO if debug else logging.WARNING)
    logger.setLevel(logging.DEBUG if debug else logging.NOTSET)


def get_logger(name: str) -> logging.Logger:
    """prewheel's logger for `name`: its lines get their package tag from the handler
    `configure` adds (which tags the libraries' lines too)."""
    return logging.getLogger(f"prewheel.{name}")
