"""The verdict rules: each slug fires on its condition, and only then."""

import dataclasses
import math

import pytest

from autoreg.confidence import judge
from autoreg.config import RegistrationConfig
from autoreg.datatypes import Scores

GOOD = Scores(n_matches=400, n_inliers=200, inlier_ratio=0.5, rmse_px=1.0, pearson=0.9, pearson_before=0.2,
              pearson_detrended=0.9, pearson_before_detrended=0.2, overlap_fraction=0.9, inlier_spread=0.5, scale=1.0, expected_scale=1.0, shear=0.01,
              working_pixel_px=1.0, log10_nfa=-50.0, uncertainty_px=0.3, tolerance_px=2.0)
SEARCHED = dataclasses.replace(GOOD, n_matches=0, n_inliers=0, inlier_ratio=float("nan"), log10_nfa=float("nan"),
                               inlier_spread=float("nan"), peak_gap=0.4, peak_ratio=2.0)


def test_good_scores_are_ok():
    verdict = judge(GOOD)
    assert verdict.level == "ok"
    assert verdict.reasons == ()


@pytest.mark.parametrize(
    ("change", "level", "slug"),
    [
        ({"n_inliers": 3}, "failed", "few_inliers"),
        ({"n_inliers": 10}, "low_confidence", "few_inliers"),
        ({"overlap_fraction": 0.0}, "failed", "no_overlap"),
        ({"overlap_fraction": 0.05}, "low_confidence", "small_overlap"),
        ({"scale": 5.0}, "failed", "implausible_scale"),
        ({"scale": 0.2}, "failed", "implausible_scale"),
        ({"log10_nfa": 0.5}, "failed", "no_evidence"),
        ({"log10_nfa": -0.5}, "failed", "no_evidence"),
        ({"log10_nfa": float("nan")}, "failed", "no_evidence"),
        ({"uncertainty_px": 2.5}, "low_confidence", "imprecise"),
        ({"uncertainty_px": float("nan")}, "low_confidence", "accuracy_unknown"),
        ({"pearson_detrended": 0.1}, "low_confidence", "low_correlation"),
        ({"pearson_detrended": float("nan")}, "low_confidence", "pearson_undefined"),
        ({"pearson_detrended": 0.5, "pearson_before_detrended": 0.6}, "low_confidence", "no_improvement"),
        ({"inlier_ratio": 0.01}, "low_confidence", "low_inlier_ratio"),
        ({"shear": 0.5}, "low_confidence", "implausible_shear"),
        ({"inlier_spread": 0.01}, "low_confidence", "clustered_inliers"),
        ({"shift_peak_gap": 0.05}, "low_confidence", "ambiguous"),
        ({"shift_peak_gap": -0.2}, "low_confidence", "ambiguous"),
    ],
)
def test_each_rule_fires_with_its_slug(change, level, slug):
    verdict = judge(dataclasses.replace(GOOD, **change))
    assert verdict.level == level
    assert any(r.startswith(slug + ":") for r in verdict.reasons), verdict.reasons


def test_the_tolerance_is_the_one_the_scores_carry():
    coarse = dataclasses.replace(GOOD, uncertainty_px=6.0, tolerance_px=12.8)  # half a 25.6-px map pixel
    assert judge(coarse).level == "ok"
    assert judge(dataclasses.replace(coarse, uncertainty_px=13.0)).level == "low_confidence"


def test_ok_needs_the_predicted_error_well_inside_the_tolerance():
    # a prediction is a typical error: one just under the tolerance is not a promise kept (config.ok_error_fraction)
    cfg = RegistrationConfig()
    inside = dataclasses.replace(GOOD, uncertainty_px=0.95 * cfg.ok_error_fraction * 2.0, tolerance_px=2.0)
    assert judge(inside, cfg).level == "ok"
    near = dataclasses.replace(inside, uncertainty_px=1.05 * cfg.ok_error_fraction * 2.0)
    verdict = judge(near, cfg)
    assert verdict.level == "low_confidence"
    assert any(r.startswith("imprecise:") for r in verdict.reasons), verdict.reasons
    assert judge(near, cfg.with_(ok_error_fraction=1.0)).level == "ok"


def test_an_intensity_match_needs_a_peak_that_stands_out():
    assert judge(SEARCHED, source="intensity").level == "ok"
    for change in ({"peak_gap": 0.05}, {"peak_ratio": 1.1}, {"peak_gap": float("nan")}):
        verdict = judge(dataclasses.replace(SEARCHED, **change), source="intensity")
        assert verdict.level == "failed" and verdict.reasons[0].startswith("no_evidence:"), verdict


def test_a_contest_of_refined_poses_is_evidence_but_never_ok():
    cfg = RegistrationConfig()
    weak = dataclasses.replace(SEARCHED, peak_gap=0.05, peak_ratio=1.05)
    above = dataclasses.replace(weak, contest_gap=cfg.min_contest_gap + 0.01)
    verdict = judge(above, cfg, source="intensity")
    assert verdict.level == "low_confidence"
    assert [r.split(":")[0] for r in verdict.reasons] == ["weak_evidence"], verdict
    for gap in (cfg.min_contest_gap, cfg.min_contest_gap - 0.5, float("nan")):  # at the bound: not above it
        verdict = judge(dataclasses.replace(weak, contest_gap=gap), cfg, source="intensity")
        assert verdict.level == "failed" and verdict.reasons[0].startswith("no_evidence:"), (gap, verdict)
    # a sweep peak that stands out needs no contest, and its contest (never run then) is no doubt
    assert judge(dataclasses.replace(SEARCHED, contest_gap=cfg.min_contest_gap + 1), cfg, source="intensity").level \
        == "ok"
    # features are judged on their consensus, never on a contest
    assert judge(dataclasses.replace(GOOD, contest_gap=5.0), cfg).level == "ok"


def test_inverted_contrast_is_judged_by_the_magnitude_of_the_correlation():
    inverted = dataclasses.replace(GOOD, pearson_detrended=-0.85, pearson_before_detrended=-0.1,
                                   inverted_contrast=True)
    assert judge(inverted).level == "ok"
    assert judge(dataclasses.replace(inverted, pearson_detrended=-0.1)).level == "low_confidence"


def test_the_correlations_judged_are_those_with_the_backgrounds_removed():
    """A tilt the two scans do not share makes the raw correlation low (or flips its sign); only the correlation
    with each image's background removed is judged, and the reason quotes both."""
    tilted = dataclasses.replace(GOOD, pearson=0.05, pearson_before=-0.6)
    assert judge(tilted).level == "ok"
    verdict = judge(dataclasses.replace(GOOD, pearson=0.95, pearson_detrended=0.2))
    assert verdict.level == "low_confidence"
    expected = "low_correlation: |pearson| 0.200 < 0.3 once each image's background is removed (raw 0.950)"
    assert verdict.reasons == (expected,)


def test_points_are_exempt_from_inlier_rules_but_flagged_when_exact():
    few = dataclasses.replace(GOOD, n_matches=3, n_inliers=3, inlier_ratio=1.0, rmse_px=0.0, log10_nfa=float("nan"))
    assert judge(few, source="points").level == "ok"
    exact = judge(few, source="points", exact_points=True)
    assert exact.level == "low_confidence"
    assert exact.reasons[-1].startswith("unverifiable_points:")


def test_thresholds_come_from_the_config():
    strict = RegistrationConfig(ok_inliers=500)
    assert judge(GOOD, strict).level == "low_confidence"


def test_a_model_too_simple_for_the_matches_is_flagged():
    verdict = judge(dataclasses.replace(GOOD, n_inliers=40, n_inliers_general=114))
    assert verdict.level == "low_confidence"
    assert verdict.reasons[0].startswith("model_too_simple:")
    assert judge(dataclasses.replace(GOOD, n_inliers=100, n_inliers_general=114)).level == "ok"


def test_a_refined_fit_needs_its_intensity_model_to_explain_the_map():
    # the refinement's error prediction assumes a linear contrast (config.min_refined_correlation)
    cfg = RegistrationConfig()
    limit = cfg.min_refined_correlation
    explained = dataclasses.replace(GOOD, intensity_correlation=-(limit + 0.05))  # inverted contrast counts
    assert judge(explained, cfg, refined=True).level == "ok"
    unexplained = dataclasses.replace(GOOD, intensity_correlation=limit - 0.05)
    verdict = judge(unexplained, cfg, refined=True)
    assert verdict.level == "low_confidence"
    assert any(r.startswith("unmodelled_contrast:") for r in verdict.reasons), verdict.reasons
    # judged only when the refinement produced the fit (an unrefined fit's correlation is the search peak's)
    assert judge(unexplained, cfg, refined=False).level == "ok"
    assert judge(dataclasses.replace(GOOD, intensity_correlation=float("nan")), cfg, refined=True).level != "ok"


def test_a_fit_refined_through_a_fitted_contrast_is_never_ok():
    # strategies._mapped_refinement: the pose is refined, its error prediction not calibrated for ok
    verdict = judge(GOOD, contrast_mapped=True)
    assert verdict.level == "low_confidence"
    assert verdict.reasons == (("mapped_contrast: refined through a non-linear contrast fitted to the map (no linear "
                                "one explains it); that error prediction is not calibrated for ok"),)
    assert judge(dataclasses.replace(GOOD, n_inliers=3), contrast_mapped=True).level == "failed"


def test_a_fit_the_refinement_diverged_from_has_unknown_accuracy():
    # strategies.refine_fit marks it with an infinite predicted error: never ok, and the reason says why
    verdict = judge(dataclasses.replace(GOOD, uncertainty_px=math.inf))
    assert verdict.level == "low_confidence"
    assert verdict.reasons == (("accuracy_unknown: the intensity refinement diverged from this fit, contradicting "
                                "its error prediction"),)
    unknown = judge(dataclasses.replace(GOOD, uncertainty_px=math.nan))
    assert unknown.reasons == ("accuracy_unknown: no error prediction for this fit",)


def test_an_unmeasured_or_unrivalled_pose_is_not_ambiguous():
    # NaN: the overlap was too small to slide; inf: no other peak in the window
    for change in ({"shift_peak_gap": float("nan")}, {"shift_peak_gap": float("inf")}):
        assert judge(dataclasses.replace(GOOD, **change)).level == "ok", change
    shifted = dataclasses.replace(SEARCHED, shift_peak_gap=0.02)
    assert judge(shifted, source="intensity").level == "low_confidence"
    assert judge(dataclasses.replace(GOOD, shift_peak_gap=0.02), source="points").level == "ok"


def test_an_overlap_of_10_to_20_percent_alone_is_no_doubt_but_a_smaller_one_is():
    # the predicted error covers the whole moving image (extrapolation included); below 10 % nothing was measured
    cfg = RegistrationConfig()
    assert judge(dataclasses.replace(GOOD, overlap_fraction=0.15), cfg).level == "ok"
    assert judge(dataclasses.replace(GOOD, overlap_fraction=1.01 * cfg.min_overlap_fraction), cfg).level == "ok"
    below = judge(dataclasses.replace(GOOD, overlap_fraction=0.99 * cfg.min_overlap_fraction), cfg)
    assert below.level == "low_confidence" and below.reasons[0].startswith("small_overlap:"), below.reasons


def test_few_inliers_are_no_doubt_of_their_own_when_the_refinement_predicts_the_error():
    few = dataclasses.replace(GOOD, n_inliers=10)
    assert judge(few).level == "low_confidence"
    assert judge(few, predicted_by_refinement=True).level == "ok"
    too_few = judge(dataclasses.replace(GOOD, n_inliers=4), predicted_by_refinement=True)
    assert too_few.level == "failed" and too_few.reasons[0].startswith("few_inliers:"), too_few.reasons
    # the other doubts about a few-inlier consensus still apply
    clustered = judge(dataclasses.replace(few, inlier_spread=0.01), predicted_by_refinement=True)
    assert clustered.level == "low_confidence"
    assert [r.split(":")[0] for r in clustered.reasons] == ["clustered_inliers"], clustered.reasons


def test_a_shift_gap_counts_as_much_as_its_overlap_makes_it_significant():
    """0.15 above the best shifted pose, over the whole image, is no doubt; the same 0.15 over 36 % of the image is
    as significant as 0.09 over all of it (a difference of correlations over n pixels spreads as 1/sqrt(n)), and
    ambiguous; over half of it, 0.106, still not."""
    full = dataclasses.replace(SEARCHED, shift_peak_gap=0.15, overlap_fraction=1.0)
    assert judge(full, source="intensity").level == "ok"
    part = judge(dataclasses.replace(full, overlap_fraction=0.36), source="intensity")
    assert part.level == "low_confidence" and len(part.reasons) == 1, part.reasons
    assert part.reasons[0].startswith("ambiguous:") and "0.150 of this one over 0.36" in part.reasons[0], part.reasons
    assert "(0.090 over all of it" in part.reasons[0], part.reasons
    assert judge(dataclasses.replace(full, overlap_fraction=0.5), source="intensity").level == "ok"
