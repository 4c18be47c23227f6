"""The report figure: matches as lines with residual vectors, a difference image for intensity results, a scale bar."""

import numpy as np

import autoreg
from autoreg.datatypes import Fit, Matches, RegistrationResult, Scores, Verdict
from autoreg.report import build_figure, nice_length, render_png
from autoreg.units import Calibration
from autoreg.warp import apply_transform
from helpers import exact_fit, rigid_matrix


def _gids(ax):
    return {artist.get_gid() for artist in ax.get_children() if artist.get_gid()}


def _texts(fig):
    return [t.get_text() for ax in fig.axes for t in ax.texts]


def test_feature_results_draw_match_lines_and_residual_vectors():
    from autoreg.synthetic import make_pair

    pair = make_pair(seed=21, fixed_shape=(160, 160), moving_shape=(128, 128))
    result = autoreg.register(pair.fixed, pair.moving, model="affine")
    fig = build_figure(result, pair.fixed, pair.moving)
    panel = fig.axes[5]
    lines = [a for a in panel.get_lines() if a.get_gid() == "match_line"]
    assert len(lines) == result.scores.n_inliers
    assert "residuals" in _gids(panel) and "residuals ×" in panel.get_title()
    assert not any(t.get_gid() == "scale_bar" for ax in fig.axes for t in ax.texts)  # no physical size known


def test_intensity_results_show_a_difference_image_and_a_scale_bar_in_units():
    y, x = np.mgrid[:96, :96].astype(float)
    fixed = np.sin(x / 7) + np.cos(y / 11)
    fit = exact_fit(rigid_matrix(3.0, 2.0, -1.0), model="rigid")
    fit = Fit(model="rigid", moving_to_fixed=fit.moving_to_fixed, fixed_to_moving=fit.fixed_to_moving,
              inliers=np.zeros(0, bool), source="intensity", matches=Matches(np.zeros((0, 2)), np.zeros((0, 2))))
    warped, footprint = apply_transform(fixed, fit, fixed.shape)
    result = RegistrationResult(fit=fit, scores=Scores(pearson=0.9), verdict=Verdict("ok"), warped=warped,
                                footprint=footprint, model="rigid", fixed_shape=(96, 96), moving_shape=(96, 96),
                                fixed_calibration=Calibration((0.5, 0.5), (0.0, 0.0), "nm"),
                                moving_calibration=Calibration((0.5, 0.5), (0.0, 0.0), "nm"))
    fig = build_figure(result, fixed, fixed)
    assert "difference" in _gids(fig.axes[5]) and "difference" in fig.axes[5].get_title()
    assert "10 nm" in _texts(fig)  # a quarter of 48 nm, rounded down to 1, 2 or 5 × 10^k
    assert render_png(result)[:8] == b"\x89PNG\r\n\x1a\n"  # the notebook's figure, without the inputs


def test_nice_length():
    assert [nice_length(v) for v in (0.0, 1.0, 3.9, 7.5, 120.0, 0.034)] == [0.0, 1.0, 2.0, 5.0, 100.0, 0.02]
