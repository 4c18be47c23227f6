"""One BLAS thread while a registration runs.

A registration's linear algebra is on small arrays: least squares on a few hundred matches, 4×4 photometric
systems, dot products of a few tens of thousands of values. A multithreaded BLAS (OpenBLAS starts one thread per
core) only adds synchronisation to such calls, and when the cores are busy each threaded call waits for a thread
the system has not scheduled: on two shared cores, the fixture's registration took 2× as long with OpenBLAS's
default threads as with one (``tests/bench/bench_pipeline.py``). One thread also makes a result independent of the
core count (a threaded dot product sums in another order). scikit-learn limits BLAS the same way inside its
estimators (``threadpoolctl``'s controller, created once).

The limit is process-wide, as the BLAS thread pool is: while any registration runs, other threads of the process get
one BLAS thread too. Nested and concurrent registrations share one limit, lifted when the last one ends. (OpenBLAS
may ignore a limit set from a secondary thread once the main thread has set one; a registration then runs as it
would without this module.)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ONE_BLAS_THREAD", "one_blas_thread"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _OneBlasThread:
    """Re-entrant, thread-safe context manager: BLAS libraries loaded when first entered run on one thread inside."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._controller: Any = None
        self._limiter: Any = None

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._limiter = self._limit()
            self._depth += 1

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._limiter is not None:
                self._limiter.restore_original_limits()
                self._limiter = None

    def _limit(self) -> Any:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return None
        if self._controller is None:  # inspecting the loaded libraries costs ~1 ms: once per process
            self._controller = ThreadpoolController()
        return self._controller.limit(limits=1, user_api="blas")


#: Enter around a registration: ``with ONE_BLAS_THREAD: ...``.
ONE_BLAS_THREAD = _OneBlasThread()


def one_blas_thread(func: _F) -> _F:
    """Decorate a function to run with :data:`ONE_BLAS_THREAD`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with ONE_BLAS_THREAD:
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
