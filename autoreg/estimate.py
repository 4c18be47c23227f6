"""Transform estimation: robust fits on matches, exact fits on control points, and model choice.

Every function here raises :class:`~autoreg.errors.EstimationError` or
:class:`~autoreg.errors.InsufficientLandmarksError` on failure; none returns a plausible-looking
transform that it could not really estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import RegistrationConfig
from .datatypes import Fit, Matches
from .errors import EstimationError, InsufficientLandmarksError, library_errors
from .geometry import is_collinear
from .models import estimate_kwargs, is_global, min_points, transform_class

__all__ = [
    "fit_transform",
    "fit_pair",
    "robust_inliers",
    "estimate_transform",
    "held_out_errors",
    "choose_model",
    "ModelChoice",
]


def _check_finite_transform(tf: Any, model: str) -> None:
    params = getattr(tf, "params", None)
    if params is not None and not np.all(np.isfinite(params)):
        raise EstimationError(f"The {model} fit is not finite (degenerate points).")
    if is_global(model):
        det = float(np.linalg.det(np.asarray(params)[:2, :2]))
        cond = float(np.linalg.cond(np.asarray(params)))
        if not np.isfinite(cond) or abs(det) < 1e-9 or cond > 1e12:
            raise EstimationError(f"The {model} fit is singular (det={det:.3g}); the points are degenerate.")


def fit_transform(model: str, src_xy: np.ndarray, dst_xy: np.ndarray, *, polynomial_order: int = 2,
                  prior_scale: float = 1.0) -> Any:
    """Least-squares fit of ``model`` mapping ``src_xy`` onto ``dst_xy``.

    Translation and rigid models keep the scale fixed at ``prior_scale`` (the known size of one source
    pixel in destination pixels): a "rigid" map between a 40 px and a 1024 px scan of one area is rigid in
    physical space, not in pixels.

    Parameters
    ----------
    model : str
        Model name.
    src_xy, dst_xy : ndarray of shape (N, 2)
        Corresponding points.
    polynomial_order : int, optional
        Order of the polynomial model.
    prior_scale : float, optional
        Fixed scale of the translation and rigid models.

    Returns
    -------
    skimage transform

    Raises
    ------
    InsufficientLandmarksError
        Fewer points than the model needs.
    EstimationError
        The fit failed or is degenerate (collinear points, singular or non-finite result).

    Examples
    --------
    >>> import numpy as np
    >>> src = np.array([[0, 0], [10, 0], [0, 10]], float)
    >>> tf = fit_transform("affine", src, src * 2)
    >>> (np.round(tf.params, 6) + 0.0).tolist()  # + 0.0: round-off may leave -0.0
    [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]
    """
    src_xy = np.asarray(src_xy, float).reshape(-1, 2)
    dst_xy = np.asarray(dst_xy, float).reshape(-1, 2)
    need = min_points(model, polynomial_order=polynomial_order)
    if len(src_xy) < need:
        raise InsufficientLandmarksError(f"The {model} model needs at least {need} points, got {len(src_xy)}.")
    if not (np.all(np.isfinite(src_xy)) and np.all(np.isfinite(dst_xy))):
        raise EstimationError("Points contain NaN or infinite coordinates.")
    if need >= 3 and (is_collinear(src_xy) or is_collinear(dst_xy)):
        raise EstimationError(f"The {model} model cannot be fitted to collinear points.")
    cls = transform_class(model)
    scaled = model in ("translation", "rigid") and prior_scale != 1.0
    with library_errors(f"the {model} fit"):
        tf = cls.from_estimate(src_xy * prior_scale if scaled else src_xy, dst_xy,
                               **estimate_kwargs(model, polynomial_order=polynomial_order))
    if not tf:
        raise EstimationError(f"The {model} fit failed: {tf}")
    if scaled:
        from skimage.transform import SimilarityTransform

        tf = SimilarityTransform(matrix=tf.params @ np.diag([prior_scale, prior_scale, 1.0]))
    _check_finite_transform(tf, model)
    return tf


def _inverse(forward: Any, model: str) -> Any:
    inverse = np.linalg.inv(np.asarray(forward.params, float))
    return type(forward)(matrix=inverse)


def fit_pair(model: str, moving_xy: np.ndarray, fixed_xy: np.ndarray, *, polynomial_order: int = 2,
             prior_scale: float = 1.0) -> tuple[Any, Any]:
    """Fit ``moving_to_fixed`` and ``fixed_to_moving`` for ``model``.

    Global models invert the matrix; polynomial and piecewise-affine models are not invertible in closed
    form, so the backward map is fitted separately on the same points.

    Returns
    -------
    moving_to_fixed, fixed_to_moving : skimage transforms
    """
    forward = fit_transform(model, moving_xy, fixed_xy, polynomial_order=polynomial_order, prior_scale=prior_scale)
    if is_global(model):
        return forward, _inverse(forward, model)
    backward = fit_transform(model, fixed_xy, moving_xy, polynomial_order=polynomial_order)
    return forward, backward


def robust_inliers(
    matches: Matches,
    model: str,
    *,
    threshold_px: float,
    config: RegistrationConfig,
    seed: int,
) -> np.ndarray:
    """Inlier mask of a seeded robust fit (OpenCV MAGSAC) suited to ``model``.

    Translation, rigid and similarity use a 4-parameter partial-affine consensus (RANSAC); affine, polynomial and
    piecewise-affine an affine one; projective a homography.

    Parameters
    ----------
    matches : Matches
    model : str
    threshold_px : float
        Inlier threshold in fixed pixels.
    config : RegistrationConfig
    seed : int
        Seed of OpenCV's random generator (the result is reproducible).

    Returns
    -------
    ndarray of bool, shape (N,)

    Raises
    ------
    InsufficientLandmarksError
        Too few matches, or no consensus found.
    """
    import cv2

    n = len(matches)
    need = {"projective": 4}.get(model, 3)
    if n < need:
        raise InsufficientLandmarksError(f"Only {n} matches; a robust {model} fit needs at least {need}.")
    src = np.ascontiguousarray(matches.moving_xy, np.float32)
    dst = np.ascontiguousarray(matches.fixed_xy, np.float32)
    cv2.setRNGSeed(int(seed))
    common = dict(ransacReprojThreshold=float(threshold_px), maxIters=config.ransac_max_iters,
                  confidence=config.ransac_confidence)
    with library_errors(f"OpenCV's robust {model} fit"):
        if model == "projective":
            matrix, mask = cv2.findHomography(src, dst, method=cv2.USAC_MAGSAC, **common)
        elif model in ("translation", "rigid", "similarity"):  # OpenCV's partial-affine fit has no MAGSAC
            matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, **common)
        else:
            matrix, mask = cv2.estimateAffine2D(src, dst, method=cv2.USAC_MAGSAC, **common)
    if matrix is None or mask is None or not np.all(np.isfinite(matrix)):
        raise InsufficientLandmarksError(f"No consistent {model} transform among {n} matches.")
    return mask.ravel().astype(bool)


def estimate_transform(
    matches: Matches,
    model: str,
    *,
    threshold_px: float,
    config: RegistrationConfig,
    seed: int = 0,
    source: str = "features",
    why: str = "",
    prior_scale: float = 1.0,
    inliers: np.ndarray | None = None,
) -> Fit:
    """Robust fit of ``model`` on putative ``matches``.

    A seeded consensus selects inliers (unless ``inliers`` gives them: a consensus found otherwise); the model is
    then refitted by least squares on them and the inlier set is refined twice with the model's own residuals.

    Raises
    ------
    InsufficientLandmarksError, EstimationError
    """
    if inliers is None:
        inliers = robust_inliers(matches, model, threshold_px=threshold_px, config=config, seed=seed)
    order = config.polynomial_order
    need = max(min_points(model, polynomial_order=order), 3)
    for _ in range(3):
        if inliers.sum() < need:
            raise InsufficientLandmarksError(f"Only {int(inliers.sum())} inliers; {model} needs at least {need}.")
        forward = fit_transform(model, matches.moving_xy[inliers], matches.fixed_xy[inliers], polynomial_order=order,
                                prior_scale=prior_scale)
        residuals = np.linalg.norm(forward(matches.moving_xy) - matches.fixed_xy, axis=1)
        refined = residuals < threshold_px
        if refined.sum() < need or np.array_equal(refined, inliers):
            break
        inliers = refined
    else:
        forward = fit_transform(model, matches.moving_xy[inliers], matches.fixed_xy[inliers], polynomial_order=order,
                                prior_scale=prior_scale)
    if is_global(model):
        moving_to_fixed, fixed_to_moving = forward, _inverse(forward, model)
    else:
        fixed_to_moving = fit_transform(model, matches.fixed_xy[inliers], matches.moving_xy[inliers],
                                        polynomial_order=order)
        moving_to_fixed = forward
    return Fit(model=model, moving_to_fixed=moving_to_fixed, fixed_to_moving=fixed_to_moving, inliers=inliers,
               source=source, matches=matches, why=why)


def held_out_errors(
    model: str, moving_xy: np.ndarray, fixed_xy: np.ndarray, *, folds: int, polynomial_order: int = 2,
    max_points: int | None = None, prior_scale: float = 1.0,
) -> np.ndarray | None:
    """Squared residual (fixed px²) of every point when ``model`` is fitted without it (k-fold).

    At most ``max_points`` evenly spaced points are used. Returns None when there are too few points to fit
    the model in every fold.
    """
    n = len(moving_xy)
    need = min_points(model, polynomial_order=polynomial_order)
    if max_points is not None and n > max_points:  # evenly spaced subsample: deterministic, keeps the spread
        keep = np.linspace(0, n - 1, max_points).round().astype(int)
        moving_xy, fixed_xy, n = moving_xy[keep], fixed_xy[keep], max_points
    folds = min(folds, n)
    if folds < 2 or n - int(np.ceil(n / folds)) < need + 1:
        return None
    fold_of = np.arange(n) % folds
    squared = np.empty(n)
    for k in range(folds):
        test = fold_of == k
        try:
            tf = fit_transform(model, moving_xy[~test], fixed_xy[~test], polynomial_order=polynomial_order,
                               prior_scale=prior_scale)
        except (EstimationError, InsufficientLandmarksError):
            return None
        squared[test] = np.sum((tf(moving_xy[test]) - fixed_xy[test]) ** 2, axis=1)
    return squared


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The model ``auto`` chose, and the held-out RMS residual of every candidate (fixed px)."""

    model: str
    held_out_rmse: dict[str, float]
    why: str


def choose_model(
    moving_xy: np.ndarray, fixed_xy: np.ndarray, *, candidates: tuple[str, ...], config: RegistrationConfig,
    prior_scale: float = 1.0,
) -> ModelChoice:
    """Pick the simplest model whose held-out error is not significantly worse than the best model's.

    Every point's held-out (cross-validated) squared residual is computed for each candidate. A candidate
    is acceptable when its mean excess over the best candidate, point by point, is within
    ``config.auto_se`` standard errors of that paired difference (the one-standard-error rule). Held-out
    residuals penalise over-fitting directly, unlike a correlation score that always prefers the most
    flexible model.

    Raises
    ------
    InsufficientLandmarksError
        No candidate can be cross-validated on these points.
    """
    errors = {
        m: held_out_errors(m, moving_xy, fixed_xy, folds=config.cv_folds, polynomial_order=config.polynomial_order,
                           max_points=config.cv_max_points, prior_scale=prior_scale)
        for m in candidates
    }
    valid = {m: e for m, e in errors.items() if e is not None}
    if not valid:
        raise InsufficientLandmarksError(f"Too few inliers ({len(moving_xy)}) to compare models.")
    best_model = min(valid, key=lambda m: float(valid[m].mean()))
    best = valid[best_model]

    def acceptable(m: str) -> bool:
        diff = valid[m] - best
        se = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        return float(diff.mean()) <= config.auto_se * se + config.auto_tie_px2

    chosen = next(m for m in candidates if m in valid and acceptable(m))
    rmse = {m: float(np.sqrt(e.mean())) if e is not None else float("nan") for m, e in errors.items()}
    table = ", ".join(f"{m} {v:.3g}" for m, v in rmse.items() if np.isfinite(v))
    why = (f"simplest model whose held-out error is within {config.auto_se:g} standard error of the best "
           f"({best_model}); held-out RMS residual in fixed px: {table}")
    return ModelChoice(model=chosen, held_out_rmse=rmse, why=why)
