"""The predicted error stays defined or NaN, never a warning, on degenerate fits; it grows with the noise."""

import numpy as np

from autoreg.config import RegistrationConfig
from autoreg.datatypes import Fit, Matches
from autoreg.estimate import fit_pair
from autoreg.evidence import predicted_error_px


def _fit(moving_xy, fixed_xy, model="affine"):
    forward, backward = fit_pair("translation" if model == "translation" else "affine", moving_xy, fixed_xy)
    return Fit(model=model, moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(len(moving_xy), bool),
               source="features", matches=Matches(fixed_xy=fixed_xy, moving_xy=moving_xy))


def test_predicted_error_of_inliers_on_a_line_is_nan_not_a_warning():
    """Found by the CLI fuzz: ramp images give keypoints on one line; the leverage came out negative."""
    moving_xy = np.column_stack([np.linspace(0, 40, 8), np.linspace(0, 20, 8)])
    fixed_xy = moving_xy * 2.0 + 3.0
    forward, backward = fit_pair("translation", moving_xy, fixed_xy)
    fit = Fit(model="affine", moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(8, bool),
              source="features", matches=Matches(fixed_xy=fixed_xy, moving_xy=moving_xy))
    value = predicted_error_px(fit, (48, 20), truncation_px=None, prior_scale=1.0, config=RegistrationConfig())
    assert np.isnan(value) or np.isinf(value)


def test_predicted_error_grows_with_the_residual_noise():
    rng = np.random.default_rng(0)
    moving_xy = rng.uniform(0, 100, (40, 2))
    values = []
    for noise in (0.1, 1.0):
        fixed_xy = moving_xy + 5 + rng.normal(0, noise, (40, 2))
        values.append(predicted_error_px(_fit(moving_xy, fixed_xy), (100, 100), truncation_px=None, prior_scale=1.0,
                                         config=RegistrationConfig()))
    assert 0 < values[0] < values[1] / 5


def test_scores_are_the_same_with_the_callers_valid_mask():
    """The pipeline passes the fixed image's finite mask it computed once; the scores must not change."""
    from autoreg.score import score_registration
    from autoreg.warp import apply_transform

    rng = np.random.default_rng(1)
    fixed = rng.normal(size=(64, 80))
    fixed[5:15, 10:30] = np.nan
    moving = rng.normal(size=(32, 40))
    moving_xy = rng.uniform(0, 30, (20, 2))
    fit = _fit(moving_xy, moving_xy * 2.0 + 1.0)
    warped, footprint = apply_transform(moving, fit, fixed.shape)
    common = dict(expected_scale=2.0, working_pixel_px=1.0)
    plain = score_registration(fit, fixed, moving, warped, footprint, **common)
    given = score_registration(fit, fixed, moving, warped, footprint, fixed_valid=np.isfinite(fixed), **common)
    for name in ("pearson", "pearson_before", "overlap_fraction", "inlier_spread", "rmse_px"):
        assert getattr(given, name) == getattr(plain, name)
