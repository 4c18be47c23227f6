"""A non-linear contrast between two channels: the fixed image mapped through a function fitted to the moving one.

Two channels of one scan need not be related linearly: a piezoresponse phase is one value per domain where the
height shows the domains at other levels, a spectroscopic map folds the topography (|height - q|), an electronic
contrast gives every terrace its own value. Where a linear contrast does not explain the map, the fixed image is
mapped through a piecewise-linear function ``f`` of its own values (knots at quantiles of the values the moving
image covers) fitted so that each moving pixel is ``f`` of the fixed image averaged over that pixel's footprint, plus
a plane: the least squares of the correlation ratio (Roche et al., MICCAI 1998), with the footprint's average taken
of ``f`` (a map pixel averages the contrast over its area), not of the fixed values. The mapped image then stands in
for the fixed one in the intensity refinement, whose contrast model is linear.
"""

from __future__ import annotations

import numpy as np

from .errors import EstimationError, library_errors
from .geometry import apply_matrix
from .score import masked_pearson

__all__ = ["mapped_fixed"]

#: Smallest footprint sigma (fixed px) worth a blur: below it a moving pixel samples the fixed image as a point.
_MIN_SIGMA_PX = 0.3
#: Points per row of the sampling maps handed to ``cv2.remap`` (which takes fewer than 32767 columns).
_MAP_COLUMNS = 4096


def _hat_images(fixed: np.ndarray, valid: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """``φ_b(fixed)`` for each knot ``b``: the piecewise-linear hat functions on ``knots`` (a partition of unity
    over their range, constant beyond it), 0 where ``fixed`` is invalid; shape ``(len(knots), rows, cols)``."""
    # one interpolation: each value's fractional knot index t, and then hat b is max(0, 1 - |t - b|)
    index = np.interp(np.where(valid, fixed, knots[0]), knots, np.arange(len(knots), dtype=np.float64))
    out = np.empty((len(knots), *fixed.shape), np.float32)
    for b in range(len(knots)):
        out[b] = np.where(valid, np.maximum(0.0, 1.0 - np.abs(index - b)), 0.0)
    return out


def _footprint_samples(images: np.ndarray, valid: np.ndarray, xy: np.ndarray, sigma: float,
                       min_valid: float) -> tuple[np.ndarray, np.ndarray]:
    """Each image averaged over a gaussian footprint of ``sigma`` (its valid pixels only) and sampled bilinearly
    at ``xy`` (fixed px); returns ``(n, len(images))`` and where the footprint held ``min_valid`` valid data."""
    import cv2

    weight = valid.astype(np.float32)
    # OpenCV's maps hold fewer than 32767 columns: the points are laid out in rows of at most _MAP_COLUMNS
    n = len(xy)
    columns = max(1, min(n, _MAP_COLUMNS))
    padded = np.zeros((-(-n // columns) * columns, 2), np.float32)
    padded[:n] = xy
    map_x, map_y = (np.ascontiguousarray(padded[:, i]).reshape(-1, columns) for i in (0, 1))

    def sample(image: np.ndarray) -> np.ndarray:
        if sigma >= _MIN_SIGMA_PX:
            image = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_CONSTANT)
        return cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0.0).ravel()[:n]

    with library_errors("footprint averaging of the contrast map"):
        covered = sample(weight)
        samples = np.stack([sample(np.ascontiguousarray(im)) for im in images], axis=1)
    ok = covered >= min_valid
    return samples / np.maximum(covered, 1e-6)[:, None], ok


def mapped_fixed(fixed: np.ndarray, moving: np.ndarray, moving_to_fixed: np.ndarray, *, knots: int,
                 min_valid: float = 0.9, min_pixels: int = 50) -> tuple[np.ndarray, float]:
    """The fixed image mapped through the piecewise-linear contrast that best predicts ``moving`` at a pose.

    Parameters
    ----------
    fixed, moving : ndarray of shape (rows, cols)
        NaN marks missing pixels.
    moving_to_fixed : ndarray of shape (3, 3)
        The pose: moving pixel (x, y) → fixed pixel (x, y). The moving pixel's footprint is the matrix's scale in
        fixed px (a gaussian of the box's variance when it spans more than a fixed pixel).
    knots : int
        Knots of the contrast function, at evenly spaced quantiles of the fixed values under the moving image.
    min_valid : float
        A moving pixel counts only where this fraction of its footprint holds valid fixed data.
    min_pixels : int
        Fewer usable moving pixels than this, or than four per coefficient, is too little to fit a contrast.

    Returns
    -------
    mapped : ndarray of shape (rows, cols), float32
        ``f(fixed)`` (NaN where ``fixed`` is missing), in the moving image's units.
    correlation : float
        Pearson correlation, over the usable moving pixels, of the moving image with what the contrast and the
        plane predict (the square root of the fitted correlation ratio, planes aside).

    Raises
    ------
    EstimationError
        Too few usable pixels, fewer than three distinct knots (a flat overlap) or a singular fit.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:64, :64]
    >>> fixed = np.sin(x / 6.0) + np.cos(y / 9.0)
    >>> moving = np.abs(fixed - 0.3)  # folded: no linear contrast explains it
    >>> mapped, r = mapped_fixed(fixed, moving, np.eye(3), knots=12)
    >>> bool(r > 0.99), bool(np.corrcoef(mapped.ravel(), moving.ravel())[0, 1] > 0.99)
    (True, True)
    """
    fixed = np.asarray(fixed, np.float32)
    moving = np.asarray(moving, np.float64)
    matrix = np.asarray(moving_to_fixed, np.float64)
    fixed_valid = np.isfinite(fixed)
    rows, cols = np.nonzero(np.isfinite(moving))
    moving_xy = np.column_stack([cols, rows]).astype(np.float64)
    fixed_xy = apply_matrix(matrix, moving_xy)
    footprint = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2] / matrix[2, 2]))))
    sigma = footprint / np.sqrt(12.0) if footprint > 1 else 0.0
    inside = ((fixed_xy[:, 0] >= 0) & (fixed_xy[:, 0] <= fixed.shape[1] - 1)
              & (fixed_xy[:, 1] >= 0) & (fixed_xy[:, 1] <= fixed.shape[0] - 1))
    if inside.sum() < max(min_pixels, 4 * (knots + 2)):
        raise EstimationError(f"Too few moving pixels on the fixed image ({int(inside.sum())}) to fit a contrast.")
    under = fixed[np.clip(np.rint(fixed_xy[inside, 1]).astype(int), 0, fixed.shape[0] - 1),
                  np.clip(np.rint(fixed_xy[inside, 0]).astype(int), 0, fixed.shape[1] - 1)]
    under = under[np.isfinite(under)]
    if under.size < min_pixels:
        raise EstimationError("Too few valid fixed pixels under the moving image to fit a contrast.")
    knot_values = np.unique(np.quantile(under, np.linspace(0.0, 1.0, knots)))
    if len(knot_values) < 3:
        raise EstimationError("The fixed image is flat under the moving image; no contrast to fit.")
    hats = _hat_images(fixed, fixed_valid, knot_values)
    sampled, ok = _footprint_samples(hats, fixed_valid, fixed_xy[inside], sigma, min_valid)
    target = moving[rows[inside], cols[inside]][ok]
    if target.size < max(min_pixels, 4 * (len(knot_values) + 2)):
        raise EstimationError(f"Too few usable moving pixels ({target.size}) to fit a contrast.")
    xy = moving_xy[inside][ok]
    centred = (xy - xy.mean(axis=0)) / max(float(np.ptp(xy)), 1.0)  # the plane's columns, well scaled
    design = np.column_stack([sampled[ok], centred])
    with library_errors("the contrast fit"):
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    if not np.all(np.isfinite(coef)):
        raise EstimationError("The contrast fit is singular.")
    correlation = masked_pearson(design @ coef, target)
    mapped = np.interp(np.where(fixed_valid, fixed, knot_values[0]), knot_values, coef[: len(knot_values)])
    return np.where(fixed_valid, mapped, np.nan).astype(np.float32), correlation
