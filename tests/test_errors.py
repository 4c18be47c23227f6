"""Errors are caught where they arise: library failures become EstimationError at the call site; our bugs surface."""

import cv2
import numpy as np
import pytest

import autoreg
from autoreg.errors import EstimationError, library_errors
from autoreg.synthetic import make_pair


def test_library_failures_become_estimation_errors_with_their_message():
    with pytest.raises(EstimationError, match=r"^resizing failed: .*ssize"):
        with library_errors("resizing"):
            cv2.resize(np.zeros((0, 0), np.float32), (3, 3))
    with pytest.raises(EstimationError, match="inverting failed: Singular matrix"):
        with library_errors("inverting"):
            np.linalg.inv(np.zeros((3, 3)))


def test_other_errors_pass_through_untouched():
    with pytest.raises(ZeroDivisionError):
        with library_errors("dividing"):
            _ = 1 / 0
    with pytest.raises(KeyError):
        with library_errors("looking up"):
            {}["missing"]


def test_a_bug_in_a_stage_is_not_swallowed_into_a_fallback(monkeypatch):
    import autoreg.landmarks

    def broken(*args, **kwargs):
        raise ValueError("a bug of ours")

    monkeypatch.setattr(autoreg.landmarks, "find_matches", broken)
    pair = make_pair(seed=3, fixed_shape=(128, 128), moving_shape=(128, 128))
    with pytest.raises(ValueError, match="a bug of ours"):
        autoreg.register(pair.fixed, pair.moving)


def test_a_stage_that_fails_on_the_data_is_a_failed_attempt(monkeypatch):
    import autoreg.landmarks

    def starved(*args, **kwargs):
        raise autoreg.InsufficientLandmarksError("no keypoints")

    monkeypatch.setattr(autoreg.landmarks, "find_matches", starved)
    pair = make_pair(seed=3, fixed_shape=(128, 128), moving_shape=(128, 128))
    result = autoreg.register(pair.fixed, pair.moving)
    features = [a for a in result.attempts if a.strategy.startswith("features")]
    assert features and all(a.verdict == "failed" for a in features)
    assert features[0].reasons == ("insufficient_landmarks: no keypoints",)


def test_registration_changes_no_process_wide_warning_state(monkeypatch):
    """warnings.simplefilter/catch_warnings are process-wide (unsafe under threads): a registration uses neither."""
    import warnings

    calls = []
    monkeypatch.setattr(warnings, "simplefilter", lambda *a, **k: calls.append(("simplefilter", a)))
    monkeypatch.setattr(warnings, "catch_warnings", lambda *a, **k: calls.append(("catch_warnings", a)))
    pair = make_pair(seed=3, fixed_shape=(128, 128), moving_shape=(128, 128))
    result = autoreg.register(pair.fixed, pair.moving, model="rigid")
    assert result.verdict.level == "ok" and calls == []
