"""Work side by side in threads, each in a copy of the caller's context (the no-op stamp's
recorder, the log's package tag go along)."""

from __future__ import annotations

import contextvars
import functools
import threading
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar, cast

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


class PerKey(Generic[T]):
    """Values made once per key by the first thread that asks; threads that ask meanwhile
    wait for it instead of making their own. A failure is not kept: the next ask makes the
    value again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[Hashable, Future[T]] = {}

    def get(
        self,
        key: Hashable,
        make: Callable[[], T],
        *,
        after_failure: Callable[[], None] | None = None,
    ) -> T:
        """The value of `key`, made by `make` here or by another thread. A thread that waited
        on one whose `make` failed gets that failure; with `after_failure`, it calls that
        (which may raise) and makes the value itself instead."""
        while True:
            with self._lock:
                future = self._found.get(key)
                mine = future is None
                if future is None:
                    future = self._found[key] = Future()
            if mine:
                try:
                    value = make()
                except BaseException as exc:
                    with self._lock:
                        del self._found[key]
                    future.set_exception(exc)
                    raise
                future.set_result(value)
                return value
            if after_failure is None:
                return future.result()
            try:
                return future.result()
            except Exception:
                after_failure()


def once(fn: F) -> F:
    """`functools.cache` for a probe (it starts a process): threads that ask for the same
    value at the same time wait for one to find it, instead of each starting its own. An
    error is not kept: the next call tries again."""
    values: PerKey[Any] = PerKey()

    @functools.wraps(fn)
    def cached(*args: Any, **kwargs: Any) -> Any:
        key = (args, tuple(sorted(kwargs.items())))
        return values.get(key, lambda: fn(*args, **kwargs))

    return cast(F, cached)
