"""The predicted registration error: calibrated against known truth, and well-behaved at the edges."""

import numpy as np
import pytest

from autoreg.geometry import grid_xy
from autoreg.uncertainty import (
    MODELS,
    _model,
    fit_uncertainty,
    mean_error_of_covariance,
    truncation_factor,
)

SIZE = 256.0
GRID = grid_xy((SIZE, SIZE))
TRUTH = {
    "translation": np.array([[1, 0, 7.3], [0, 1, -4.1], [0, 0, 1]]),
    "rigid": np.array([[np.cos(0.3), -np.sin(0.3), 20], [np.sin(0.3), np.cos(0.3), -5], [0, 0, 1]]),
    "similarity": np.array([[1.1 * np.cos(0.2), -1.1 * np.sin(0.2), 12], [1.1 * np.sin(0.2), 1.1 * np.cos(0.2), -7],
                            [0, 0, 1]]),
    "affine": np.array([[1.1, 0.1, 5], [-0.05, 0.9, 3], [0, 0, 1]]),
    "projective": np.array([[1.0, 0.05, 5], [0.02, 0.95, 3], [3e-4, -2e-4, 1]]),
    "polynomial": np.array([[1.02, 0.03, 4], [-0.02, 0.98, -2], [0, 0, 1]]),
}


def _apply(matrix, xy):
    h = np.column_stack([xy, np.ones(len(xy))]) @ matrix.T
    return h[:, :2] / h[:, 2:]


def _bend(xy, amplitude):
    """A quadratic distortion of ``amplitude`` px at the corners."""
    u = (xy - SIZE / 2) / (SIZE / 2)
    return amplitude * np.column_stack([u[:, 0] ** 2 - u[:, 1] ** 2, u[:, 0] * u[:, 1]])


def _truth(model, xy, misfit=0.0):
    return _apply(TRUTH[model], xy) + _bend(xy, (model == "polynomial") + misfit)


def _sample(model, n, sigma, seed, clustered=False, misfit=0.0):
    rng = np.random.default_rng(seed)
    if clustered:
        moving = rng.uniform(0.1 * SIZE, 0.9 * SIZE, 2) + rng.uniform(-0.1 * SIZE, 0.1 * SIZE, (n, 2))
    else:
        moving = rng.uniform(0, SIZE, (n, 2))
    return moving, _truth(model, moving, misfit) + rng.normal(0, sigma, (n, 2))


def _true_error(model, moving, fixed, misfit=0.0):
    fitter = _model(model, moving, 1.0)
    theta = fitter.fit(moving, fixed)
    return float(np.mean(np.linalg.norm(fitter.apply(theta, GRID) - _truth(model, GRID, misfit), axis=1)))


def _calibration(model, n, method, seeds, clustered=False, misfit=0.0, **kwargs):
    ratios = []
    for seed in seeds:
        moving, fixed = _sample(model, n, 0.5, seed, clustered, misfit)
        predicted = fit_uncertainty(model, moving, fixed, GRID, method=method, seed=seed, n_boot=100, **kwargs)
        ratios.append(_true_error(model, moving, fixed, misfit) / predicted)
    return np.array(ratios)


# ---------------------------------------------------------------------------------------------- calibration
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n", [10, 40])
def test_leave_one_out_is_calibrated_on_the_well_specified_case(model, n):
    ratios = _calibration(model, n, "loo", range(1000, 1060))
    assert np.mean(ratios <= 2.0) >= 0.9, np.percentile(ratios, [50, 90, 100])
    assert 0.3 <= np.median(ratios) <= 1.5  # neither wildly conservative nor optimistic


@pytest.mark.parametrize("model", ["similarity", "affine"])
def test_leave_one_out_is_calibrated_on_clustered_points(model):
    ratios = _calibration(model, 20, "loo", range(2000, 2060), clustered=True)
    assert np.mean(ratios <= 2.0) >= 0.9
    assert np.median(ratios) >= 0.3


@pytest.mark.parametrize("model", ["similarity", "affine", "projective"])
def test_an_unmodelled_bend_is_predicted_by_the_lack_of_fit_term(model):
    ratios = _calibration(model, 60, "loo", range(3000, 3030), misfit=1.0)
    assert np.mean(ratios <= 2.0) >= 0.9
    assert np.median(ratios) >= 0.3
    # the spread alone does not see the bias: it predicts half the error or less
    blind = _calibration(model, 60, "loo", range(3000, 3030), misfit=1.0, lack_of_fit=False)
    assert np.median(blind) > 1.5 * np.median(ratios)
    assert np.median(blind) > 1.6


@pytest.mark.parametrize("method", ["bootstrap", "analytic"])
def test_other_methods_agree_with_leave_one_out_on_many_points(method):
    moving, fixed = _sample("affine", 150, 0.5, 7)
    loo = fit_uncertainty("affine", moving, fixed, GRID, method="loo")
    other = fit_uncertainty("affine", moving, fixed, GRID, method=method, seed=1)
    assert other == pytest.approx(loo, rel=0.2)


def test_prediction_scales_with_the_noise():
    moving, fixed = _sample("affine", 50, 0.0, 3)
    noise = np.random.default_rng(4).normal(0, 1.0, fixed.shape)
    small = fit_uncertainty("affine", moving, fixed + 0.2 * noise, GRID)
    large = fit_uncertainty("affine", moving, fixed + 1.0 * noise, GRID)
    assert large == pytest.approx(5 * small, rel=1e-6)


def test_exact_points_predict_zero_error():
    moving, fixed = _sample("similarity", 20, 0.0, 3)
    for method in ("loo", "bootstrap", "analytic"):
        assert fit_uncertainty("similarity", moving, fixed, GRID, method=method) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("model", ["translation", "rigid"])
def test_translation_and_rigid_hold_the_prior_scale(model):
    rng = np.random.default_rng(0)
    moving = rng.uniform(0, 100, (30, 2))
    fixed = 2.5 * moving + [3, 4] + rng.normal(0, 0.3, (30, 2))
    held = fit_uncertainty(model, moving, fixed, GRID / 2.5, prior_scale=2.5)
    unheld = fit_uncertainty(model, moving, fixed, GRID / 2.5)
    assert held < 0.3 < unheld  # with the wrong scale the residuals are huge


def test_bootstrap_is_reproducible_for_a_seed():
    moving, fixed = _sample("projective", 25, 0.5, 5)
    a = fit_uncertainty("projective", moving, fixed, GRID, method="bootstrap", seed=3)
    b = fit_uncertainty("projective", moving, fixed, GRID, method="bootstrap", seed=3)
    assert a == b


# ---------------------------------------------------------------------------------------------- edges
@pytest.mark.parametrize(("model", "n"), [("translation", 1), ("similarity", 2), ("affine", 3), ("projective", 4),
                                          ("polynomial", 6)])
@pytest.mark.parametrize("method", ["loo", "bootstrap", "analytic"])
def test_no_redundancy_is_undefined(model, n, method):
    moving, fixed = _sample(model, n, 0.5, 0)
    assert np.isnan(fit_uncertainty(model, moving, fixed, GRID, method=method))


def test_collinear_points_are_undefined_for_affine():
    moving = np.column_stack([np.linspace(0, 100, 10), np.linspace(0, 50, 10)])
    assert np.isnan(fit_uncertainty("affine", moving, moving + 1.0, GRID))


def test_bad_arguments():
    moving, fixed = _sample("affine", 10, 0.5, 0)
    with pytest.raises(ValueError, match="unknown method"):
        fit_uncertainty("affine", moving, fixed, GRID, method="hessian")
    with pytest.raises(ValueError, match="unknown model"):
        fit_uncertainty("piecewise-affine", moving, fixed, GRID)
    with pytest.raises(ValueError, match="differ in shape"):
        fit_uncertainty("affine", moving, fixed[:5], GRID)


@pytest.mark.parametrize("model", ["rigid", "projective", "polynomial"])
def test_jacobians_match_finite_differences(model):
    moving, fixed = _sample(model, 30, 0.5, 1)
    fitter = _model(model, moving, 1.3)
    theta = fitter.fit(moving, fixed)
    jac = fitter.jacobian(theta, GRID)
    for j in range(len(theta)):
        step = 1e-6 * max(abs(theta[j]), 1e-3)
        up, down = theta.copy(), theta.copy()
        up[j] += step
        down[j] -= step
        numeric = (fitter.apply(up, GRID) - fitter.apply(down, GRID)) / (2 * step)
        np.testing.assert_allclose(jac[:, :, j], numeric, rtol=1e-4, atol=1e-6 * np.abs(numeric).max())


def test_mean_error_of_covariance_limits():
    assert mean_error_of_covariance(np.diag([4.0, 4.0])) == pytest.approx(2 * np.sqrt(np.pi / 2))
    assert mean_error_of_covariance(np.diag([4.0, 0.0])) == pytest.approx(2 * np.sqrt(2 / np.pi))
    rng = np.random.default_rng(0)
    e = rng.multivariate_normal([0, 0], [[2.0, 0.6], [0.6, 0.5]], 200_000)
    assert mean_error_of_covariance(np.array([[2.0, 0.6], [0.6, 0.5]])) == pytest.approx(
        np.linalg.norm(e, axis=1).mean(), rel=0.01)


def test_truncation_factor():
    r = np.random.default_rng(0).rayleigh(1.0, 200_000)
    assert truncation_factor(r, 50.0) == pytest.approx(1.0, abs=0.01)  # nothing truncated
    kept = r[r < 1.5]
    s = np.sqrt(np.sum(kept**2) / (2 * kept.size))
    assert s * truncation_factor(kept, 1.5) == pytest.approx(1.0, rel=0.02)
    uniform_disc = 2.0 * np.sqrt(np.random.default_rng(1).random(10_000))
    assert truncation_factor(uniform_disc, 2.0) == np.inf
    assert np.isnan(truncation_factor(np.array([0.5]), 2.0, n_params=2))


@pytest.mark.parametrize("model", ["translation", "similarity", "affine", "polynomial"])
def test_closed_form_deletions_equal_explicit_refits(model):
    """The linear models' leave-one-out fits come from a rank-2 downdate; they must equal n explicit refits."""
    from autoreg import uncertainty

    rng = np.random.default_rng(3)
    moving = rng.uniform(0, 100, (40, 2))
    fixed = moving * 1.1 + 3 + 1e-4 * moving[:, ::-1] ** 2 + rng.normal(0, 0.5, (40, 2))
    fitter = uncertainty._Linear(model, moving.mean(0), 100.0, 1.1)
    fast = fitter.loo_thetas(moving, fixed)
    explicit = np.array([fitter.fit(np.delete(moving, i, 0), np.delete(fixed, i, 0)) for i in range(40)])
    np.testing.assert_allclose(fast, explicit, rtol=1e-9, atol=1e-9)


def test_truncation_far_outside_the_residuals_changes_nothing():
    """Found by the benchmark: residuals ~1e-3 of the threshold made the root bracket lose its sign change."""
    from autoreg.uncertainty import truncation_factor

    residuals = np.random.default_rng(0).rayleigh(0.01, 200)
    for threshold in (0.5, 2.0, 8.0, 30.0, 1000.0):
        assert truncation_factor(residuals, threshold, n_params=6) == pytest.approx(1.0, abs=1e-6)
