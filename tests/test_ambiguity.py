"""The local shift check: a lattice's pose a period away is ambiguous, defects or a non-periodic scene are not."""

import numpy as np
import pytest
from scipy import ndimage

from autoreg.ambiguity import shift_peak_gap
from autoreg.config import RegistrationConfig
from autoreg.datatypes import Fit, Matches
from autoreg.estimate import fit_pair
from autoreg.warp import apply_transform

GAP = RegistrationConfig().min_peak_gap


def _lattice(seed: int, defects: int, shape=(160, 160), period=10.0):
    """A square lattice (integer period, so a shift by one period maps it onto itself) with Gaussian defects."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    image = np.cos(2 * np.pi * x / period) + np.cos(2 * np.pi * y / period)
    for cy, cx in rng.uniform(0, shape, (defects, 2)):
        image += 3.0 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 3.0**2))
    return image + rng.normal(0, 0.05, shape)


def _fit(scale: float = 1.0, shift_xy=(0.0, 0.0)) -> Fit:
    moving_xy = np.array([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    forward, backward = fit_pair("similarity", moving_xy, moving_xy * scale + shift_xy)
    return Fit(model="similarity", moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(4, bool),
               source="features", matches=Matches(fixed_xy=moving_xy * scale + shift_xy, moving_xy=moving_xy))


def _gap(fixed, moving, fit=None, coarse_px=1.0, exclusion_px=4.0):
    fit = fit or _fit()
    _, footprint = apply_transform(moving, fit, fixed.shape)
    cfg = RegistrationConfig()
    return shift_peak_gap(fixed, moving, fit, footprint & np.isfinite(fixed), coarse_px=coarse_px,
                          exclusion_px=exclusion_px, window_fraction=cfg.shift_window_fraction,
                          max_side=cfg.shift_check_max_side)


def test_a_perfect_lattice_cannot_tell_its_pose_from_one_a_period_away():
    lattice = _lattice(0, defects=0)
    assert _gap(lattice, lattice) < GAP


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_defects_make_the_right_pose_stand_out_and_a_period_away_not(seed):
    scene = _lattice(seed, defects=45, shape=(180, 180))  # one defect per ~7 unit cells
    fixed = scene[10:170, 10:170]
    wrong = scene[:160, 10:170]  # the moving content one period up: lattice aligned, defects not
    assert _gap(fixed, fixed.copy()) > GAP + 0.04  # 0.16-0.27 on seeds 1-8
    assert _gap(fixed, wrong) < -0.1  # the right pose, a period away, correlates better


def test_inverted_contrast_is_judged_as_its_mirror():
    scene = _lattice(4, defects=45, shape=(180, 180))
    fixed = scene[10:170, 10:170]
    assert _gap(fixed, -fixed) == pytest.approx(_gap(fixed, fixed.copy()), abs=1e-4)


def test_a_coarse_map_is_checked_through_its_fit_and_scan_lines_do_not_matter():
    rng = np.random.default_rng(5)
    terrain = ndimage.gaussian_filter(rng.normal(size=(320, 320)), 8.0)
    moving = terrain.reshape(40, 8, 40, 8).mean(axis=(1, 3))  # a map 8x coarser, pixel centres at 8 j + 3.5
    moving = moving + 0.5 * moving.std() * rng.normal(size=(40, 1))  # scan-line offsets, levelled by the caller
    from autoreg.levelling import level_scan

    levelled = level_scan(moving, scars=False, spikes=False).data
    right = _gap(terrain, levelled, _fit(8.0, (3.5, 3.5)), coarse_px=8.0, exclusion_px=8.0)
    assert right > 0.3
    wrong = _gap(terrain, levelled, _fit(8.0, (3.5 + 40.0, 3.5)), coarse_px=8.0, exclusion_px=8.0)
    assert wrong < right - 0.3  # 40 px off: the right pose, inside the window, beats it


def test_non_periodic_terrain_stands_out_and_tiny_overlaps_are_not_measured():
    rng = np.random.default_rng(4)
    terrain = ndimage.gaussian_filter(rng.normal(size=(160, 160)), 4.0)
    assert _gap(terrain, terrain + rng.normal(0, 0.01, terrain.shape)) > 0.3
    small = np.full((12, 12), 1.0)
    small += rng.normal(size=small.shape)
    assert np.isnan(_gap(terrain, small))


def test_flat_images_and_a_window_without_a_different_pose_are_not_measured():
    rng = np.random.default_rng(6)
    terrain = ndimage.gaussian_filter(rng.normal(size=(160, 160)), 4.0)
    assert np.isnan(_gap(np.ones((160, 160)), terrain))
    assert np.isnan(_gap(terrain, np.full((160, 160), 3.0)))
    # every shift in the window is within the exclusion: nothing to compare the pose with (not "unrivalled")
    assert np.isnan(_gap(terrain, terrain.copy(), exclusion_px=200.0))


def test_a_perfect_lattice_pair_is_never_ok():
    """End to end: whatever pose the features or the search find on a defect-free lattice, it is one of many."""
    import autoreg

    lattice = _lattice(7, defects=0, shape=(256, 256), period=9.0)
    result = autoreg.register(lattice, lattice[40:200, 30:190].copy())
    assert result.verdict.level != "ok", result.verdict


def test_a_check_that_opencv_fails_on_leaves_the_fit_unmeasured_not_failed(monkeypatch):
    import autoreg
    from autoreg import ambiguity
    from autoreg.errors import EstimationError
    from autoreg.synthetic import make_pair

    def broken(*args, **kwargs):
        raise EstimationError("shift check failed on these data")

    pair = make_pair(seed=3)
    monkeypatch.setattr(ambiguity, "shift_peak_gap", broken)
    result = autoreg.register(pair.fixed, pair.moving, model="affine")
    assert result.fit is not None and result.verdict.level == "ok", result.verdict
    assert np.isnan(result.scores.shift_peak_gap)
