"""Robust estimation, control-point checks and model choice."""

import numpy as np
import pytest
from helpers import rigid_matrix

from autoreg.geometry import apply_matrix
from autoreg.config import RegistrationConfig
from autoreg.control_points import validate_points
from autoreg.datatypes import Matches
from autoreg.errors import EstimationError, InputError, InsufficientLandmarksError
from autoreg.estimate import choose_model, estimate_transform, fit_transform
from autoreg.models import MODELS

CFG = RegistrationConfig()


def _matches(matrix, n=200, outlier_fraction=0.4, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    moving_xy = rng.uniform(0, 300, (n, 2))
    fixed_xy = apply_matrix(matrix, moving_xy) + rng.normal(0, noise, (n, 2))
    bad = rng.random(n) < outlier_fraction
    fixed_xy[bad] = rng.uniform(0, 400, (int(bad.sum()), 2))
    return Matches(fixed_xy=fixed_xy, moving_xy=moving_xy), ~bad


@pytest.mark.parametrize("model", ["translation", "rigid", "similarity", "affine", "projective", "polynomial",
                                   "piecewise-affine"])
def test_robust_fit_rejects_outliers(model):
    matrix = rigid_matrix(0 if model == "translation" else 25, 40, -15, scale=1.0 if model in ("translation", "rigid")
                          else 1.3)
    matches, good = _matches(matrix)
    fit = estimate_transform(matches, model, threshold_px=2.0, config=CFG, seed=1)
    assert fit.n_inliers >= 0.9 * good.sum()
    assert np.sum(fit.inliers & ~good) <= 2
    grid = np.array([[x, y] for x in np.linspace(20, 280, 5) for y in np.linspace(20, 280, 5)])
    truth = (np.column_stack([grid, np.ones(25)]) @ matrix.T)[:, :2]
    mapped = fit.moving_to_fixed(grid)
    inside = ~np.all(mapped == -1, axis=1)  # piecewise-affine maps nothing outside its mesh
    assert inside.sum() >= 20
    assert np.abs(mapped[inside] - truth[inside]).max() < (0.5 if model != "piecewise-affine" else 1.5)


def test_robust_fit_is_reproducible_for_a_seed():
    matches, _ = _matches(rigid_matrix(10, 5, 5), outlier_fraction=0.6)
    a = estimate_transform(matches, "affine", threshold_px=2.0, config=CFG, seed=3)
    b = estimate_transform(matches, "affine", threshold_px=2.0, config=CFG, seed=3)
    np.testing.assert_allclose(a.moving_to_fixed.params, b.moving_to_fixed.params, rtol=1e-9, atol=1e-9)


def test_random_matches_give_no_usable_consensus():
    rng = np.random.default_rng(0)
    matches = Matches(fixed_xy=rng.uniform(0, 300, (40, 2)), moving_xy=rng.uniform(0, 300, (40, 2)))
    try:
        fit = estimate_transform(matches, "affine", threshold_px=1.0, config=CFG, seed=0)
    except (InsufficientLandmarksError, EstimationError):
        return
    assert fit.n_inliers < CFG.min_inliers  # the verdict fails such a fit


@pytest.mark.parametrize(
    ("truth", "expected"),
    [
        (rigid_matrix(0, 30, 10), "translation"),
        (rigid_matrix(30, 30, 10), "rigid"),
        (rigid_matrix(30, 30, 10, scale=1.5), "similarity"),
        (np.array([[1.2, 0.3, 5], [-0.1, 0.8, 3], [0, 0, 1.0]]), "affine"),
        (np.array([[1.2, 0.3, 5], [-0.1, 0.8, 3], [8e-4, -6e-4, 1.0]]), "projective"),
    ],
)
def test_auto_choice_picks_the_true_model_not_the_most_flexible(truth, expected):
    matches, good = _matches(truth, outlier_fraction=0.0, noise=0.5, seed=4)
    choice = choose_model(matches.moving_xy, matches.fixed_xy, candidates=CFG.auto_models, config=CFG)
    assert choice.model == expected, choice.why


def test_collinear_and_too_few_points_are_refused():
    line = np.column_stack([np.arange(5.0), 2 * np.arange(5.0)])
    with pytest.raises(EstimationError, match="collinear"):
        fit_transform("affine", line, line + 1)
    with pytest.raises(InsufficientLandmarksError, match="at least 4"):
        fit_transform("projective", line[:3], line[:3])


@pytest.mark.parametrize(
    ("fixed_xy", "moving_xy", "model", "message"),
    [
        ([[1, 1], [5, 5]], [[1, 1], [5, 5]], "affine", "needs at least 3"),
        ([[1, 1], [5, 5], [9, 9]], [[1, 2], [5, 3], [9, 1]], "affine", "collinear"),
        ([[1, 1], [1, 1], [9, 2]], [[1, 2], [5, 3], [9, 1]], "affine", "Duplicate fixed"),
        ([[1, 1], [5, 8], [500, 2]], [[1, 2], [5, 3], [9, 1]], "affine", "outside the fixed image"),
        ([[1, 1], [5, 8], [np.nan, 2]], [[1, 2], [5, 3], [9, 1]], "affine", "NaN"),
    ],
)
def test_bad_control_points_are_input_errors(fixed_xy, moving_xy, model, message):
    with pytest.raises(InputError, match=message):
        validate_points(np.array(fixed_xy, float), np.array(moving_xy, float), fixed_shape=(100, 100),
                        moving_shape=(50, 50), model=model)


def test_every_model_is_known():
    assert set(MODELS) == {"translation", "rigid", "similarity", "affine", "projective", "polynomial",
                           "piecewise-affine"}


def test_a_consensus_found_elsewhere_is_refitted_not_searched_again():
    """``estimate_transform(inliers=...)`` refits the given consensus (8 true matches among 200, too few for a
    3-point MAGSAC to find) by least squares and refines it with its own residuals."""
    rng = np.random.default_rng(4)
    truth = rigid_matrix(17.0, 12.0, -5.0, scale=1.02)
    moving_xy = rng.uniform(0, 250, (200, 2))
    fixed_xy = rng.uniform(0, 250, (200, 2))
    true = np.zeros(200, bool)
    true[rng.choice(200, 8, replace=False)] = True
    fixed_xy[true] = apply_matrix(truth, moving_xy[true]) + rng.normal(0, 0.2, (8, 2))
    given = true.copy()
    given[np.flatnonzero(true)[0]] = False  # a consensus that missed one: the refinement finds it again
    fit = estimate_transform(Matches(fixed_xy=fixed_xy, moving_xy=moving_xy), "similarity", threshold_px=2.0,
                             config=RegistrationConfig(), inliers=given)
    assert np.array_equal(fit.inliers, true)
    grid = np.array([[x, y] for x in (0, 125, 250) for y in (0, 125, 250)], float)
    assert np.abs(fit.moving_to_fixed(grid) - apply_matrix(truth, grid)).max() < 0.5
