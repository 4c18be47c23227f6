"""A-contrario significance (NFA) of a feature consensus, and AC-RANSAC."""

import numpy as np
import pytest

from autoreg.errors import InsufficientLandmarksError
from autoreg.significance import (
    MIN_SAMPLES,
    acransac,
    consensus_nfa,
    nfa_curve,
    overlap_area,
    runner_up,
    unique_matches,
)

SIZE = 256.0
AREA = SIZE * SIZE
GRID = np.stack(np.meshgrid(np.linspace(0, SIZE, 5), np.linspace(0, SIZE, 5)), -1).reshape(-1, 2)


def _random_matches(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, SIZE, (n, 2)), rng.uniform(0, SIZE, (n, 2))


def _apply(matrix, xy):
    h = np.column_stack([xy, np.ones(len(xy))]) @ np.asarray(matrix, float).T
    return h[:, :2] / h[:, 2:]


def _planted(n_inliers, n_outliers, matrix, noise, seed):
    """``n_inliers`` matches of ``matrix`` with Gaussian noise among uniform random matches (inliers first)."""
    rng = np.random.default_rng(seed)
    moving = rng.uniform(0, SIZE, (n_inliers + n_outliers, 2))
    fixed = rng.uniform(0, SIZE, (n_inliers + n_outliers, 2))
    fixed[:n_inliers] = _apply(matrix, moving[:n_inliers]) + rng.normal(0, noise, (n_inliers, 2))
    return fixed, moving


SIMILARITY = np.array([[1.05 * np.cos(0.2), -1.05 * np.sin(0.2), 12.0],
                       [1.05 * np.sin(0.2), 1.05 * np.cos(0.2), -7.0], [0, 0, 1]])


# ---------------------------------------------------------------------------------------------- the null
@pytest.mark.parametrize("model", ["translation", "similarity", "affine"])
def test_random_matches_are_not_meaningful_in_95_percent_of_seeds(model):
    meaningful = 0
    trials = 0
    for n in (20, 50, 150, 400):
        for seed in range(8):
            fixed, moving = _random_matches(n, 1000 * n + seed)
            trials += 1
            try:
                acransac(fixed, moving, model, seed=seed, max_iters=200, fixed_area=AREA)
            except InsufficientLandmarksError as err:
                assert "No meaningful" in str(err)
            else:
                meaningful += 1
    assert meaningful <= 0.05 * trials, f"{meaningful} of {trials} random match sets were meaningful"


def test_random_models_on_random_matches_have_positive_log_nfa():
    rng = np.random.default_rng(5)
    values = []
    for n in (20, 100, 500):
        for seed in range(30):
            fixed, moving = _random_matches(n, seed + 7 * n)
            shift = rng.uniform(-50, 50, 2)
            values.append(consensus_nfa(fixed, moving, lambda xy, s=shift: xy + s, n_sample=1,
                                        fixed_area=AREA).log10_nfa)
    assert np.mean(np.array(values) > 0) >= 0.95


# -------------------------------------------------------------------------------------------- true consensus
@pytest.mark.parametrize("n_inliers", [8, 10, 20])
def test_small_true_consensus_among_200_random_matches_is_meaningful(n_inliers):
    fixed, moving = _planted(n_inliers, 200 - n_inliers, SIMILARITY, 0.5, seed=n_inliers)
    nfa = consensus_nfa(fixed, moving, lambda xy: _apply(SIMILARITY, xy), n_sample=2, fixed_area=AREA)
    assert nfa.log10_nfa < -5
    assert n_inliers - 2 <= nfa.n_inliers <= n_inliers + 1
    assert 0.3 < nfa.threshold_px < 3.0


@pytest.mark.parametrize("seed", range(4))
def test_acransac_finds_ten_inliers_among_two_hundred(seed):
    fixed, moving = _planted(10, 190, SIMILARITY, 0.5, seed=100 + seed)
    out = acransac(fixed, moving, "similarity", seed=seed, max_iters=2000, fixed_area=AREA)
    assert out.nfa.log10_nfa < -5
    assert out.inliers[:10].sum() >= 8 and out.inliers[10:].sum() <= 1
    assert np.abs(_apply(out.matrix, GRID) - _apply(SIMILARITY, GRID)).max() < 2.0


@pytest.mark.parametrize("model", list(MIN_SAMPLES))
def test_acransac_recovers_each_global_model(model):
    matrix = {"translation": np.array([[1, 0, 9.5], [0, 1, -4.0], [0, 0, 1]]),
              "rigid": np.array([[np.cos(0.3), -np.sin(0.3), 20], [np.sin(0.3), np.cos(0.3), -5], [0, 0, 1]]),
              "similarity": SIMILARITY,
              "affine": np.array([[1.1, 0.1, 5], [-0.05, 0.9, 3], [0, 0, 1]]),
              "projective": np.array([[1.0, 0.05, 5], [0.02, 0.95, 3], [2e-4, -1e-4, 1]])}[model]
    fixed, moving = _planted(80, 70, matrix, 0.3, seed=3)
    out = acransac(fixed, moving, model, seed=0, fixed_area=AREA)
    assert out.nfa.meaningful and out.refit_nfa.meaningful
    assert out.inliers[:80].sum() >= 70 and out.inliers[80:].sum() <= 2
    assert np.abs(_apply(out.matrix, GRID) - _apply(matrix, GRID)).max() < 0.5


def test_acransac_is_reproducible_for_a_seed():
    fixed, moving = _planted(30, 70, SIMILARITY, 0.5, seed=9)
    a = acransac(fixed, moving, "affine", seed=4, fixed_area=AREA)
    b = acransac(fixed, moving, "affine", seed=4, fixed_area=AREA)
    np.testing.assert_array_equal(a.matrix, b.matrix)
    np.testing.assert_array_equal(a.inliers, b.inliers)


def test_rigid_and_translation_hold_the_prior_scale():
    matrix = np.array([[2 * np.cos(0.1), -2 * np.sin(0.1), 4], [2 * np.sin(0.1), 2 * np.cos(0.1), 1], [0, 0, 1]])
    rng = np.random.default_rng(0)
    moving = rng.uniform(0, 100, (60, 2))
    fixed = _apply(matrix, moving) + rng.normal(0, 0.3, (60, 2))
    out = acransac(fixed, moving, "rigid", seed=0, fixed_area=AREA, prior_scale=2.0)
    assert np.linalg.det(out.matrix[:2, :2]) == pytest.approx(4.0, rel=1e-9)
    assert np.abs(_apply(out.matrix, GRID / 2) - _apply(matrix, GRID / 2)).max() < 0.5


# ------------------------------------------------------------------------------------------ periodic lattice
def _lattice_matches(vacancy_fraction, seed, period=16.0):
    """A square lattice seen twice (shifted by ``TRUE``); every site matches its true partner and its right
    neighbour (one period along x), as a descriptor cannot tell them apart. Vacancies are missing sites."""
    rng = np.random.default_rng(seed)
    g = np.arange(period, SIZE - period, period)
    sites = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
    sites = sites[rng.random(len(sites)) >= vacancy_fraction]
    true_shift = np.array([3.3, -2.1])
    present = {tuple(np.round(s).astype(int)) for s in sites}
    fixed, moving = [], []
    for s in sites:
        for step in (0.0, period):
            neighbour = s + [step, 0.0]
            if tuple(np.round(neighbour).astype(int)) in present:
                moving.append(s - true_shift)
                fixed.append(neighbour)
    noise = rng.normal(0, 0.3, (len(fixed), 2))
    return np.array(fixed) + noise, np.array(moving), true_shift, period


@pytest.mark.parametrize("seed", range(3))
def test_lattice_with_defects_prefers_the_right_shift(seed):
    fixed, moving, shift, period = _lattice_matches(0.15, seed)
    right = consensus_nfa(fixed, moving, lambda xy: xy + shift, n_sample=1, fixed_area=AREA)
    wrong = consensus_nfa(fixed, moving, lambda xy: xy + shift + [period, 0], n_sample=1, fixed_area=AREA)
    # both are far from chance (a lattice is not random): only the comparison tells them apart
    assert right.meaningful and wrong.meaningful
    assert right.log10_nfa < wrong.log10_nfa - 5
    out = acransac(fixed, moving, "translation", seed=seed, fixed_area=AREA)
    np.testing.assert_allclose(out.matrix[:2, 2], shift, atol=0.3)


def test_runner_up_flags_the_lattice_ambiguity_but_not_a_clean_match():
    fixed, moving, shift, _ = _lattice_matches(0.15, 0)
    first = acransac(fixed, moving, "translation", seed=0, fixed_area=AREA)
    second = runner_up(fixed, moving, "translation", first, seed=1, fixed_area=AREA)
    assert second.log10_nfa < -50  # the shifted lattice is a second, distinct consensus
    fixed, moving = _planted(40, 60, SIMILARITY, 0.5, seed=2)
    first = acransac(fixed, moving, "similarity", seed=0, fixed_area=AREA)
    assert runner_up(fixed, moving, "similarity", first, seed=1, fixed_area=AREA).log10_nfa > 0


# -------------------------------------------------------------------------------------- duplicates and edges
def test_duplicates_do_not_create_significance():
    fixed, moving = _random_matches(40, 11)
    rng = np.random.default_rng(1)
    fixed5 = np.repeat(fixed, 5, axis=0) + rng.normal(0, 0.05, (200, 2))
    moving5 = np.repeat(moving, 5, axis=0) + rng.normal(0, 0.05, (200, 2))
    with pytest.raises(InsufficientLandmarksError, match="No meaningful affine model among 40 matches"):
        acransac(fixed5, moving5, "affine", seed=0, max_iters=300, fixed_area=AREA)
    # without merging, the copies of the sample points alone make a chance model look significant
    with np.errstate(all="ignore"):
        undeduplicated = acransac(fixed5, moving5, "affine", seed=0, max_iters=300, fixed_area=AREA,
                                  duplicate_px=0.0)
    assert undeduplicated.nfa.log10_nfa < -10


def test_unique_matches_merges_only_when_both_ends_coincide():
    fixed = np.array([[0, 0], [0.2, 0], [0, 0], [50, 50]], float)
    moving = np.array([[10, 10], [10.3, 10], [40, 40], [10, 10]], float)
    assert unique_matches(fixed, moving).tolist() == [0, 2, 3]
    assert unique_matches(fixed, moving, duplicate_px=0).tolist() == [0, 1, 2, 3]


def test_exact_fit_with_zero_residuals_is_finite_and_warning_free():
    rng = np.random.default_rng(2)
    moving = rng.uniform(0, SIZE, (30, 2))
    fixed = moving + [5.0, 5.0]
    nfa = consensus_nfa(fixed, moving, lambda xy: xy + [5.0, 5.0], n_sample=1, fixed_area=AREA)
    assert np.isfinite(nfa.log10_nfa) and nfa.log10_nfa < -50
    assert nfa.n_inliers == 30 and nfa.threshold_px == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_few_matches(n):
    fixed, moving = _random_matches(n, 0)
    nfa = consensus_nfa(fixed, moving, lambda xy: xy, n_sample=2, fixed_area=AREA)
    assert nfa.log10_nfa == np.inf and not nfa.meaningful and nfa.n_inliers == 0
    with pytest.raises(InsufficientLandmarksError, match="distinct matches"):
        acransac(fixed, moving, "similarity", seed=0, fixed_area=AREA)


def test_bad_arguments():
    fixed, moving = _random_matches(10, 0)
    with pytest.raises(ValueError, match="fixed_area"):
        consensus_nfa(fixed, moving, lambda xy: xy, n_sample=1, fixed_area=0)
    with pytest.raises(ValueError, match="global models"):
        acransac(fixed, moving, "polynomial", seed=0, fixed_area=AREA)


def test_nfa_curve_matches_the_formula():
    from math import comb, log10, pi

    e = np.array([0.0, 0.5, 1.0, 2.0, 400.0])
    curve = nfa_curve(e, n_sample=2, fixed_area=1000.0, n_models=3)
    for k in range(3, 6):
        alpha = min(1.0, pi * max(e[k - 1], 0.1) ** 2 / 1000.0)
        expected = log10(3 * 3 * comb(5, k) * comb(k, 2)) + (k - 2) * log10(alpha)
        assert curve[k - 3] == pytest.approx(expected)


def test_overlap_area():
    shift = np.array([[1, 0, 50], [0, 1, 25], [0, 0, 1.0]])
    assert overlap_area(shift, (100, 100), (100, 100)) == pytest.approx(50 * 75)
    assert overlap_area(np.diag([0.5, 0.5, 1]), (100, 100), (100, 100)) == pytest.approx(2500)
    assert overlap_area(np.array([[1, 0, 500], [0, 1, 0], [0, 0, 1.0]]), (100, 100), (100, 100)) == 0.0
    assert overlap_area(np.array([[1, 0, 0], [0, 1, 0], [-0.02, 0, 1.0]]), (100, 100), (100, 100)) == 0.0


def test_overlap_limits_the_area_of_each_hypothesis():
    fixed, moving = _planted(40, 40, SIMILARITY, 0.5, seed=3)
    whole = acransac(fixed, moving, "similarity", seed=0, fixed_area=AREA)
    clipped = acransac(fixed, moving, "similarity", seed=0, fixed_area=AREA, moving_size_xy=(SIZE, SIZE),
                       fixed_size_xy=(SIZE, SIZE))
    assert clipped.nfa.log10_nfa >= whole.nfa.log10_nfa  # a smaller area is more conservative
    assert clipped.nfa.meaningful


@pytest.mark.parametrize("seed", range(6))
def test_unique_matches_is_the_same_whichever_image_seeds_the_pairs(seed):
    """The candidate pairs come from the sparser image; the kept matches must not depend on that choice: a greedy
    pass in pair order, checked here against the definition pair by pair."""
    rng = np.random.default_rng(seed)
    n = 150
    fixed = rng.uniform(0, [30, 300][seed % 2], (n, 2))
    moving = rng.uniform(0, [300, 30][seed % 2], (n, 2))
    fixed[:50] = fixed[50:100] + rng.normal(0, 0.3, (50, 2))
    moving[:50] = moving[50:100] + rng.normal(0, 0.3, (50, 2))
    keep = np.ones(n, bool)
    for i in range(n):
        for j in range(i + 1, n):
            both = (np.linalg.norm(fixed[i] - fixed[j]) <= 2.0) and (np.linalg.norm(moving[i] - moving[j]) <= 2.0)
            if both and keep[i]:
                keep[j] = False
    assert unique_matches(fixed, moving, duplicate_px=2.0).tolist() == np.flatnonzero(keep).tolist()


def test_the_bulk_similarity_search_scores_every_pair_and_finds_the_best_one():
    """Without per-hypothesis overlaps a similarity's samples are scored in bulk; with fewer pairs than draws it
    tries every pair, so its NFA is the lowest over all 2-point models (checked one by one with consensus_nfa)."""
    fixed, moving = _planted(6, 34, SIMILARITY, 0.5, seed=7)
    out = acransac(fixed, moving, "similarity", seed=0, max_iters=2000, fixed_area=AREA, max_log10_nfa=np.inf,
                   duplicate_px=0.0)
    assert out.n_iterations >= 40 * 39 // 2
    lowest = np.inf
    for i in range(40):
        for j in range(i + 1, 40):
            a = ((fixed[j, 0] - fixed[i, 0]) + 1j * (fixed[j, 1] - fixed[i, 1])) / (
                (moving[j, 0] - moving[i, 0]) + 1j * (moving[j, 1] - moving[i, 1]))
            t = fixed[i, 0] + 1j * fixed[i, 1] - a * (moving[i, 0] + 1j * moving[i, 1])
            matrix = np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag], [0, 0, 1]])
            nfa = consensus_nfa(fixed, moving, lambda xy, m=matrix: _apply(m, xy), n_sample=2, fixed_area=AREA,
                                duplicate_px=0.0)
            lowest = min(lowest, nfa.log10_nfa)
    assert out.nfa.log10_nfa == pytest.approx(lowest, abs=1e-9)
    assert out.nfa.log10_nfa < -3 and out.inliers[:6].all() and out.inliers[6:].sum() <= 1


def test_the_bulk_and_the_per_sample_search_agree_on_a_planted_similarity():
    fixed, moving = _planted(12, 188, SIMILARITY, 0.5, seed=11)
    bulk = acransac(fixed, moving, "similarity", seed=0, max_iters=2000, fixed_area=AREA)
    # sizes larger than the scene: each hypothesis's overlap is the whole area, scored one sample at a time
    single = acransac(fixed, moving, "similarity", seed=0, max_iters=2000, fixed_area=AREA,
                      moving_size_xy=(4 * SIZE, 4 * SIZE), fixed_size_xy=(4 * SIZE, 4 * SIZE))
    assert np.array_equal(bulk.inliers, single.inliers)
    assert bulk.nfa.log10_nfa == pytest.approx(single.nfa.log10_nfa, abs=0.5)
    assert np.abs(_apply(bulk.matrix, GRID) - _apply(single.matrix, GRID)).max() < 0.2
