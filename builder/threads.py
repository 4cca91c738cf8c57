"""Work side by side in threads, each in a copy of the caller's context (the no-op stamp's
recorder, the log's package tag go along)."""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar, cast

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


F = TypeVar("F", bound=Callable[..., Any])


def once(fn: F) -> F:
    """`functools.cache` for a probe (it starts a process): threads that ask for the same
    value at the same time wait for one to find it, instead of each starting its own. An
    error is not kept: the next call tries again."""
    found: dict[Hashable, Future[Any]] = {}
    lock = threading.Lock()

    @functools.wraps(fn)
    def cached(*args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        with lock:
            future = found.get(key)
            mine = future is None
            if future is None:
                future = found[key] = Future()
        if mine:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                with lock:
                    del found[key]
                future.set_exception(exc)
        return future.result()

    return cast(F, cached)
