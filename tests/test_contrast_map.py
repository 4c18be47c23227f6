"""The contrast fitted to a map: the fixed image mapped so that a linear contrast explains the moving one."""

import numpy as np
import pytest

from autoreg.contrast_map import mapped_fixed
from autoreg.errors import EstimationError
from autoreg.synthetic import make_scene


def _terraces(seed: int, shape: tuple[int, int] = (96, 96)) -> tuple[np.ndarray, np.ndarray]:
    """Height of a terraced scene, and a channel that gives every terrace its own value (not monotonic in height)."""
    scene = make_scene(shape, seed=seed, feature_px=0.5)
    state = np.random.default_rng(seed).uniform(0, 1, int(scene.level.max()) + 1)
    return scene.height, state[scene.level] + 0.3 * scene.adsorbate


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_contrast_per_terrace_is_fitted_where_no_linear_one_explains_it(seed):
    height, channel = _terraces(seed)
    linear = abs(_corr(height, channel))
    assert linear < 0.5  # the premise: a linear contrast does not explain the channel
    mapped, r = mapped_fixed(height, channel, np.eye(3), knots=12)
    assert r > 0.88  # the adsorbates, on every terrace, follow the height with their own gain
    assert _corr(mapped, channel) == pytest.approx(r, abs=0.02)


def test_a_coarse_map_is_fitted_to_the_contrast_averaged_over_its_footprint():
    # a 4× coarser map averages the contrast over each pixel, not the height: f(avg) would not follow terrace edges
    height, channel = _terraces(4, (192, 192))
    coarse = channel.reshape(48, 4, 48, 4).mean(axis=(1, 3))
    to_fixed = np.array([[4.0, 0, 1.5], [0, 4.0, 1.5], [0, 0, 1]])  # coarse pixel centres on the fine grid
    mapped, r = mapped_fixed(height, coarse, to_fixed, knots=12)
    assert r > 0.95
    assert _corr(mapped.reshape(48, 4, 48, 4).mean(axis=(1, 3)), coarse) > 0.95


def test_a_moving_image_of_more_pixels_than_one_opencv_map_row_holds_is_fitted():
    # cv2.remap takes maps of fewer than 32767 columns: a 192² map has 36864 pixels
    height, channel = _terraces(3, (192, 192))
    mapped, r = mapped_fixed(height, channel, np.eye(3), knots=12)
    assert r > 0.88
    assert _corr(mapped, channel) == pytest.approx(r, abs=0.02)


def test_missing_pixels_stay_missing_and_the_inputs_are_untouched():
    height, channel = _terraces(5)
    height = height.copy()
    height[10:20, 30:40] = np.nan
    before = height.copy(), channel.copy()
    mapped, _ = mapped_fixed(height, channel, np.eye(3), knots=8)
    assert np.array_equal(np.isnan(mapped), np.isnan(height))
    np.testing.assert_array_equal(height, before[0])
    np.testing.assert_array_equal(channel, before[1])


def test_a_flat_overlap_or_one_off_the_image_is_an_estimation_error():
    height, channel = _terraces(6)
    with pytest.raises(EstimationError, match="flat"):
        mapped_fixed(np.ones_like(height), channel, np.eye(3), knots=8)
    with pytest.raises(EstimationError, match="Too few"):
        mapped_fixed(height, channel, np.array([[1.0, 0, 500], [0, 1, 0], [0, 0, 1]]), knots=8)


def _rotated_pair(seed: int, angle_deg: float, fold: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 192² terraced height and an 80² channel of it, turned by ``angle_deg``: each terrace its own value, or the
    height folded at its median (``fold``); 2 % noise. Returns fixed, moving and the true moving -> fixed matrix."""
    import cv2

    n, side = 80, 192
    scene = make_scene((side, side), seed=seed, feature_px=0.5)
    rng = np.random.default_rng(seed)
    state = rng.uniform(0, 1, int(scene.level.max()) + 1)
    channel = (np.abs(scene.height - np.quantile(scene.height, 0.5)) if fold
               else state[scene.level] + 0.3 * scene.adsorbate)
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    moving_to_fixed = np.eye(3)
    moving_to_fixed[:2, :2] = [[c, -s], [s, c]]
    moving_to_fixed[:2, 2] = ((side - 1) / 2 - moving_to_fixed[:2, :2] @ [(n - 1) / 2, (n - 1) / 2]
                              + rng.uniform(-20, 20, 2))
    moving = cv2.warpAffine(channel.astype(np.float32), moving_to_fixed[:2], (n, n),
                            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    return scene.height, moving + rng.normal(0, 0.02, moving.shape), moving_to_fixed


@pytest.mark.parametrize(("seed", "fold"), [(2, False), (4, True)])
def test_a_map_whose_contrast_is_not_linear_is_refined_through_a_fitted_one_and_never_ok(seed, fold):
    import autoreg
    from autoreg.config import RegistrationConfig
    from autoreg.geometry import apply_matrix, mean_grid_distance

    fixed, moving, truth = _rotated_pair(seed, 25.0 + 37 * seed, fold)

    def error(result) -> float:
        return mean_grid_distance(result.fit.to_fixed, lambda xy: apply_matrix(truth, xy), moving.shape)

    mapped = autoreg.register(fixed, moving, rng=0)
    assert error(mapped) < 2.0  # the same-resolution tolerance
    assert mapped.verdict.level == "low_confidence"
    assert any(r.startswith("mapped_contrast:") for r in mapped.verdict.reasons), mapped.verdict.reasons
    linear = autoreg.register(fixed, moving, rng=0, config=RegistrationConfig(refine_contrast_knots=0))
    assert error(linear) > 3.0  # a linear contrast's sharp but biased optimum
    assert not any(r.startswith("mapped_contrast:") for r in linear.verdict.reasons)


def test_the_contrast_options_are_checked():
    from autoreg.config import RegistrationConfig
    from autoreg.errors import InputError

    with pytest.raises(InputError, match="refine_contrast_knots"):
        RegistrationConfig(refine_contrast_knots=2)
    with pytest.raises(InputError, match="refine_contrast_rounds"):
        RegistrationConfig(refine_contrast_rounds=0)
