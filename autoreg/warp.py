"""Warping: resample the moving image (and any cube riding along) onto the fixed grid.

Returns the warped data *and a footprint* (True where the output holds real data). Values outside the
footprint are NaN. This module applies transforms; it decides nothing.
"""

from __future__ import annotations

import os

import numpy as np

from .datatypes import Fit
from .models import is_global

__all__ = ["apply_transform", "apply_transform_cube", "grid_to_moving_maps"]

_CV_MAX_CHANNELS = 4  # cv2.remap/warp are exact and fast with 1, 3 or 4 channels; we use chunks of <= 4


def _grid_matrix(step: float) -> np.ndarray:
    """Maps fixed pixel (x, y) to output-grid pixel (x, y) for a grid sampled every ``step`` fixed pixels."""
    return np.array([[1.0 / step, 0.0, 0.0], [0.0, 1.0 / step, 0.0], [0.0, 0.0, 1.0]])


def _output_shape(fixed_shape: tuple[int, int], step: float) -> tuple[int, int]:
    return (int(np.floor((fixed_shape[0] - 1) / step)) + 1, int(np.floor((fixed_shape[1] - 1) / step)) + 1)


def _moving_xy_at(fit: Fit, fixed_xy: np.ndarray) -> np.ndarray:
    moving_xy = np.asarray(fit.fixed_to_moving(fixed_xy), dtype=np.float64)
    if fit.model == "piecewise-affine":  # skimage returns -1 outside the mesh
        moving_xy[np.all(moving_xy == -1, axis=1)] = np.nan
    return moving_xy


def grid_to_moving_maps(fit: Fit, fixed_shape: tuple[int, int], *, step: float = 1.0,
                        node_spacing: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Moving-image (x, y) of every output-grid pixel, as float32 maps for ``cv2.remap``.

    Output pixel (row i, col j) sits at fixed pixel (x, y) = (j * step, i * step). Points the transform
    cannot map (outside a piecewise-affine mesh) are NaN. On large grids the transform is evaluated on nodes
    every ``node_spacing`` pixels and interpolated linearly in between: the maps of the non-global models
    are smooth or piecewise linear, and evaluating a mesh transform at a million points is slow.
    """
    from scipy import ndimage as ndi

    rows, cols = _output_shape(fixed_shape, step)
    if rows * cols <= 512 * 512 or node_spacing <= 1:
        gy, gx = np.mgrid[:rows, :cols].astype(np.float64) * step
        moving_xy = _moving_xy_at(fit, np.column_stack([gx.ravel(), gy.ravel()]))
        return (moving_xy[:, 0].reshape(rows, cols).astype(np.float32),
                moving_xy[:, 1].reshape(rows, cols).astype(np.float32))
    n_rows = int(np.ceil((rows - 1) / node_spacing)) + 1
    n_cols = int(np.ceil((cols - 1) / node_spacing)) + 1
    node_y = np.linspace(0, rows - 1, n_rows) * step
    node_x = np.linspace(0, cols - 1, n_cols) * step
    gx, gy = np.meshgrid(node_x, node_y)
    moving_xy = _moving_xy_at(fit, np.column_stack([gx.ravel(), gy.ravel()]))
    # node coordinates of every output pixel (first and last nodes sit on the first and last pixels)
    node_r, node_c = np.meshgrid(np.arange(rows) * ((n_rows - 1) / (rows - 1)),
                                 np.arange(cols) * ((n_cols - 1) / (cols - 1)), indexing="ij")
    maps = []
    for k in range(2):
        nodes = moving_xy[:, k].reshape(n_rows, n_cols)
        maps.append(ndi.map_coordinates(nodes, [node_r, node_c], order=1, mode="nearest").astype(np.float32))
    return maps[0], maps[1]


def _warp_channels(data: np.ndarray, fit: Fit, out_shape: tuple[int, int], step: float,
                   maps: tuple[np.ndarray, np.ndarray] | None, border: float = 0.0) -> np.ndarray:
    import cv2

    dsize = (out_shape[1], out_shape[0])
    outside = dict(borderMode=cv2.BORDER_CONSTANT, borderValue=(border,) * 4)
    if maps is None:
        matrix = _grid_matrix(step) @ np.asarray(fit.moving_to_fixed.params, float)
        if np.allclose(matrix[2], [0.0, 0.0, 1.0]):
            return cv2.warpAffine(data, matrix[:2], dsize, flags=cv2.INTER_LINEAR, **outside)
        return cv2.warpPerspective(data, matrix, dsize, flags=cv2.INTER_LINEAR, **outside)
    map_x, map_y = maps
    return cv2.remap(data, np.nan_to_num(map_x, nan=-1e6), np.nan_to_num(map_y, nan=-1e6), cv2.INTER_LINEAR,
                     **outside)


def _warp_with_footprint(data: np.ndarray, fit: Fit, out_shape: tuple[int, int], step: float,
                         maps: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    """Warp a (H, W) or (H, W, C<=4) float32 array; NaN-aware, in one pass.

    Missing pixels are NaN and the border is NaN, so any output pixel whose interpolation touches either is NaN:
    the footprint is where the result is finite.
    """
    data = np.where(np.isfinite(data), data, np.nan).astype(np.float32)
    warped = _warp_channels(data, fit, out_shape, step, maps, border=float("nan"))
    if warped.ndim == 2 and data.ndim == 3:  # OpenCV drops a singleton channel axis
        warped = warped[:, :, None]
    finite = np.isfinite(warped)
    footprint = finite if finite.ndim == 2 else finite.all(axis=2)
    if warped.ndim == 3:
        warped[~footprint] = np.nan
    return warped, footprint


def apply_transform(moving: np.ndarray, fit: Fit, fixed_shape: tuple[int, int], *,
                    step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``moving`` onto the fixed grid with the fit's moving→fixed transform.

    Parameters
    ----------
    moving : ndarray of shape (H, W)
        Moving image; NaN pixels are treated as missing.
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
        True where ``warped`` holds data interpolated from valid moving pixels only.
    """
    out_shape = _output_shape(fixed_shape, step)
    maps = None if is_global(fit.model) else grid_to_moving_maps(fit, fixed_shape, step=step)
    return _warp_with_footprint(np.asarray(moving, np.float32), fit, out_shape, step, maps)


def _bilinear_operator(map_x: np.ndarray, map_y: np.ndarray, valid: np.ndarray) -> tuple[object, np.ndarray]:
    """Sparse matrix that resamples a (H*W, B) array at the map's points by bilinear interpolation.

    Returns the operator (n_points x H*W) and a mask of the points whose four neighbours are all valid.
    """
    from scipy import sparse

    rows, cols = valid.shape
    x, y = map_x.ravel().astype(np.float64), map_y.ravel().astype(np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    x0 = np.floor(np.where(finite, x, -2)).astype(np.int64)
    y0 = np.floor(np.where(finite, y, -2)).astype(np.int64)
    fx, fy = np.where(finite, x, 0) - x0, np.where(finite, y, 0) - y0
    # all four neighbours must exist (as in the image warp, whose NaN border spoils the last row and column)
    inside = finite & (x0 >= 0) & (y0 >= 0) & (x0 + 1 < cols) & (y0 + 1 < rows)
    points = np.flatnonzero(inside)
    x0, y0, fx, fy = x0[points], y0[points], fx[points], fy[points]
    corners = [(y0, x0, (1 - fx) * (1 - fy)), (y0, x0 + 1, fx * (1 - fy)), (y0 + 1, x0, (1 - fx) * fy),
               (y0 + 1, x0 + 1, fx * fy)]
    ok = np.ones(points.size, bool)
    for r, c, _ in corners:
        ok &= valid[r, c]
    kept = points[ok]
    # one row per map point (empty rows outside the footprint), four entries per kept point, in CSR order
    data = np.stack([w[ok] for _, _, w in corners], axis=1).astype(np.float32).ravel()
    columns = np.stack([(r * cols + c)[ok] for r, c, _ in corners], axis=1).ravel()
    counts = np.zeros(map_x.size, np.int64)
    counts[kept] = 4
    indptr = np.concatenate([[0], np.cumsum(counts)])
    operator = sparse.csr_matrix((data, columns, indptr), shape=(map_x.size, rows * cols))
    mask = counts > 0
    return operator, mask


def apply_transform_cube(cube: np.ndarray, fit: Fit, fixed_shape: tuple[int, int], *,
                         step: float = 1.0, chunk_rows: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Resample every band of ``cube`` (H, W, B) onto the fixed grid with one interpolation operator.

    The coordinate map is computed once; output rows are produced in chunks of ``chunk_rows`` as a sparse
    bilinear operator times the cube, so intermediate memory stays bounded (only the output is large). A
    pixel is valid when its four neighbours hold finite values in every band.

    Returns
    -------
    warped : ndarray of float32, shape (rows, cols, B)
        NaN outside the footprint.
    footprint : ndarray of bool, shape (rows, cols)
    """
    out_shape = _output_shape(fixed_shape, step)
    map_x, map_y = grid_to_moving_maps(fit, fixed_shape, step=step)
    cube = np.asarray(cube, np.float32)
    bands = cube.shape[2]
    valid = np.isfinite(cube).all(axis=2)
    flat = np.where(valid[:, :, None], cube, 0.0).reshape(-1, bands)
    out = np.empty(out_shape + (bands,), np.float32)
    footprint = np.zeros(out_shape, bool)

    def fill(start: int) -> None:
        stop = min(start + chunk_rows, out_shape[0])
        operator, mask = _bilinear_operator(map_x[start:stop], map_y[start:stop], valid)
        block = out[start:stop].reshape(-1, bands)  # a view: each chunk writes its own rows
        block[:] = operator @ flat
        block[~mask] = np.nan
        footprint[start:stop] = mask.reshape(stop - start, out_shape[1])

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:  # sparse products release the GIL
        list(pool.map(fill, range(0, out_shape[0], chunk_rows)))
    return out, footprint
