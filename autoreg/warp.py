"""Warping: resample the moving image (and any cube riding along) onto the fixed grid.

Returns the warped data *and a footprint* (True where the output holds real data); values outside the footprint
are NaN. The footprint is decided by geometry, once, by :func:`footprint_of` — never by how a resampler rounds —
and the image and the cube share it: an output pixel is inside when the moving position it samples lies on the
moving grid (``0 <= x <= W - 1``, ``0 <= y <= H - 1``, within :data:`EDGE_TOLERANCE_PX`) and every moving pixel
that bilinear interpolation gives a non-zero weight there is valid. This module applies transforms; it decides
nothing else.
"""

from __future__ import annotations

import os

import numpy as np

from .datatypes import Fit
from .models import is_global

__all__ = ["apply_transform", "apply_transform_cube", "grid_to_moving_maps", "footprint", "footprint_of",
           "output_shape", "EDGE_TOLERANCE_PX"]

#: A sample this close to the moving grid's edge, or to a pixel centre, counts as on it. A fitted matrix is off an
#: exact integer shift by ~1e-16 px, which must not decide whether a whole edge row is inside; 1e-6 px is far
#: below any registration accuracy and far above rounding at any image size autoreg accepts.
EDGE_TOLERANCE_PX = 1e-6
_MAP_NODES_ABOVE = 512 * 512  # evaluate non-global maps on nodes (and interpolate) on grids larger than this


def output_shape(fixed_shape: tuple[int, int], step: float) -> tuple[int, int]:
    """``(rows, cols)`` of the output grid that samples the fixed area every ``step`` fixed pixels."""
    return (int(np.floor((fixed_shape[0] - 1) / step + 1e-9)) + 1,
            int(np.floor((fixed_shape[1] - 1) / step + 1e-9)) + 1)


def _global_maps(fit: Fit, rows: int, cols: int, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact moving (x, y) of every output pixel for a 3×3 model, by broadcasting (no (N, 2) temporaries)."""
    m = _fixed_to_moving_matrix(fit)
    x = np.arange(cols, dtype=np.float64)[None, :] * step
    y = np.arange(rows, dtype=np.float64)[:, None] * step
    map_x = m[0, 0] * x + (m[0, 1] * y + m[0, 2])
    map_y = m[1, 0] * x + (m[1, 1] * y + m[1, 2])
    if not np.array_equal(m[2], (0.0, 0.0, 1.0)):
        w = m[2, 0] * x + (m[2, 1] * y + m[2, 2])
        with np.errstate(divide="ignore", invalid="ignore"):
            map_x, map_y = map_x / w, map_y / w
        behind = ~(w > 0)  # beyond the horizon: nothing of the moving image maps there
        map_x[behind] = np.nan
        map_y[behind] = np.nan
    return map_x, map_y


def grid_to_moving_maps(fit: Fit, fixed_shape: tuple[int, int], *, step: float = 1.0,
                        node_spacing: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Moving-image (x, y) of every output-grid pixel, as float64 maps.

    Output pixel (row i, col j) sits at fixed pixel (x, y) = (j * step, i * step). Points the transform cannot
    map (outside a piecewise-affine mesh, beyond a projective horizon) are NaN. Global models are evaluated
    exactly; on large grids the non-global ones are evaluated on nodes every ``node_spacing`` pixels and
    interpolated linearly in between (their maps are smooth or piecewise linear, and evaluating a mesh transform
    at a million points is slow).
    """
    from scipy import ndimage as ndi

    rows, cols = output_shape(fixed_shape, step)
    if is_global(fit.model):
        return _global_maps(fit, rows, cols, step)
    if rows * cols <= _MAP_NODES_ABOVE or node_spacing <= 1:
        gy, gx = np.mgrid[:rows, :cols].astype(np.float64) * step
        moving_xy = fit.to_moving(np.column_stack([gx.ravel(), gy.ravel()]))
        return moving_xy[:, 0].reshape(rows, cols), moving_xy[:, 1].reshape(rows, cols)
    n_rows = int(np.ceil((rows - 1) / node_spacing)) + 1
    n_cols = int(np.ceil((cols - 1) / node_spacing)) + 1
    gx, gy = np.meshgrid(np.linspace(0, cols - 1, n_cols) * step, np.linspace(0, rows - 1, n_rows) * step)
    moving_xy = fit.to_moving(np.column_stack([gx.ravel(), gy.ravel()]))
    # node coordinates of every output pixel (first and last nodes sit on the first and last pixels)
    node_r, node_c = np.meshgrid(np.arange(rows) * ((n_rows - 1) / (rows - 1)),
                                 np.arange(cols) * ((n_cols - 1) / (cols - 1)), indexing="ij")
    maps = [ndi.map_coordinates(moving_xy[:, k].reshape(n_rows, n_cols), [node_r, node_c], order=1,
                                mode="nearest") for k in range(2)]
    return maps[0], maps[1]


def _bilinear_cells(coord: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Left neighbour index and weight of the right neighbour for coordinates already known to be on the grid.

    Coordinates are clamped to ``[0, size - 1]`` and snapped to a pixel centre within ``EDGE_TOLERANCE_PX``, so
    the right neighbour always exists (``index + 1 <= size - 1``) and an exact centre gives it weight 0.
    """
    clamped = np.clip(coord, 0.0, size - 1.0)
    index = np.floor(clamped)
    frac = clamped - index
    near_next = frac > 1.0 - EDGE_TOLERANCE_PX
    index[near_next] += 1  # just below a centre: that centre
    frac[near_next | (frac < EDGE_TOLERANCE_PX)] = 0.0
    last = index >= size - 1  # the last centre: weigh it as the right neighbour of the one before
    index[last] = size - 2
    frac[last] = 1.0
    return index.astype(np.int64), frac


def footprint_of(map_x: np.ndarray, map_y: np.ndarray, moving_valid: np.ndarray) -> np.ndarray:
    """Where the output holds data: the sampled position lies on the moving grid and every sample it weighs is valid.

    Parameters
    ----------
    map_x, map_y : ndarray of shape (rows, cols)
        Moving (x, y) sampled by each output pixel (NaN where nothing is sampled).
    moving_valid : ndarray of bool, shape (H, W)
        Valid (finite) moving pixels.

    Returns
    -------
    ndarray of bool, shape (rows, cols)
    """
    height, width = moving_valid.shape
    tol = EDGE_TOLERANCE_PX
    with np.errstate(invalid="ignore"):  # NaN positions compare False: outside
        inside = (map_x >= -tol) & (map_x <= width - 1 + tol) & (map_y >= -tol) & (map_y <= height - 1 + tol)
    if moving_valid.all() or not inside.any():
        return inside
    x0, fx = _bilinear_cells(map_x[inside], width)
    y0, fy = _bilinear_cells(map_y[inside], height)
    ok = np.ones(x0.shape, bool)
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            ok &= (wx * wy == 0) | moving_valid[y0 + dy, x0 + dx]
    footprint = np.zeros_like(inside)
    footprint[inside] = ok
    return footprint


def _fixed_to_moving_matrix(fit: Fit) -> np.ndarray:
    """The inverse of a global fit's matrix, scaled so that w > 0 in front of a projective horizon."""
    forward = np.asarray(fit.moving_to_fixed.params, float)
    return np.linalg.inv(forward * np.sign(forward[2, 2] or 1.0))


def _inside_global(inverse: np.ndarray, out_shape: tuple[int, int], step: float,
                   moving_shape: tuple[int, int]) -> np.ndarray:
    """Output pixels whose exact moving position lies on the moving grid, row by row, for a 3×3 map.

    Along an output row every condition (``w > 0``, ``x >= -tol``, ``x <= W - 1 + tol``, the same for y, with
    ``x = X / w``) is linear in the column: ``a * col + b >= 0`` — so the inside columns form one interval per row,
    found in O(rows) instead of testing a million positions.
    """
    rows, cols = out_shape
    height, width = moving_shape
    tol = EDGE_TOLERANCE_PX
    r = np.arange(rows, dtype=np.float64) * step
    m = inverse
    # each condition as (coefficient of the column index, offset per row): coefficient * col + offset >= 0
    w_a, w_b = m[2, 0] * step, m[2, 1] * r + m[2, 2]
    x_a, x_b = m[0, 0] * step, m[0, 1] * r + m[0, 2]
    y_a, y_b = m[1, 0] * step, m[1, 1] * r + m[1, 2]
    conditions = [(x_a + tol * w_a, x_b + tol * w_b), ((width - 1 + tol) * w_a - x_a, (width - 1 + tol) * w_b - x_b),
                  (y_a + tol * w_a, y_b + tol * w_b), ((height - 1 + tol) * w_a - y_a, (height - 1 + tol) * w_b - y_b)]
    lo, hi = np.zeros(rows), np.full(rows, cols - 1.0)
    projective = not np.array_equal(m[2], (0.0, 0.0, 1.0))
    for coefficient, offset in conditions + ([(w_a, w_b)] if projective else []):  # in front: w >= 0
        with np.errstate(over="ignore"):  # a coefficient of ~1e-300 bounds the columns at +-inf: no bound
            bound = -offset / coefficient if coefficient != 0 else offset
        if coefficient > 0:
            lo = np.maximum(lo, np.ceil(bound))
        elif coefficient < 0:
            hi = np.minimum(hi, np.floor(bound))
        else:
            hi = np.where(offset >= 0, hi, -1.0)
    inside = np.zeros((rows, cols), bool)
    filled = np.flatnonzero(lo <= hi)  # a NaN bound leaves its row empty
    starts, stops = lo[filled].astype(int).tolist(), (hi[filled] + 1).astype(int).tolist()
    for row, start, stop in zip(filled.tolist(), starts, stops):
        inside[row, start:stop] = True  # one slice per row: no million comparisons
    return inside


def _grid_positions(inverse: np.ndarray, rows_cols: tuple[np.ndarray, np.ndarray], step: float) -> np.ndarray:
    """Exact moving (x, y) of output pixels given by their (row, col) indices, for a 3×3 map."""
    r, c = rows_cols
    fixed_xy = np.column_stack([c * step, r * step]).astype(np.float64)
    from .geometry import apply_matrix

    return apply_matrix(inverse, fixed_xy)


def _near_invalid(fit: Fit, moving_valid: np.ndarray, out_shape: tuple[int, int], step: float) -> np.ndarray:
    """Output pixels that may sample an invalid moving pixel: a superset, from a nearest-neighbour warp.

    A sample whose bilinear cell touches an invalid pixel q lies within 1 px of q; OpenCV's nearest neighbour of
    it lies within 0.5 + 1/32 px of the sample, so within 2 px of q: warping the invalid mask dilated by 2 px
    marks every such output pixel (and some more, which the exact test then clears).
    """
    import cv2

    invalid = cv2.dilate((~moving_valid).astype(np.uint8), np.ones((5, 5), np.uint8))
    matrix = _scale_matrix(step) @ np.asarray(fit.moving_to_fixed.params, float)
    dsize = (out_shape[1], out_shape[0])
    if np.array_equal(matrix[2], (0.0, 0.0, 1.0)):
        warped = cv2.warpAffine(invalid, matrix[:2], dsize, flags=cv2.INTER_NEAREST, borderValue=0)
    else:
        warped = cv2.warpPerspective(invalid, matrix, dsize, flags=cv2.INTER_NEAREST, borderValue=0)
    return warped > 0


def _scale_matrix(step: float) -> np.ndarray:
    """Maps fixed pixel (x, y) to output-grid pixel (x, y) for a grid sampled every ``step`` fixed pixels."""
    return np.diag([1.0 / step, 1.0 / step, 1.0])


def footprint(fit: Fit, fixed_shape: tuple[int, int], moving_valid: np.ndarray, *, step: float = 1.0,
              maps: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """The footprint of a transform on the output grid: the one decision shared by the image and the cube.

    Global models are decided row by row from the exact matrix (:func:`_inside_global`), with the exact sample
    test of :func:`footprint_of` near invalid moving pixels only; non-global ones by :func:`footprint_of` on their
    coordinate maps (``maps``, computed when not given).
    """
    out_shape = output_shape(fixed_shape, step)
    if not is_global(fit.model):
        map_x, map_y = maps if maps is not None else grid_to_moving_maps(fit, fixed_shape, step=step)
        return footprint_of(map_x, map_y, moving_valid)
    inverse = _fixed_to_moving_matrix(fit)
    inside = _inside_global(inverse, out_shape, step, moving_valid.shape)
    if moving_valid.all() or not inside.any():
        return inside
    check = inside & _near_invalid(fit, moving_valid, out_shape, step)
    where = np.nonzero(check)
    moving_xy = _grid_positions(inverse, where, step)
    inside[where] = footprint_of(moving_xy[:, 0], moving_xy[:, 1], moving_valid)
    return inside


def _resample(data: np.ndarray, fit: Fit, out_shape: tuple[int, int], step: float,
              maps: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Bilinear samples of ``data`` (H, W) on the output grid; 0 where a sample falls off the moving grid."""
    import cv2

    dsize = (out_shape[1], out_shape[0])
    border = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    if maps is None:
        matrix = _scale_matrix(step) @ np.asarray(fit.moving_to_fixed.params, float)
        if np.array_equal(matrix[2], (0.0, 0.0, 1.0)):
            return cv2.warpAffine(data, matrix[:2], dsize, flags=cv2.INTER_LINEAR, **border)
        return cv2.warpPerspective(data, matrix, dsize, flags=cv2.INTER_LINEAR, **border)
    outside = -1e6  # NaN positions: far off the grid, sampled as the constant border
    map_x, map_y = maps
    return cv2.remap(data, np.nan_to_num(map_x, nan=outside).astype(np.float32),
                     np.nan_to_num(map_y, nan=outside).astype(np.float32), cv2.INTER_LINEAR, **border)


def apply_transform(moving: np.ndarray, fit: Fit, fixed_shape: tuple[int, int], *,
                    step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``moving`` onto the fixed grid with the fit's moving→fixed transform.

    Parameters
    ----------
    moving : ndarray of shape (H, W)
        Moving image; NaN pixels are missing data (zeroed before resampling, kept out by the footprint).
    fit : Fit
    fixed_shape : tuple of int
        ``(rows, cols)`` of the fixed image.
    step : float, optional
        Sample the fixed area every ``step`` fixed pixels (1 = the fixed grid itself).

    Returns
    -------
    warped : ndarray of float32, shape (rows, cols)
        NaN outside the footprint.
    footprint : ndarray of bool, shape (rows, cols)
        See :func:`footprint`.
    """
    moving = np.asarray(moving, np.float32)
    valid = np.isfinite(moving)
    maps = None if is_global(fit.model) else grid_to_moving_maps(fit, fixed_shape, step=step)
    inside = footprint(fit, fixed_shape, valid, step=step, maps=maps)
    warped = _resample(np.where(valid, moving, 0.0).astype(np.float32), fit, output_shape(fixed_shape, step), step,
                       maps)
    warped[~inside] = np.nan
    return warped, inside


def _bilinear_operator(map_x: np.ndarray, map_y: np.ndarray, inside: np.ndarray,
                       moving_shape: tuple[int, int]) -> object:
    """Sparse (n_points × H*W) matrix of bilinear weights at the map's points; empty rows outside ``inside``."""
    from scipy import sparse

    height, width = moving_shape
    points = np.flatnonzero(inside.ravel())
    x0, fx = _bilinear_cells(map_x.ravel()[points], width)
    y0, fy = _bilinear_cells(map_y.ravel()[points], height)
    corners = [(y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)), (y0 + 1, x0, (1 - fx) * fy),
               (y0 + 1, x0 + 1, fx * fy)]
    # one row per map point, four entries per inside point, in CSR order
    data = np.stack([w for _, _, w in corners], axis=1).astype(np.float32).ravel()
    columns = np.stack([r * width + c for r, c, _ in corners], axis=1).ravel()
    counts = np.zeros(map_x.size, np.int64)
    counts[points] = 4
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sparse.csr_matrix((data, columns, indptr), shape=(map_x.size, height * width))


def apply_transform_cube(cube: np.ndarray, fit: Fit, fixed_shape: tuple[int, int], *,
                         step: float = 1.0, chunk_rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Resample every band of ``cube`` (H, W, B) onto the fixed grid with one interpolation operator.

    The coordinate maps and the footprint are those of :func:`apply_transform` (a moving pixel is valid when it
    is finite in every band). Output rows are produced in chunks of ``chunk_rows`` as a sparse bilinear operator
    times the cube, so intermediate memory stays bounded (only the output is large).

    Returns
    -------
    warped : ndarray of float32, shape (rows, cols, B)
        NaN outside the footprint.
    footprint : ndarray of bool, shape (rows, cols)
    """
    from concurrent.futures import ThreadPoolExecutor

    out_shape = output_shape(fixed_shape, step)
    map_x, map_y = grid_to_moving_maps(fit, fixed_shape, step=step)
    cube = np.asarray(cube, np.float32)
    bands = cube.shape[2]
    valid = np.isfinite(cube).all(axis=2)
    inside = footprint(fit, fixed_shape, valid, step=step, maps=(map_x, map_y))
    flat = np.where(valid[:, :, None], cube, 0.0).reshape(-1, bands)
    out = np.empty(out_shape + (bands,), np.float32)

    def fill(start: int) -> None:
        stop = min(start + chunk_rows, out_shape[0])
        operator = _bilinear_operator(map_x[start:stop], map_y[start:stop], inside[start:stop], valid.shape)
        block = out[start:stop].reshape(-1, bands)  # a view: each chunk writes its own rows
        block[:] = operator @ flat
        block[~inside[start:stop].ravel()] = np.nan

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # sparse products release the GIL
        list(pool.map(fill, range(0, out_shape[0], chunk_rows)))
    return out, inside
