"""Scores of a registration: residuals, masked Pearson before/after, overlap, spread, plausibility."""

from __future__ import annotations

import numpy as np

from .datatypes import Fit, Scores

__all__ = [
    "masked_pearson",
    "detrended_pearson",
    "contrast_polarity",
    "inlier_rmse",
    "mapped_area",
    "hull_area",
    "affine_part",
    "scale_and_shear",
    "naive_resize",
    "score_registration",
]


def masked_pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Pearson correlation of ``a`` and ``b`` over ``mask`` (and where both are finite).

    Returns NaN when fewer than three pixels qualify or either image is constant there.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.arange(16.0).reshape(4, 4)
    >>> round(masked_pearson(a, 3 * a + 1), 12)
    1.0
    >>> masked_pearson(a, np.ones((4, 4)))
    nan
    """
    a, b = np.asarray(a), np.asarray(b)
    keep = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        keep &= mask
    if np.count_nonzero(keep) < 3:
        return float("nan")
    x = a[keep].astype(np.float64)  # select first, then widen: cheap on large images
    y = b[keep].astype(np.float64)
    x -= x.mean()
    y -= y.mean()
    denom = float(np.sqrt(np.dot(x, x) * np.dot(y, y)))
    if not np.isfinite(denom) or denom <= 1e-300:
        return float("nan")
    return float(np.clip(np.dot(x, y) / denom, -1.0, 1.0))


#: Most pixels :func:`detrended_pearson` uses (a regular subsample of the rest): a correlation over 16 384 pixels
#: has a standard error of at most 1/128 (0.008), far inside the verdict's margins, and its surface fit costs a
#: couple of milliseconds on any overlap.
_MAX_DETRENDED_PIXELS = 16_384
#: An image is flat once its surface is removed when what is left spreads less than this fraction of its largest
#: value: far above the rounding of the fit (1e-15), far below any content.
_FLAT_RESIDUAL = 1e-9


def detrended_pearson(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None = None, *, order: int = 2) -> float:
    """Pearson correlation of ``a`` and ``b`` over ``mask`` after removing from each, there, its least-squares
    polynomial surface of degree ``order`` in (x, y): a background the two do not share (a tilt, a scanner bow)
    then no longer hides or fakes their agreement.

    Both arrays are on one grid (the same pixel positions). Beyond ``_MAX_DETRENDED_PIXELS`` pixels a regular
    subsample is used. Returns NaN when too few pixels qualify or either image is flat once its surface is
    removed.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:32, :32]
    >>> content = np.sin(x / 3.0) * np.cos(y / 4.0)
    >>> round(detrended_pearson(content, content + 0.5 * x - 0.2 * y + 0.01 * x * y), 6)
    1.0
    """
    from .levelling import polynomial_design

    if order < 0:
        raise ValueError(f"The surface degree must be 0 or more, not {order}.")
    a, b = np.asarray(a), np.asarray(b)
    keep = np.isfinite(a) & np.isfinite(b)
    if mask is not None:
        keep &= mask
    index = np.flatnonzero(keep)
    index = index[::-(-index.size // _MAX_DETRENDED_PIXELS)] if index.size else index
    if index.size < (order + 1) * (order + 2) // 2 + 3:
        return float("nan")
    rows, cols = np.divmod(index, a.shape[1])
    # coordinates centred and scaled on the pixels used: a well-conditioned design
    half = max(float(np.ptp(cols)), float(np.ptp(rows)), 1.0) / 2
    design = polynomial_design((cols - cols.mean()) / half, (rows - rows.mean()) / half, order)
    values = np.stack([a.ravel()[index], b.ravel()[index]], axis=1).astype(np.float64)  # (n, 2)
    coef = np.linalg.lstsq(design, values, rcond=None)[0]
    residual = values - design @ coef
    scale = np.abs(values).max(axis=0) + 1e-300
    if np.any(residual.std(axis=0) <= _FLAT_RESIDUAL * scale):  # a surface and nothing else: rounding noise is left
        return float("nan")
    return masked_pearson(residual[:, 0], residual[:, 1])


def contrast_polarity(scores: Scores) -> int | None:
    """-1 when the moving image's contrast is inverted against the fixed image's (``inverted_contrast``, the sign
    of the correlation once each image's background is removed), 1 when it is not, None when no correlation was
    measured: the polarity local correlations (:mod:`autoreg.cpcorr`) should take. The raw correlation's sign is
    not it: a tilt one scan has and the other lacks can flip it."""
    if not (np.isfinite(scores.pearson_detrended) or np.isfinite(scores.pearson)):
        return None
    return -1 if scores.inverted_contrast else 1


def inlier_rmse(fit: Fit) -> float:
    """RMS distance, in fixed pixels, between mapped moving inliers and their fixed partners."""
    if fit.n_inliers == 0:
        return float("nan")
    moving_xy = fit.matches.moving_xy[fit.inliers]
    fixed_xy = fit.matches.fixed_xy[fit.inliers]
    return float(np.sqrt(np.mean(np.sum((fit.moving_to_fixed(moving_xy) - fixed_xy) ** 2, axis=1))))


def _polygon_area(xy: np.ndarray) -> float:
    x, y = xy[:, 0], xy[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def mapped_area(fit: Fit, moving_shape: tuple[int, int], *, n_per_side: int = 32) -> float:
    """Area, in fixed pixels², of the moving image's outline mapped by the fit."""
    rows, cols = moving_shape
    t = np.linspace(0.0, 1.0, n_per_side, endpoint=False)
    x0, x1, y0, y1 = -0.5, cols - 0.5, -0.5, rows - 0.5
    outline = np.concatenate([
        np.column_stack([x0 + t * (x1 - x0), np.full_like(t, y0)]),
        np.column_stack([np.full_like(t, x1), y0 + t * (y1 - y0)]),
        np.column_stack([x1 - t * (x1 - x0), np.full_like(t, y1)]),
        np.column_stack([np.full_like(t, x0), y1 - t * (y1 - y0)]),
    ])
    if fit.model == "piecewise-affine":  # the mesh maps nothing outside the inliers' hull: use its affine part
        from .estimate import fit_transform

        inl = fit.inliers
        mapped = fit_transform("affine", fit.matches.moving_xy[inl], fit.matches.fixed_xy[inl])(outline)
    else:
        mapped = np.asarray(fit.moving_to_fixed(outline), float)
    if not np.all(np.isfinite(mapped)):
        return float("nan")
    return _polygon_area(mapped)


def hull_area(xy: np.ndarray) -> float:
    """Area of the convex hull of points (x, y); 0 for fewer than three points."""
    import cv2

    if len(xy) < 3:
        return 0.0
    hull = cv2.convexHull(np.asarray(xy, np.float32))
    return float(cv2.contourArea(hull))


def affine_part(fit: Fit) -> np.ndarray:
    """The 2×2 linear part of the fit (least-squares affine approximation for non-global models)."""
    from .estimate import fit_transform

    if fit.is_global:
        return np.asarray(fit.moving_to_fixed.params, float)[:2, :2]
    inl = fit.inliers
    approx = fit_transform("affine", fit.matches.moving_xy[inl], fit.matches.fixed_xy[inl])
    return np.asarray(approx.params, float)[:2, :2]


def scale_and_shear(linear: np.ndarray) -> tuple[float, float]:
    """Mean scale (sqrt |det|) and shear (|cos| of the angle between the mapped x and y axes).

    Examples
    --------
    >>> import numpy as np
    >>> scale_and_shear(np.array([[2.0, 0.0], [0.0, 2.0]]))
    (2.0, 0.0)
    """
    det = float(np.linalg.det(linear))
    ax, ay = linear[:, 0], linear[:, 1]
    norms = float(np.linalg.norm(ax) * np.linalg.norm(ay))
    shear = abs(float(np.dot(ax, ay))) / norms if norms > 0 else float("nan")
    return float(np.sqrt(abs(det))), shear


def naive_resize(moving: np.ndarray, fixed_shape: tuple[int, int]) -> np.ndarray:
    """The unregistered guess: ``moving`` stretched onto the fixed grid (same field of view)."""
    import cv2

    filled = np.where(np.isfinite(moving), moving, np.nan).astype(np.float32)
    return cv2.resize(filled, (fixed_shape[1], fixed_shape[0]), interpolation=cv2.INTER_LINEAR)


def score_registration(
    fit: Fit,
    fixed: np.ndarray,
    moving: np.ndarray,
    warped: np.ndarray,
    footprint: np.ndarray,
    *,
    expected_scale: float,
    working_pixel_px: float,
    fixed_valid: np.ndarray | None = None,
    background_order: int = 2,
) -> Scores:
    """Every score of one registration.

    Parameters
    ----------
    fit : Fit
    fixed, moving : ndarray
        The original images.
    warped, footprint : ndarray
        ``moving`` on the fixed grid and where it holds data.
    expected_scale : float
        Expected size of one moving pixel in fixed pixels (from metadata or image sizes).
    working_pixel_px : float
        Size of one working-view pixel in fixed pixels (landmarks are located to about this precision).
    fixed_valid : ndarray of bool, optional
        ``np.isfinite(fixed)``, when the caller already has it.
    background_order : int
        Degree of the surface removed from each image before ``pearson_detrended`` and
        ``pearson_before_detrended`` (:func:`detrended_pearson`).
    """
    overlap = footprint & (np.isfinite(fixed) if fixed_valid is None else fixed_valid)
    n_overlap = int(np.count_nonzero(overlap))
    # Correlations are sampled every quarter of the coarser image's pixel: that image holds no finer detail,
    # and the figure is the same to within noise at a fraction of the cost (every pixel for same-size pairs).
    k = max(1, int(max(expected_scale, 1.0 / expected_scale if expected_scale > 0 else 1.0) // 4))
    area = mapped_area(fit, moving.shape)
    denom = min(float(fixed.size), area) if np.isfinite(area) and area > 0 else float(fixed.size)
    scale, shear = scale_and_shear(affine_part(fit))
    n_matches = len(fit.matches)
    spread = hull_area(fit.matches.fixed_xy[fit.inliers]) / n_overlap if n_overlap else float("nan")
    fixed_k, warped_k, overlap_k = fixed[::k, ::k], warped[::k, ::k], overlap[::k, ::k]
    naive_k = naive_resize(moving, fixed.shape)[::k, ::k]
    pearson = masked_pearson(fixed_k, warped_k, overlap_k)
    detrended = detrended_pearson(fixed_k, warped_k, overlap_k, order=background_order)
    return Scores(
        n_matches=n_matches,
        n_inliers=fit.n_inliers,
        inlier_ratio=fit.n_inliers / n_matches if n_matches else float("nan"),
        rmse_px=inlier_rmse(fit),
        pearson=pearson,
        pearson_before=masked_pearson(fixed_k, naive_k),
        pearson_detrended=detrended,
        pearson_before_detrended=detrended_pearson(fixed_k, naive_k, order=background_order),
        overlap_fraction=min(1.0, n_overlap / denom) if denom > 0 else 0.0,
        inlier_spread=float(min(spread, 1.0)),
        scale=scale,
        expected_scale=expected_scale,
        shear=shear,
        working_pixel_px=working_pixel_px,
        intensity_correlation=fit.correlation,
        n_inliers_general=fit.n_inliers_general,
        peak_gap=fit.peak_gap,
        peak_ratio=fit.peak_ratio,
        contest_gap=fit.contest_gap,
        # the sign once the backgrounds are out: a tilt the two scans do not share can flip the raw one
        inverted_contrast=bool((detrended if np.isfinite(detrended) else pearson) < 0 or fit.inverted),
    )
