"""The pipeline: load → preprocess → landmarks → estimate → warp → score → verdict, with fallbacks.

``register`` tries strategies in order and records each attempt. It never raises except
:class:`~autoreg.errors.InputError`; every other failure becomes a ``failed`` verdict with reasons.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import RegistrationConfig
from .control_points import fit_points, validate_points
from .datatypes import Attempt, Fit, Image, RegistrationResult, Scores, Verdict
from .errors import AutoregError, EstimationError, InputError, InsufficientLandmarksError
from .models import GLOBAL_MODELS, MODELS, min_points

__all__ = ["register", "Context"]

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """What every strategy needs: the inputs, the scale prior and the settings."""

    fixed: Image
    moving: Image
    config: RegistrationConfig
    seed: int
    expected_scale: float
    scale_source: str
    coarse_pixel_px: float
    scale_fixed: float
    scale_moving: float

    @property
    def working_pixel_px(self) -> float:
        """Size of one working-view pixel in fixed pixels."""
        return 1.0 / self.scale_fixed


def _seed_of(rng: int | np.random.Generator | None) -> int:
    if rng is None:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    return int(rng)


def _load(source: Any, what: str, config: RegistrationConfig) -> Image:
    from .io import load_image

    return load_image(source, name=what if isinstance(source, np.ndarray) else None, max_pixels=config.max_pixels)


def _finish(ctx: Context, fit: Fit, *, exact_points: bool = False) -> tuple[RegistrationResult, Attempt]:
    from .confidence import judge
    from .score import score_registration
    from .warp import apply_transform

    warped, footprint = apply_transform(ctx.moving.data, fit, ctx.fixed.shape)
    scores = score_registration(fit, np.asarray(ctx.fixed.data), np.asarray(ctx.moving.data), warped, footprint,
                                expected_scale=ctx.expected_scale, working_pixel_px=ctx.working_pixel_px)
    verdict = judge(scores, ctx.config, source=fit.source, exact_points=exact_points)
    result = RegistrationResult(fit=fit, scores=scores, verdict=verdict, warped=warped, footprint=footprint,
                                model=fit.model, fixed_shape=ctx.fixed.shape,
                                moving_shape=ctx.moving.shape)
    attempt = Attempt(strategy=fit.source, verdict=verdict.level, reasons=verdict.reasons, n_inliers=fit.n_inliers,
                      rmse_px=scores.rmse_px, pearson=scores.pearson)
    return result, attempt


def _working_views(ctx: Context, *, gradient: bool = False) -> tuple[Any, Any]:
    from .preprocess import make_working_view

    coarse_wpx = ctx.coarse_pixel_px * ctx.scale_fixed
    fixed_view = make_working_view(ctx.fixed, ctx.scale_fixed, coarse_pixel_wpx=coarse_wpx, config=ctx.config,
                                   gradient=gradient)
    moving_view = make_working_view(ctx.moving, ctx.scale_moving, coarse_pixel_wpx=coarse_wpx, config=ctx.config,
                                    gradient=gradient)
    return fixed_view, moving_view


def _feature_fit(ctx: Context, model: str, views: tuple[Any, Any], detector: str = "orb") -> Fit:
    from .estimate import choose_model, estimate_transform, robust_inliers
    from .landmarks import find_matches

    cfg = ctx.config
    matches = find_matches(*views, cfg, detector)
    threshold = cfg.ransac_threshold_px / ctx.scale_fixed
    why = ""
    if model == "auto":
        inliers = robust_inliers(matches, "affine", threshold_px=threshold, config=cfg, seed=ctx.seed)
        choice = choose_model(matches.moving_xy[inliers], matches.fixed_xy[inliers],
                              candidates=cfg.auto_models, config=cfg, prior_scale=ctx.expected_scale)
        model, why = choice.model, choice.why
    fit = estimate_transform(matches, model, threshold_px=threshold, config=cfg, seed=ctx.seed, why=why,
                             prior_scale=ctx.expected_scale)
    if model in ("translation", "rigid", "similarity"):  # how many matches would a more general map explain?
        try:
            general = int(robust_inliers(matches, "affine", threshold_px=threshold, config=cfg, seed=ctx.seed).sum())
        except AutoregError:
            general = 0
        fit = dataclasses.replace(fit, n_inliers_general=general)
    if cfg.refine and ctx.coarse_pixel_px * ctx.scale_fixed <= cfg.refine_max_coarse_wpx:
        from .intensity import refine_fit

        fit, _ = refine_fit(fit, *views, cfg, prior_scale=ctx.expected_scale)
    return fit


def _intensity_fit(ctx: Context, model: str, views: tuple[Any, Any]) -> Fit:
    from .intensity import intensity_fit

    return intensity_fit(*views, model, ctx.config, prior_scale=ctx.expected_scale)


def _points_fit(ctx: Context, points: tuple[np.ndarray, np.ndarray], model: str) -> tuple[Fit, bool]:
    from .estimate import choose_model

    fixed_xy, moving_xy = points
    why = "control points"
    if model == "auto":
        candidates = tuple(m for m in ctx.config.auto_models
                           if len(fixed_xy) >= min_points(m, polynomial_order=ctx.config.polynomial_order))
        try:
            choice = choose_model(moving_xy, fixed_xy, candidates=candidates, config=ctx.config,
                                  prior_scale=ctx.expected_scale)
            model, why = choice.model, "control points; " + choice.why
        except AutoregError:
            model = max((m for m in candidates if m in GLOBAL_MODELS), key=GLOBAL_MODELS.index)
            why = f"control points; too few to compare models, the most general that they determine: {model}"
    fit = dataclasses.replace(fit_points(fixed_xy, moving_xy, model, ctx.config, prior_scale=ctx.expected_scale),
                              why=why)
    exact = len(fixed_xy) == min_points(model, polynomial_order=ctx.config.polynomial_order)
    return fit, exact


#: What a strategy raises on data it cannot handle (library failures are converted at their call sites); each
#: becomes a failed attempt. Anything else is a bug and propagates.
_STAGE_FAILURES = (InsufficientLandmarksError, EstimationError)


def _failed_attempt(strategy: str, err: AutoregError) -> Attempt:
    slug = "insufficient_landmarks" if isinstance(err, InsufficientLandmarksError) else "estimation_failed"
    return Attempt(strategy=strategy, verdict="failed", reasons=(f"{slug}: {err}",))


def _load_points(points: Any, ctx: Context, model: str) -> tuple[np.ndarray, np.ndarray] | None:
    if points is None:
        return None
    if isinstance(points, tuple) and len(points) == 2:
        fixed_xy, moving_xy = points
    else:
        from .io import load_points

        fixed_xy, moving_xy = load_points(points)
    check_model = "affine" if model == "auto" else model
    need_model = "translation" if model == "auto" else check_model
    return validate_points(fixed_xy, moving_xy, fixed_shape=ctx.fixed.shape, moving_shape=ctx.moving.shape,
                           model=need_model, polynomial_order=ctx.config.polynomial_order)


def _pick(results: list[RegistrationResult]) -> RegistrationResult:
    """The first ``ok`` result; else the user's control points when they gave a usable fit; else the best."""
    for result in results:
        if result.verdict.level == "ok":
            return result
    for result in results:
        if result.source == "points" and result.verdict.level != "failed":
            return result
    return min(results, key=lambda r: r.verdict.rank)  # earlier strategies win ties


def _check_texture(image: Image, what: str, config: RegistrationConfig) -> None:
    """Raise when an image has no usable variation (constant, or variation at rounding level)."""
    from .errors import InsufficientLandmarksError

    data = np.asarray(image.data)
    step = max(1, int(np.sqrt(data.size / 65536)))  # a regular subsample is plenty to tell a flat image
    sample = data[::step, ::step]
    values = sample[np.isfinite(sample)]
    lo, hi = np.percentile(values, [0.5, 99.5])
    scale = max(float(np.median(np.abs(values))), 1e-30)
    if not hi - lo > config.flat_relative_range * scale:
        raise InsufficientLandmarksError(f"The {what} image is flat (no variation above rounding level).")


def register(
    fixed: Any,
    moving: Any,
    *,
    model: str = "auto",
    points: Any = None,
    config: RegistrationConfig | None = None,
    rng: int | np.random.Generator | None = 0,
    cube_step: float | None = 1.0,
    progress: ProgressCallback | None = None,
    automatic: bool = True,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` hands-off, falling back to control points when given.

    Parameters
    ----------
    fixed, moving : str, path, ndarray or Image
        Images, or specs such as ``"scan.h5::/Measurement_000/Channel_000/STM_Topography"``, TIFF, PNG,
        JPEG or NPY paths. An :class:`~autoreg.datatypes.Image` with a ``cube`` has the cube warped too.
    model : str
        ``"auto"`` or one of :data:`autoreg.models.MODELS`.
    points : tuple of (fixed_xy, moving_xy) arrays, or path to a CSV, optional
        Control points, used when the automatic result is not ``ok``.
    config : RegistrationConfig, optional
    rng : int or numpy Generator, optional
        Seed of every random choice; equal seeds give equal results.
    cube_step : float or None
        Grid spacing (fixed pixels) for the warped cube; None skips the cube.
    progress : callable, optional
        Called with a short message at each stage (the pipeline never prints).
    automatic : bool
        Try the automatic strategies first (default). False judges the control points alone (with the same
        scores and verdict rules), e.g. while a user places them.

    Returns
    -------
    RegistrationResult
        Always; ``verdict.level == "failed"`` (with reasons) when no trustworthy transform was found.

    Raises
    ------
    InputError
        Unreadable input, unknown model, or invalid control points.
    """
    from .preprocess import expected_scale, working_scales

    started = time.perf_counter()
    cfg = config or RegistrationConfig()
    if model != "auto" and model not in MODELS:
        raise InputError(f"Unknown model {model!r}; choose auto or one of: {', '.join(MODELS)}.")
    say = progress or (lambda _msg: None)
    fixed_img, moving_img = _load(fixed, "fixed", cfg), _load(moving, "moving", cfg)
    ratio, scale_source = expected_scale(fixed_img, moving_img, cfg)
    scale_fixed, scale_moving = working_scales(fixed_img, moving_img, ratio, cfg)
    ctx = Context(fixed=fixed_img, moving=moving_img, config=cfg, seed=_seed_of(rng), expected_scale=ratio,
                  scale_source=scale_source, coarse_pixel_px=max(1.0, ratio), scale_fixed=scale_fixed,
                  scale_moving=scale_moving)
    control = _load_points(points, ctx, model)
    if not automatic and control is None:
        raise InputError("automatic=False judges control points: give points.")

    attempts: list[Attempt] = []
    results: list[RegistrationResult] = []
    views = _working_views(ctx)

    textured: list[bool] = []

    def checked(fit_with: Callable[[Context, str, tuple[Any, Any]], Fit]) -> Callable[[], tuple[Fit, bool]]:
        def run() -> tuple[Fit, bool]:
            if not textured:  # checked once, raised again for every automatic strategy
                _check_texture(fixed_img, "fixed", cfg)
                _check_texture(moving_img, "moving", cfg)
                textured.append(True)
            return fit_with(ctx, model, views), False

        return run

    def gradient_features(ctx: Context, model: str, _views: tuple[Any, Any]) -> Fit:
        fit = _feature_fit(ctx, model, _working_views(ctx, gradient=True))
        return dataclasses.replace(fit, why=(fit.why + "; " if fit.why else "") + "features of the gradient magnitude")

    def sift_features(ctx: Context, model: str, views: tuple[Any, Any]) -> Fit:
        fit = _feature_fit(ctx, model, views, detector="sift")
        return dataclasses.replace(fit, why=(fit.why + "; " if fit.why else "") + "SIFT features")

    strategies: list[tuple[str, Callable[[], tuple[Fit, bool]]]] = [
        ("features", checked(_feature_fit)),
        ("features-gradient", checked(gradient_features)),
        ("features-sift", checked(sift_features)),
        ("intensity", checked(_intensity_fit)),
    ] if automatic else []
    if control is not None:
        strategies.append(("points", lambda: _points_fit(ctx, control, model)))
    for name, attempt_fit in strategies:
        if any(r.verdict.level == "ok" for r in results):
            break
        say(name)
        try:
            fit, exact = attempt_fit()
            result, attempt = _finish(ctx, fit, exact_points=exact)
        except _STAGE_FAILURES as err:
            attempts.append(_failed_attempt(name, err))
            continue
        attempt = dataclasses.replace(attempt, strategy=name)
        results.append(result)
        attempts.append(attempt)

    extra = {"scale_source": scale_source, "working_scale_fixed": scale_fixed, "working_scale_moving": scale_moving,
             "preprocessing": {"fixed": list(views[0].steps), "moving": list(views[1].steps)}}
    if not results:
        extra["seconds"] = round(time.perf_counter() - started, 4)
        reasons = tuple(r for a in attempts for r in a.reasons) or ("no_strategy: nothing could be tried",)
        return RegistrationResult(fit=None, scores=Scores(), verdict=Verdict("failed", reasons),
                                  model=model, attempts=tuple(attempts), fixed_shape=fixed_img.shape,
                                  moving_shape=moving_img.shape, fixed_calibration=fixed_img.calibration,
                                  moving_calibration=moving_img.calibration, extra=extra)
    best = _pick(results)
    warped_cube = None
    if moving_img.cube is not None and cube_step is not None and best.verdict.level != "failed":
        from .warp import apply_transform_cube

        say("cube")  # only the chosen result's cube: warping it is the costly part
        warped_cube, _ = apply_transform_cube(moving_img.cube, best.fit, fixed_img.shape, step=cube_step)
    say("done")
    extra["seconds"] = round(time.perf_counter() - started, 4)
    return RegistrationResult(fit=best.fit, scores=best.scores, verdict=best.verdict, warped=best.warped,
                              footprint=best.footprint, warped_cube=warped_cube, model=best.model,
                              attempts=tuple(attempts), fixed_shape=fixed_img.shape,
                              moving_shape=moving_img.shape, fixed_calibration=fixed_img.calibration,
                              moving_calibration=moving_img.calibration, extra=extra)
