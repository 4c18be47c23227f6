"""User-supplied control points: validation (InputError on bad points) and fitting."""

from __future__ import annotations

import numpy as np

from .config import RegistrationConfig
from .datatypes import Fit, Matches
from .errors import InputError
from .estimate import fit_pair
from .geometry import is_collinear
from .models import min_points

__all__ = ["validate_points", "fit_points"]


def _outside(xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    rows, cols = shape
    return (xy[:, 0] < -0.5) | (xy[:, 0] > cols - 0.5) | (xy[:, 1] < -0.5) | (xy[:, 1] > rows - 0.5)


def validate_points(
    fixed_xy: np.ndarray,
    moving_xy: np.ndarray,
    *,
    fixed_shape: tuple[int, int],
    moving_shape: tuple[int, int],
    model: str,
    polynomial_order: int = 2,
) -> tuple[np.ndarray, np.ndarray]:
    """Check control points and return them as float arrays of shape (N, 2).

    Raises
    ------
    InputError
        Wrong shape, non-finite values, too few points for ``model``, duplicates, collinear points, or
        points outside their image.
    """
    fixed_xy = np.asarray(fixed_xy, float)
    moving_xy = np.asarray(moving_xy, float)
    if fixed_xy.ndim != 2 or fixed_xy.shape[1:] != (2,) or fixed_xy.shape != moving_xy.shape:
        raise InputError("Control points must be two arrays of shape (N, 2): fixed (x, y) and moving (x, y).")
    if not (np.all(np.isfinite(fixed_xy)) and np.all(np.isfinite(moving_xy))):
        raise InputError("Control points contain NaN or infinite coordinates; give finite pixel coordinates.")
    need = min_points(model, polynomial_order=polynomial_order)
    if len(fixed_xy) < need:
        raise InputError(f"The {model} model needs at least {need} control points, got {len(fixed_xy)}; add points.")
    for name, xy in (("fixed", fixed_xy), ("moving", moving_xy)):
        if len(np.unique(np.round(xy, 6), axis=0)) < len(xy):
            raise InputError(f"Duplicate {name} control points; each point must be distinct.")
    if need >= 3:
        for name, xy in (("fixed", fixed_xy), ("moving", moving_xy)):
            if is_collinear(xy):
                raise InputError(f"The {name} control points are collinear; the {model} model needs points spread in 2-D.")
    for name, xy, shape in (("fixed", fixed_xy, fixed_shape), ("moving", moving_xy, moving_shape)):
        bad = np.flatnonzero(_outside(xy, shape))
        if bad.size:
            i = int(bad[0])
            raise InputError(
                f"Control point {i + 1} ({xy[i, 0]:g}, {xy[i, 1]:g}) lies outside the {name} image "
                f"({shape[1]} x {shape[0]} px); coordinates are pixel (x=column, y=row)."
            )
    return fixed_xy, moving_xy


def fit_points(fixed_xy: np.ndarray, moving_xy: np.ndarray, model: str, config: RegistrationConfig, *,
               prior_scale: float = 1.0) -> Fit:
    """Least-squares (exact when just determined) fit of ``model`` on validated control points.

    Raises
    ------
    EstimationError
        The fit is degenerate.
    """
    forward, backward = fit_pair(model, moving_xy, fixed_xy, polynomial_order=config.polynomial_order,
                                 prior_scale=prior_scale)
    matches = Matches(fixed_xy=fixed_xy, moving_xy=moving_xy)
    return Fit(model=model, moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(len(fixed_xy), bool),
               source="points", matches=matches, why="control points")
