"""Refine one control point by local correlation across two resolutions (MATLAB's ``cpcorr``, across scales).

A user clicks a landmark in both images. The click in the *finer* image can be placed on a feature to a fraction
of a coarse pixel; the click in the *coarser* image (a 40×40 map under a 1024² topography) cannot. So the point in
the finer image is the anchor and the point in the coarser image is refined:

1. Through the current transform's local linear part ``J`` (coarse px → fine px, at the click), build what the
   coarser image should look like around the landmark: the finer image *averaged over each coarse pixel's
   footprint* (a map pixel is an area average, not a point sample), on a (2h+1)² grid of coarse pixels centred on
   the anchor. Each coarse pixel is the mean of k×k bilinear samples spread over its parallelogram ``J·[-½, ½]²``.
2. Slide that template over the coarser image within ``radius`` coarse pixels of the click; at each integer shift,
   the Pearson correlation of the two patches after removing a plane from each (tilt and offset differ between
   scans; a plane is what SPM levelling removes).
3. A parabola through the peak and its neighbours (per axis) gives the sub-pixel shift.

The click is kept unrefined when the peak correlation is below ``config.cpcorr_min_correlation``, when the peak
lies on the edge of the search window (the true peak may be outside it), or when too little of either patch lies
inside its image. Nothing here decides a verdict; :func:`refine_point` returns what it found.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import RegistrationConfig
from .geometry import apply_matrix

__all__ = ["Refinement", "local_jacobian", "refine_point"]


@dataclass(frozen=True, slots=True)
class Refinement:
    """The outcome of :func:`refine_point`.

    Attributes
    ----------
    fixed_xy, moving_xy : tuple of float
        The pair after refinement (the anchor in the finer image is unchanged; the other point moved when
        ``moved``).
    correlation : float
        Peak correlation of the plane-removed patches (NaN when it could not be computed).
    moved : bool
        True when the coarser image's point was moved to the correlation peak.
    shift_px : float
        How far the refined point moved, in the coarser image's pixels (0 when not moved).
    refined_side : str
        ``"moving"`` or ``"fixed"``: which image's point was refined (the coarser one).
    note : str
        ``refined``, ``weak_correlation``, ``peak_at_search_edge``, ``ambiguous_peak`` (a ridge, not a peak) or
        ``outside`` (too little of a patch inside its image).
    """

    fixed_xy: tuple[float, float]
    moving_xy: tuple[float, float]
    correlation: float
    moved: bool
    shift_px: float
    refined_side: str
    note: str


def _as_map(transform: Any) -> Callable[[np.ndarray], np.ndarray]:
    """A callable (N, 2) → (N, 2) from a 3×3 matrix or a callable (e.g. ``Fit.to_fixed``)."""
    if callable(transform):
        return lambda xy: np.asarray(transform(np.asarray(xy, float).reshape(-1, 2)), float)
    matrix = np.asarray(transform, float)
    if matrix.shape != (3, 3):
        raise ValueError("transform must be a 3x3 matrix or a callable on (N, 2) arrays")

    return lambda xy: apply_matrix(matrix, np.asarray(xy, float).reshape(-1, 2))


def local_jacobian(transform: Callable[[np.ndarray], np.ndarray], xy: np.ndarray, *, step: float = 0.5) -> np.ndarray:
    """2×2 derivative of ``transform`` at ``xy`` by central differences: column j is d(out)/d(in_j).

    Examples
    --------
    >>> J = local_jacobian(lambda p: 3.0 * np.asarray(p), np.array([1.0, 2.0]))
    >>> np.allclose(J, 3 * np.eye(2))
    True
    """
    xy = np.asarray(xy, float).reshape(2)
    probes = np.array([xy + [step, 0], xy - [step, 0], xy + [0, step], xy - [0, step]])
    out = np.asarray(transform(probes), float)
    return np.column_stack([(out[0] - out[1]) / (2 * step), (out[2] - out[3]) / (2 * step)])


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples at (..., 2) positions; NaN outside the image or next to missing data."""
    from scipy import ndimage as ndi

    flat = np.asarray(xy, float).reshape(-1, 2)
    values = ndi.map_coordinates(image, [flat[:, 1], flat[:, 0]], order=1, mode="constant", cval=np.nan,
                                 prefilter=False)
    rows, cols = image.shape
    outside = (flat[:, 0] < -0.5) | (flat[:, 0] > cols - 0.5) | (flat[:, 1] < -0.5) | (flat[:, 1] > rows - 0.5)
    edge = ~outside & ((flat[:, 0] > cols - 1) | (flat[:, 1] > rows - 1) | (flat[:, 0] < 0) | (flat[:, 1] < 0))
    if edge.any():  # the half pixel at the border: nearest edge value, not NaN
        clipped = np.column_stack([np.clip(flat[edge, 0], 0, cols - 1), np.clip(flat[edge, 1], 0, rows - 1)])
        values[edge] = ndi.map_coordinates(image, [clipped[:, 1], clipped[:, 0]], order=1, prefilter=False)
    values[outside] = np.nan
    return values.reshape(np.shape(xy)[:-1])


def area_template(fine: np.ndarray, anchor_xy: np.ndarray, jacobian: np.ndarray, half: int) -> np.ndarray:
    """The finer image averaged over each coarse pixel's footprint, on a (2·half+1)² coarse grid at the anchor.

    Parameters
    ----------
    fine : ndarray of shape (H, W)
    anchor_xy : array_like of shape (2,)
        Centre of the template in the finer image's pixels.
    jacobian : ndarray of shape (2, 2)
        Coarse px → fine px, local linear part of the transform.
    half : int
        Half width of the template in coarse pixels.

    Returns
    -------
    ndarray of shape (2·half+1, 2·half+1)
        Rows = coarse y offsets, columns = coarse x offsets; NaN where the footprint leaves the finer image.
    """
    scale = float(np.sqrt(abs(np.linalg.det(jacobian))))
    k = int(np.clip(np.ceil(scale - 1e-6), 1, 32))  # sub-samples per axis: about one per fine pixel
    sub = (np.arange(k) + 0.5) / k - 0.5
    offsets = np.arange(-half, half + 1, dtype=float)
    gy, gx, sy, sx = np.meshgrid(offsets, offsets, sub, sub, indexing="ij")
    coarse = np.stack([gx + sx, gy + sy], axis=-1)  # (n, n, k, k, 2) coarse offsets
    positions = np.asarray(anchor_xy, float) + coarse @ np.asarray(jacobian, float).T
    samples = _sample(fine, positions)
    return samples.mean(axis=(2, 3))  # NaN if any sub-sample is outside: a partial footprint is not its area


def _plane_residual(values: np.ndarray, design: np.ndarray) -> np.ndarray:
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    return values - design @ coef


def _correlation(template: np.ndarray, patch: np.ndarray, design: np.ndarray, min_valid: int) -> float:
    valid = np.isfinite(template) & np.isfinite(patch)
    if valid.sum() < min_valid:
        return float("nan")
    a = _plane_residual(template[valid], design[valid])
    b = _plane_residual(patch[valid], design[valid])
    norm = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    return float(np.dot(a, b) / norm) if norm > 1e-12 * max(1.0, float(np.abs(b).max(initial=0))) else float("nan")


def peak_shape(neighbourhood: np.ndarray) -> tuple[np.ndarray, float]:
    """Sub-pixel offset of a peak and its weakest curvature, from a quadratic fitted to the 3×3 around it.

    Parameters
    ----------
    neighbourhood : ndarray of shape (3, 3)
        Correlations around the integer peak (rows = y, columns = x).

    Returns
    -------
    offset_xy : ndarray of shape (2,)
        Vertex of the fitted paraboloid relative to the centre (NaN when it is not a maximum or lies more than
        one pixel away).
    isotropy : float
        Curvature of the paraboloid along its flattest direction over that along its steepest, 0–1: near 0 on a
        ridge (a straight step edge fixes the point across the edge only: the aperture problem).

    Examples
    --------
    >>> y, x = np.mgrid[-1:2, -1:2]
    >>> offset, isotropy = peak_shape(1 - 0.2 * ((x - 0.3) ** 2 + 2 * y**2))
    >>> np.round(offset, 6).tolist(), round(isotropy, 6)
    ([0.3, 0.0], 0.5)
    """
    y, x = np.mgrid[-1:2, -1:2].astype(float)
    design = np.column_stack([np.ones(9), x.ravel(), y.ravel(), x.ravel() ** 2, (x * y).ravel(), y.ravel() ** 2])
    values = np.asarray(neighbourhood, float).ravel()
    if not np.all(np.isfinite(values)):
        return np.full(2, np.nan), 0.0
    _, bx, by, dxx, dxy, dyy = np.linalg.lstsq(design, values, rcond=None)[0]
    hessian = np.array([[2 * dxx, dxy], [dxy, 2 * dyy]])
    eigen = np.linalg.eigvalsh(hessian)
    if eigen[1] >= 0:  # not a maximum in every direction
        return np.full(2, np.nan), 0.0
    offset = -np.linalg.solve(hessian, [bx, by])
    if np.any(np.abs(offset) > 1.0):
        return np.full(2, np.nan), float(eigen[1] / eigen[0])
    return offset, float(eigen[1] / eigen[0])


def correlation_surface(coarse: np.ndarray, click_xy: np.ndarray, template: np.ndarray, radius: int,
                        *, min_valid_fraction: float = 0.6) -> np.ndarray:
    """Plane-removed Pearson correlation of ``template`` with the coarse patch at each integer shift of the click.

    Returns
    -------
    ndarray of shape (2·radius+1, 2·radius+1)
        Rows = y shifts, columns = x shifts, from -radius to radius; NaN where too little overlaps.
    """
    half = template.shape[0] // 2
    reach = half + radius
    offsets = np.arange(-reach, reach + 1, dtype=float)
    gy, gx = np.meshgrid(offsets, offsets, indexing="ij")
    window = _sample(coarse, np.asarray(click_xy, float) + np.stack([gx, gy], axis=-1))
    ty, tx = np.meshgrid(np.arange(-half, half + 1, dtype=float), np.arange(-half, half + 1, dtype=float),
                         indexing="ij")
    design = np.column_stack([np.ones(tx.size), tx.ravel(), ty.ravel()])
    size = 2 * half + 1
    min_valid = max(4, int(min_valid_fraction * size * size))
    out = np.full((2 * radius + 1, 2 * radius + 1), np.nan)
    for i in range(2 * radius + 1):
        for j in range(2 * radius + 1):
            patch = window[i:i + size, j:j + size]
            out[i, j] = _correlation(template.ravel(), patch.ravel(), design, min_valid)
    return out


def refine_point(
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_xy: Any,
    moving_xy: Any,
    moving_to_fixed: Any,
    *,
    config: RegistrationConfig | None = None,
    polarity: int = 1,
) -> Refinement:
    """Refine the coarser image's point of one control-point pair by local correlation through the transform.

    Parameters
    ----------
    fixed, moving : ndarray of shape (H, W)
        The two images (NaN where there is no data).
    fixed_xy, moving_xy : array_like of shape (2,)
        The clicked pair, pixel (x, y).
    moving_to_fixed : ndarray of shape (3, 3) or callable
        The current transform, moving px → fixed px (e.g. ``Fit.to_fixed``); only its local linear part at the
        pair matters, so a rough fit from a few points is enough.
    config : RegistrationConfig, optional
        ``cpcorr_half_width``, ``cpcorr_min_patch_fine_px``, ``cpcorr_radius``, ``cpcorr_min_correlation`` and
        ``cpcorr_min_isotropy``.
    polarity : {1, -1}
        -1 when the moving image's contrast is inverted relative to the fixed one's (the sign of the registered
        pair's Pearson correlation): the template is negated, so the peak is still a maximum.

    Returns
    -------
    Refinement
        The pair (the coarser image's point moved to the correlation peak, or kept), the peak correlation and
        whether the point moved.

    Raises
    ------
    ValueError
        ``moving_to_fixed`` is neither a 3×3 matrix nor a callable.
    """
    cfg = config or RegistrationConfig()
    fixed = np.asarray(fixed, float)
    moving = np.asarray(moving, float)
    fixed_xy = np.asarray(fixed_xy, float).reshape(2)
    moving_xy = np.asarray(moving_xy, float).reshape(2)
    forward = _as_map(moving_to_fixed)
    jacobian = local_jacobian(forward, moving_xy)  # moving px -> fixed px
    det = float(np.linalg.det(jacobian))
    if not np.isfinite(det) or abs(det) < 1e-12:
        return Refinement(tuple(fixed_xy), tuple(moving_xy), float("nan"), False, 0.0, "moving", "outside")
    if abs(det) >= 0.25:  # the moving image is the coarser, or not 2× finer: refine its point
        side, coarse, fine, click, anchor, j = "moving", moving, fixed, moving_xy, fixed_xy, jacobian
    else:
        side, coarse, fine, click, anchor, j = "fixed", fixed, moving, fixed_xy, moving_xy, np.linalg.inv(jacobian)
    scale = float(np.sqrt(abs(np.linalg.det(j))))  # fine px per coarse px
    half = max(cfg.cpcorr_half_width, int(np.ceil(cfg.cpcorr_min_patch_fine_px / (2 * scale))))
    radius = cfg.cpcorr_radius
    template = area_template(fine, anchor, j, half) * (-1.0 if polarity < 0 else 1.0)
    surface = correlation_surface(coarse, click, template, radius)

    def result(point: np.ndarray, corr: float, moved: bool, note: str) -> Refinement:
        shift = float(np.hypot(*(point - click))) if moved else 0.0
        pair = (tuple(map(float, anchor)), tuple(map(float, point)))
        fixed_out, moving_out = (pair[0], pair[1]) if side == "moving" else (pair[1], pair[0])
        return Refinement(fixed_out, moving_out, corr, moved, shift, side, note)

    if not np.isfinite(surface).any():
        return result(click, float("nan"), False, "outside")
    i, j_ = np.unravel_index(int(np.nanargmax(surface)), surface.shape)
    peak = float(surface[i, j_])
    if peak < cfg.cpcorr_min_correlation:
        return result(click, peak, False, "weak_correlation")
    if i in (0, 2 * radius) or j_ in (0, 2 * radius):
        return result(click, peak, False, "peak_at_search_edge")
    offset, isotropy = peak_shape(surface[i - 1:i + 2, j_ - 1:j_ + 2])
    if not np.all(np.isfinite(offset)) or isotropy < cfg.cpcorr_min_isotropy:
        return result(click, peak, False, "ambiguous_peak")
    refined = click + np.array([j_ - radius, i - radius]) + offset
    return result(refined, peak, True, "refined")


def refine_points(fixed: np.ndarray, moving: np.ndarray, fixed_xy: Any, moving_xy: Any, moving_to_fixed: Any, *,
                  config: RegistrationConfig | None = None, polarity: int = 1) -> list[Refinement]:
    """:func:`refine_point` for every pair of ``(N, 2)`` arrays (e.g. the points of ``register --points``).

    Examples
    --------
    >>> refine_points(np.zeros((16, 16)), np.zeros((16, 16)), [[3.0, 3.0]], [[3.0, 3.0]], np.eye(3))[0].moved
    False
    """
    fixed_xy = np.asarray(fixed_xy, float).reshape(-1, 2)
    moving_xy = np.asarray(moving_xy, float).reshape(-1, 2)
    return [refine_point(fixed, moving, f, m, moving_to_fixed, config=config, polarity=polarity)
            for f, m in zip(fixed_xy, moving_xy)]
