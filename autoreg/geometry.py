"""Points, grids and matrices: the one place that maps points through a 3×3 matrix and measures grid errors.

A leaf module (numpy only). Conventions: points are ``(x, y)`` with ``x`` the column and ``y`` the row, pixel
centres at integers; a matrix maps homogeneous ``(x, y, 1)`` and the result is divided by its last coordinate.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["apply_matrix", "map_points", "grid_xy", "mean_grid_distance", "is_collinear", "COLLINEAR_REL_TOL"]

#: Points are collinear when their smallest singular value is below this fraction of the largest: far below any
#: real spread of landmarks (a 1000-px image would need its points within 1e-3 px of a line), far above rounding.
COLLINEAR_REL_TOL = 1e-6


def apply_matrix(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Map points through a 3×3 (projective) matrix.

    Parameters
    ----------
    matrix : array_like of shape (3, 3)
    xy : array_like of shape (..., 2)

    Returns
    -------
    ndarray of shape (..., 2)

    Examples
    --------
    >>> apply_matrix(np.diag([2.0, 2.0, 1.0]), np.array([[1.0, 3.0]]))
    array([[2., 6.]])
    """
    m = np.asarray(matrix, float)
    xy = np.asarray(xy, float)
    mapped = xy @ m[:2, :2].T + m[:2, 2]
    if np.array_equal(m[2], (0.0, 0.0, 1.0)):  # affine: no division (exact for exact inputs)
        return mapped
    w = xy @ m[2, :2] + m[2, 2]
    return mapped / w[..., None]


def map_points(transform: Callable[[np.ndarray], np.ndarray], xy: np.ndarray, model: str) -> np.ndarray:
    """``transform(xy)`` as float (N, 2), NaN where it maps nothing (outside a piecewise-affine mesh, whose
    scikit-image transform returns -1 there).

    Examples
    --------
    >>> map_points(lambda xy: xy + 1, np.array([[0.0, 0.0]]), "translation").tolist()
    [[1.0, 1.0]]
    """
    out = np.array(transform(np.asarray(xy, float).reshape(-1, 2)), dtype=np.float64).reshape(-1, 2)
    if model == "piecewise-affine":
        out[np.all(out == -1, axis=1)] = np.nan
    return out


def grid_xy(shape: tuple[int, int], n: int = 5) -> np.ndarray:
    """An ``n``×``n`` grid of points spanning an image of ``shape`` = (rows, cols), corner pixel centres included.

    Returns
    -------
    ndarray of shape (n * n, 2)

    Examples
    --------
    >>> grid_xy((3, 5), n=2).tolist()
    [[0.0, 0.0], [4.0, 0.0], [0.0, 2.0], [4.0, 2.0]]
    """
    rows, cols = shape
    gy, gx = np.mgrid[0 : rows - 1 : complex(n), 0 : cols - 1 : complex(n)]
    return np.column_stack([gx.ravel(), gy.ravel()])


def mean_grid_distance(map_a: Callable[[np.ndarray], np.ndarray], map_b: Callable[[np.ndarray], np.ndarray],
                       shape: tuple[int, int], n: int = 5) -> float:
    """Mean distance between two maps of the points of :func:`grid_xy` over an image of ``shape``.

    This is autoreg's error measure: with ``map_a`` an estimate and ``map_b`` the truth (moving → fixed), it is
    the mean registration error over the moving image, in fixed pixels. Grid points that either map sends to a
    non-finite position are skipped; ``inf`` when none is left.
    """
    grid = grid_xy(shape, n)
    a = np.asarray(map_a(grid), float)
    b = np.asarray(map_b(grid), float)
    distance = np.linalg.norm(a - b, axis=1)
    finite = np.isfinite(distance)
    return float(distance[finite].mean()) if finite.any() else float("inf")


def is_collinear(xy: np.ndarray, rel_tol: float = COLLINEAR_REL_TOL) -> bool:
    """True when the points lie on one line (or one point), judged by the singular values of their spread.

    Examples
    --------
    >>> is_collinear(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]))
    True
    >>> is_collinear(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
    False
    """
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) < 3:
        return True
    singular = np.linalg.svd(xy - xy.mean(axis=0), compute_uv=False)
    return bool(singular[0] == 0 or singular[-1] <= rel_tol * singular[0])
