"""The pipeline: load → preprocess → landmarks → estimate → warp → score → verdict, with fallbacks.

``register`` tries strategies in order and records each attempt. It never raises except
:class:`~autoreg.errors.InputError`; every other failure becomes a ``failed`` verdict with reasons.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from ._threads import one_thread
from .confidence import contest_stands_out, peak_stands_out
from .config import RegistrationConfig
from .contest import contest
from .control_points import validate_points
from .datatypes import Attempt, Fit, Image, RegistrationResult, Scores, Verdict
from .errors import AutoregError, EstimationError, InputError, InsufficientLandmarksError, TimeBudgetExceeded
from .strategies import INTENSITY_MODEL, Context, feature_fit, points_fit, refine_fit, search_fit, working_views
from .vocabulary import GLOBAL_MODELS, MODELS

if TYPE_CHECKING:
    from .budget import Deadline

__all__ = ["given_scale", "register", "user_pixel_sizes"]

#: A named automatic strategy: it returns its fit and whether control points determine it exactly.
_Strategy = tuple[str, Callable[[], tuple[Fit, bool]]]

ProgressCallback = Callable[[str], None]


def _seed_of(rng: int | np.random.Generator | None) -> int:
    if rng is None:
        return 0
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**31 - 1))
    if isinstance(rng, (bool, np.bool_)) or not isinstance(rng, (int, np.integer)):
        raise InputError(f"rng must be an integer seed or a numpy Generator, not {type(rng).__name__}.")
    return int(rng)


def _load(source: Any, what: str, config: RegistrationConfig) -> Image:
    from .io import load_image

    return load_image(source, name=what if isinstance(source, np.ndarray) else None, max_pixels=config.max_pixels)


def _finish(ctx: Context, fit: Fit, *, exact_points: bool = False,
            second_reading: bool = False) -> tuple[RegistrationResult, Attempt]:
    """Warp, score and judge one fit.

    ``second_reading``: the fit was found and is judged under the other reading of ambiguous image sizes (a crop at
    the same pixel size). Its keypoints then need ``ok_inliers`` even when the refinement predicts the error: that
    leniency was calibrated on the first reading's strategies, and on the lattice tuning split the same-pixel-size
    keypoints' first run gave a neighbouring area of a lattice, matched a period off on 11 SIFT inliers with a
    refined prediction, an ``ok`` (its shift check 0.105 against 0.1 needed; NFA and correlation like right ones').
    """
    from .ambiguity import shift_peak_gap
    from .confidence import judge
    from .evidence import feature_log10_nfa, predicted_error_px, tolerance_px
    from .score import affine_part, score_registration
    from .search import fixed_term
    from .warp import apply_transform

    warped, footprint = apply_transform(ctx.moving.data, fit, ctx.fixed.shape)
    # the correlations are judged on what the fit matched: the moving intensity against the fixed intensity, or
    # against the fixed term of a cross-modal pairing (a deflection map against the fixed image's slope)
    channel = fit.matched_channel
    fixed_judged, fixed_valid = np.asarray(ctx.fixed.data), ctx.fixed_valid
    if channel != "intensity":
        fixed_judged = fixed_term(fixed_judged, channel, affine_part(fit)[:, 0])
        fixed_valid = fixed_valid & np.isfinite(fixed_judged)
    scores = score_registration(fit, fixed_judged, np.asarray(ctx.moving.data), warped, footprint,
                                expected_scale=ctx.expected_scale, working_pixel_px=ctx.working_pixel_px,
                                fixed_valid=fixed_valid, background_order=ctx.config.correlation_background_order)
    overlap_px2 = float(np.count_nonzero(footprint & ctx.fixed_valid))
    truncation = ctx.inlier_threshold_px if fit.source == "features" else None
    log10_nfa = feature_log10_nfa(fit, overlap_px2, ctx.working_pixel_px, ctx.config)
    tolerance = tolerance_px(ctx.config, min(ctx.expected_scale, scores.scale) if np.isfinite(scores.scale)
                             else ctx.expected_scale)
    try:  # evidence about a fit (the verdict decides which sources it judges), not a way of finding one
        shift_gap = shift_peak_gap(fixed_judged, ctx.moving_levelled, fit, footprint & fixed_valid,
                                   coarse_px=max(1.0, ctx.expected_scale),
                                   exclusion_px=ctx.config.shift_exclusion_tolerances * tolerance,
                                   window_fraction=ctx.config.shift_window_fraction,
                                   max_side=ctx.config.shift_check_max_side)
    except EstimationError:
        shift_gap = float("nan")  # OpenCV failed on these data: unmeasured, as for an overlap too small to slide
    scores = dataclasses.replace(
        scores,
        log10_nfa=log10_nfa,
        shift_peak_gap=shift_gap,
        uncertainty_px=predicted_error_px(fit, ctx.moving.shape, truncation_px=truncation,
                                          prior_scale=ctx.expected_scale, config=ctx.config),
        tolerance_px=tolerance,
    )
    if channel != "intensity":  # a slope or an edge map has no contrast polarity of its own
        scores = dataclasses.replace(scores, inverted_contrast=False, matched_channel=channel)
    verdict = judge(scores, ctx.config, source=fit.source, exact_points=exact_points,
                    refined=fit.contrast_checked,
                    predicted_by_refinement=bool(np.isfinite(fit.refinement_error_px)) and not second_reading,
                    contrast_mapped=fit.contrast_mapped)
    result = RegistrationResult(fit=fit, scores=scores, verdict=verdict, warped=warped, footprint=footprint,
                                model=fit.model, fixed_shape=ctx.fixed.shape,
                                moving_shape=ctx.moving.shape)
    attempt = Attempt(strategy=fit.source, verdict=verdict.level, reasons=verdict.reasons, n_inliers=fit.n_inliers,
                      rmse_px=scores.rmse_px, pearson=scores.pearson)
    return result, attempt


#: What a strategy raises on data it cannot handle (library failures are converted at their call sites); each
#: becomes a failed attempt. Anything else is a bug and propagates.
_STAGE_FAILURES = (InsufficientLandmarksError, EstimationError)


def _meaningful(ctx: Context, fit: Fit) -> bool:
    """True when a feature fit's consensus may be a real match: it has the verdict's ``min_inliers`` (a refinement
    moves the fit, not its inliers) and passes the a-contrario test. The test is judged here on the whole fixed
    image, which is never smaller than the overlap the verdict judges on: a larger area makes chance agreement less
    likely and the test more lenient, so a fit that fails here fails the verdict too."""
    from .evidence import feature_log10_nfa

    if fit.n_inliers < ctx.config.min_inliers:
        return False
    area = float(np.count_nonzero(ctx.fixed_valid))
    return bool(feature_log10_nfa(fit, area, ctx.working_pixel_px, ctx.config) <= ctx.config.max_log10_nfa)


def _failed_attempt(strategy: str, err: AutoregError) -> Attempt:
    slug = "insufficient_landmarks" if isinstance(err, InsufficientLandmarksError) else "estimation_failed"
    return Attempt(strategy=strategy, verdict="failed", reasons=(f"{slug}: {err}",))


def _timed(attempt: Attempt, began: float) -> Attempt:
    """``attempt`` with the seconds since ``began`` (``time.perf_counter``)."""
    return dataclasses.replace(attempt, seconds=round(time.perf_counter() - began, 4))


def _points_given(points: Any) -> tuple[Any, Any] | None:
    """The user's ``(fixed_xy, moving_xy)``, from the pair itself or its CSV file; None without points."""
    if points is None:
        return None
    if isinstance(points, tuple) and len(points) == 2:
        return points
    from .io import load_points

    return load_points(points)


def _load_points(points: Any, ctx: Context, model: str) -> tuple[np.ndarray, np.ndarray] | None:
    given = _points_given(points)
    if given is None:
        return None
    fixed_xy, moving_xy = given
    check_model = "affine" if model == "auto" else model
    need_model = "translation" if model == "auto" else check_model
    return validate_points(fixed_xy, moving_xy, fixed_shape=ctx.fixed.shape, moving_shape=ctx.moving.shape,
                           model=need_model, polynomial_order=ctx.config.polynomial_order)


def _pick(results: list[RegistrationResult]) -> RegistrationResult:
    """The first ``ok`` result; else the user's control points when they gave a usable fit; else the best verdict,
    among equal verdicts one whose pose is not in doubt (no ``ambiguous`` reason), and then the smallest predicted
    error (unknown counts as infinite; earlier strategies win ties).

    Several ``low_confidence`` results happen when the right one is only doubted (an ambiguous lattice, a small
    overlap) and other strategies then find worse ones: their own error predictions are what tells them apart. A
    prediction measures the error about the pose found, not whether the pose is a lattice period away, which is
    what ``ambiguous`` doubts: on the evaluation split a lattice matched on the slope pairing a period off, predicted
    0.015 px, was picked over the features' right pose predicted 0.23 px. A fit refined through a contrast fitted to
    the map comes after those whose prediction assumes no such fit (``Fit.contrast_mapped``: its prediction is not
    calibrated): on the calibration split two deflection maps' search poses, mapped and predicted 0.2-0.4 px but
    3.2-3.3 px off, were picked over their keypoints' right poses predicted 2.7-2.9 px."""
    for result in results:
        if result.verdict.level == "ok":
            return result
    for result in results:
        if result.source == "points" and result.verdict.level != "failed":
            return result

    def predicted(result: RegistrationResult) -> float:
        value = result.scores.uncertainty_px
        return value if np.isfinite(value) else np.inf

    def ambiguous(result: RegistrationResult) -> bool:
        return any(reason.startswith("ambiguous:") for reason in result.verdict.reasons)

    def mapped(result: RegistrationResult) -> bool:
        return result.fit is not None and result.fit.contrast_mapped

    return min(results, key=lambda r: (r.verdict.rank, ambiguous(r), mapped(r), predicted(r)))


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


def _refined_points(ctx: Context, points: tuple[np.ndarray, np.ndarray], model: str,
                    automatic: RegistrationResult | None,
                    refine: bool) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """The control points — with each one refined by local correlation across the two resolutions when ``refine``
    (kept where the correlation is weak) — and what the JSON says about them."""
    from .control_points import check_points, fit_points
    from .cpcorr import refine_points
    from .score import contrast_polarity

    fixed_xy, moving_xy = points
    rough_model = "similarity" if len(fixed_xy) < 3 else "affine"
    report: dict[str, Any] = {"refined": 0}
    if refine:
        try:
            rough = fit_points(fixed_xy, moving_xy, rough_model, ctx.config, prior_scale=ctx.expected_scale)
        except AutoregError:
            return points, report
        polarity = (contrast_polarity(automatic.scores) if automatic is not None else None) or 1
        refined = refine_points(np.asarray(ctx.fixed.data), np.asarray(ctx.moving.data), fixed_xy, moving_xy,
                                rough.matrix, config=ctx.config, polarity=polarity)
        fixed_xy = np.array([r.fixed_xy for r in refined], float)
        moving_xy = np.array([r.moving_xy for r in refined], float)
        report = {"refined": sum(r.moved for r in refined),
                  "kept": [i + 1 for i, r in enumerate(refined) if not r.moved]}
    check_model = model if model != "auto" else rough_model
    try:
        checked = check_points(fixed_xy, moving_xy, check_model, ctx.config, prior_scale=ctx.expected_scale)
        report.update(loo_px=checked["loo_px"], outliers=checked["outlier_messages"])
    except AutoregError:
        pass
    return (fixed_xy, moving_xy), report


def _conflict(result: RegistrationResult, doubted: list[tuple[str, RegistrationResult]],
              config: RegistrationConfig) -> str:
    """Why an ``ok`` result is in doubt (a ``conflicting`` reason), or an empty string.

    ``doubted`` holds the earlier attempts' ``low_confidence`` results (name, result): each passed every evidence
    test, so its consensus or correlation peak is not chance either. When one puts the moving image further from
    this result than ``shift_exclusion_tolerances`` tolerances and ``disagreement_errors`` times their combined
    predicted errors (an unknown prediction counts as none), the two found different poses in the same data and
    nothing says which is right: repeated content. Later strategies do not run once a result is ``ok``, so only
    earlier results can doubt it. On the tuning splits this cost 4 correct ``ok``s of 430 (lattices, whose first
    feature fit was a period away); it turned a wrong ``ok`` 116× the tolerance off (a 10-20 % overlap of a lattice,
    a search peak at the wrong place with a gap of 0.114, after SIFT had found a third pose) into ``low_confidence``.
    """
    def predicted(r: RegistrationResult) -> float:
        value = r.scores.uncertainty_px
        return value if np.isfinite(value) else 0.0

    for name, other in doubted:
        apart = _disagreement_px(result.fit, other.fit, result.moving_shape)
        limit = max(config.shift_exclusion_tolerances * result.scores.tolerance_px,
                    config.disagreement_errors * float(np.hypot(predicted(result), predicted(other))))
        if apart > limit:
            return (f"conflicting: the {name} attempt found a pose {apart:.3g} px from this one (beyond {limit:.3g} "
                    f"px, more than their predicted errors explain) that passed the evidence tests too")
    return ""


def _disagreement_px(a: Fit, b: Fit, moving_shape: tuple[int, int]) -> float:
    """Mean distance (fixed px) between two fits over a 5×5 grid spanning the moving image."""
    from .geometry import mean_grid_distance

    return mean_grid_distance(a.to_fixed, b.to_fixed, moving_shape)


@one_thread
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
    scale: float | None = None,
    pixel_size: tuple[Any, Any] | None = None,
    mirrored: bool | None = None,
    _only: str | None = None,
) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` hands-off, falling back to control points when given.

    Parameters
    ----------
    fixed, moving : str, path, ndarray or Image
        Images, or specs such as ``"scan.h5::/Measurement_000/Channel_000/STM_Topography"``, TIFF, PNG,
        JPEG or NPY paths. An :class:`~autoreg.datatypes.Image` with a ``cube`` has the cube warped too.
    model : str
        ``"auto"`` or one of :data:`autoreg.vocabulary.MODELS`.
    points : tuple of (fixed_xy, moving_xy) arrays, or path to a CSV, optional
        Control points, used when the automatic result is not ``ok``. Each point is first refined by local
        correlation across the two resolutions (kept where the correlation is weak).
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
    scale : float, optional
        The size of one moving pixel in fixed pixels, when you know it (overrides the metadata).
    pixel_size : tuple, optional
        ``(fixed, moving)`` pixel sizes in one unit, when you know them: the same as ``scale = moving / fixed``.
        Each is a number or an ``(x, y)`` pair for pixels that are not square (a 64×32 grid over a square area:
        ``(1.0, (6.0, 12.0))``); such a moving image is registered through a square-pixelled copy
        (:mod:`autoreg.regrid`), as when the files' pixel sizes say so.
    mirrored : bool, optional
        Whether the moving pixel grid is the fixed one's mirror image (one scan stored with its y axis up, the other
        down). Default: from the signs of the two images' pixel sizes when both have them (USID position values),
        else not. A mirrored pair is registered as the moving image with its rows reversed, and the result maps the
        moving image as given (:mod:`autoreg.mirror`: a matrix with a negative determinant); the JSON says
        ``mirrored`` and who said so (``mirror_source``: ``user``, ``metadata``, or ``none`` when nobody did).
    _only : str, optional
        Internal (the mirror check, :func:`_mirror_checked`): run only the automatic strategy of this name.

    Returns
    -------
    RegistrationResult
        Always; ``verdict.level == "failed"`` (with reasons) when no trustworthy transform was found.

    Notes
    -----
    ``config.time_budget_s`` bounds the automatic strategies: once spent, no further strategy starts (the first
    always runs) and a running search stops, its attempt failed; the verdict's reasons then name what was not tried.
    Control points are still used.

    BLAS and OpenCV run on one thread while it works (:mod:`autoreg._threads`): its arrays are too small to gain
    from more, and threaded calls stall when the cores are busy.

    Raises
    ------
    InputError
        Unreadable input, unknown model, invalid control points, or a scale that is not a positive number.
    """
    from .budget import Deadline
    from .levelling import level_scan
    from .preprocess import expected_scale, working_scales

    started = time.perf_counter()
    cfg = config or RegistrationConfig()
    if not isinstance(cfg, RegistrationConfig):
        raise InputError(f"config must be a RegistrationConfig, not {type(cfg).__name__}.")
    deadline = Deadline(cfg.time_budget_s)
    if model != "auto" and model not in MODELS:
        raise InputError(f"Unknown model {model!r}; choose auto or one of: {', '.join(MODELS)}.")
    seed = _seed_of(rng)
    given = given_scale(scale, pixel_size)
    say = progress or (lambda _msg: None)
    fixed_img, moving_img = _load(fixed, "fixed", cfg), _load(moving, "moving", cfg)
    mirror, mirror_source = _mirror(mirrored, fixed_img, moving_img)
    if mirror:  # the whole registration on the moving image's mirror, then brought back to the image as given
        from .mirror import flip_rows_matrix, flipped, unflipped

        flipped_points = _points_through(points, flip_rows_matrix(moving_img.shape))
        result = register(fixed_img, flipped(moving_img), model=model, points=flipped_points, config=cfg, rng=seed,
                          cube_step=cube_step, progress=progress, automatic=automatic, scale=scale,
                          pixel_size=pixel_size, mirrored=False)
        result = unflipped(result, moving_img, mirror_source, cfg.polynomial_order)
        result.extra["seconds"] = round(time.perf_counter() - started, 4)
        return result
    sizes = user_pixel_sizes(pixel_size)
    known_aspect = _aspect_of(fixed_img, moving_img, sizes)
    aspect = known_aspect if scale is None and _skewed(known_aspect, cfg) else None
    if aspect is not None:  # the whole registration on a copy with square pixels, then brought back
        from .regrid import squared

        copy, to_copy = squared(moving_img, aspect)
        copy_sizes = None if sizes is None else (sizes[0], (sizes[1][0] / to_copy[0, 0], sizes[1][1] / to_copy[1, 1]))
        result = register(fixed_img, copy, model=model, points=_points_through(points, to_copy), config=cfg,
                          rng=seed, cube_step=None, progress=progress, automatic=automatic, pixel_size=copy_sizes,
                          mirrored=mirrored)  # the copy keeps the pixel sizes' signs: its metadata says the same
        result = _from_square_copy(result, fixed_img, moving_img, to_copy, aspect, cfg, cube_step, say)
        result.extra.update(mirror_source=mirror_source, seconds=round(time.perf_counter() - started, 4))
        return result
    ratio, scale_source = (given, "user") if given is not None else expected_scale(fixed_img, moving_img, cfg)
    scale_fixed, scale_moving = working_scales(fixed_img, moving_img, ratio, cfg)
    ctx = Context(fixed=fixed_img, moving=moving_img, config=cfg, seed=seed, expected_scale=ratio,
                  scale_source=scale_source, scale_fixed=scale_fixed, scale_moving=scale_moving,
                  fixed_valid=np.isfinite(fixed_img.data),
                  moving_levelled=level_scan(moving_img.data, scars=False, spikes=False).data, deadline=deadline)
    control = _load_points(points, ctx, model)
    if not automatic and control is None:
        raise InputError("automatic=False judges control points: give points.")

    attempts: list[Attempt] = []
    results: list[RegistrationResult] = []
    views = working_views(ctx)
    textured: list[bool] = []

    def checked(fit_with: Callable[[], Fit]) -> Callable[[], tuple[Fit, bool]]:
        def run() -> tuple[Fit, bool]:
            if not textured:  # checked once, raised again for every automatic strategy
                _check_texture(fixed_img, "fixed", cfg)
                _check_texture(moving_img, "moving", cfg)
                textured.append(True)
            return fit_with(), False

        return run

    def refined(fit: Fit, on: Context = ctx) -> Fit:
        """Refine a global fit as the model asked for (``auto`` features: the one they chose; the search, which
        finds a similarity: :data:`INTENSITY_MODEL` unless a global model was asked for), under the scale prior
        of ``on``."""
        if fit.source == "intensity":
            wanted = model if model in GLOBAL_MODELS else INTENSITY_MODEL
            if not peak_stands_out(fit.peak_gap, fit.peak_ratio, cfg):  # its refined poses may tell them apart
                fit = contest(on, fit)
                if not contest_stands_out(fit.contest_gap, cfg):
                    return fit  # no evidence of a match: failed whatever its accuracy
        else:
            wanted = fit.model
            if not _meaningful(on, fit):  # failed whatever its accuracy: refining it would only cost time
                return fit
        # under auto, a model simpler than the intensity strategies' may give way to it where the pixels prefer it
        simpler = GLOBAL_MODELS[:GLOBAL_MODELS.index(INTENSITY_MODEL)]  # the global models are simplest first
        richer = INTENSITY_MODEL if model == "auto" and wanted in simpler else None
        return refine_fit(on, fit, wanted, richer) if wanted in GLOBAL_MODELS and fit.model in GLOBAL_MODELS else fit

    def features_chain(on: Context, suffix: str = "", hypothesis: str = "") -> list[_Strategy]:
        """The keypoint strategies (ORB, ORB on the gradient magnitude, SIFT) under the scale hypothesis ``on``,
        on its working views (made when first needed), named with ``suffix``."""

        @functools.cache
        def own_views() -> tuple[Any, Any]:
            return views if on is ctx else working_views(on)

        detected: dict = {}  # keypoints on own_views(): SIFT's are matched by ratio, then mutually

        def run(detector: str, gradient: bool, note: str, sparse: bool = False) -> Fit:
            own = own_views()
            fit = feature_fit(on, model, working_views(on, gradient=True, like=own) if gradient else own, detector,
                              sparse, keypoints=None if gradient else detected)
            why = "; ".join(part for part in (note, hypothesis) if part)
            return refined(fit.with_note(why) if why else fit, on)

        return [(f"features{suffix}", checked(lambda: run("orb", False, ""))),
                (f"features-gradient{suffix}",
                 checked(lambda: run("orb", True, "features of the gradient magnitude"))),
                (f"features-sift{suffix}", checked(lambda: run("sift", False, "SIFT features"))),
                (f"features-sift-mutual{suffix}",
                 checked(lambda: run("sift", False, "SIFT features, mutual matches, a-contrario consensus", True)))]

    features = features_chain(ctx)
    search = ("search", checked(lambda: refined(search_fit(ctx, model, views))))
    early = ctx.scale_known or ctx.resolution_ratio >= cfg.search_min_ratio
    part_of_field: list[_Strategy] = []
    if scale_source == "field_of_view" and early and model not in ("translation", "rigid"):
        # a map taken over part of the fixed field: smaller than the image sizes say (late, as it costs a sweep
        # over several times the scales; nothing that is ok already pays for it)
        band = cfg.search_fov_coverage
        part_note = f"searched a map covering {band[0]:.0%}-{band[1]:.0%} of the fixed field's side"
        part_of_field = [("search-part-of-field", checked(
            lambda: refined(search_fit(ctx, model, views, scale_band=band, channels=cfg.search_fov_channels)
                            ).with_note(part_note)))]
    # the scale hypothesis each strategy's fit is judged under (its expected scale: implausible_scale, tolerance)
    judged_on: dict[str, Context] = {}
    same_features: list[_Strategy] = []
    same_search: list[_Strategy] = []
    if scale_source == "field_of_view" and ctx.resolution_ratio <= cfg.ambiguous_size_ratio:
        # a crop of a scan at the same pixel size looks like a coarser map of the same field of view: try both,
        # and judge these as what they assume (under the field of view, their scale would be implausible)
        same_fixed, same_moving = working_scales(fixed_img, moving_img, 1.0, cfg)
        same = dataclasses.replace(ctx, expected_scale=1.0, scale_source="same_pixel_size", scale_fixed=same_fixed,
                                   scale_moving=same_moving)
        # keypoints right after the field of view's (a few tenths of a second, where the search costs a second or
        # more): at the field of view's views a crop is blurred to twice its pixel or more, and loses its corners
        same_features = features_chain(same, "-same-pixel-size", "at the same pixel size (the sizes alone did not say)")
        same_note = "searched at the same pixel size (the sizes alone did not say)"
        same_search = [("search-same-pixel-size", checked(
            lambda: refined(search_fit(same, model, views), same).with_note(same_note)))]
        judged_on.update((name, same) for name, _ in same_features + same_search)
    # the search second when the scale is known or the map is coarse, else after every keypoint strategy
    automatic_strategies = ([features[0], search, *features[1:], *same_features] if early
                            else [*features, *same_features, search]) + part_of_field + same_search
    strategies = automatic_strategies if automatic else []
    if _only is not None:
        strategies = [(name, run) for name, run in strategies if name == _only]
    doubted: list[tuple[str, RegistrationResult]] = []  # earlier results that passed the evidence tests
    scale_sources: list[str] = []  # the scale hypothesis each result was judged under
    not_tried: list[str] = []  # strategies the time budget left out
    stopped: list[str] = []  # ... or stopped part way
    for index, (name, attempt_fit) in enumerate(strategies):
        if any(r.verdict.level == "ok" for r in results):
            break
        if index > 0 and deadline.expired():  # the first always runs: there is a result to give
            not_tried = [later for later, _ in strategies[index:]]
            break
        say(name)
        began = time.perf_counter()
        on = judged_on.get(name, ctx)
        try:
            fit, exact = attempt_fit()
            result, attempt = _finish(on, fit, exact_points=exact, second_reading=on is not ctx)
        except _STAGE_FAILURES as err:
            attempt = _failed_attempt(name, err)
        except TimeBudgetExceeded as err:  # stopped part way: nothing found (a search's peak needs the whole sweep)
            attempt = Attempt(strategy=name, verdict="failed", reasons=(str(err),))
            stopped.append(name)
        else:
            if result.verdict.level == "ok":  # unless an earlier result with evidence of its own is elsewhere
                conflict = _conflict(result, doubted, cfg)
                if conflict:
                    verdict = Verdict("low_confidence", (conflict,))
                    result = dataclasses.replace(result, verdict=verdict)
                    attempt = dataclasses.replace(attempt, verdict=verdict.level, reasons=verdict.reasons)
            if result.verdict.level == "low_confidence":
                doubted.append((name, result))
            results.append(result)
            scale_sources.append(on.scale_source)
        attempts.append(_timed(dataclasses.replace(attempt, strategy=name), began))

    extra: dict[str, Any] = {"scale_source": scale_source, "mirrored": False, "mirror_source": mirror_source,
                             "pixel_aspect": known_aspect,
                             "working_scale_fixed": scale_fixed,
                             "working_scale_moving": scale_moving,
                             "preprocessing": {"fixed": list(views[0].steps), "moving": list(views[1].steps)}}
    if deadline.seconds is not None:
        extra["time_budget"] = {"seconds": deadline.seconds, "stopped": stopped, "not_tried": not_tried}
    cut = [f"{what}: {', '.join(names)}" for what, names in (("stopped", stopped), ("not tried", not_tried)) if names]
    budget_reason: tuple[str, ...] = ()
    if cut:  # only a budget cuts
        budget_reason = (f"time_budget: {deadline.elapsed():.2f} s spent of a {deadline.seconds:g} s budget; "
                         + "; ".join(cut),)
    if control is not None and not any(r.verdict.level == "ok" for r in results):
        say("points")
        began = time.perf_counter()
        best_automatic = _pick(results) if results else None
        control, extra["control_points"] = _refined_points(ctx, control, model, best_automatic, refine=automatic)
        try:
            fit, exact = points_fit(ctx, control, model)
            result, attempt = _finish(ctx, fit, exact_points=exact)
        except _STAGE_FAILURES as err:
            attempt = _failed_attempt("points", err)
        else:
            results.append(result)
            scale_sources.append(ctx.scale_source)
            if best_automatic is not None and best_automatic.fit is not None:
                extra["control_points"]["disagreement_px"] = _disagreement_px(best_automatic.fit, fit,
                                                                              moving_img.shape)
        attempts.append(_timed(dataclasses.replace(attempt, strategy="points"), began))

    common = dict(model=model, attempts=tuple(attempts), fixed_shape=fixed_img.shape, moving_shape=moving_img.shape,
                  fixed_calibration=fixed_img.calibration, moving_calibration=moving_img.calibration, extra=extra)
    if not results:
        extra["seconds"] = round(time.perf_counter() - started, 4)
        reasons = tuple(r for a in attempts for r in a.reasons) + budget_reason or (
            "no_strategy: nothing could be tried",)
        return RegistrationResult(fit=None, scores=Scores(), verdict=Verdict("failed", reasons), **common)
    best = _pick(results)
    extra["scale_source"] = next(source for r, source in zip(results, scale_sources) if r is best)
    if mirror_source == "none" and best.verdict.level == "ok" and best.source != "points":
        best, extra["mirror_check"] = _mirror_checked(best, attempts[-1].strategy, fixed_img, moving_img, model=model,
                                                      config=cfg, seed=seed, scale=scale, pixel_size=pixel_size,
                                                      deadline=deadline, say=say)
    if budget_reason and best.verdict.level != "ok":  # what more time might have found (the points came after)
        best = dataclasses.replace(best, verdict=Verdict(best.verdict.level, best.verdict.reasons + budget_reason))
    warped_cube = _warped_cube(moving_img, best.fit, best.verdict, fixed_img.shape, cube_step, say)
    say("done")
    extra["seconds"] = round(time.perf_counter() - started, 4)
    common["model"] = best.model
    return RegistrationResult(fit=best.fit, scores=best.scores, verdict=best.verdict, warped=best.warped,
                              footprint=best.footprint, warped_cube=warped_cube, **common)


def _mirror_checked(best: RegistrationResult, strategy: str, fixed: Image, moving: Image, *, model: str,
                    config: RegistrationConfig, seed: int, scale: float | None, pixel_size: tuple[Any, Any] | None,
                    deadline: Deadline, say: Callable[[str], None]) -> tuple[RegistrationResult, dict[str, Any]]:
    """``best`` (an ``ok`` that nobody said was or was not mirrored, found by ``strategy``), doubted when its content
    repeats and the moving image's mirror image fits about as well elsewhere; and what the check found (the JSON's
    ``mirror_check``).

    A reflection maps a lattice onto itself: a moving image stored mirrored, matched unmirrored, still lines its
    lattice up with the fixed one, and only its defects disagree. Such a pose passes every test of one pose: on the
    tuning splits 3 of the 23 ``ok``s of untold mirrored pairs were wrong, all lattices (``tests/bench/
    bench_mirror.py``). So when the shift check finds repeated content (``shift_peak_gap`` below
    ``mirror_check_max_shift_gap``), the mirror is registered by the same strategy with the same options. When that
    passes the evidence tests (not ``failed``) at another pose (more than ``shift_exclusion_tolerances`` tolerances
    from this one once brought back: a fit that holds a reflection is found both ways) with a detrended |correlation|
    of at least this one's minus ``mirror_check_margin``, nothing in the data says which is right, and ``ok`` becomes
    ``low_confidence`` (``mirror_doubt``, naming ``--mirrored`` / ``--not-mirrored``, which skip the check). The
    result stays this pose. The check runs within what is left of a time budget; when the budget is spent before it
    starts, or stops the mirror's strategy, the check is owed and not done, and ``ok`` becomes ``low_confidence``
    (``mirror_unchecked``): a budget leaves steps out, it never keeps an ``ok`` the whole run would have doubted.
    """
    gap = best.scores.shift_peak_gap
    if not (np.isfinite(gap) and gap < config.mirror_check_max_shift_gap):
        return best, {"ran": False, "why": "the content does not repeat" if np.isfinite(gap) else
                      "the shift check was not measured"}
    if deadline.expired():
        return _mirror_unchecked(best), {"ran": False, "why": "the time budget was spent"}
    from .mirror import flipped, unflipped

    say("mirror check")
    began = time.perf_counter()
    remaining = config if deadline.seconds is None else dataclasses.replace(
        config, time_budget_s=max(deadline.seconds - deadline.elapsed(), 1e-3))
    mirror = register(fixed, flipped(moving), model=model, config=remaining, rng=seed, cube_step=None, scale=scale,
                      pixel_size=pixel_size, mirrored=False, _only=strategy)
    this, other = abs(best.scores.pearson_detrended), abs(mirror.scores.pearson_detrended)
    apart = math.nan
    if mirror.fit is not None and best.fit is not None:  # a fit that holds a reflection is found both ways
        back = unflipped(mirror, moving, "none", config.polynomial_order).fit
        apart = _disagreement_px(best.fit, back, moving.shape)
    elsewhere = not apart <= config.shift_exclusion_tolerances * best.scores.tolerance_px
    doubt = (mirror.verdict.level != "failed" and elsewhere and np.isfinite(other)
             and other >= this - config.mirror_check_margin)
    found = {"ran": True, "mirror_verdict": mirror.verdict.level, "pearson_detrended": this,
             "mirror_pearson_detrended": other, "mirror_apart_px": apart, "doubt": bool(doubt),
             "seconds": round(time.perf_counter() - began, 4)}
    cut = bool(mirror.extra.get("time_budget", {}).get("stopped"))  # the mirror's search stopped unfinished
    if cut and not doubt:
        found["why"] = "the time budget stopped the mirror's strategy"
        return _mirror_unchecked(best), found
    if not doubt:
        return best, found
    reason = (f"mirror_doubt: the moving image's mirror image fits about as well (detrended correlation {other:.3f} "
              f"against {this:.3f}, {mirror.verdict.level}; repeated content that a reflection maps onto itself); say "
              f"whether the scans are mirrored (--mirrored or --not-mirrored)")
    return dataclasses.replace(best, verdict=Verdict("low_confidence", (reason,))), found


def _mirror_unchecked(best: RegistrationResult) -> RegistrationResult:
    """``best`` (an ``ok`` whose content repeats) made ``low_confidence``: the mirror check it needs was not done."""
    reason = ("mirror_unchecked: the content repeats, so a mirrored moving image could line up as well, and the time "
              "budget was spent before the mirror check could tell; say whether the scans are mirrored (--mirrored "
              "or --not-mirrored) or allow more time")
    return dataclasses.replace(best, verdict=Verdict("low_confidence", (reason,)))


def _mirror(mirrored: bool | None, fixed: Image, moving: Image) -> tuple[bool, str]:
    """Whether to register the moving image's mirror, and who said so (``user``, ``metadata``; ``none`` when
    nobody did and it is not)."""
    from .mirror import mirrored_by_metadata

    if mirrored is not None:
        if not isinstance(mirrored, (bool, np.bool_)):
            raise InputError(f"mirrored must be True, False or None, not {mirrored!r}.")
        return bool(mirrored), "user"
    from_metadata = mirrored_by_metadata(fixed.calibration, moving.calibration)
    return (True, "metadata") if from_metadata else (False, "metadata" if from_metadata is not None else "none")


def _aspect_of(fixed: Image, moving: Image, sizes: tuple[tuple[float, float], tuple[float, float]] | None
               ) -> float | None:
    """How much higher than wide a moving pixel is in fixed pixels, from the user's pixel sizes (``sizes``) or
    else the files'; None when unknown."""
    from .regrid import pixel_aspect
    from .units import Calibration

    if sizes is not None:
        aspect = pixel_aspect(Calibration(sizes[0]), Calibration(sizes[1]))
    else:
        aspect = pixel_aspect(fixed.calibration, moving.calibration)
    return aspect if aspect is not None and np.isfinite(aspect) and aspect > 0 else None


def _skewed(aspect: float | None, cfg: RegistrationConfig) -> bool:
    """Whether a known pixel aspect departs from square by more than ``max_pixel_skew`` (either way)."""
    return aspect is not None and abs(np.log(aspect)) > np.log1p(cfg.max_pixel_skew)


def _from_square_copy(result: RegistrationResult, fixed: Image, moving: Image, given_to_copy: np.ndarray,
                      aspect: float, cfg: RegistrationConfig, cube_step: float | None,
                      say: Callable[[str], None]) -> RegistrationResult:
    """``result`` of registering the square-pixelled copy, as a result for ``moving``: its map composed with the
    regridding, its image and cube warped from the data as given, its shape and calibration ``moving``'s."""
    from .regrid import mapped_fit
    from .warp import apply_transform

    note = f"registered as a copy with square pixels (a moving pixel is {aspect:.3g}× as high as wide in fixed px)"
    fit = None if result.fit is None else mapped_fit(result.fit, given_to_copy, cfg.polynomial_order, note)
    warped, footprint = result.warped, result.footprint
    if fit is not None and warped is not None:  # the data as given, interpolated once
        warped, footprint = apply_transform(moving.data, fit, fixed.shape)
    warped_cube = _warped_cube(moving, fit, result.verdict, fixed.shape, cube_step, say)
    return dataclasses.replace(result, fit=fit, warped=warped, footprint=footprint, warped_cube=warped_cube,
                               moving_shape=moving.shape, moving_calibration=moving.calibration,
                               extra={**result.extra, "pixel_aspect": aspect})


def _warped_cube(moving: Image, fit: Fit | None, verdict: Verdict, fixed_shape: tuple[int, int],
                 cube_step: float | None, say: Callable[[str], None]) -> np.ndarray | None:
    """The moving image's cube on the fixed grid, every ``cube_step`` fixed pixels; None without a cube, a step or
    a trustworthy fit."""
    if moving.cube is None or cube_step is None or fit is None or verdict.level == "failed":
        return None
    from .warp import apply_transform_cube

    say("cube")  # only the chosen result's cube: warping it is the costly part
    warped_cube, _ = apply_transform_cube(moving.cube, fit, fixed_shape, step=cube_step)
    return warped_cube


def _points_through(points: Any, given_to_copy: np.ndarray) -> Any:
    """The user's control points with their moving coordinates in a copy of the moving image on another grid (the
    mirror, square pixels); None stays None."""
    from .geometry import apply_matrix

    given = _points_given(points)
    if given is None:
        return None
    fixed_xy, moving_xy = given
    moving_xy = np.asarray(moving_xy, float)
    if moving_xy.ndim != 2 or moving_xy.shape[1:] != (2,):
        return fixed_xy, moving_xy  # validated, and refused, where every point set is
    return fixed_xy, apply_matrix(given_to_copy, moving_xy)


def user_pixel_sizes(pixel_size: Any) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """The user's ``(fixed, moving)`` pixel sizes, each as ``(x, y)``: a number is a square pixel, a pair a pixel
    that is ``x`` wide and ``y`` high (a 64×32 grid over a square area: ``(x, 2 x)``); None when not given.

    Raises
    ------
    InputError
        Anything but two sizes, each a positive finite number or a pair of them.

    Examples
    --------
    >>> user_pixel_sizes((0.5, (6, 18)))
    ((0.5, 0.5), (6.0, 18.0))
    """
    if pixel_size is None:
        return None
    what = "pixel_size must be two sizes, the fixed and the moving pixel's: each a number or an (x, y) pair."
    try:
        fixed_size, moving_size = pixel_size
        sizes = tuple(tuple(float(v) for v in (size if np.ndim(size) == 1 else (size, size)))
                      for size in (fixed_size, moving_size))
    except (TypeError, ValueError):
        raise InputError(what) from None
    if any(len(size) != 2 for size in sizes):
        raise InputError(what)
    values = np.asarray(sizes, float)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        ratios = values[1] / values[0]
    if not (np.all(np.isfinite(values)) and np.all(values > 0) and np.all(np.isfinite(ratios)) and np.all(ratios > 0)):
        raise InputError("Pixel sizes must be positive, finite numbers.")
    return sizes[0], sizes[1]


def given_scale(scale: float | None, pixel_size: Any) -> float | None:
    """The user's scale (moving px in fixed px), from ``scale`` or ``pixel_size``.

    Parameters
    ----------
    scale : float or None
        Fixed pixels per moving pixel.
    pixel_size : tuple or None
        ``(fixed, moving)`` pixel sizes in one unit, each a number or an ``(x, y)`` pair
        (:func:`user_pixel_sizes`).

    Returns
    -------
    float or None
        ``moving / fixed`` (the geometric mean over x and y for pixels that are not square) or ``scale``; None when
        neither is given.

    Raises
    ------
    InputError
        Both given, or a size or scale that is not a positive finite number.
    """
    if scale is not None and pixel_size is not None:
        raise InputError("Give scale or pixel_size, not both.")
    sizes = user_pixel_sizes(pixel_size)
    if sizes is not None:
        (fx, fy), (mx, my) = sizes
        return float(np.sqrt((mx / fx) * (my / fy)))
    if scale is not None:
        if not (isinstance(scale, (int, float, np.number)) and np.isfinite(scale) and scale > 0):
            raise InputError("scale must be a positive number of fixed pixels per moving pixel.")
        return float(scale)
    return None
