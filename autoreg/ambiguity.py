"""Is the found pose the only one the images support? The local shift check of any automatic fit.

Periodic or repeated content (an atomic lattice) gives a wrong pose, one that maps the lattice onto itself a few
periods away, a consensus of features as far from chance as the right one's and a correlation nearly as good; only
the defects tell them apart. At the right pose the defects match and a shift by one period loses them; at a wrong
pose they match nowhere near, and its neighbours a period away correlate as well as it does. The search's peak gap
(:mod:`autoreg.search`) is this test over every pose; :func:`shift_peak_gap` is the same test around the pose a fit
found, whatever found it.
"""

from __future__ import annotations

import numpy as np

from .datatypes import Fit

__all__ = ["shift_peak_gap"]

#: An image is flat when its standard deviation is below this fraction of its largest magnitude: far above float32
#: rounding of the levelling (1e-7), far below any real contrast.
_FLAT = 1e-5
_TINY = 1e-30


def shift_peak_gap(fixed: np.ndarray, moving_levelled: np.ndarray, fit: Fit, overlap: np.ndarray, *,
                   coarse_px: float, exclusion_px: float, window_fraction: float, max_side: int) -> float:
    """How far the found pose's correlation stands above the best pose shifted by more than ``exclusion_px``.

    The overlap's bounding box in the fixed image is area-reduced to *check pixels* of about half the coarser
    image's pixel (at most ``max_side`` per side; sampled every quarter check pixel first, as the scores are) and
    levelled (rows, plane: the box's rows are the fixed image's scan lines). The levelled moving image is sampled
    through the fit at every check pixel's centre (bilinear). The moving check image, inset by the window on every
    side, is slid over the fixed one by up to ``window_fraction`` of the box's shorter side (masked NCC, OpenCV's
    ``TM_CCOEFF_NORMED``; its sign follows the pose's, so inverted contrast counts). Local maxima of the NCC more
    than ``exclusion_px``, two coarse pixels and two check pixels from the pose are its competitors (nearer ones are
    shoulders of the pose's own peak, which the coarser image cannot separate from it).

    The moving image is point-sampled: when a check pixel is larger than a moving pixel (a moving image finer than
    the fixed one, or an overlap over ``2 max_side`` px), content finer than a check pixel aliases in it and not in
    the area-averaged fixed image; that lowers every correlation alike rather than making one shift win.

    Parameters
    ----------
    fixed : ndarray
        The fixed image, raw.
    moving_levelled : ndarray
        The moving image levelled in its own frame (its rows are its scan lines).
    fit : Fit
        The fit whose pose is checked (any model).
    overlap : ndarray of bool, shape fixed.shape
        Where the warped moving image and the fixed image both hold data.
    coarse_px : float
        Size of the coarser image's pixel in fixed px (finer content does not exist in the pair).
    exclusion_px : float
        Shifts up to this (fixed px) are the found pose itself.
    window_fraction : float
        Largest shift, as a fraction of the overlap box's shorter side.
    max_side : int
        Longest side of the check grid.

    Returns
    -------
    float
        ``NCC(pose) − max NCC(competitor)``, in the units of the search's ``peak_gap``; ``inf`` when no competitor
        peak lies in the window; NaN when it cannot be measured (an overlap too small to slide over, a window with
        no pose beyond the exclusion, a flat image).

    Raises
    ------
    EstimationError
        OpenCV failed on these data (the caller records the check as not measured).
    """
    import cv2
    from scipy import ndimage

    from .errors import library_errors
    from .levelling import level_scan
    from .preprocess import fill_invalid

    rows, columns = np.flatnonzero(overlap.any(axis=1)), np.flatnonzero(overlap.any(axis=0))
    if rows.size < 8 or columns.size < 8:
        return float("nan")
    check_px = max(1.0, coarse_px / 2.0, max(rows[-1] - rows[0] + 1, columns[-1] - columns[0] + 1) / max_side)
    step = max(1, int(check_px // 4))
    box = np.s_[rows[0]:rows[-1] + 1:step, columns[0]:columns[-1] + 1:step]
    inside = overlap[box]
    fixed_box = fill_invalid(fixed[box], np.isfinite(fixed[box]))  # all of it: the template may leave the overlap
    weight = inside.astype(np.float32)
    size_xy = (max(1, round(inside.shape[1] * step / check_px)), max(1, round(inside.shape[0] * step / check_px)))
    if size_xy != (inside.shape[1], inside.shape[0]):
        with library_errors("shift check"):
            fixed_box, weight = (cv2.resize(a, size_xy, interpolation=cv2.INTER_AREA) for a in (fixed_box, weight))
    magnitude = float(np.abs(fixed_box).max()) + _TINY  # before levelling: a plane levels to rounding noise
    fixed_box = np.nan_to_num(level_scan(fixed_box, scars=False, spikes=False).data).astype(np.float32)
    if not np.std(fixed_box) > _FLAT * magnitude:
        return float("nan")  # a flat (or planar) fixed image: no correlation to compare

    # the fixed (x, y) of every check pixel's centre: cell j averages sampled pixels [j c, (j + 1) c)
    cell_xy = np.array([inside.shape[1] / size_xy[0], inside.shape[0] / size_xy[1]]) * step  # fixed px per cell
    gx = columns[0] + cell_xy[0] * np.arange(size_xy[0]) + (cell_xy[0] - step) / 2
    gy = rows[0] + cell_xy[1] * np.arange(size_xy[1]) + (cell_xy[1] - step) / 2
    fixed_xy = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)
    moving_xy = fit.to_moving(fixed_xy)
    moving_box = ndimage.map_coordinates(np.asarray(moving_levelled, np.float64), [moving_xy[:, 1], moving_xy[:, 0]],
                                         order=1, mode="constant", cval=np.nan, prefilter=False)
    moving_box = moving_box.reshape(size_xy[1], size_xy[0]).astype(np.float32)
    full = (weight > 0.999) & np.isfinite(moving_box)  # check pixels wholly inside the overlap

    window = int(window_fraction * min(full.shape))
    if window < 3 or min(full.shape) - 2 * window < 8:
        return float("nan")
    inset = np.s_[window:-window, window:-window]
    template, mask = np.where(full, moving_box, 0.0)[inset].astype(np.float32), full[inset]
    values = template[mask]
    if np.count_nonzero(mask) < 16 or not np.std(values) > _FLAT * (np.abs(values).max() + _TINY):
        return float("nan")  # a flat moving image: no correlation to compare
    with library_errors("shift check"):
        ncc = cv2.matchTemplate(fixed_box, template, cv2.TM_CCOEFF_NORMED, mask=mask.astype(np.float32))
    if not np.isfinite(ncc[window, window]):
        return float("nan")
    if ncc[window, window] < 0:  # inverted contrast (height against phase): the pose's peak is a trough
        ncc = -ncc
    ncc = np.where(np.isfinite(ncc), ncc, -np.inf)  # undefined shifts (flat patches) are nobody's peak
    dy, dx = np.mgrid[-window:window + 1, -window:window + 1]
    distance = np.hypot(dx * cell_xy[0], dy * cell_xy[1])  # fixed px
    centre = float(ncc[distance <= 1.5 * cell_xy.max()].max())  # the pose, to within a check pixel
    interior = np.zeros(ncc.shape, bool)
    interior[1:-1, 1:-1] = True  # a maximum on the window's edge may be a slope, not a peak
    beyond = interior & (distance > max(exclusion_px, 2 * coarse_px, 2 * cell_xy.max()))
    if not beyond.any():
        return float("nan")  # the window holds no different pose: not measured
    peaks = beyond & (ncc == ndimage.maximum_filter(ncc, size=3, mode="nearest")) & np.isfinite(ncc)
    return float(centre - ncc[peaks].max()) if peaks.any() else float("inf")
