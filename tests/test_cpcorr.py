"""cpcorr across scales: clicks off by 1-3 coarse px come back within 0.5 px of the exact truth, or are kept."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from autoreg.config import RegistrationConfig
from autoreg.cpcorr import area_template, local_jacobian, peak_shape, refine_point, refine_points
from autoreg.synthetic import make_pair, make_stm_sts_pair, true_moving_to_fixed


@pytest.fixture(scope="module")
def stm_sts():
    return make_stm_sts_pair(seed=0)


def _clicks(truth_xy: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, 2 * np.pi, len(truth_xy))
    radius = rng.uniform(1.0, 3.0, len(truth_xy))
    return truth_xy + radius[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])


def _grid(lo: float, hi: float, n: int) -> np.ndarray:
    g = np.linspace(lo, hi, n)
    x, y = np.meshgrid(g, g)
    return np.column_stack([x.ravel(), y.ravel()])


def test_stm_sts_clicks_come_back_within_half_a_map_pixel(stm_sts):
    moving_true = _grid(4, 35, 6)
    fixed_true = true_moving_to_fixed(moving_true, stm_sts.truth)  # exact, creep included
    clicks = _clicks(moving_true, seed=1)
    out = [refine_point(stm_sts.fixed, stm_sts.moving, f, c, stm_sts.truth.matrix)  # the affine part only
           for f, c in zip(fixed_true, clicks)]
    assert all(r.moved and r.note == "refined" and r.refined_side == "moving" for r in out), [r.note for r in out]
    errors = np.hypot(*(np.array([r.moving_xy for r in out]) - moving_true).T)
    assert errors.max() <= 0.5, errors
    assert np.median(errors) <= 0.2
    assert_allclose([r.fixed_xy for r in out], fixed_true)  # the anchor in the finer image is unchanged
    assert all(r.correlation > 0.8 for r in out)


@pytest.mark.parametrize(("fixed_shape", "moving_shape", "contrast"), [
    ((512, 512), (32, 32), "same"),
    ((512, 512), (32, 32), "nonlinear"),
    ((768, 768), (48, 48), "same"),
])
def test_make_pair_clicks_come_back_or_are_kept(fixed_shape, moving_shape, contrast):
    pair = make_pair(seed=3, fixed_shape=fixed_shape, moving_shape=moving_shape, contrast=contrast)
    matrix = pair.moving_to_fixed
    moving_true = _grid(5, moving_shape[0] - 6, 5)
    fixed_true = (np.column_stack([moving_true, np.ones(len(moving_true))]) @ matrix.T)[:, :2]
    rough = matrix.copy()
    rough[:2, :2] *= 1.02  # the current transform need not be exact: only its local linear part is used
    out = [refine_point(pair.fixed, pair.moving, f, c, rough) for f, c in zip(fixed_true, _clicks(moving_true, 2))]
    moved = np.array([r.moved for r in out])
    errors = np.hypot(*(np.array([r.moving_xy for r in out]) - moving_true).T)
    assert moved.mean() >= 0.8, [r.note for r in out]
    assert errors[moved].max() <= 0.5, errors[moved]


def test_fixed_coarser_refines_the_fixed_point():
    pair = make_pair(seed=4, fixed_shape=(512, 512), moving_shape=(32, 32))
    fixed_to_moving = np.linalg.inv(pair.moving_to_fixed)  # swap roles: the coarse map is now "fixed"
    coarse_true = _grid(6, 25, 3)
    fine_true = (np.column_stack([coarse_true, np.ones(len(coarse_true))]) @ pair.moving_to_fixed.T)[:, :2]
    for coarse, fine, click in zip(coarse_true, fine_true, _clicks(coarse_true, 3)):
        r = refine_point(pair.moving, pair.fixed, click, fine, fixed_to_moving)
        assert r.refined_side == "fixed" and r.moved, r
        assert np.hypot(*(np.array(r.fixed_xy) - coarse)) <= 0.5
        assert_allclose(r.moving_xy, fine)


def test_weak_correlation_keeps_the_click(stm_sts):
    noise = np.random.default_rng(5).normal(size=stm_sts.moving.shape)
    fixed_xy = true_moving_to_fixed(np.array([[20.0, 20.0]]), stm_sts.truth)[0]
    r = refine_point(stm_sts.fixed, noise, fixed_xy, (21.5, 19.0), stm_sts.truth.matrix)
    assert not r.moved and r.moving_xy == (21.5, 19.0) and r.shift_px == 0.0
    assert r.note in ("weak_correlation", "ambiguous_peak", "peak_at_search_edge")
    if r.note == "weak_correlation":
        assert r.correlation < RegistrationConfig().cpcorr_min_correlation


def test_a_flat_image_or_a_point_outside_keeps_the_click(stm_sts):
    flat = np.zeros_like(stm_sts.moving)
    r = refine_point(stm_sts.fixed, flat, (500.0, 500.0), (20.0, 20.0), stm_sts.truth.matrix)
    assert not r.moved and np.isnan(r.correlation)
    r = refine_point(stm_sts.fixed, stm_sts.moving, (5000.0, 5000.0), (200.0, 200.0), stm_sts.truth.matrix)
    assert not r.moved and r.note == "outside"


def test_the_threshold_comes_from_the_config(stm_sts):
    moving_xy = np.array([[20.0, 18.0]])
    fixed_xy = true_moving_to_fixed(moving_xy, stm_sts.truth)[0]
    strict = RegistrationConfig().with_(cpcorr_min_correlation=0.9999)
    r = refine_point(stm_sts.fixed, stm_sts.moving, fixed_xy, moving_xy[0] + 1.5, stm_sts.truth.matrix, config=strict)
    assert not r.moved and r.note == "weak_correlation"


def test_area_template_is_the_block_mean_of_the_finer_image():
    fine = np.random.default_rng(0).normal(size=(100, 100))
    template = area_template(fine, np.array([54.5, 54.5]), 10 * np.eye(2), 2)  # block 5 spans x 50..59
    blocks = fine.reshape(10, 10, 10, 10).mean(axis=(1, 3))
    assert_allclose(template, blocks[3:8, 3:8], atol=1e-12)


def test_local_jacobian_and_peak_shape():
    matrix = np.array([[2.0, 0.5, 3.0], [-0.5, 2.0, 1.0], [0, 0, 1]])
    assert_allclose(local_jacobian(lambda xy: xy @ matrix[:2, :2].T + matrix[:2, 2], np.array([3.0, 4.0])),
                    matrix[:2, :2])
    y, x = np.mgrid[-1:2, -1:2]
    offset, isotropy = peak_shape(1 - 0.1 * ((x + 0.2) ** 2 + (y - 0.4) ** 2))
    assert_allclose(offset, [-0.2, 0.4], atol=1e-9) and isotropy == pytest.approx(1.0)
    ridge = 1 - 0.1 * (x - 0.2) ** 2 + 0 * y
    assert peak_shape(ridge)[1] == pytest.approx(0.0, abs=1e-9)


def test_rejects_a_transform_that_is_neither_a_matrix_nor_callable():
    with pytest.raises(ValueError, match="3x3 matrix or a callable"):
        refine_point(np.zeros((8, 8)), np.zeros((8, 8)), (1, 1), (1, 1), np.eye(2))


def test_inverted_contrast_needs_the_polarity():
    pair = make_pair(seed=4, fixed_shape=(512, 512), moving_shape=(32, 32), contrast="inverted")
    moving_true = _grid(6, 25, 3)
    fixed_true = (np.column_stack([moving_true, np.ones(len(moving_true))]) @ pair.moving_to_fixed.T)[:, :2]
    clicks = _clicks(moving_true, 6)
    plain = refine_points(pair.fixed, pair.moving, fixed_true, clicks, pair.moving_to_fixed)
    assert not any(r.moved for r in plain)  # an inverted patch never correlates: the clicks are kept
    out = refine_points(pair.fixed, pair.moving, fixed_true, clicks, pair.moving_to_fixed, polarity=-1)
    assert all(r.moved for r in out), [r.note for r in out]
    errors = np.hypot(*(np.array([r.moving_xy for r in out]) - moving_true).T)
    assert errors.max() <= 0.5, errors
