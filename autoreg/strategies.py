"""The strategies the pipeline tries, each turning the inputs into a :class:`~autoreg.datatypes.Fit` or raising.

* features: ORB (or SIFT, or ORB on the gradient magnitude) on levelled working views, a seeded robust fit;
* search: rotation × translation (× scale) by masked correlation when the scale is known or roughly known;
* points: the user's control points, refined by local correlation across the two resolutions;

and the refinement every global fit gets: a forward-model intensity refinement at the coarser image's resolution,
kept only when it raises the correlation on held-out pixels. Stages raise
:class:`~autoreg.errors.InsufficientLandmarksError` or :class:`~autoreg.errors.EstimationError`; the pipeline decides.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .budget import Deadline
from .config import RegistrationConfig
from .datatypes import Fit, Image, Matches
from .errors import AutoregError, EstimationError
from .geometry import apply_matrix, grid_xy, mean_grid_distance
from .search import CROSS_CHANNELS, fixed_term, refined_on
from .vocabulary import GLOBAL_MODELS

__all__ = [
    "INTENSITY_MODEL",
    "Context",
    "feature_fit",
    "fit_through",
    "points_fit",
    "refine_fit",
    "refine_inputs",
    "search_fit",
    "working_views",
]

#: The global model intensity strategies fit when ``auto`` or a non-global model was asked for: scans drift,
#: shear and stretch a little between two acquisitions, which a similarity cannot follow.
INTENSITY_MODEL = "affine"


@dataclass(frozen=True, slots=True, eq=False)
class Context:
    """What every strategy needs: the inputs, the scale prior and the settings.

    Attributes
    ----------
    expected_scale : float
        Expected size of one moving pixel in fixed pixels.
    scale_source : str
        ``"metadata"``, ``"user"``, ``"field_of_view"`` or ``"same_pixel_size"``.
    scale_fixed, scale_moving : float
        Resize factors of the working views (working pixels per original pixel).
    fixed_valid : ndarray of bool
        ``np.isfinite(fixed.data)``, computed once for every strategy's scores.
    moving_levelled : ndarray
        The moving image levelled in its own frame (rows, plane), computed once for every strategy's shift check.
    deadline : Deadline or None
        The registration's time budget, which the search checks as it sweeps; None: no limit.
    """

    fixed: Image
    moving: Image
    config: RegistrationConfig
    seed: int
    expected_scale: float
    scale_source: str
    scale_fixed: float
    scale_moving: float
    fixed_valid: np.ndarray
    moving_levelled: np.ndarray
    deadline: Deadline | None = None

    @property
    def working_pixel_px(self) -> float:
        """Size of one working-view pixel in fixed pixels."""
        return 1.0 / self.scale_fixed

    @property
    def scale_known(self) -> bool:
        """True when the scale comes from the pixel sizes (metadata or the user), not from a guess."""
        return self.scale_source in ("metadata", "user")

    @property
    def resolution_ratio(self) -> float:
        """How many times coarser the coarser image's pixel is (>= 1)."""
        return max(self.expected_scale, 1.0 / self.expected_scale)

    @property
    def inlier_threshold_px(self) -> float:
        """The robust fit's inlier threshold in fixed px."""
        return self.config.ransac_threshold_px / self.scale_fixed


def working_views(ctx: Context, *, gradient: bool = False, like: tuple[Any, Any] | None = None) -> tuple[Any, Any]:
    """The fixed and moving working views (levelled, at one pixel scale) for the feature detectors.

    ``like``: views of the same context made already (the intensity views when the gradient ones are wanted),
    whose levelled images are taken instead of levelling both images again.
    """
    from .preprocess import make_working_view

    coarse_wpx = max(1.0, ctx.expected_scale) * ctx.scale_fixed
    fixed_levelled, moving_levelled = (None, None) if like is None else (like[0].levelled, like[1].levelled)
    fixed_view = make_working_view(ctx.fixed, ctx.scale_fixed, coarse_pixel_wpx=coarse_wpx, config=ctx.config,
                                   gradient=gradient, levelled=fixed_levelled)
    moving_view = make_working_view(ctx.moving, ctx.scale_moving, coarse_pixel_wpx=coarse_wpx, config=ctx.config,
                                    gradient=gradient, levelled=moving_levelled)
    return fixed_view, moving_view


def _sparse_consensus(ctx: Context, matches: Matches) -> np.ndarray:
    """Inliers of the a-contrario consensus (AC-RANSAC on similarity's 2-point samples) among ``matches``: finds a
    consensus of a few percent, where OpenCV's MAGSAC on 3-point samples does not look long enough.

    The consensus is judged over the whole fixed image, as :func:`autoreg.pipeline._meaningful` judges every feature
    fit before refining it. Mutual matches without a ratio test hold many chance matches, and keypoints crowd
    where the texture is rich, unlike the uniform background the test assumes: a consensus whose fixed points
    cover less than ``min_inlier_spread`` of the overlap it implies is refused (InsufficientLandmarksError)."""
    from .errors import InsufficientLandmarksError
    from .score import hull_area
    from .significance import acransac, overlap_area

    cfg = ctx.config
    wpx = ctx.working_pixel_px
    found = acransac(matches.fixed_xy, matches.moving_xy, "similarity", seed=ctx.seed,
                     max_iters=cfg.sparse_consensus_iters, fixed_area=float(np.count_nonzero(ctx.fixed_valid)),
                     n_models=cfg.nfa_tests, max_log10_nfa=cfg.max_log10_nfa, min_error_px=0.25 * wpx,
                     duplicate_px=cfg.nfa_duplicate_wpx * wpx)
    inliers = found.inliers & (np.linalg.norm(apply_matrix(found.matrix, matches.moving_xy) - matches.fixed_xy,
                                              axis=1) < ctx.inlier_threshold_px)
    (fixed_h, fixed_w), (moving_h, moving_w) = ctx.fixed.shape, ctx.moving.shape
    overlap = overlap_area(found.matrix, (moving_w, moving_h), (fixed_w, fixed_h))
    spread = hull_area(matches.fixed_xy[inliers]) / overlap if overlap > 0 else 0.0
    if spread < cfg.min_inlier_spread:
        raise InsufficientLandmarksError(
            f"The mutual-match consensus ({int(inliers.sum())} of {len(matches)}) covers {spread:.3f} of the overlap "
            f"it implies (< {cfg.min_inlier_spread}): clustered, as chance matches gather where keypoints crowd.")
    return inliers


def feature_fit(ctx: Context, model: str, views: tuple[Any, Any], detector: str = "orb", sparse: bool = False,
                keypoints: dict | None = None) -> Fit:
    """Match keypoints of the two views and fit ``model`` (``auto``: the simplest adequate one) robustly.

    ``sparse``: mutual nearest-neighbour matches (no ratio test) and an a-contrario consensus, for pairs that share
    little area. ``keypoints``: a cache of detections (:data:`autoreg.landmarks.KeypointCache`)."""
    from .estimate import choose_model, estimate_transform, robust_inliers
    from .landmarks import find_matches

    cfg = ctx.config
    matches = find_matches(*views, cfg, detector, mutual=sparse, keypoints=keypoints)
    threshold = ctx.inlier_threshold_px
    why = ""
    consensus = _sparse_consensus(ctx, matches) if sparse else None
    if model == "auto":
        inliers = consensus if consensus is not None else robust_inliers(matches, "affine", threshold_px=threshold,
                                                                         config=cfg, seed=ctx.seed)
        choice = choose_model(matches.moving_xy[inliers], matches.fixed_xy[inliers],
                              candidates=cfg.auto_models, config=cfg, prior_scale=ctx.expected_scale)
        model, why = choice.model, choice.why
    fit = estimate_transform(matches, model, threshold_px=threshold, config=cfg, seed=ctx.seed, why=why,
                             prior_scale=ctx.expected_scale, inliers=consensus)
    if model in ("translation", "rigid", "similarity"):  # how many matches would a more general map explain?
        try:
            if consensus is None:
                general = int(robust_inliers(matches, "affine", threshold_px=threshold, config=cfg,
                                             seed=ctx.seed).sum())
            else:  # an affine grown from the same consensus
                general = int(estimate_transform(matches, "affine", threshold_px=threshold, config=cfg,
                                                 inliers=consensus).inliers.sum())
        except AutoregError:
            general = 0
        fit = dataclasses.replace(fit, n_inliers_general=general)
    if consensus is not None:  # the a-contrario test counts the consensus's 2-point samples
        fit = dataclasses.replace(fit, consensus_model="similarity")
    return fit


def _bounded_by_optimum(ctx: Context, fit: Fit, optimum: Any, small_to_fixed: np.ndarray,
                        moving_to_small: np.ndarray, model: str, note: str) -> Fit:
    """A search fit whose refinement did not improve the held-out pixels keeps its pose, with a predicted error:
    its mean distance over the grid from the full refinement's ``optimum`` plus that optimum's predicted error
    (the distance to the truth is at most the sum at every grid point, so in the mean too). It keeps no prediction
    when a linear contrast does not explain the optimum (then biased) or the refinement did not converge to it."""
    cfg = ctx.config
    if not (optimum.converged and abs(optimum.correlation) >= cfg.min_refined_correlation
            and np.isfinite(optimum.predicted_error_px)):
        return fit.with_note(f"{note}; its optimum does not bound its error (converged: {optimum.converged}, "
                             f"|r| {abs(optimum.correlation):.3f})")
    matrix = small_to_fixed @ optimum.moving_to_fixed @ moving_to_small
    forward, _ = fit_through(model, matrix, ctx.moving.shape, ctx.expected_scale)
    fixed_px_per_small = float(np.sqrt(abs(np.linalg.det(small_to_fixed[:2, :2]))))
    own_error = float(optimum.predicted_error_px * fixed_px_per_small)
    moved = mean_grid_distance(fit.to_fixed, forward, ctx.moving.shape)
    bound = moved + own_error
    return dataclasses.replace(fit, refinement_error_px=bound, correlation=float(abs(optimum.correlation)),
                               contrast_checked=True).with_note(
        f"{note}; {moved:.3g} px from the full refinement's optimum ({model}, predicted error {own_error:.3g} px), "
        f"which bounds its error at {bound:.3g} px")


def fit_through(model: str, matrix: np.ndarray, moving_shape: tuple[int, int], prior_scale: float) -> tuple[Any, Any]:
    """``model``'s forward and backward transforms closest to a 3×3 matrix (least squares on a 7×7 grid).

    Parameters
    ----------
    model : str
        A global model.
    matrix : ndarray of shape (3, 3)
        Moving pixel (x, y) → fixed pixel (x, y).
    moving_shape : tuple of int
        ``(rows, cols)`` of the moving image, whose 7×7 grid the fit is made on.
    prior_scale : float
        The expected scale (fixed px per moving px), for models whose scale is fixed.
    """
    from .estimate import fit_pair

    moving_xy = grid_xy(moving_shape, 7)
    return fit_pair(model, moving_xy, apply_matrix(matrix, moving_xy), prior_scale=prior_scale)


def _from_views(views: tuple[Any, Any], k_fixed: float, k_moving: float) -> tuple[Any, Any]:
    """The views' levelled images area-averaged to ``k_fixed`` and ``k_moving`` of the original pixel density."""
    from .preprocess import rescaled

    out = []
    for view, k in zip(views, (k_fixed, k_moving)):
        density = 1.0 / np.sqrt(abs(np.linalg.det(view.levelled.to_original[:2, :2])))  # levelled px per original px
        out.append(rescaled(view.levelled, k / density))
    return out[0], out[1]


def _search_inputs(ctx: Context, views: tuple[Any, Any]) -> tuple[Any, Any]:
    """Levelled, area-reduced copies of both images for the search: the finer image at
    ``search_fixed_px_per_moving`` of its pixels per coarse pixel, same-resolution pairs at ``search_max_side``."""
    cfg = ctx.config
    ratio = ctx.expected_scale
    longest = max(*ctx.fixed.shape, *ctx.moving.shape)
    k_fixed = k_moving = min(1.0, cfg.search_max_side / longest)
    if ratio >= 2:  # the map is the coarser image: reduce the fixed one towards its pixel size
        k_fixed, k_moving = min(1.0, cfg.search_fixed_px_per_moving / ratio), min(1.0, cfg.search_max_side /
                                                                               max(ctx.moving.shape))
    elif ratio <= 0.5:
        k_fixed, k_moving = min(1.0, cfg.search_max_side / max(ctx.fixed.shape)), min(
            1.0, cfg.search_fixed_px_per_moving * ratio)
    return _from_views(views, k_fixed, k_moving)


def search_fit(ctx: Context, model: str, views: tuple[Any, Any],
               scale_band: tuple[float, float] | None = None, channels: tuple[str, ...] | None = None) -> Fit:
    """Rotation and translation (and scale, when only roughly known) found exhaustively by masked correlation.

    The search finds a similarity; ``translation`` and ``rigid`` keep the expected scale, every other model is
    refined from it as :data:`INTENSITY_MODEL` or itself (:func:`refine_fit`). ``scale_band`` sweeps the scale
    from that fraction of the expected one to that one instead (a map over part of the fixed field); ``channels``
    replaces ``search_channels``.
    """
    from .search import search_similarity

    fixed_small, moving_small = _search_inputs(ctx, views)
    for name, small in (("fixed", fixed_small), ("moving", moving_small)):
        if np.count_nonzero(np.isfinite(small.data)) < 16:
            raise EstimationError(f"The {name} image has too few valid pixels to search.")
    scale = ctx.expected_scale * np.sqrt(abs(np.linalg.det(fixed_small.from_original[:2, :2]))) / np.sqrt(
        abs(np.linalg.det(moving_small.from_original[:2, :2])))
    scale_range = 1.0 if ctx.scale_known or model in ("translation", "rigid") else ctx.config.search_scale_range
    if scale_band is not None:
        scale, scale_range = scale * np.sqrt(scale_band[0] * scale_band[1]), np.sqrt(scale_band[1] / scale_band[0])
    found = search_similarity(fixed_small.data, moving_small.data, scale=float(scale),
                              scale_range=float(scale_range), min_overlap=ctx.config.search_min_overlap,
                              sweep_px=ctx.config.search_sweep_px, prune_px=ctx.config.search_prune_px or None,
                              channels=channels or ctx.config.search_channels,
                              first_pass_gap=ctx.config.min_peak_gap, first_pass_ratio=ctx.config.min_peak_ratio,
                              first_pass_same_contrast=ctx.config.search_same_contrast,
                              first_pass_intensity_same_contrast=ctx.config.search_intensity_same_contrast,
                              deadline=ctx.deadline)
    matrix = fixed_small.to_original @ found.moving_to_fixed @ moving_small.from_original
    fitted = model if model in ("translation", "rigid", "similarity") else "similarity"
    forward, backward = fit_through(fitted, matrix, ctx.moving.shape, ctx.expected_scale)
    contrast = "" if found.channel in CROSS_CHANNELS else f" ({'inverted' if found.inverted else 'same'} contrast)"
    why = (f"search: rotation {found.angle_deg:.2f} deg, scale {np.sqrt(abs(np.linalg.det(matrix[:2, :2]))):.4g} "
           f"fixed px per moving px, correlation {found.score:.3f} on the {found.channel}{contrast}, peak gap "
           f"{found.peak_gap:.3f}, ratio {found.peak_ratio:.2f}")
    if model not in GLOBAL_MODELS and model != "auto":
        why += f"; {model} requested, intensity registration fits global models: {INTENSITY_MODEL}"
    return Fit(model=fitted, moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.zeros(0, bool),
               source="intensity", matches=Matches(np.zeros((0, 2)), np.zeros((0, 2))), why=why,
               correlation=found.score, peak_gap=found.peak_gap, peak_ratio=found.peak_ratio,
               inverted=found.inverted, channel=found.channel,
               candidates=tuple(fixed_small.to_original @ c.moving_to_fixed @ moving_small.from_original
                                for c in found.candidates),
               other_candidates=tuple((c.channel, fixed_small.to_original @ c.moving_to_fixed @
                                       moving_small.from_original) for c in found.others),
               matched_channel=refined_on(found.channel))


def refine_inputs(ctx: Context) -> tuple[Any, Any]:
    """Area-reduced copies for the refinement, with only a plane removed: the coarser image at most
    ``refine_max_side`` px a side, the finer one at ``refine_fine_per_coarse`` of its pixels per coarse pixel.

    Not the levelled views: the refinement fits the background and the coarser image's scan-line offsets itself
    (:func:`autoreg.refine.refine_matrix`), and aligning rows first — on each scan along its own fast axis —
    reshapes real content differently in the two images, which biased the fit by up to 2 px.
    """
    from .preprocess import reduced

    cfg = ctx.config
    moving_coarse = ctx.expected_scale >= 1
    coarse = ctx.moving if moving_coarse else ctx.fixed
    k_coarse = min(1.0, cfg.refine_max_side / max(coarse.shape))
    k_fine = min(1.0, cfg.refine_fine_per_coarse * k_coarse / ctx.resolution_ratio)
    k_fixed, k_moving = (k_fine, k_coarse) if moving_coarse else (k_coarse, k_fine)
    plane_only = dataclasses.replace(cfg, level_scans=False)
    return reduced(ctx.fixed, k_fixed, plane_only), reduced(ctx.moving, k_moving, plane_only)


#: How each pairing's refinement is described in ``Fit.why``.
_COMPARED = {"intensity": "by intensity", "edges": "against the fixed image's gradient magnitude",
             "derivative": "against the fixed image's derivative along the moving x axis"}


def _refinable_pairings(ctx: Context, channels: tuple[str, ...]) -> tuple[str, ...]:
    """The pairings of ``channels`` whose fixed term the footprint average of the refinement holds for: all but
    ``edges`` beyond ``max_edges_refine_ratio`` (a gradient magnitude is not linear in the image)."""
    return tuple(c for c in channels if c != "edges" or ctx.resolution_ratio <= ctx.config.max_edges_refine_ratio)


#: Refined models that contain a similarity: their refinement is checked against one (:func:`_restart_from_similarity`).
_RESTARTABLE = ("affine", "projective")


def _restart_from_similarity(term: np.ndarray, moving: np.ndarray, start: np.ndarray, model: str, refined: Any,
                             cfg: RegistrationConfig) -> tuple[Any, str]:
    """``refined`` (``model`` refined from ``start``), or ``model`` refined again from a similarity's optimum when
    that optimum explains the held-out pixels clearly better.

    A richer model contains the similarity, so at one optimum it explains the data at least as well. When a
    similarity refined from the same start (its closest similarity) explains the held-out pixels better by more
    than ``refine_restart_gain``, the richer model sits in another, worse optimum: on a lattice map 7.8× coarser
    than its topography, an affine start skewed by about a lattice period across the map stayed skewed (held out
    0.81, 8 px off; the similarity from the same start 0.97, and the affine from there 0.996, 0.01 px off). The
    richer model is then refined from the similarity's optimum and that result kept when it explains the held-out
    pixels better than ``refined`` (its ``holdout_before`` stays that of ``start``).

    Returns the refinement kept and a note for the fit's ``why`` (empty when ``refined`` is kept unchallenged).
    """
    from .refine import refine_matrix

    closest, _ = fit_through("similarity", start, moving.shape, 1.0)  # a similarity's scale is free: no prior
    bar = refined.holdout_after + cfg.refine_restart_gain
    if not bar < 1.0:  # no correlation passes it: nothing to check (a refinement that explains the map that well)
        return refined, ""
    try:  # stops after its half fit unless it passes the bar (the common case costs half a refinement)
        simple = refine_matrix(term, moving, np.asarray(closest.params, float), "similarity",
                               max_iterations=cfg.refine_max_iterations, require_improvement=True,
                               min_holdout_after=bar)
    except EstimationError:  # the similarity found no optimum near the start: nothing challenges the refinement
        return refined, ""
    if not (simple.improved and simple.holdout_after > bar):
        return refined, ""
    said = (f"; a similarity refined from the same start explained the held-out pixels better "
            f"({simple.holdout_after:.3f} vs {refined.holdout_after:.3f})")
    try:
        again = refine_matrix(term, moving, np.asarray(simple.moving_to_fixed, float), model,
                              max_iterations=cfg.refine_max_iterations)
    except EstimationError as err:
        return refined, f"{said}, but the {model} refined from it failed ({err}); the first optimum is kept"
    if not again.holdout_after > refined.holdout_after:
        return refined, (f"{said}, but the {model} refined from it did not ({again.holdout_after:.3f}); the first "
                         "optimum is kept")
    restarted = f"{said}: refined again from the similarity's optimum ({refined.holdout_after:.3f} -> "
    return dataclasses.replace(again, holdout_before=refined.holdout_before), f"{restarted}{again.holdout_after:.3f})"


def _richer_refinement(term: np.ndarray, moving: np.ndarray, refined: Any, model: str, richer: str,
                       cfg: RegistrationConfig) -> tuple[Any, str, str]:
    """``refined`` (``model``'s refinement), or ``richer`` refined from its optimum when the pixels prefer it: it
    explains the held-out pixels better *and* predicts a smaller error (the simpler model's prediction holds its
    misfit, how far the next richer model moves it beyond noise; the richer one's holds its extra parameters' spread).

    The keypoints chose ``model`` on a few noisy positions; a map 2× coarser matched at its own resolution leaves
    a 2 % anisotropy or shear (drift) inside their noise, and a similarity refined from there stays ~1 px off where
    an affine lands within 0.1 px. Not tried when ``model``'s misfit is nil (the richer model moved it no further than
    noise): on the tuning splits none of those 10 of 131 would have been replaced, and 99 of the others were.
    Returns the refinement kept, its model and a note for the fit's ``why``.
    """
    from .refine import refine_matrix

    if not refined.misfit_px > 0:  # no move beyond noise: more parameters only widen the spread it predicts
        return refined, model, ""
    try:
        rich = refine_matrix(term, moving, np.asarray(refined.moving_to_fixed, float), richer,
                             max_iterations=cfg.refine_max_iterations, require_improvement=True)
    except EstimationError:
        return refined, model, ""
    if not (rich.improved and abs(rich.correlation) >= cfg.min_refined_correlation
            and rich.predicted_error_px < refined.predicted_error_px):
        return refined, model, ""
    note = (f"; as {richer}, held-out correlation {refined.holdout_after:.3f} -> {rich.holdout_after:.3f} and "
            f"predicted error {refined.predicted_error_px:.3g} -> {rich.predicted_error_px:.3g} working px")
    return dataclasses.replace(rich, holdout_before=refined.holdout_before), richer, note


def _in_fixed_px(ctx: Context, fit: Fit, small: tuple[Any, Any], refined: Any,
                 model: str) -> tuple[Any, Any, float, float]:
    """A refinement made between the reduced copies, back in the original images: ``model``'s forward and backward
    transforms, its predicted error in fixed px, and how far it moved ``fit`` (fixed px, mean over the grid)."""
    fixed_small, moving_small = small
    matrix = fixed_small.to_original @ refined.moving_to_fixed @ moving_small.from_original
    forward, backward = fit_through(model, matrix, ctx.moving.shape, ctx.expected_scale)
    fixed_px_per_small = 1.0 / np.sqrt(abs(np.linalg.det(fixed_small.from_original[:2, :2])))
    predicted = float(refined.predicted_error_px * fixed_px_per_small)
    return forward, backward, predicted, mean_grid_distance(fit.to_fixed, forward, ctx.moving.shape)


def _consensus_of(fit: Fit, model: str) -> str:
    """The model whose robust consensus selected a refined fit's inliers (``Fit.consensus_model``)."""
    return fit.consensus_model or (fit.model if fit.source == "features" and model != fit.model else "")


def _through_fitted_contrast(ctx: Context, small: tuple[Any, Any], pose: np.ndarray, model: str,
                             prior_scale: float | None, **options: Any) -> tuple[Any, float]:
    """The reduced copies refined from ``pose`` with the fixed one mapped through the contrast fitted to the map
    there (:func:`autoreg.contrast_map.mapped_fixed`, ``refine_contrast_knots`` knots); ``options`` go to
    :func:`autoreg.refine.refine_matrix`. Returns the refinement and the fitted contrast's correlation; raises
    :class:`EstimationError` when either cannot be fitted (:class:`RefinementDiverged` included)."""
    from .contrast_map import mapped_fixed
    from .refine import refine_matrix

    cfg = ctx.config
    fixed_small, moving_small = small
    term, contrast_r = mapped_fixed(fixed_small.data, moving_small.data, pose, knots=cfg.refine_contrast_knots)
    refined = refine_matrix(term, moving_small.data, pose, model, prior_scale=prior_scale,
                            max_iterations=cfg.refine_max_iterations, **options)
    return refined, contrast_r


def _mapped_refinement(ctx: Context, fit: Fit, small: tuple[Any, Any], start: np.ndarray, model: str,
                       prior_scale: float | None, why_not_linear: str) -> tuple[Fit, float, float] | None:
    """``fit`` refined by intensity through a contrast fitted to the map (:func:`autoreg.contrast_map.mapped_fixed`),
    when no linear contrast explains it: ``refine_contrast_rounds`` times the contrast is fitted at the current
    pose and the intensities refined through it, each round kept only when it raises the held-out correlation.
    None when no round was kept (or the contrast could not be fitted). Returns the fit, marked ``contrast_mapped``
    (its pose the refined one, its prediction the refinement's; the verdict is never ``ok``), the last round's
    held-out correlation and how far it moved ``fit`` (fixed px, mean over the grid)."""
    cfg = ctx.config
    pose, kept, kept_r = start, None, float("nan")
    for _ in range(cfg.refine_contrast_rounds):
        try:
            refined, contrast_r = _through_fitted_contrast(ctx, small, pose, model, prior_scale,
                                                           require_improvement=True)
        except EstimationError:  # RefinementDiverged included: no optimum through this contrast near the pose
            break
        if not refined.improved:
            break
        kept, kept_r, pose = refined, contrast_r, np.asarray(refined.moving_to_fixed, float)
    if kept is None:
        return None
    forward, backward, predicted, moved = _in_fixed_px(ctx, fit, small, kept, model)
    mapped = dataclasses.replace(fit, model=model, moving_to_fixed=forward, fixed_to_moving=backward,
                               consensus_model=_consensus_of(fit, model), refinement_error_px=predicted,
                               correlation=float(abs(kept.correlation)), contrast_checked=False,
                               contrast_mapped=True, inverted=False).with_note(
        f"{why_not_linear}; refined by intensity through a contrast fitted to the map ({cfg.refine_contrast_knots} "
        f"knots, |r| {kept_r:.3f} with it) as {model} (held-out correlation {kept.holdout_before:.3f} -> "
        f"{kept.holdout_after:.3f}, moved {moved:.3g} px, predicted error {predicted:.3g} px)")
    return mapped, float(kept.holdout_after), moved


def _contrast_check(ctx: Context, small: tuple[Any, Any], linear: Any, model: str,
                    prior_scale: float | None) -> Any | None:
    """The half fit (:func:`autoreg.refine.refine_matrix`'s ``half_fit_only``) from the linear refinement
    ``linear``'s optimum through a contrast fitted to the map there, when it explains the held-out pixels better
    than the linear contrast did; None when it explains them no better (or cannot be fitted). A check, not a
    result: it costs about a quarter of a mapped refinement."""
    try:
        half, _ = _through_fitted_contrast(ctx, small, np.asarray(linear.moving_to_fixed, float), model,
                                           prior_scale, half_fit_only=True)
    except EstimationError:  # RefinementDiverged included: no optimum through that contrast near the pose
        return None
    return half if half.holdout_after > linear.holdout_after else None


def refine_fit(ctx: Context, fit: Fit, model: str, richer: str | None = None) -> Fit:
    """Refine a global fit as ``model`` where the information is (:func:`autoreg.refine.refine_matrix`).

    The refinement compares the coarser image with the finer one averaged over each coarse pixel's footprint, on
    the fit's ``matched_channel`` (:func:`~autoreg.search.fixed_term`): intensities, or for a search match on a
    cross-modal pairing the moving intensity against that pairing's fixed term — the fixed image's slope along the
    moving x axis (linear in the image, so the footprint average holds at any pixel size) or its gradient
    magnitude (only up to ``max_edges_refine_ratio``). It is kept only when it raises the correlation on held-out
    pixels and a linear contrast explains the map (robust |r| at least ``min_refined_correlation``); then the fit
    carries the refinement's predicted error. An affine or projective refinement is first checked against a
    similarity from the same start, and refined again from the similarity's optimum when that explains the held-out
    pixels clearly better (:func:`_restart_from_similarity`). When the intensities' contrast is not linear, or their
    refinement diverges, the cross-modal pairings are refined too, and the one a linear contrast explains best is
    kept on the same terms and becomes the fit's ``matched_channel`` (after a divergence its predicted error is at
    least how far it moved the fit). Otherwise the fit keeps its pose, saying why: with the refinement's correlation and
    ``contrast_checked`` when only the contrast failed (the verdict judges it), with an infinite predicted error
    when the refinement diverged from it (the data contradict it), unchanged otherwise — but a search fit whose
    refinement did not raise the held-out correlation (its pose is at the optimum already) is bounded by the full
    refinement's optimum (:func:`_bounded_by_optimum`), as nothing else predicts its error. With ``richer`` (a model the
    keypoints did not choose but the user left open), an intensity refinement is followed by one of that model from
    its optimum, which replaces it when the pixels prefer it (:func:`_richer_refinement`). A linear refinement of the
    intensities whose prediction is precise enough for ``ok`` is checked through a contrast fitted to the map
    (:func:`_contrast_check`, from its optimum): when that explains the held-out pixels better, how far it moves
    the pose bounds the error, as the prediction assumed a linear contrast.
    """
    from .evidence import tolerance_px
    from .refine import MODELS as REFINABLE
    from .refine import RefinementDiverged, refine_matrix

    cfg = ctx.config
    if not cfg.refine or model not in REFINABLE or fit.model not in GLOBAL_MODELS:
        return fit
    channel = fit.matched_channel
    if not _refinable_pairings(ctx, (channel,)):
        return fit.with_note(f"not refined (the gradient magnitude of a map {ctx.resolution_ratio:.3g}× coarser is "
                             f"not the average of the fixed one's; up to {cfg.max_edges_refine_ratio:g}× only)")
    fixed_small, moving_small = refine_inputs(ctx)
    start = fixed_small.from_original @ np.asarray(fit.moving_to_fixed.params, float) @ moving_small.to_original
    small_scale = ctx.expected_scale * np.sqrt(abs(np.linalg.det(fixed_small.from_original[:2, :2])) / abs(
        np.linalg.det(moving_small.from_original[:2, :2])))

    terms: dict[str, np.ndarray] = {}

    def term_of(pairing: str) -> np.ndarray:
        # a derivative's direction is the moving x axis at the start, which the refinement turns by a fraction of
        # a degree (its cosine changes by less than 1e-4)
        if pairing not in terms:
            terms[pairing] = fixed_term(fixed_small.data, pairing, start[:2, 0])
        return terms[pairing]

    prior_scale = float(small_scale) if model in ("translation", "rigid") else None

    def run(pairing: str, min_holdout_after: float = -1.0) -> Any:
        return refine_matrix(term_of(pairing), moving_small.data, start, model, prior_scale=prior_scale,
                             max_iterations=cfg.refine_max_iterations, require_improvement=True,
                             min_holdout_after=min_holdout_after)

    diverged: RefinementDiverged | None = None
    notes = ""
    try:
        refined = run(channel)
    except RefinementDiverged as err:
        diverged = err
    except EstimationError as err:
        return fit.with_note(f"not refined ({err})")
    if diverged is None and model in _RESTARTABLE:
        refined, notes = _restart_from_similarity(term_of(channel), moving_small.data, start, model, refined, cfg)
    if diverged is None and not refined.improved:
        note = f"not refined (held-out correlation {refined.holdout_before:.3f} -> {refined.holdout_after:.3f}){notes}"
        if fit.source != "intensity":  # a feature fit keeps its keypoints' error prediction
            return fit.with_note(note)
        # nothing else predicts a search pose's error: where the intensities put their optimum bounds it
        try:  # the full fit alone, iterated until it converges (refine_matrix's default)
            optimum = refine_matrix(term_of(channel), moving_small.data, start, model, prior_scale=prior_scale,
                                    holdout=False)
        except EstimationError as err:  # RefinementDiverged included: no optimum near the pose
            return fit.with_note(f"{note}; no optimum to bound its error ({err})")
        return _bounded_by_optimum(ctx, fit, optimum, fixed_small.to_original, moving_small.from_original, model,
                                   note)
    prefix = ""
    if diverged is not None or not abs(refined.correlation) >= cfg.min_refined_correlation:
        linear_r = math.nan if diverged is not None else float(abs(refined.correlation))
        # the contrast is not linear: the cross-modal pairing whose terms a linear contrast explains best, if one
        # does (an error signal against the fixed slope, an edge map against its gradient magnitude). Gradient
        # magnitudes on both sides are not tried: on the calibration split a deflection map's matched a
        # topography's at |r| 0.88, within the non-monotonic pairs' 0.81-0.99, with its optimum 1.8 px off and
        # 0.3 px predicted (a pairing that does not hold still has a sharp optimum, but a biased one)
        others = _refinable_pairings(ctx, CROSS_CHANNELS) if channel == "intensity" else ()
        explained = []
        for other in others:
            try:
                attempt = run(other, cfg.refine_pairing_min_holdout)
            except EstimationError:  # RefinementDiverged included: these terms contradict the fit
                continue
            if attempt.improved and abs(attempt.correlation) >= cfg.min_refined_correlation:
                explained.append((abs(attempt.correlation), other, attempt))
        if not explained and channel == "intensity" and cfg.refine_contrast_knots:
            mapped = _mapped_refinement(ctx, fit, (fixed_small, moving_small), start, model, prior_scale,
                                        f"the intensity refinement diverged ({diverged})" if diverged is not None
                                        else f"a linear contrast explains the map with |r| {linear_r:.3f} only")
            # a move within its own predicted error (times ``disagreement_errors``) is no evidence of a better
            # pose: on synthetic terraces a right search pose was moved 2.7 px, predicted 2.6 px
            if mapped is not None:
                mapped_fit, _, moved_px = mapped
                if moved_px > cfg.disagreement_errors * mapped_fit.refinement_error_px:
                    return mapped_fit
        if not explained and diverged is not None:
            # the data put their optimum far from this fit, or have none near it, and no other pairing explains
            # the map there: whatever predicted its error (keypoint residuals) is contradicted, and the fit keeps
            # no error prediction
            what = "intensities" if channel == "intensity" else f"{channel} pairing's terms"
            return dataclasses.replace(fit, refinement_error_px=math.inf).with_note(
                f"not refined ({diverged}); the {what} contradict this fit, so its error is unknown")
        if not explained:
            # its optimum is biased when a linear contrast does not explain the map (a deflection or
            # non-monotonic channel): the pose found without it is kept, and the verdict hears the contrast is
            # not linear
            return dataclasses.replace(fit, correlation=linear_r, contrast_checked=True).with_note(
                f"not refined (a linear contrast explains the map with |r| {linear_r:.3f} < "
                f"{cfg.min_refined_correlation:g}; the refinement's optimum would be biased)")
        best_r, channel, refined = max(explained, key=lambda t: t[0])
        said = (f"the intensity refinement diverged ({diverged})" if diverged is not None
                else f"a linear contrast explains the intensities with |r| {linear_r:.3f} only")
        prefix = f"{said}, the {channel} pairing with {best_r:.3f} (best of {', '.join(others)}); "
    elif richer is not None and richer != model:
        refined, model, richer_note = _richer_refinement(term_of(channel), moving_small.data, refined, model,
                                                         richer, cfg)
        notes += richer_note
    forward, backward, predicted, moved = _in_fixed_px(ctx, fit, (fixed_small, moving_small), refined, model)
    note = (f"{prefix}refined {_COMPARED[channel]} as {model} (held-out correlation {refined.holdout_before:.3f} "
            f"-> {refined.holdout_after:.3f}, moved {moved:.3g} px, predicted error {predicted:.3g} px){notes}")
    if diverged is not None and moved > predicted:
        # the intensities contradicted the fit and another pairing moved it: nothing says the move found the
        # optimum rather than a nearby one, so the move bounds the error
        predicted = moved
        note += "; after the intensities' divergence, the move bounds the error"
    factor = ctx.config.disagreement_errors
    if fit.source == "features" and moved > factor * predicted:
        from .evidence import predicted_error_px

        # Two estimates from independent evidence (keypoints, intensities): when they disagree by more than
        # ``disagreement_errors`` (2) times their combined predicted errors, one of them is off by about their
        # disagreement, and nothing says which. Their combined error is at least the refinement's: the features'
        # leave-one-out estimate is needed only when the move exceeds that many times the refinement's alone.
        features_error = predicted_error_px(fit, ctx.moving.shape, truncation_px=ctx.inlier_threshold_px,
                                            prior_scale=ctx.expected_scale, config=ctx.config)
        if moved > factor * np.hypot(predicted, features_error):
            predicted = moved
            note += f"; it disagrees with the features (predicted {features_error:.3g} px), which bounds the error"
    ok_bound = cfg.ok_error_fraction * tolerance_px(cfg, ctx.expected_scale)
    if channel == "intensity" and cfg.refine_contrast_knots and predicted <= ok_bound:
        # the prediction assumes the contrast is linear: where a contrast fitted to the map explains the held-out
        # pixels better and moves the pose, the linear optimum is biased by about that move (a folded clock photo
        # on the tuning material: |r| 0.995, predicted 1.36 px, 2.89 px off; a half fit through the fitted contrast
        # moved it 2.24 px, to 0.97 px off), and the move bounds its error
        check = _contrast_check(ctx, (fixed_small, moving_small), refined, model, prior_scale)
        if check is not None:
            check_forward = _in_fixed_px(ctx, fit, (fixed_small, moving_small), check, model)[0]
            apart = mean_grid_distance(forward, check_forward, ctx.moving.shape)
            note += (f"; a contrast fitted to the map explains the held-out pixels better ({refined.holdout_after:.3f}"
                     f" -> {check.holdout_after:.3f}) and moves the pose {apart:.3g} px")
            if apart > predicted:
                predicted = apart
                note += ", which bounds the error"
    if channel == "intensity" and cfg.refine_contrast_knots and predicted > ok_bound:
        # a linear contrast explains the map, but too loosely for ok: a contrast it cannot follow (terraces that
        # each take their own value) gives a sharp yet biased optimum; the contrast fitted to the map competes
        # from the same start, and replaces it when it explains the held-out pixels better and predicts less error
        mapped = _mapped_refinement(ctx, fit, (fixed_small, moving_small), start, model, prior_scale,
                                    f"a linear contrast explains the map (|r| {abs(refined.correlation):.3f}) with a "
                                    f"predicted error of {predicted:.3g} px")
        if mapped is not None:
            mapped_fit, held_out, _ = mapped
            if held_out > refined.holdout_after and mapped_fit.refinement_error_px < predicted:
                return mapped_fit
    # a slope or an edge map has no contrast polarity of its own
    inverted = bool(refined.gain < 0) if channel == "intensity" else False
    return dataclasses.replace(fit, model=model, moving_to_fixed=forward, fixed_to_moving=backward,
                               consensus_model=_consensus_of(fit, model), refinement_error_px=predicted,
                               correlation=float(abs(refined.correlation)), contrast_checked=True,
                               matched_channel=channel, inverted=inverted).with_note(note)


def points_fit(ctx: Context, points: tuple[np.ndarray, np.ndarray], model: str) -> tuple[Fit, bool]:
    """Fit the user's control points (``auto``: the simplest adequate model they determine).

    Returns the fit and whether the points just determine the model (no redundancy to check them with).
    """
    from .control_points import fit_points
    from .estimate import choose_model
    from .models import min_points

    cfg = ctx.config
    fixed_xy, moving_xy = points
    why = "control points"
    if model == "auto":
        candidates = tuple(m for m in cfg.auto_models
                           if len(fixed_xy) >= min_points(m, polynomial_order=cfg.polynomial_order))
        try:
            choice = choose_model(moving_xy, fixed_xy, candidates=candidates, config=cfg,
                                  prior_scale=ctx.expected_scale)
            model, why = choice.model, "control points; " + choice.why
        except AutoregError:
            model = max((m for m in candidates if m in GLOBAL_MODELS), key=GLOBAL_MODELS.index)
            why = f"control points; too few to compare models, the most general that they determine: {model}"
    fit = dataclasses.replace(fit_points(fixed_xy, moving_xy, model, cfg, prior_scale=ctx.expected_scale), why=why)
    exact = len(fixed_xy) == min_points(model, polynomial_order=cfg.polynomial_order)
    return fit, exact
