"""The predicted error stays defined or NaN, never a warning, on degenerate fits; it grows with the noise."""

import numpy as np
import pytest

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


def _content(shape=(64, 80), seed=2):
    y, x = np.mgrid[: shape[0], : shape[1]]
    rng = np.random.default_rng(seed)
    return np.sin(x / 3.0) * np.cos(y / 5.0) + 0.3 * rng.normal(size=shape), x / (shape[1] - 1), y / (shape[0] - 1)


def test_detrended_pearson_takes_out_backgrounds_the_two_images_do_not_share():
    from autoreg.score import detrended_pearson, masked_pearson

    content, x, y = _content()
    noisy = content + 0.1 * np.random.default_rng(3).normal(size=content.shape)
    tilted = noisy + 20.0 * (x - 2.0 * y) + 8.0 * (x - 0.5) ** 2 - 6.0 * x * y  # a tilt and a bow of its own
    assert abs(masked_pearson(content, tilted)) < 0.3  # raw, the backgrounds dominate
    assert detrended_pearson(content, tilted) == pytest.approx(detrended_pearson(content, noisy), abs=1e-9)
    assert detrended_pearson(content, tilted) > 0.9
    # a plane alone (order 1) leaves the bow
    assert detrended_pearson(content, tilted, order=1) < detrended_pearson(content, tilted) - 0.1


def test_detrended_pearson_of_degree_zero_is_the_pearson_correlation():
    from autoreg.score import detrended_pearson, masked_pearson

    content, x, _ = _content()
    other = content + x + np.random.default_rng(4).normal(size=content.shape)
    mask = np.ones(content.shape, bool)
    mask[10:30, 5:50] = False
    assert detrended_pearson(content, other, mask, order=0) == pytest.approx(masked_pearson(content, other, mask),
                                                                             abs=1e-9)


def test_detrended_pearson_is_nan_without_variation_and_defined_on_a_line_of_pixels():
    from autoreg.score import detrended_pearson

    content, x, y = _content()
    assert np.isnan(detrended_pearson(content, 3.0 * x - y + 1.0))  # a plane is all background
    on_a_row = np.zeros(content.shape, bool)
    on_a_row[20] = True  # the surface is not determined off the row: the least-norm one, no error
    value = detrended_pearson(content, 2.0 * content + x, on_a_row)
    assert np.isnan(value) or -1.0 <= value <= 1.0
    with pytest.raises(ValueError, match="degree"):
        detrended_pearson(content, content, order=-1)


def test_detrended_pearson_subsamples_a_large_overlap_without_changing_the_figure(monkeypatch):
    from autoreg import score

    content, x, y = _content((300, 300), seed=5)
    other = 0.5 * content + 2.0 * x * y + np.random.default_rng(6).normal(size=content.shape)
    assert content.size > 4 * score._MAX_DETRENDED_PIXELS  # so the figure comes from a subsample
    sampled = score.detrended_pearson(content, other)
    monkeypatch.setattr(score, "_MAX_DETRENDED_PIXELS", content.size)
    assert sampled == pytest.approx(score.detrended_pearson(content, other), abs=0.03)


@pytest.mark.parametrize(
    ("raw", "detrended", "inverted", "polarity"),
    [
        (-0.6, 0.9, False, 1),  # a tilt of one scan flipped the raw sign: the contrast is the same
        (0.4, -0.8, True, -1),
        (float("nan"), -0.8, True, -1),
        (-0.5, float("nan"), True, -1),  # no detrended figure: the verdict's own flag still decides
        (float("nan"), float("nan"), False, None),  # nothing measured
    ],
)
def test_the_polarity_for_local_correlations_is_the_contrast_flag_not_the_raw_sign(raw, detrended, inverted, polarity):
    from autoreg.datatypes import Scores
    from autoreg.score import contrast_polarity

    scores = Scores(pearson=raw, pearson_detrended=detrended, inverted_contrast=inverted)
    assert contrast_polarity(scores) == polarity
