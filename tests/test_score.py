"""autoreg.score: figures stay defined or NaN, never a warning, on degenerate fits."""

import numpy as np

from autoreg.datatypes import Fit, Matches
from autoreg.estimate import fit_pair
from autoreg.score import grid_uncertainty


def test_uncertainty_of_inliers_on_a_line_is_nan_not_a_warning():
    """Found by the CLI fuzz: ramp images give keypoints on one line; the leverage came out negative."""
    moving_xy = np.column_stack([np.linspace(0, 40, 8), np.linspace(0, 20, 8)])
    fixed_xy = moving_xy * 2.0 + 3.0
    fixed_xy[::2] += 1e-9  # spread far below any real landmark spread
    forward, backward = fit_pair("translation", moving_xy, fixed_xy)
    fit = Fit(model="affine", moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(8, bool),
              source="features", matches=Matches(fixed_xy=fixed_xy, moving_xy=moving_xy))
    assert np.isnan(grid_uncertainty(fit, (48, 20)))


def test_uncertainty_grows_with_the_residual_noise():
    rng = np.random.default_rng(0)
    moving_xy = rng.uniform(0, 100, (40, 2))
    values = []
    for noise in (0.1, 1.0):
        fixed_xy = moving_xy + 5 + rng.normal(0, noise, (40, 2))
        forward, backward = fit_pair("affine", moving_xy, fixed_xy)
        fit = Fit(model="affine", moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(40, bool),
                  source="features", matches=Matches(fixed_xy=fixed_xy, moving_xy=moving_xy))
        values.append(grid_uncertainty(fit, (100, 100)))
    assert 0 < values[0] < values[1] / 5
