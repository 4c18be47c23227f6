"""Control points: leave-one-out residuals and naming a point far beyond the others."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from autoreg.config import RegistrationConfig
from autoreg.control_points import check_points, loo_residuals, name_outliers

MATRIX = np.array([[25.0, -1.5, 40.0], [1.2, 24.0, 60.0], [0.0, 0.0, 1.0]])


def _pairs(n: int, seed: int, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    moving = rng.uniform(2, 37, (n, 2))
    fixed = moving @ MATRIX[:2, :2].T + MATRIX[:2, 2] + rng.normal(0, noise, (n, 2))
    return fixed, moving


@pytest.mark.parametrize("model", ["affine", "projective", "polynomial", "similarity"])
def test_exact_points_have_zero_loo_residual_for_models_that_hold_them(model):
    fixed, moving = _pairs(12, 0)
    if model == "similarity":  # not a similarity: residuals are the model error, not zero
        assert np.all(loo_residuals(fixed, moving, model) > 1e-3)
    else:
        assert_allclose(loo_residuals(fixed, moving, model), 0, atol=1e-6)


def test_too_few_points_give_nan():
    fixed, moving = _pairs(3, 1)
    assert np.all(np.isnan(loo_residuals(fixed, moving, "affine")))  # 2 left: an affine needs 3
    assert np.all(np.isfinite(loo_residuals(*_pairs(4, 1), "affine")))


def test_a_misclick_is_named_and_good_points_are_not():
    cfg = RegistrationConfig()
    fixed, moving = _pairs(12, 2, noise=3.0)  # click noise of ~3 fixed px (an eighth of a map pixel)
    floor = cfg.loo_outlier_min_coarse_px * 25
    assert name_outliers(fixed, moving, "affine", factor=cfg.loo_outlier_factor, floor_px=floor).tolist() == []
    fixed[5] += (150.0, -80.0)  # about 7 map pixels off
    residuals = loo_residuals(fixed, moving, "affine")
    assert np.argmax(residuals) == 5
    assert name_outliers(fixed, moving, "affine", factor=cfg.loo_outlier_factor, floor_px=floor).tolist() == [5]
    fixed[9] += (-90.0, 120.0)  # a second misclick
    assert sorted(name_outliers(fixed, moving, "affine", factor=cfg.loo_outlier_factor, floor_px=floor)) == [5, 9]


def test_naming_needs_others_to_compare_with_and_respects_the_floor():
    fixed, moving = _pairs(3, 3)
    fixed[0] += 100
    assert name_outliers(fixed, moving, "translation", factor=3, floor_px=0, prior_scale=25).tolist() == []
    fixed, moving = _pairs(8, 4, noise=1.0)
    fixed[2] += (30.0, 0.0)
    assert name_outliers(fixed, moving, "affine", factor=3, floor_px=0).tolist() == [2]
    assert name_outliers(fixed, moving, "affine", factor=3, floor_px=60).tolist() == []


def test_check_points_reports_residuals_and_names_the_misclick():
    fixed, moving = _pairs(10, 5, noise=2.0)
    fixed[7] += (120.0, 0.0)
    report = check_points(fixed, moving, "affine", RegistrationConfig(), prior_scale=25.0)
    assert len(report["loo_px"]) == 10 and report["outliers"] == [7]
    assert report["outlier_messages"][0].startswith("control point 8: leave-one-out residual")


def test_mesh_leave_one_out_equals_scikit_image_piecewise_affine():
    """The piecewise-affine LOO residuals come from scipy's Delaunay interpolation; they must equal skimage's map."""
    from skimage.transform import PiecewiseAffineTransform

    from autoreg.control_points import loo_residuals

    rng = np.random.default_rng(4)
    moving_xy = rng.uniform(0, 100, (25, 2))
    fixed_xy = moving_xy * 1.3 + 0.002 * moving_xy**2 + rng.normal(0, 0.3, (25, 2))
    fast = loo_residuals(fixed_xy, moving_xy, "piecewise-affine")
    for i in range(25):
        keep = np.arange(25) != i
        tf = PiecewiseAffineTransform.from_estimate(moving_xy[keep], fixed_xy[keep])
        mapped = np.asarray(tf(moving_xy[i:i + 1]))[0]
        if np.all(mapped == -1):  # outside the others' mesh
            assert np.isnan(fast[i])
        else:
            assert fast[i] == pytest.approx(np.hypot(*(mapped - fixed_xy[i])), rel=1e-6, abs=1e-6)
