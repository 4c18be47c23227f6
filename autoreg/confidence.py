"""The verdict: a pure function from scores to ``ok`` / ``low_confidence`` / ``failed`` with reasons.

Every reason starts with a stable slug (``"few_inliers: 5 < 15"``) that scripts may match on.
"""

from __future__ import annotations

import math

from .config import RegistrationConfig
from .datatypes import Scores, Verdict

__all__ = ["contest_stands_out", "judge", "peak_stands_out"]


def _bad(value: float) -> bool:
    return not math.isfinite(value)


def peak_stands_out(gap: float, ratio: float, cfg: RegistrationConfig) -> bool:
    """The search's best correlation peak stands out of its sweep (``min_peak_gap`` and ``min_peak_ratio``)."""
    return gap > cfg.min_peak_gap and ratio > cfg.min_peak_ratio


def contest_stands_out(gap: float, cfg: RegistrationConfig) -> bool:
    """The contest of the search's refined poses found one that stands out (``min_contest_gap``)."""
    return gap > cfg.min_contest_gap


def _search_evidence(s: Scores, cfg: RegistrationConfig) -> str:
    """What a search's pose stands on: ``"peak"`` (the sweep's peak stands out), ``"contest"`` (only its refined
    poses' contest does: evidence, but not calibrated for ``ok``) or ``"none"``."""
    if peak_stands_out(s.peak_gap, s.peak_ratio, cfg):
        return "peak"
    return "contest" if contest_stands_out(s.contest_gap, cfg) else "none"


def _failures(s: Scores, cfg: RegistrationConfig, source: str) -> list[str]:
    reasons = []
    if source == "features" and s.n_inliers < cfg.min_inliers:
        reasons.append(f"few_inliers: {s.n_inliers} < {cfg.min_inliers}")
    if source == "features" and not s.log10_nfa <= cfg.max_log10_nfa:
        reasons.append(f"no_evidence: the feature consensus could arise by chance (log10 NFA {s.log10_nfa:.2f} > "
                       f"{cfg.max_log10_nfa:g})")
    if source == "intensity" and _search_evidence(s, cfg) == "none":
        contested = ("" if _bad(s.contest_gap) else
                     f"; its refined poses' contest {s.contest_gap:.3f}, needs > {cfg.min_contest_gap:g}")
        reasons.append(f"no_evidence: the correlation peak does not stand out (gap {s.peak_gap:.3f}, ratio "
                       f"{s.peak_ratio:.2f}; needs > {cfg.min_peak_gap:g} and > {cfg.min_peak_ratio:g}{contested})")
    if _bad(s.overlap_fraction) or s.overlap_fraction <= 0:
        reasons.append("no_overlap: the warped moving image does not overlap the fixed image")
    if not _bad(s.scale) and not _bad(s.expected_scale) and s.expected_scale > 0:
        ratio = s.scale / s.expected_scale
        if ratio > cfg.max_scale_ratio or ratio < 1 / cfg.max_scale_ratio:
            reasons.append(f"implausible_scale: {s.scale:.3g} vs expected {s.expected_scale:.3g} fixed px per moving px")
    if _bad(s.scale) or s.scale <= 0:
        reasons.append("degenerate_transform: the transform collapses the image")
    return reasons


def _full_overlap_gap(s: Scores) -> tuple[float, float]:
    """The share of the image the shift check's gap was measured over (1 when unknown), and the gap over a full
    overlap that is as significant (the search ranks its poses the same way,
    :func:`autoreg.search._full_overlap_equivalent`): a difference of correlations over ``n`` pixels spreads as
    ``1 / sqrt(n)``, so over a fraction ``f`` of the image it counts ``sqrt(f)`` as much. A NaN gap stays NaN
    (unmeasured: no doubt raised)."""
    fraction = s.overlap_fraction if math.isfinite(s.overlap_fraction) and s.overlap_fraction > 0 else 1.0
    share = min(1.0, fraction)
    return share, s.shift_peak_gap * math.sqrt(share)


def _accuracy_doubts(s: Scores, cfg: RegistrationConfig, exact_points: bool, refined: bool) -> list[str]:
    if _bad(s.uncertainty_px):
        if exact_points:
            return []
        if s.uncertainty_px == math.inf:
            return [("accuracy_unknown: the intensity refinement diverged from this fit, contradicting its error "
                     "prediction")]
        return ["accuracy_unknown: no error prediction for this fit"]
    reasons = []
    if s.uncertainty_px > cfg.ok_error_fraction * s.tolerance_px:
        reasons.append(f"imprecise: predicted error {s.uncertainty_px:.3g} px > {cfg.ok_error_fraction:g} × tolerance "
                       f"{s.tolerance_px:.3g} px")
    if refined and not abs(s.intensity_correlation) >= cfg.min_refined_correlation:
        reasons.append(f"unmodelled_contrast: the intensity refinement explains the map with |r| "
                       f"{abs(s.intensity_correlation):.3f} < {cfg.min_refined_correlation:g}; its error prediction "
                       "assumes a linear contrast")
    return reasons


def _doubts(s: Scores, cfg: RegistrationConfig, source: str, predicted_by_refinement: bool) -> list[str]:
    reasons = []
    if source == "intensity" and _search_evidence(s, cfg) == "contest":
        reasons.append(f"weak_evidence: the sweep's peak did not stand out (gap {s.peak_gap:.3f}, ratio "
                       f"{s.peak_ratio:.2f}); refined, this pose stands {s.contest_gap:.3f} above the others (Fisher "
                       f"z, needs > {cfg.min_contest_gap:g}), a test not calibrated for ok")
    if source == "features" and s.n_inliers < cfg.ok_inliers and not predicted_by_refinement:
        reasons.append(f"few_inliers: {s.n_inliers} < {cfg.ok_inliers}")
    if source == "features" and s.n_inliers_general > 0 and s.n_inliers < cfg.min_model_support * s.n_inliers_general:
        reasons.append(f"model_too_simple: it explains {s.n_inliers} matches where an affine map explains "
                       f"{s.n_inliers_general}")
    if source == "features" and not _bad(s.inlier_spread) and s.inlier_spread < cfg.min_inlier_spread:
        reasons.append(f"clustered_inliers: their hull covers {s.inlier_spread:.3f} of the overlap "
                       f"< {cfg.min_inlier_spread}; the map is extrapolated elsewhere")
    share, full_gap = _full_overlap_gap(s)
    if source in ("features", "intensity") and full_gap <= cfg.min_shift_peak_gap:
        reasons.append(f"ambiguous: a pose shifted by more than {cfg.shift_exclusion_tolerances:g} tolerances "
                       f"correlates within {s.shift_peak_gap:.3f} of this one over {share:.2f} "
                       f"of the image ({full_gap:.3f} over all of it; needs > {cfg.min_shift_peak_gap:g}; "
                       "repeated or periodic content)")
    if source == "features" and not _bad(s.inlier_ratio) and s.inlier_ratio < cfg.min_inlier_ratio:
        reasons.append(f"low_inlier_ratio: {s.inlier_ratio:.3f} < {cfg.min_inlier_ratio}")
    if not _bad(s.overlap_fraction) and 0 < s.overlap_fraction < cfg.min_overlap_fraction:
        reasons.append(f"small_overlap: {s.overlap_fraction:.3f} < {cfg.min_overlap_fraction}")
    # correlation by its magnitude: channels may invert (height vs phase), which the JSON reports separately; each
    # image's own background (a tilt, a bow) taken out first, as SPM users level before comparing
    after, before = s.pearson_detrended, s.pearson_before_detrended
    if _bad(after):
        reasons.append("pearson_undefined: no variation over the overlap")
    elif abs(after) < cfg.min_pearson:
        reasons.append(f"low_correlation: |pearson| {abs(after):.3f} < {cfg.min_pearson} once each image's "
                       f"background is removed (raw {abs(s.pearson):.3f})")
    elif (not _bad(before) and abs(after) - abs(before) < cfg.min_pearson_gain
          and abs(before) < cfg.no_improvement_below):
        reasons.append(f"no_improvement: |pearson| {abs(after):.3f} vs {abs(before):.3f} before (backgrounds "
                       "removed)")
    if not _bad(s.shear) and s.shear > cfg.max_shear:
        reasons.append(f"implausible_shear: {s.shear:.3f} > {cfg.max_shear}")
    return reasons


def judge(scores: Scores, config: RegistrationConfig | None = None, *, source: str = "features",
          exact_points: bool = False, refined: bool = False, predicted_by_refinement: bool = False,
          contrast_mapped: bool = False) -> Verdict:
    """Turn scores into a verdict.

    Parameters
    ----------
    scores : Scores
    config : RegistrationConfig, optional
    source : str
        ``features``, ``intensity`` or ``points``; inlier rules apply to features only.
    exact_points : bool
        True when control points just determine the model (no redundancy to check them with).
    refined : bool
        True when the intensity refinement ran to its optimum on the fit (``Fit.contrast_checked``): its
        correlation is then judged, whether or not its pose was kept.
    predicted_by_refinement : bool
        True when ``uncertainty_px`` is the intensity refinement's prediction (``Fit.refinement_error_px``), not
        one from the feature inliers: fewer than ``ok_inliers`` of them is then no doubt of its own.
    contrast_mapped : bool
        True when the fit was refined through a contrast fitted to the map (``Fit.contrast_mapped``): never ``ok``.

    Returns
    -------
    Verdict
        ``failed`` if any hard rule fails, else ``low_confidence`` if any soft rule does, else ``ok``.

    Examples
    --------
    >>> from autoreg.datatypes import Scores
    >>> judge(Scores(n_matches=100, n_inliers=3, overlap_fraction=1.0, scale=1.0, expected_scale=1.0)).level
    'failed'
    """
    cfg = config or RegistrationConfig()
    failures = _failures(scores, cfg, source)
    doubts = _doubts(scores, cfg, source, predicted_by_refinement) + _accuracy_doubts(scores, cfg, exact_points,
                                                                                      refined)
    if contrast_mapped:
        doubts.append("mapped_contrast: refined through a non-linear contrast fitted to the map (no linear one "
                      "explains it); that error prediction is not calibrated for ok")
    if failures:
        return Verdict("failed", tuple(failures + doubts))
    if exact_points:
        doubts.append("unverifiable_points: exactly as many points as the model needs; residuals cannot check them")
    return Verdict("low_confidence" if doubts else "ok", tuple(doubts))
