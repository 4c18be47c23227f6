"""Tests of autoreg.refine: sub-pixel refinement with exact synthetic truth, and its predicted error."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from autoreg.errors import EstimationError
from autoreg.refine import MODELS, refine_matrix
from autoreg.synthetic import make_scene


def _apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h = np.column_stack([xy, np.ones(len(xy))]) @ np.asarray(matrix, float).T
    return h[:, :2] / h[:, 2:]


def grid_error(estimate: np.ndarray, truth: np.ndarray, shape_rc: tuple[int, int]) -> float:
    """Mean distance (fixed px) between the two matrices' images of a 5×5 grid spanning the moving image."""
    gy, gx = np.mgrid[0 : shape_rc[0] - 1 : 5j, 0 : shape_rc[1] - 1 : 5j]
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    return float(np.mean(np.linalg.norm(_apply(estimate, grid) - _apply(truth, grid), axis=1)))


def _rotation_about(
    angle_deg: float, centre: np.ndarray, shift: np.ndarray, linear: np.ndarray | None = None
):
    a = np.deg2rad(angle_deg)
    lin = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ (
        np.eye(2) if linear is None else linear
    )
    out = np.eye(3)
    out[:2, :2] = lin
    out[:2, 2] = centre + shift - lin @ centre
    return out


def _perturb(
    matrix: np.ndarray, rng: np.random.Generator, centre: np.ndarray, shift_px: float, angle_deg: float
) -> np.ndarray:
    """``matrix`` moved ``shift_px`` in a random direction and turned by ±``angle_deg`` about ``centre``."""
    direction = rng.uniform(0, 2 * np.pi)
    shift = shift_px * np.array([np.cos(direction), np.sin(direction)])
    return _rotation_about(angle_deg * rng.choice([-1, 1]), centre, shift) @ matrix


def same_resolution_pair(seed: int, *, size: int = 256, model: str = "rigid", noise: float = 0.02):
    """Two point-sampled views of one (PSF-blurred) scene; returns fixed, moving, truth, perturbed start."""
    rng = np.random.default_rng(seed)
    scene = ndi.gaussian_filter(make_scene((size, size), seed=seed, feature_px=1.5).height, 1.0)
    c = np.full(2, (size - 1) / 2)
    linear = None
    if model in ("affine", "projective"):
        linear = np.array(
            [[1 + rng.uniform(-0.04, 0.04), rng.uniform(-0.03, 0.03)], [0.0, 1 + rng.uniform(-0.04, 0.04)]]
        )
    truth = _rotation_about(rng.uniform(-8, 8), c, rng.uniform(-6, 6, 2), linear)
    if model == "projective":
        truth[2, :2] = rng.uniform(-3e-4, 3e-4, 2)
        truth[:2, 2] += c - _apply(truth, c[None])[0]
        truth[:2, 2] += c - _apply(truth, c[None])[0]
    y, x = np.mgrid[:size, :size].astype(float)
    xy = _apply(truth, np.column_stack([x.ravel(), y.ravel()]))
    moving = ndi.map_coordinates(scene, [xy[:, 1], xy[:, 0]], order=3, mode="constant", cval=np.nan)
    sd = scene.std()
    fixed = scene + rng.normal(0, noise * sd, scene.shape)
    moving = moving.reshape(size, size) + rng.normal(0, noise * sd, (size, size))
    start = _perturb(truth, rng, c, rng.uniform(2, 3), rng.uniform(1, 2))
    return fixed, moving, truth, start


def map_pair(
    seed: int,
    *,
    ratio: float = 8,
    n: int = 32,
    noise: float = 0.05,
    model: str = "rigid",
    start_px: float = 0.5,
    contrast: float = 1.0,
    angle_deg: float | None = None,
):
    """A fine scan and an ``n``×``n`` map whose pixels are area averages of the scene over their footprint.

    Returns fixed, moving, truth (moving → fixed), a start ``start_px`` moving px off.
    """
    rng = np.random.default_rng(seed)
    size = int(np.ceil(n * ratio * 1.45)) + 4 * int(ratio)
    scene = make_scene((size, size), seed=seed, feature_px=ratio / 4).height
    cm, cf = np.full(2, (n - 1) / 2), np.full(2, (size - 1) / 2) + rng.uniform(-ratio, ratio, 2)
    linear = ratio * np.eye(2)
    if model in ("affine", "projective"):
        linear = linear @ np.array(
            [[1 + rng.uniform(-0.03, 0.03), rng.uniform(-0.02, 0.02)], [0.0, 1 + rng.uniform(-0.03, 0.03)]]
        )
    angle = rng.uniform(-180, 180) if angle_deg is None else angle_deg
    truth = _rotation_about(angle, np.zeros(2), np.zeros(2), linear)
    truth[:2, 2] = cf - truth[:2, :2] @ cm
    if model == "projective":
        truth[2, :2] = rng.uniform(-2e-3, 2e-3, 2)
        for _ in range(5):
            truth[:2, 2] += cf - _apply(truth, cm[None])[0]
    k = int(np.ceil(ratio))
    sub = (np.arange(k) + 0.5) / k - 0.5
    sy, sx = np.meshgrid(sub, sub, indexing="ij")
    y, x = np.mgrid[:n, :n].astype(float)
    points = np.stack([x[..., None, None] + sx, y[..., None, None] + sy], -1).reshape(-1, 2)
    fxy = _apply(truth, points)
    values = (
        ndi.map_coordinates(scene, [fxy[:, 1], fxy[:, 0]], order=1, mode="nearest").reshape(n, n, -1).mean(-1)
    )
    moving = contrast * values + rng.normal(0, noise * values.std(), values.shape)
    fixed = scene + rng.normal(0, 0.01 * scene.std(), scene.shape)
    start = _perturb(truth, rng, cf, start_px * ratio, np.degrees(start_px / (n / 2)) * rng.uniform(0, 1))
    return fixed, moving, truth, start


# ------------------------------------------------------------------------------------------------ tests


def test_translation_of_an_analytic_image_is_recovered():
    y, x = np.mgrid[:96, :96].astype(float)

    def field(x, y):
        return np.sin(x / 5.0) + np.cos(y / 7.0) + np.sin((x + y) / 11.0)

    start = np.array([[1.0, 0, 1.0], [0, 1.0, 0.0], [0, 0, 1.0]])
    result = refine_matrix(field(x, y), field(x + 1.3, y - 0.6), start, "translation", holdout=False)
    np.testing.assert_allclose(result.moving_to_fixed[:2, 2], [1.3, -0.6], atol=0.01)
    np.testing.assert_allclose(result.moving_to_fixed[:2, :2], np.eye(2), atol=1e-12)
    assert result.converged and result.grid == "moving" and result.correlation > 0.99


@pytest.mark.parametrize("model", ["rigid", "affine"])
def test_same_resolution_converges_from_a_few_pixels_and_degrees(model):
    fixed, moving, truth, start = same_resolution_pair(1, model=model)
    assert grid_error(start, truth, moving.shape) > 2.0
    result = refine_matrix(fixed, moving, start, model)
    assert grid_error(result.moving_to_fixed, truth, moving.shape) <= 0.05
    assert result.holdout_after > result.holdout_before and result.improved
    assert 0 < result.predicted_error_px < 0.05
    assert not result.moving_to_fixed.flags.writeable


def test_projective_same_resolution():
    fixed, moving, truth, start = same_resolution_pair(2, size=160, model="projective")
    result = refine_matrix(fixed, moving, start, "projective")
    assert grid_error(result.moving_to_fixed, truth, moving.shape) <= 0.05
    assert result.covariance.shape == (len(MODELS["projective"]),) * 2


@pytest.mark.parametrize(
    ("ratio", "n", "model"),
    [(8, 32, "rigid"), (16, 24, "similarity"), (12, 40, "affine"), (8, 40, "projective")],
)
def test_maps_across_resolutions_end_within_a_fraction_of_a_map_pixel(ratio, n, model):
    fixed, moving, truth, start = map_pair(3, ratio=ratio, n=n, model=model)
    result = refine_matrix(fixed, moving, start, model, prior_scale=ratio)
    assert result.grid == "moving"
    assert grid_error(result.moving_to_fixed, truth, moving.shape) / ratio <= 0.15
    assert result.improved


@pytest.mark.parametrize("model", ["translation", "rigid"])
def test_translation_and_rigid_hold_the_prior_scale(model):
    fixed, moving, truth, start = map_pair(4, ratio=10, n=32, angle_deg=0.0)
    if model == "translation":
        start[:2, :2] = 10.0 * np.eye(2)
    result = refine_matrix(fixed, moving, start, model, prior_scale=10.0, holdout=False)
    assert np.sqrt(abs(np.linalg.det(result.moving_to_fixed[:2, :2]))) == pytest.approx(10.0, rel=1e-9)
    assert grid_error(result.moving_to_fixed, truth, moving.shape) / 10 <= 0.15


def test_predicted_error_covers_the_true_error_in_most_seeds():
    """Calibration: over 20 seeds of 24–40 px maps at ratios 8–12 and 3–20 % noise, the true error is
    within 2× ``predicted_error_px`` in at least 80 % (~95 % expected; 80 % leaves room for 20 draws)."""
    covered, errors = [], []
    for seed in range(100, 120):
        ratio, n, noise = (8, 12)[seed % 2], (24, 32, 40)[seed % 3], (0.03, 0.1, 0.2)[seed % 3]
        fixed, moving, truth, start = map_pair(seed, ratio=ratio, n=n, noise=noise)
        result = refine_matrix(fixed, moving, start, "rigid", prior_scale=ratio, holdout=False)
        error = grid_error(result.moving_to_fixed, truth, moving.shape)
        errors.append(error / ratio)
        covered.append(error <= 2 * result.predicted_error_px)
    assert max(errors) <= 0.15
    assert np.mean(covered) >= 0.8


def test_inverted_contrast_has_a_negative_gain():
    fixed, moving, truth, start = map_pair(5, ratio=8, n=32, contrast=-2.0)
    result = refine_matrix(fixed, moving, start, "rigid", prior_scale=8)
    assert result.gain < 0 and result.correlation < -0.9
    assert grid_error(result.moving_to_fixed, truth, moving.shape) / 8 <= 0.15
    assert result.improved


def test_nan_holes_are_left_out():
    fixed, moving, truth, start = same_resolution_pair(6, size=160)
    fixed[40:70, 50:90] = np.nan
    moving[100:120, 10:60] = np.nan
    moving[5, :] = np.nan
    result = refine_matrix(fixed, moving, start, "rigid")
    assert grid_error(result.moving_to_fixed, truth, moving.shape) <= 0.05
    assert np.all(np.isfinite(result.covariance))
    assert result.n_valid < 160 * 160 - 20 * 50


def test_map_nan_holes():
    fixed, moving, truth, start = map_pair(7, ratio=8, n=40)
    fixed[100:160, 100:200] = np.nan
    moving[10:14, 5:30] = np.nan
    result = refine_matrix(fixed, moving, start, "rigid", prior_scale=8)
    assert grid_error(result.moving_to_fixed, truth, moving.shape) / 8 <= 0.15


def test_finer_moving_image_swaps_roles():
    """A fine moving scan onto a coarse fixed map: the fixed map is the grid."""
    fine, coarse, truth, start = map_pair(8, ratio=8, n=32)
    result = refine_matrix(coarse, fine, np.linalg.inv(start), "rigid", prior_scale=1 / 8)
    assert result.grid == "fixed"
    inverse = np.linalg.inv(result.moving_to_fixed)
    assert grid_error(inverse, truth, coarse.shape) / 8 <= 0.15
    assert result.predicted_error_px > 0


def test_too_few_valid_pixels_raise():
    fixed, moving, _, start = map_pair(9, ratio=8, n=24)
    moving[:, :] = np.nan
    moving[:5, :5] = 1.0
    with pytest.raises(EstimationError, match="Too few valid pixels"):
        refine_matrix(fixed, moving, start, "rigid", prior_scale=8)


def test_a_featureless_fixed_image_raises():
    rng = np.random.default_rng(0)
    fixed = np.full((128, 128), 1.0)
    with pytest.raises(EstimationError):
        refine_matrix(fixed, rng.normal(size=(128, 128)), np.eye(3), "rigid")


def test_a_start_outside_the_fixed_image_raises():
    fixed, moving, _, _ = map_pair(10, ratio=8, n=24)
    far = np.array([[8.0, 0, 1e5], [0, 8.0, 1e5], [0, 0, 1]])
    with pytest.raises(EstimationError, match="outside the fixed image"):
        refine_matrix(fixed, moving, far, "rigid")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "piecewise"}, "Unknown model"),
        ({"loss": "cauchy"}, "Unknown loss"),
        ({"moving_to_fixed": np.zeros((3, 3))}, "invertible"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    args = {
        "fixed": np.zeros((64, 64)),
        "moving": np.zeros((64, 64)),
        "moving_to_fixed": np.eye(3),
        "model": "rigid",
    }
    with pytest.raises(EstimationError, match=match):
        refine_matrix(**{**args, **kwargs})


def test_wandering_beyond_the_shift_limit_raises():
    from autoreg.refine import RefinementDiverged

    fixed, moving, _, start = same_resolution_pair(11, size=128)
    with pytest.raises(RefinementDiverged, match="diverged"):
        refine_matrix(fixed, moving, start, "rigid", max_shift_fraction=0.005, holdout=False)


def test_a_walk_beyond_the_shift_limit_stops_at_the_update_that_crossed_it(monkeypatch):
    """The limit is checked after every Gauss-Newton update, not only at the end of a pyramid level: the first
    update here moves the grid ~2 px past a 0.6 px limit, and no further iteration is spent on it (three
    evaluations when the check waited for the coarsest level to converge)."""
    from autoreg import refine
    from autoreg.refine import RefinementDiverged

    fixed, moving, _, start = same_resolution_pair(11, size=128)
    evaluated = []
    evaluate = refine._evaluate

    def counted(*args, **kwargs):
        evaluated.append(1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(refine, "_evaluate", counted)
    with pytest.raises(RefinementDiverged, match="diverged"):
        refine_matrix(fixed, moving, start, "rigid", max_shift_fraction=0.005, holdout=False)
    assert len(evaluated) == 1


def test_a_start_off_the_overlap_is_not_a_divergence():
    """Nothing to refine from the start is an EstimationError; only a walk away from it is a divergence."""
    from autoreg.refine import RefinementDiverged

    fixed, moving, _, start = same_resolution_pair(11, size=128)
    far = start.copy()
    far[:2, 2] += 1000.0
    with pytest.raises(EstimationError) as raised:
        refine_matrix(fixed, moving, far, "rigid", holdout=False)
    assert not isinstance(raised.value, RefinementDiverged)


@pytest.mark.parametrize("covariance", ["iid", "clustered"])
@pytest.mark.parametrize("loss", ["huber", "tukey", "l2"])
def test_every_loss_and_covariance_gives_a_finite_prediction(loss, covariance):
    fixed, moving, truth, start = map_pair(12, ratio=8, n=24)
    result = refine_matrix(
        fixed, moving, start, "similarity", loss=loss, covariance=covariance, holdout=False
    )
    assert np.isfinite(result.predicted_error_px) and result.predicted_error_px > 0
    assert np.all(np.linalg.eigvalsh((result.covariance + result.covariance.T) / 2) > 0)
    assert grid_error(result.moving_to_fixed, truth, moving.shape) / 8 <= 0.15


def test_a_model_too_simple_for_the_data_widens_the_prediction():
    """A rigid fit of a map whose truth is affine (3 % stretch, shear): the misfit enters the prediction."""
    fixed, moving, truth, start = map_pair(15, ratio=8, n=40, model="affine", noise=0.02)
    scale = float(np.sqrt(abs(np.linalg.det(truth[:2, :2]))))
    rigid = refine_matrix(fixed, moving, start, "rigid", prior_scale=scale, holdout=False)
    unchecked = refine_matrix(
        fixed, moving, start, "rigid", prior_scale=scale, holdout=False, misfit_check=False
    )
    error = grid_error(rigid.moving_to_fixed, truth, moving.shape)
    assert rigid.misfit_px > 0 and unchecked.misfit_px == 0
    assert error > 2 * unchecked.predicted_error_px  # the noise-only prediction misses the misfit...
    assert error <= 2 * rigid.predicted_error_px  # ...the checked one covers it
    affine = refine_matrix(fixed, moving, start, "affine", holdout=False)
    assert affine.misfit_px < rigid.misfit_px


def test_require_improvement_stops_early_only_when_the_holdout_does_not_rise():
    """A refinement that helps is the same with or without ``require_improvement``; one that does not help
    returns the projected start, with NaN where nothing was measured."""
    fixed, moving, _, start = same_resolution_pair(1, model="rigid")
    full = refine_matrix(fixed, moving, start, "rigid")
    gated = refine_matrix(fixed, moving, start, "rigid", require_improvement=True)
    assert full.improved and gated.improved
    np.testing.assert_array_equal(gated.moving_to_fixed, full.moving_to_fixed)
    assert gated.predicted_error_px == full.predicted_error_px
    # from the refined matrix there is nothing left to gain on held-out pixels
    again = refine_matrix(fixed, moving, full.moving_to_fixed, "rigid")
    stopped = refine_matrix(fixed, moving, full.moving_to_fixed, "rigid", require_improvement=True)
    assert not again.improved and not stopped.improved
    assert (stopped.holdout_before, stopped.holdout_after) == (again.holdout_before, again.holdout_after)
    assert stopped.iterations == 0 and np.isnan(stopped.predicted_error_px)
    np.testing.assert_allclose(stopped.moving_to_fixed, full.moving_to_fixed, atol=1e-9)


def test_a_minimum_held_out_correlation_stops_a_refinement_that_rises_but_not_enough():
    """``min_holdout_after`` stops after the hold-out check even when the held-out correlation rose, and changes
    nothing when that correlation reaches it."""
    fixed, moving, _, start = same_resolution_pair(1, model="rigid")
    full = refine_matrix(fixed, moving, start, "rigid", require_improvement=True)
    assert full.improved and full.iterations > 0
    reached = refine_matrix(fixed, moving, start, "rigid", require_improvement=True,
                            min_holdout_after=full.holdout_after - 0.01)
    np.testing.assert_allclose(reached.moving_to_fixed, full.moving_to_fixed, atol=1e-9)
    assert reached.iterations == full.iterations
    stopped = refine_matrix(fixed, moving, start, "rigid", require_improvement=True,
                            min_holdout_after=full.holdout_after + 0.01)
    assert stopped.improved and stopped.iterations == 0 and np.isnan(stopped.correlation)
    np.testing.assert_allclose(stopped.moving_to_fixed, start, atol=1e-9)


def test_the_half_fit_alone_is_the_hold_out_checks_fit():
    """``half_fit_only`` returns the fit the hold-out check measured: the same held-out correlations as a full
    refinement reports, a pose near the truth (fitted on half the pixels), and NaN where only the full fit
    measures; a contrast inverted on the moving side gives a negative gain."""
    fixed, moving, truth, start = same_resolution_pair(1, model="rigid")
    full = refine_matrix(fixed, moving, start, "similarity")
    half = refine_matrix(fixed, moving, start, "similarity", half_fit_only=True)
    assert (half.holdout_before, half.holdout_after) == pytest.approx((full.holdout_before, full.holdout_after),
                                                                     abs=1e-12)
    assert half.converged and half.iterations > 0 and half.gain > 0
    assert 0 < half.n_valid < full.n_valid  # the held-out half of the pixels
    assert grid_error(half.moving_to_fixed, truth, moving.shape) <= 0.1
    assert np.isnan(half.correlation) and np.isnan(half.predicted_error_px) and np.all(np.isnan(half.covariance))
    inverted = refine_matrix(fixed, -moving, start, "similarity", half_fit_only=True, holdout=False)
    assert inverted.gain < 0 and inverted.holdout_after == pytest.approx(half.holdout_after, abs=1e-9)


def test_photometric_least_squares_match_the_svd_solution():
    """The normal equations (well conditioned) and the SVD fallback (nearly collinear columns) agree with lstsq."""
    from autoreg.refine import _wls

    rng = np.random.default_rng(0)
    n = 2000
    xn = rng.uniform(-1, 1, (n, 2))
    weights = rng.uniform(0, 1, n)
    for reference in (rng.normal(size=n), 1e6 + 1e-6 * rng.normal(size=n)):  # the second: ~collinear with 1
        design = np.column_stack([reference, np.ones(n), xn])
        target = design @ [2.0, -1.0, 0.5, 0.25] + rng.normal(0, 0.1, n)
        root = np.sqrt(weights)
        expected = np.linalg.lstsq(design * root[:, None], target * root, rcond=None)[0]
        np.testing.assert_allclose(_wls(design, target, weights), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("shape", [(3, 3), (3, 12), (12, 3)])
def test_sampling_a_reference_smaller_than_the_cubic_support_gives_no_valid_sample(shape):
    # a pyramid level of a tiny map can be 3 px a side: the 4×4 Keys support fits nowhere (this indexed past the
    # end of the array, found by the holdout split of the accuracy benchmark)
    from autoreg.refine import _Reference, _sample

    value = np.arange(shape[0] * shape[1], dtype=float).reshape(shape)
    ref = _Reference((value, np.ones(shape)), 1)
    xy = np.array([[1.0, 1.0], [1.5, 1.2], [0.0, 0.0]])
    samples, ok = _sample(ref, xy)
    assert samples.shape == (3, 3)
    assert not ok.any()


@pytest.mark.parametrize("factor", [1, 3])
def test_keys_sampling_reproduces_a_quadratic_and_its_slopes(factor):
    """Keys' cubic convolution (a = -0.5) is exact on quadratics: the samples and their derivatives are the
    quadratic's own, at any sub-pixel position, on a block-reduced reference too (positions and slopes in the
    reference's original pixels)."""
    from autoreg.refine import _Reference, _sample

    rows, cols = 30, 40
    y, x = np.mgrid[:rows, :cols].astype(float)
    # the reduced grid's pixel (i, j) sits at original px (factor·j + (factor-1)/2, factor·i + (factor-1)/2)
    x, y = factor * x + (factor - 1) / 2, factor * y + (factor - 1) / 2

    def quadratic(x, y):
        return 0.02 * x * x - 0.03 * x * y + 0.01 * y * y + 0.5 * x - 0.2 * y + 3.0

    ref = _Reference((quadratic(x, y), np.ones((rows, cols))), factor)
    rng = np.random.default_rng(4)
    xy = rng.uniform([2 * factor, 2 * factor], [factor * (cols - 3), factor * (rows - 3)], size=(500, 2))
    samples, ok = _sample(ref, xy)
    assert ok.all()
    px, py = xy[:, 0], xy[:, 1]
    np.testing.assert_allclose(samples[:, 0], quadratic(px, py), rtol=0, atol=1e-9)
    np.testing.assert_allclose(samples[:, 1], 0.04 * px - 0.03 * py + 0.5, rtol=0, atol=1e-9)
    np.testing.assert_allclose(samples[:, 2], -0.03 * px + 0.02 * py - 0.2, rtol=0, atol=1e-9)


def test_centring_within_rows_subtracts_each_rows_weighted_mean():
    """Each column (and each stacked problem, with its own weights) loses its weighted mean over every grid row,
    as a loop over the rows computes it; rows of zero weight keep their values."""
    from autoreg.refine import _Rows, _within_rows

    rng = np.random.default_rng(5)
    row = np.sort(rng.choice([0, 2, 3, 7, 8], size=60))
    weights = rng.uniform(0, 1, (3, 60))
    weights[:, row == 7] = 0.0
    values = rng.normal(size=(3, 60, 4))

    def by_loop(a, w):
        out = a.copy()
        for r in np.unique(row):
            at = row == r
            if w[at].sum() > 0:
                out[at] -= (w[at, None] * a[at]).sum(axis=0) / w[at].sum() if a.ndim > 1 else (
                    (w[at] * a[at]).sum() / w[at].sum())
        return out

    rows = _Rows.of(row)
    np.testing.assert_allclose(_within_rows(values[0, :, 0], rows, weights[0]), by_loop(values[0, :, 0], weights[0]),
                               atol=1e-12)
    np.testing.assert_allclose(_within_rows(values[0], rows, weights[0]), by_loop(values[0], weights[0]), atol=1e-12)
    stacked = _within_rows(values, rows, weights)
    for m in range(3):
        np.testing.assert_allclose(stacked[m], by_loop(values[m], weights[m]), atol=1e-12)


@pytest.mark.parametrize("model", ["rigid", "similarity", "affine", "projective"])
def test_the_geometric_jacobian_is_the_derivative_of_the_sampled_reference(model):
    """Each column is d(reference at ``a · D(p) x̃``)/dp at p = 0: central differences of the samples agree, for
    one matrix and for a stack of them."""
    from autoreg.refine import _delta, _geometric_jacobian, _Reference, _sample, _warp

    rows, cols = 48, 56
    y, x = np.mgrid[:rows, :cols].astype(float)
    ref = _Reference((np.sin(x / 6.0) * np.cos(y / 9.0) + 0.01 * x * y / 10, np.ones((rows, cols))), 1)
    rng = np.random.default_rng(6)
    xn = rng.uniform(-1, 1, (200, 2))
    to_px = np.array([[9.0, 0.0, 28.0], [0.0, 8.0, 24.0], [0.0, 0.0, 1.0]])
    tilt = np.array([[0.98, -0.1, 0.5], [0.12, 1.01, -0.3], [0.002, -0.001, 1.0]])
    stack = np.stack([to_px, to_px @ tilt])
    k = len(MODELS[model])
    for a in (stack[1], stack):
        u, w = _warp(a, xn)
        grad = _sample(ref, u.reshape(-1, 2))[0][:, 1:3].reshape(*u.shape)
        jac = _geometric_jacobian(model, a, u, w, grad, xn)
        step = 1e-6
        for j in range(k):
            e = np.zeros(k)
            e[j] = step
            plus = _sample(ref, _warp(a @ _delta(model, e), xn)[0].reshape(-1, 2))[0][:, 0]
            minus = _sample(ref, _warp(a @ _delta(model, -e), xn)[0].reshape(-1, 2))[0][:, 0]
            np.testing.assert_allclose(jac[..., j].ravel(), (plus - minus) / (2 * step), rtol=1e-5, atol=1e-6)


def _scan_artefacts(image: np.ndarray, rng: np.random.Generator, *, lines: float, bow: float) -> np.ndarray:
    """Scan-line offsets (random jumps and a random walk, ``lines`` standard deviations) and a tilt plus bow
    (``bow`` standard deviations across the image) on ``image``'s own rows."""
    rows, cols = image.shape
    sd = float(np.nanstd(image))
    jumps = rng.normal(0, 1, rows) * (rng.random(rows) < 0.5)
    walk = np.cumsum(rng.normal(0, 1, rows)) / np.sqrt(rows)
    y, x = np.mgrid[:rows, :cols].astype(float)
    u, v = 2 * x / (cols - 1) - 1, 2 * y / (rows - 1) - 1
    a, b, c, d = rng.normal(0, 1, 4)
    background = bow * sd * (a * u + b * v + 0.7 * c * u**2 + 0.5 * d * v**2)
    return image + lines * sd * (0.8 * jumps + 0.6 * (walk - walk.mean()))[:, None] + background


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scan_line_offsets_and_bow_in_the_grid_image_do_not_bias_the_fit(seed):
    # the coarser scan carries line offsets of a standard deviation and a bow of three: both are solved for
    rng = np.random.default_rng(100 + seed)
    fixed, moving, truth, start = same_resolution_pair(seed, model="similarity")
    moving = _scan_artefacts(moving, rng, lines=1.0, bow=3.0)
    result = refine_matrix(fixed, moving, start, "similarity")
    error = grid_error(result.moving_to_fixed, truth, moving.shape)
    assert error < 0.1
    assert error <= 3 * result.predicted_error_px + 0.02
    # the same pair with only a plane and no row offsets in the model ends measurably further off
    plain = refine_matrix(fixed, moving, start, "similarity", background_order=1, row_offsets=False)
    assert grid_error(plain.moving_to_fixed, truth, moving.shape) > 2 * error


def test_row_offsets_are_the_grid_images_rows_when_the_moving_image_is_finer():
    # a finer moving image makes the fixed one the grid: its own scan lines carry the offsets
    fixed, moving, truth, start = map_pair(5, ratio=6, n=40, noise=0.02)
    rng = np.random.default_rng(7)
    fixed_raw, moving_raw = moving, fixed  # swap roles: the map becomes the fixed image
    fixed_lined = _scan_artefacts(fixed_raw, rng, lines=1.0, bow=2.0)
    result = refine_matrix(fixed_lined, moving_raw, np.linalg.inv(start), "rigid", prior_scale=1 / 6)
    assert result.grid == "fixed"
    assert grid_error(np.linalg.inv(result.moving_to_fixed), truth, fixed_raw.shape) < 0.15


def test_the_convergence_benchmark_watches_each_finest_level_solve_and_restores_the_solver():
    """``tests/bench/bench_convergence.py`` wraps the solver from outside: it must see the hold-out half's solve and
    the whole grid's, each update as the solver made it, and leave the solver as it found it."""
    from bench.bench_convergence import Watch, contraction, watching

    from autoreg import refine

    solve, gauss_newton = refine._solve, refine._gauss_newton
    fixed, moving, _, start = map_pair(5, ratio=8, n=40, model="rigid", start_px=0.8)
    watch = Watch()
    with watching(watch):
        result = refine_matrix(fixed, moving, start, "rigid", prior_scale=8)
    assert (refine._solve, refine._gauss_newton) == (solve, gauss_newton)
    assert len(watch.solves) == 2  # a 40 px grid has one pyramid level: the half, then the whole
    whole = watch.solves[-1]
    assert len(whole.moves) == result.iterations and whole.converged == result.converged
    assert result.converged and whole.moves[-1] < 1e-3 <= whole.moves[0]
    assert contraction([0.5, 0.25, 0.125, 0.0625], 1e-3) == pytest.approx(0.5)
    assert np.isnan(contraction([0.5, 0.25], 1e-3))
