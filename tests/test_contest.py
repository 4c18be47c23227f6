"""The contest of the search's refined poses (autoreg.contest): a pose that explains the images clearly better than
every other, once each is refined, is evidence; a contest with no such pose is none."""

import dataclasses
import math

import numpy as np
import pytest
from test_pipeline import _context, _terrain_pair

from autoreg.budget import Deadline
from autoreg.contest import contest, contest_score
from autoreg.datatypes import Fit, Matches
from autoreg.errors import TimeBudgetExceeded
from autoreg.geometry import apply_matrix, mean_grid_distance


def _turned(angle_deg: float, dx: float, dy: float, about_xy: tuple[float, float]) -> np.ndarray:
    """A rotation by ``angle_deg`` about ``about_xy`` followed by a shift: a pose elsewhere."""
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    x, y = about_xy
    return np.array([[c, -s, x - c * x + s * y + dx], [s, c, y - s * x - c * y + dy], [0, 0, 1.0]])


def _search_fit(candidates: list[np.ndarray]) -> Fit:
    """A search fit at its first candidate whose sweep peak did not stand out (as ``search_fit`` builds one)."""
    from skimage.transform import AffineTransform

    first = candidates[0]
    return Fit(model="similarity", moving_to_fixed=AffineTransform(matrix=first),
               fixed_to_moving=AffineTransform(matrix=np.linalg.inv(first)), inliers=np.zeros(0, bool),
               source="intensity", matches=Matches(np.zeros((0, 2)), np.zeros((0, 2))), why="search",
               peak_gap=0.02, peak_ratio=1.02, channel="intensity", candidates=tuple(candidates))


def _error(fit: Fit, truth: np.ndarray, shape: tuple[int, int]) -> float:
    return mean_grid_distance(fit.to_fixed, lambda g: apply_matrix(truth, g), shape)


def test_the_score_is_the_fisher_z_of_the_held_out_correlation_scaled_by_the_pixels_compared():
    assert contest_score(0.9, 400, 400) == pytest.approx(math.atanh(0.9))
    assert contest_score(-0.9, 100, 400) == pytest.approx(math.atanh(0.9) / 2)  # inverted contrast counts
    assert contest_score(1.0, 400, 400) == pytest.approx(math.atanh(0.9999))  # finite at a perfect match
    assert contest_score(float("nan"), 400, 400) == 0.0


@pytest.mark.parametrize("max_side", [32, 64, 128])
def test_the_true_pose_among_wrong_ones_is_found_and_stands_out(max_side):
    """The sweep's best sample is a wrong pose; the true one, 1.3 px off as the sweep leaves it, is the third
    candidate: refined, it explains the map far better than either wrong pose, so the fit moves to it — on the
    96 px map's own grid or area-reduced to a third of it (``contest_max_side``)."""
    pair = _terrain_pair()
    truth = np.asarray(pair.moving_to_fixed, float)
    shape = pair.moving.shape
    centre = (shape[1] / 2, shape[0] / 2)
    wrong = [truth @ _turned(40, 20, -15, centre), truth @ _turned(-70, -25, 10, centre)]
    near_truth = np.array([[1, 0, 1.0], [0, 1, -0.8], [0, 0, 1.0]]) @ truth
    ctx = _context(pair.fixed, pair.moving.astype(np.float32))
    ctx = dataclasses.replace(ctx, config=ctx.config.with_(contest_max_side=max_side))
    fit = contest(ctx, _search_fit([wrong[0], wrong[1], near_truth]))
    assert fit.contest_gap > ctx.config.min_contest_gap, fit.why
    assert "taken" in fit.why and fit.model == "similarity", fit.why
    assert _error(fit, truth, shape) <= 0.1, fit.why
    assert fit.peak_gap == pytest.approx(0.02)  # the sweep's own figures are kept for the JSON


def test_a_contest_among_wrong_poses_is_no_evidence_and_moves_nothing():
    """Every candidate is wrong (the true pose is not among them): no refined pose stands out, and the fit keeps the
    sweep's pose."""
    pair = _terrain_pair()
    truth = np.asarray(pair.moving_to_fixed, float)
    shape = pair.moving.shape
    centre = (shape[1] / 2, shape[0] / 2)
    wrong = [truth @ _turned(angle, dx, dy, centre) for angle, dx, dy in ((40, 20, -15), (-70, -25, 10),
                                                                          (150, 5, 25), (95, -20, -20))]
    ctx = _context(pair.fixed, pair.moving.astype(np.float32))
    fit = contest(ctx, _search_fit(wrong))
    assert not fit.contest_gap > ctx.config.min_contest_gap, fit.why
    np.testing.assert_allclose(fit.moving_to_fixed.params, wrong[0], atol=1e-9)


def test_one_pose_is_no_contest():
    pair = _terrain_pair()
    ctx = _context(pair.fixed, pair.moving.astype(np.float32))
    fit = contest(ctx, _search_fit([np.asarray(pair.moving_to_fixed, float)]))
    assert math.isnan(fit.contest_gap) and "no contest" in fit.why


def test_the_contest_stops_when_the_time_budget_is_spent():
    pair = _terrain_pair()
    truth = np.asarray(pair.moving_to_fixed, float)
    ctx = dataclasses.replace(_context(pair.fixed, pair.moving.astype(np.float32)), deadline=Deadline(1e-9))
    with pytest.raises(TimeBudgetExceeded):
        contest(ctx, _search_fit([truth, truth @ _turned(40, 20, -15, (48, 48))]))


def test_another_pairings_best_pose_is_refined_and_wins_when_it_stands_out():
    """The winning pairing's separated poses are all wrong; the gradient pairing's best pose, 1.3 px from the truth,
    is refined on the intensities too, explains the map far better than any of them, and the fit moves to it with
    that pairing's name (the sweep's winner is only the pairing with the largest z-score)."""
    pair = _terrain_pair()
    truth = np.asarray(pair.moving_to_fixed, float)
    shape = pair.moving.shape
    centre = (shape[1] / 2, shape[0] / 2)
    wrong = [truth @ _turned(angle, dx, dy, centre) for angle, dx, dy in ((40, 20, -15), (-70, -25, 10))]
    near_truth = np.array([[1, 0, 1.0], [0, 1, -0.8], [0, 0, 1.0]]) @ truth
    ctx = _context(pair.fixed, pair.moving.astype(np.float32))
    searched = dataclasses.replace(_search_fit(wrong), channel="derivative", matched_channel="derivative",
                                   other_candidates=(("gradient", near_truth),))
    fit = contest(ctx, searched)
    assert "contest of 2 separated poses and 1 other pairings' best" in fit.why, fit.why
    assert fit.contest_gap > ctx.config.min_contest_gap, fit.why
    assert "the gradient pairing's best pose" in fit.why, fit.why
    assert (fit.channel, fit.matched_channel) == ("gradient", "intensity")
    assert _error(fit, truth, shape) <= 0.1, fit.why


def test_another_pairings_wrong_pose_is_one_more_competitor():
    """The true pose is the winning pairing's best; another pairing's best pose is wrong and does not win, and the
    winner's gap is measured against it too (never larger than without it)."""
    pair = _terrain_pair()
    truth = np.asarray(pair.moving_to_fixed, float)
    shape = pair.moving.shape
    centre = (shape[1] / 2, shape[0] / 2)
    near_truth = np.array([[1, 0, 1.0], [0, 1, -0.8], [0, 0, 1.0]]) @ truth
    wrong = [truth @ _turned(angle, dx, dy, centre) for angle, dx, dy in ((40, 20, -15), (-70, -25, 10))]
    ctx = _context(pair.fixed, pair.moving.astype(np.float32))
    alone = contest(ctx, _search_fit([near_truth, wrong[0]]))
    with_other = contest(ctx, dataclasses.replace(_search_fit([near_truth, wrong[0]]),
                                                  other_candidates=(("gradient", wrong[1]),)))
    assert with_other.channel == "intensity" and "pairing's best pose" not in with_other.why, with_other.why
    assert with_other.contest_gap <= alone.contest_gap + 1e-9
    assert _error(with_other, truth, shape) <= 0.1, with_other.why


def test_the_convergence_benchmark_decides_each_contest_as_run_and_on_converged_solves():
    """``bench_convergence.py --contests`` wraps the contest's pose refinement from outside: the decision as run is
    the contest's own (its gap), the second one is made on solves allowed the given number of updates (one update
    per level leaves the winner unconverged: no evidence), and the contest is left as it was found."""
    from bench.bench_convergence import watching_contests

    from autoreg import contest as contest_module

    refined_poses = contest_module._refined_poses
    pair = _terrain_pair()
    truth = np.asarray(pair.moving_to_fixed, float)
    centre = (pair.moving.shape[1] / 2, pair.moving.shape[0] / 2)
    wrong = [truth @ _turned(40, 20, -15, centre), truth @ _turned(-70, -25, 10, centre)]
    near_truth = np.array([[1, 0, 1.0], [0, 1, -0.8], [0, 0, 1.0]]) @ truth
    ctx = _context(pair.fixed, pair.moving.astype(np.float32))
    for iterations, decided in ((300, True), (1, False)):
        record: list = []
        with watching_contests(record, iterations, ["pair", None]):
            fit = contest(ctx, _search_fit([wrong[0], wrong[1], near_truth]))
        assert contest_module._refined_poses is refined_poses
        assert len(record) == 1 and record[0].case == "pair" and record[0].n_poses == 3
        as_run = record[0].as_run
        assert as_run.decided and as_run.gap == pytest.approx(fit.contest_gap) and as_run.right is None
        assert record[0].other.decided is decided and record[0].other.evidence is decided, record[0]
        assert not record[0].moved  # the same optimum, converged or not
