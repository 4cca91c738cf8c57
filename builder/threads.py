"""Work side by side in threads, each in a copy of the caller's context (the no-op stamp's
recorder, the log's package tag go along)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def in_threads(fn: Callable[[T], R], args: Sequence[T], threads: int) -> list[R]:
    """`fn` over `args` in up to `threads` threads, each in a copy of this context (the
    stamp's recorder, the log's package tag), results in order; the first error raised."""
    if len(args) <= 1:
        return [fn(a) for a in args]
    with ThreadPoolExecutor(max_workers=min(threads, len(args))) as pool:
        futures: list[Future[R]] = [
            pool.submit(contextvars.copy_context().run, fn, a) for a in args
        ]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise
