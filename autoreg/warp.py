"""Warping: resample the moving image (and any cube riding along) onto the fixed grid.

Returns the warped data *and a footprint* (True where the output holds real data). Values outside the
footprint are NaN. This module applies transforms; it decides nothing.
"""

from __future__ import annotations

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


def apply_transform_cube(cube: np.ndarray, fit: Fit, fixed_shape: tuple[int, int], *,
                         step: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Resample every band of ``cube`` (H, W, B) onto the fixed grid; one coordinate map for all bands.

    Bands are warped in chunks of at most four channels (OpenCV's exact path).

    Returns
    -------
    warped : ndarray of float32, shape (rows, cols, B)
    footprint : ndarray of bool, shape (rows, cols)
    """
    out_shape = _output_shape(fixed_shape, step)
    maps = None if is_global(fit.model) else grid_to_moving_maps(fit, fixed_shape, step=step)
    cube = np.asarray(cube, np.float32)
    out = np.empty(out_shape + (cube.shape[2],), np.float32)
    footprint = np.ones(out_shape, bool)
    for start in range(0, cube.shape[2], _CV_MAX_CHANNELS):
        stop = min(start + _CV_MAX_CHANNELS, cube.shape[2])
        chunk = np.ascontiguousarray(cube[:, :, start:stop])
        if stop - start == 2:  # OpenCV's 2-channel path is less exact: pad to three
            chunk = np.concatenate([chunk, chunk[:, :, :1]], axis=2)
        warped, fp = _warp_with_footprint(chunk, fit, out_shape, step, maps)
        out[:, :, start:stop] = warped[:, :, : stop - start]
        footprint &= fp
    out[~footprint] = np.nan
    return out, footprint
