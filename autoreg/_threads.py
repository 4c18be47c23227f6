"""One BLAS thread and one OpenCV thread while a registration runs.

A registration's linear algebra is on small arrays: least squares on a few hundred matches, 4×4 photometric
systems, dot products of a few tens of thousands of values. A multithreaded BLAS (OpenBLAS starts one thread per
core) only adds synchronisation to such calls, and when the cores are busy each threaded call waits for a thread
the system has not scheduled: on two shared cores, the fixture's registration took 2× as long with OpenBLAS's
default threads as with one (``tests/bench/bench_pipeline.py``). One thread also makes a result independent of the
core count (a threaded dot product sums in another order). scikit-learn limits BLAS the same way inside its
estimators (``threadpoolctl``'s controller, created once).

OpenCV's own pool (ORB, descriptor matching, resizing, warping, blurs: images of at most a few hundred pixels a
side, and one 1024² warp) behaves alike: on the two shared cores, busy, the fixture's registration took a median
11 % less time with one OpenCV thread than with OpenCV's default two (166 against 186 ms and 184 against 207 ms in
two runs of 40 interleaved registrations each; the same results).

The limits are process-wide, as the thread pools are: while any registration runs, other threads of the process get
one BLAS and one OpenCV thread too. Nested and concurrent registrations share one limit, lifted when the last one
ends. (OpenBLAS may ignore a limit set from a secondary thread once the main thread has set one; a registration then
runs as it would without this module.)
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ONE_THREAD", "one_thread"]

_F = TypeVar("_F", bound=Callable[..., Any])


class _Limits:
    """The limits in force: the BLAS limiter (threadpoolctl's, or None) and OpenCV's thread count before."""

    def __init__(self, blas: Any, opencv_threads: int) -> None:
        self._blas = blas
        self._opencv_threads = opencv_threads

    def restore_original_limits(self) -> None:
        import cv2

        cv2.setNumThreads(self._opencv_threads)
        if self._blas is not None:
            self._blas.restore_original_limits()


class _OneThread:
    """Re-entrant, thread-safe context manager: BLAS libraries loaded when first entered, and OpenCV, run on one
    thread inside."""

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

    def _limit(self) -> _Limits:
        import cv2

        previous = cv2.getNumThreads()
        cv2.setNumThreads(1)
        return _Limits(self._limit_blas(), previous)

    def _limit_blas(self) -> Any:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # pragma: no cover - threadpoolctl is a dependency
            return None
        if self._controller is None:  # inspecting the loaded libraries costs ~1 ms: once per process
            self._controller = ThreadpoolController()
        return self._controller.limit(limits=1, user_api="blas")


#: Enter around a registration: ``with ONE_THREAD: ...``.
ONE_THREAD = _OneThread()


def one_thread(func: _F) -> _F:
    """Decorate a function to run with :data:`ONE_THREAD`."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with ONE_THREAD:
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
