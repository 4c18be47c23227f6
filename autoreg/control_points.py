"""User-supplied control points: validation (InputError on bad points) and fitting."""

from __future__ import annotations


import numpy as np

from .config import RegistrationConfig
from .datatypes import Fit, Matches
from .errors import InputError
from .estimate import fit_pair
from .geometry import is_collinear, map_points
from .models import min_points

__all__ = ["fit_points", "leverage", "loo_residuals", "name_outliers", "validate_points"]


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


def _mesh_residual(moving_xy: np.ndarray, fixed_xy: np.ndarray, moving_point: np.ndarray,
                   fixed_point: np.ndarray) -> float:
    """Distance between ``fixed_point`` and the piecewise-affine map of the pairs at ``moving_point`` (NaN outside
    their mesh). scikit-image's PiecewiseAffineTransform is linear interpolation on the Delaunay triangulation of
    the source points, which scipy builds and evaluates without fitting an affine map per triangle."""
    from scipy.interpolate import LinearNDInterpolator
    from scipy.spatial import QhullError

    try:
        mapped = LinearNDInterpolator(moving_xy, fixed_xy)(moving_point[None, :])[0]
    except QhullError:  # degenerate (collinear) points: no mesh
        return float("nan")
    return float(np.hypot(*(mapped - fixed_point)))


def loo_residuals(fixed_xy: np.ndarray, moving_xy: np.ndarray, model: str, *, polynomial_order: int = 2,
                  prior_scale: float = 1.0, indices: np.ndarray | None = None) -> np.ndarray:
    """Leave-one-out residual of every pair, in fixed px: fit ``model`` on the others, map the left-out moving point.

    Parameters
    ----------
    fixed_xy, moving_xy : array_like of shape (N, 2)
    model : str
        A model name (not ``"auto"``).
    polynomial_order : int
    prior_scale : float
        Expected fixed px per moving px (used by translation and rigid fits across resolutions).
    indices : array_like of int, optional
        Leave out only these pairs (the others' residuals are NaN): a sample is enough for a typical residual.

    Returns
    -------
    ndarray of shape (N,)
        Distance between each fixed point and where the others' fit puts its moving partner; NaN where the
        others are too few to fit the model or their fit is degenerate.

    Examples
    --------
    >>> moving = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5]], float)
    >>> fixed = 2 * moving + 3
    >>> fixed[4] += (4, 0)
    >>> np.round(loo_residuals(fixed, moving, "translation", prior_scale=2.0), 3).tolist()
    [1.0, 1.0, 1.0, 1.0, 4.0]
    """
    from .errors import AutoregError
    from .estimate import fit_transform

    fixed_xy = np.asarray(fixed_xy, float).reshape(-1, 2)
    moving_xy = np.asarray(moving_xy, float).reshape(-1, 2)
    n = len(fixed_xy)
    out = np.full(n, np.nan)
    if n - 1 < min_points(model, polynomial_order=polynomial_order):
        return out
    for i in (range(n) if indices is None else np.asarray(indices, int)):
        keep = np.arange(n) != i
        if model == "piecewise-affine":  # the same map, as barycentric interpolation on the Delaunay mesh: 100x
            out[i] = _mesh_residual(moving_xy[keep], fixed_xy[keep], moving_xy[i], fixed_xy[i])  # faster to build
            continue
        try:  # the forward map alone: a mesh's backward map is a second triangulation nobody needs here
            forward = fit_transform(model, moving_xy[keep], fixed_xy[keep], polynomial_order=polynomial_order,
                                    prior_scale=prior_scale)
        except AutoregError:
            continue
        predicted = map_points(forward, moving_xy[i:i + 1], model)[0]
        out[i] = float(np.hypot(*(predicted - fixed_xy[i])))  # NaN outside a mesh
    return out


def leverage(moving_xy: np.ndarray, model: str, *, polynomial_order: int = 2) -> np.ndarray:
    """Hat-matrix diagonal of each point in the least-squares design of ``model`` (affine for the others).

    A point far from the rest (high leverage, near 1) is predicted by extrapolation when left out, so its LOO
    residual is large even when it is right: ``loo · sqrt(1 - h)`` puts every pair on one footing.
    """
    xy = np.asarray(moving_xy, float).reshape(-1, 2)
    xy = (xy - xy.mean(axis=0)) / max(float(np.abs(xy - xy.mean(axis=0)).max()), 1e-12)
    x, y = xy[:, 0], xy[:, 1]
    if model == "translation":
        design = np.ones((len(xy), 1))
    elif model == "polynomial":
        design = np.column_stack([x ** (i - j) * y**j for i in range(polynomial_order + 1) for j in range(i + 1)])
    else:
        design = np.column_stack([np.ones_like(x), x, y])
    inverse = np.linalg.pinv(design.T @ design)
    return np.clip(np.einsum("ij,jk,ik->i", design, inverse, design), 0.0, 1.0)


def _beyond(residuals: np.ndarray, factor: float, floor_px: float) -> int | None:
    """Index of the largest residual when it exceeds ``factor`` × the median of the others and ``floor_px``."""
    finite = np.flatnonzero(np.isfinite(residuals))
    if finite.size < 3:
        return None
    worst = int(finite[np.argmax(residuals[finite])])
    others = residuals[finite[finite != worst]]
    return worst if residuals[worst] > max(floor_px, factor * float(np.median(others))) else None


def name_outliers(fixed_xy: np.ndarray, moving_xy: np.ndarray, model: str, *, factor: float, floor_px: float,
                  polynomial_order: int = 2, prior_scale: float = 1.0) -> np.ndarray:
    """Indices of the pairs whose leave-one-out residual is far beyond the others'.

    Each LOO residual is weighed by ``sqrt(1 - leverage)`` (a point far from the rest is predicted by
    extrapolation). The pair with the largest weighed residual is named when it exceeds ``factor`` times the
    median of the other pairs' and its raw residual exceeds ``floor_px``; it is then set aside (a misclick
    inflates its neighbours' residuals too) and the rest are recomputed, until no pair stands out.

    Parameters
    ----------
    fixed_xy, moving_xy : array_like of shape (N, 2)
    model : str
        A model name (not ``"auto"``).
    factor : float
        ``RegistrationConfig.loo_outlier_factor``.
    floor_px : float
        Residuals below this (fixed px) are within click precision (``RegistrationConfig.loo_outlier_min_coarse_px``
        coarse pixels).
    polynomial_order : int
    prior_scale : float

    Returns
    -------
    ndarray of int
        Indices into the pairs, in the order they were named (worst first).

    Examples
    --------
    >>> moving = np.array([[0, 0], [10, 0], [0, 10], [10, 10], [5, 5], [2, 7]], float)
    >>> fixed = moving + 3
    >>> fixed[4] += (6, 0)
    >>> name_outliers(fixed, moving, "translation", factor=3.0, floor_px=1.0).tolist()
    [4]
    """
    fixed_xy = np.asarray(fixed_xy, float).reshape(-1, 2)
    moving_xy = np.asarray(moving_xy, float).reshape(-1, 2)
    remaining = np.arange(len(fixed_xy))
    named: list[int] = []
    while True:
        residuals = loo_residuals(fixed_xy[remaining], moving_xy[remaining], model,
                                  polynomial_order=polynomial_order, prior_scale=prior_scale)
        weighed = residuals * np.sqrt(1.0 - leverage(moving_xy[remaining], model, polynomial_order=polynomial_order))
        worst = _beyond(weighed, factor, 0.0)
        if worst is None or not residuals[worst] > floor_px:
            return np.array(named, dtype=int)
        named.append(int(remaining[worst]))
        remaining = np.delete(remaining, worst)


def check_points(fixed_xy: np.ndarray, moving_xy: np.ndarray, model: str, config: RegistrationConfig, *,
                 prior_scale: float = 1.0) -> dict[str, list]:
    """The cross-check of control points for a result's JSON: every pair's LOO residual and the outliers named.

    Parameters
    ----------
    fixed_xy, moving_xy : array_like of shape (N, 2)
    model : str
        The fitted model (not ``"auto"``).
    config : RegistrationConfig
        ``loo_outlier_factor``, ``loo_outlier_min_coarse_px`` and ``polynomial_order``.
    prior_scale : float
        Expected fixed px per moving px; one coarse pixel is ``max(1, prior_scale)`` fixed px.

    Returns
    -------
    dict
        ``loo_px``: list of float (fixed px; NaN where too few others), ``outliers``: list of 0-based indices
        (worst first), ``outlier_messages``: one sentence per outlier (1-based, as people count points).
    """
    kw = {"polynomial_order": config.polynomial_order, "prior_scale": prior_scale}
    loo = loo_residuals(fixed_xy, moving_xy, model, **kw)
    floor = config.loo_outlier_min_coarse_px * max(1.0, prior_scale)
    named = name_outliers(fixed_xy, moving_xy, model, factor=config.loo_outlier_factor, floor_px=floor, **kw)
    typical = float(np.nanmedian(loo)) if np.isfinite(loo).any() else float("nan")
    messages = [f"control point {i + 1}: leave-one-out residual {loo[i]:.3g} px, the others' median {typical:.3g} px"
                for i in named]
    return {"loo_px": [float(v) for v in loo], "outliers": [int(i) for i in named], "outlier_messages": messages}
