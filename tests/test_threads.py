"""One BLAS and one OpenCV thread while a registration runs, and the original limits afterwards."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import threadpoolctl

from autoreg._threads import ONE_THREAD, one_thread


def _blas_threads() -> list[int]:
    return [info["num_threads"] for info in threadpoolctl.threadpool_info() if info["user_api"] == "blas"]


@pytest.fixture
def two_blas_threads():
    """Two BLAS threads outside the limit (also on a one-core machine), restored afterwards."""
    import cv2  # noqa: F401 - OpenCV's wheel loads a BLAS of its own: loaded before, so the lists compare

    np.dot(np.ones(3), np.ones(3))  # numpy's BLAS is loaded
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        if not _blas_threads():
            pytest.skip("no BLAS library that threadpoolctl can control")
        yield


def test_inside_one_thread_and_restored_after(two_blas_threads):
    before = _blas_threads()
    with ONE_THREAD:
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_nested_entries_keep_the_limit_until_the_outermost_ends(two_blas_threads):
    before = _blas_threads()
    with ONE_THREAD:
        with ONE_THREAD:
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}
    assert _blas_threads() == before


def test_restored_when_the_function_raises(two_blas_threads):
    before = _blas_threads()

    @one_thread
    def fails() -> None:
        assert set(_blas_threads()) == {1}
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert _blas_threads() == before


def test_overlapping_threads_restore_once_when_the_last_ends(monkeypatch):
    """Two registrations in threads whose limits overlap: one limit, lifted by the last to finish, not the first."""
    from autoreg import _threads

    events: list[str] = []

    class Limiter:
        def restore_original_limits(self) -> None:
            events.append("restore")

    limit = _threads._OneThread()
    monkeypatch.setattr(limit, "_limit", lambda: events.append("limit") or Limiter())
    first_inside, second_inside, first_done = threading.Event(), threading.Event(), threading.Event()

    def first() -> None:
        with limit:
            first_inside.set()
            second_inside.wait(5)

    def second() -> None:
        with limit:
            second_inside.set()
            first_done.wait(5)
            events.append("second still inside")

    a = threading.Thread(target=first)
    a.start()
    first_inside.wait(5)
    b = threading.Thread(target=second)
    b.start()
    a.join(5)
    first_done.set()
    b.join(5)
    assert events == ["limit", "second still inside", "restore"]


@pytest.fixture
def two_opencv_threads():
    """Two OpenCV threads outside the limit, restored afterwards."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    yield
    cv2.setNumThreads(before)


def test_opencv_on_one_thread_inside_and_restored_after(two_opencv_threads):
    import cv2

    with ONE_THREAD:
        with ONE_THREAD:
            assert cv2.getNumThreads() == 1
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == 2


def test_opencv_restored_when_the_function_raises(two_opencv_threads):
    import cv2

    @one_thread
    def fails() -> None:
        assert cv2.getNumThreads() == 1
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        fails()
    assert cv2.getNumThreads() == 2


def test_register_keeps_its_signature_and_docstring():
    import inspect

    import autoreg

    assert "model" in inspect.signature(autoreg.register).parameters
    assert autoreg.register.__doc__.startswith("Register ``moving`` onto ``fixed``")
