"""Evidence that a registration is real and that it is accurate, and the tolerance it must meet.

* **Real**: a feature consensus is judged by its number of false alarms under a uniform background
  (:func:`autoreg.significance.consensus_nfa`; Moisan & Stival 2004, the ORSA / AC-RANSAC line); an intensity match by
  how far its correlation peak stands above the best separated peak (:mod:`autoreg.search`).
* **Accurate**: the predicted mean error over a 5×5 grid spanning the moving image, in fixed pixels — from the
  forward-model refinement (:mod:`autoreg.refine`) when it refined the fit, else from leave-one-out refits of the
  correspondences (:func:`autoreg.uncertainty.fit_uncertainty`).
* **Tolerance**: ``max(2 fixed px, half a moving pixel)`` (``RegistrationConfig.tolerance_*``), or the user's.
"""

from __future__ import annotations

import math

import numpy as np

from .config import RegistrationConfig
from .datatypes import Fit
from .geometry import grid_xy, mean_grid_distance
from .vocabulary import GLOBAL_MODELS

__all__ = ["tolerance_px", "feature_log10_nfa", "predicted_error_px"]


def tolerance_px(config: RegistrationConfig, moving_pixel_px: float) -> float:
    """The error an ``ok`` promises not to exceed, in fixed px: the user's, else ``max(2 px, half a moving px)``.

    Parameters
    ----------
    moving_pixel_px : float
        Size of one moving pixel in fixed pixels (the expected scale; NaN or <= 0 counts as 1).
    """
    if config.tolerance_px is not None:
        return float(config.tolerance_px)
    pixel = moving_pixel_px if math.isfinite(moving_pixel_px) and moving_pixel_px > 0 else 1.0
    return max(config.tolerance_min_fixed_px, config.tolerance_moving_fraction * pixel)


def feature_log10_nfa(fit: Fit, overlap_px2: float, working_pixel_px: float, config: RegistrationConfig) -> float:
    """log10 of the number of false alarms of a feature fit's consensus among all its matches (NaN if not one).

    The background is uniform over the overlap (``overlap_px2`` fixed px²). Residuals are floored at a quarter of
    a working pixel (keypoints are not located better); matches within ``config.nfa_duplicate_wpx`` working pixels of
    another in both images count once (one blob found at several pyramid levels is one piece of evidence, not
    several); ``config.nfa_tests`` hypotheses are counted per sample (models compared × feature strategies).
    """
    from .significance import MIN_SAMPLES, consensus_nfa

    if fit.source != "features" or len(fit.matches) == 0 or not overlap_px2 > 0:
        return float("nan")
    # the consensus's own model (non-global fits: judged as their affine core), not a richer one refined from it
    n_sample = MIN_SAMPLES.get(fit.consensus_model or fit.model, MIN_SAMPLES["affine"])
    nfa = consensus_nfa(fit.matches.fixed_xy, fit.matches.moving_xy, fit.to_fixed, n_sample=n_sample,
                        fixed_area=overlap_px2, n_models=config.nfa_tests,
                        min_error_px=0.25 * working_pixel_px,
                        duplicate_px=config.nfa_duplicate_wpx * working_pixel_px)
    return float(nfa.log10_nfa)


#: Pairs left out, evenly spread, to estimate a typical leave-one-out residual: enough for an RMS within ~15 %,
#: and a mesh is triangulated once per pair left out.
_LOO_SAMPLE = 30


def _loo_rms_error(fit: Fit, polynomial_order: int) -> float:
    """RMS leave-one-out residual of a fit's pairs, for models the refit-spread estimate does not cover: a
    piecewise-affine map interpolates its pairs, so its error between them is about what leaving one out shows
    (conservative: the left-out point is extrapolated from farther)."""
    from .control_points import loo_residuals

    moving_xy = fit.matches.moving_xy[fit.inliers]
    fixed_xy = fit.matches.fixed_xy[fit.inliers]
    if len(moving_xy) < 5:
        return float("nan")
    sample = np.unique(np.linspace(0, len(moving_xy) - 1, min(len(moving_xy), _LOO_SAMPLE)).round().astype(int))
    loo = loo_residuals(fixed_xy, moving_xy, fit.model, polynomial_order=polynomial_order, indices=sample)
    loo = loo[np.isfinite(loo)]
    return float(np.sqrt(np.mean(loo**2))) if loo.size >= 3 else float("nan")


def _departure_from_affine(fit: Fit, moving_shape: tuple[int, int]) -> float:
    """Mean distance over the grid between a non-global fit and the affine fit of the same pairs.

    Both fit the pairs; outside their hull only the model's shape decides, and a quadratic's corners can swing by
    tens of pixels where an affine map stays put. Unless the data decide between them there, the error of the
    more flexible one is at least of the order of this disagreement (for a real, gentle distortion such as creep
    it is that distortion: a few pixels).
    """
    from .errors import AutoregError
    from .estimate import fit_transform

    moving_xy = fit.matches.moving_xy[fit.inliers]
    fixed_xy = fit.matches.fixed_xy[fit.inliers]
    try:
        affine = fit_transform("affine", moving_xy, fixed_xy)
    except AutoregError:
        return float("inf")
    return mean_grid_distance(fit.to_fixed, lambda xy: np.asarray(affine(xy), float), moving_shape)


def predicted_error_px(fit: Fit, moving_shape: tuple[int, int], *, truncation_px: float | None,
                       prior_scale: float, config: RegistrationConfig) -> float:
    """Predicted mean error (fixed px) of the fit over a 5×5 grid spanning the moving image; NaN when unknown.

    The forward-model refinement's prediction when it refined the fit; else leave-one-out refits of its
    correspondences (with the bias against a richer model, and corrected for inliers selected by a threshold of
    ``truncation_px``) — for polynomial and piecewise-affine fits at least their departure from the affine fit of
    the same pairs over the grid; NaN for an intensity fit that was not refined.
    """
    if not math.isnan(fit.refinement_error_px):  # +inf: the refinement diverged from the fit (unknown error)
        return fit.refinement_error_px
    if fit.n_inliers == 0:
        return float("nan")
    if fit.model not in GLOBAL_MODELS:
        own = (_loo_rms_error(fit, config.polynomial_order) if fit.model != "polynomial" or
               config.polynomial_order != 2 else _spread_error(fit, moving_shape, truncation_px, prior_scale))
        return max(own, _departure_from_affine(fit, moving_shape))
    return _spread_error(fit, moving_shape, truncation_px, prior_scale)


def _spread_error(fit: Fit, moving_shape: tuple[int, int], truncation_px: float | None, prior_scale: float) -> float:
    """Predicted mean grid error from leave-one-out refits of the inliers (autoreg.uncertainty)."""
    from .uncertainty import fit_uncertainty

    moving_xy = fit.matches.moving_xy[fit.inliers]
    fixed_xy = fit.matches.fixed_xy[fit.inliers]
    error = fit_uncertainty(fit.model, moving_xy, fixed_xy, grid_xy(moving_shape), method="loo",
                            prior_scale=prior_scale, truncation_px=truncation_px)
    return float(error)
