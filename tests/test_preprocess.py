"""Working views: resize convention, scale prior, blur to the coarser resolution."""

import cv2
import numpy as np
import pytest

from autoreg.config import RegistrationConfig
from autoreg.datatypes import Image
from autoreg.preprocess import (
    expected_scale,
    make_working_view,
    level,
    resize_matrix,
    robust_unit_range,
    working_scales,
)


@pytest.mark.parametrize("size", [(25, 40), (100, 160), (250, 400)])
def test_resize_matrix_matches_cv2_resize(size):
    h, w = 100, 160
    y, x = np.mgrid[:h, :w].astype(np.float32)
    ramp = 3 * x + 7 * y
    out_w, out_h = size[1], size[0]
    interp = cv2.INTER_AREA if out_w < w else cv2.INTER_LINEAR
    resized = cv2.resize(ramp, (out_w, out_h), interpolation=interp)
    to_original = np.linalg.inv(resize_matrix(out_w / w, out_h / h))
    ry, rx = np.mgrid[2 : out_h - 2, 2 : out_w - 2].astype(float)
    orig = np.stack([rx, ry, np.ones_like(rx)], -1) @ to_original.T
    np.testing.assert_allclose(resized[2:-2, 2:-2], 3 * orig[..., 0] + 7 * orig[..., 1], atol=0.05)


def test_expected_scale_prefers_metadata_and_converts_units():
    fixed = Image(np.zeros((1024, 1024)), pixel_size_xy=(0.1, 0.1), units="nm")
    moving = Image(np.zeros((40, 40)), pixel_size_xy=(2e-9, 2e-9), units="m")
    scale, source = expected_scale(fixed, moving, RegistrationConfig())
    assert source == "metadata"
    assert scale == pytest.approx(20.0)


def test_expected_scale_falls_back_to_field_of_view():
    scale, source = expected_scale(Image(np.zeros((1024, 1024))), Image(np.zeros((40, 40))), RegistrationConfig())
    assert expected_scale(Image(np.zeros((400, 400))), Image(np.zeros((300, 300))), RegistrationConfig()) == (1.0, "same_pixel_size")
    assert source == "field_of_view"
    assert scale == pytest.approx(25.6)


@pytest.mark.parametrize(("fixed_side", "moving_side", "expected"), [
    (512, 256, (2.0, "field_of_view")), (256, 512, (0.5, "field_of_view")),  # exactly 2×: a resolution change
    (512, 257, (1.0, "same_pixel_size")), (257, 512, (1.0, "same_pixel_size")),  # just inside the band
])
def test_sizes_exactly_2x_apart_are_a_resolution_change_not_a_crop(fixed_side, moving_side, expected):
    fixed, moving = Image(np.zeros((fixed_side, fixed_side))), Image(np.zeros((moving_side, moving_side)))
    assert expected_scale(fixed, moving, RegistrationConfig()) == expected


def test_working_scales_match_the_coarser_image():
    cfg = RegistrationConfig()
    sf, sm = working_scales(Image(np.zeros((1024, 1024))), Image(np.zeros((40, 40))), 25.6, cfg)
    assert sf == pytest.approx(0.25)
    assert sm == pytest.approx(6.4)
    # same resolution, small images: native resolution
    sf, sm = working_scales(Image(np.zeros((384, 384))), Image(np.zeros((384, 384))), 1.0, cfg)
    assert (sf, sm) == (1.0, 1.0)
    # the reverse pair (fine moving, coarse fixed) is symmetric
    sf, sm = working_scales(Image(np.zeros((40, 40))), Image(np.zeros((1024, 1024))), 1 / 25.6, cfg)
    assert sf == pytest.approx(6.4)
    assert sm == pytest.approx(0.25)


@pytest.mark.parametrize("level_scans", [True, False])
def test_levelling_removes_the_plane_and_unit_range(level_scans):
    y, x = np.mgrid[:50, :60].astype(float)
    bump = np.exp(-((x - 30) ** 2 + (y - 25) ** 2) / 20)
    flat, steps = level(bump + 0.5 * x - 0.2 * y, np.ones_like(bump, bool), RegistrationConfig(level_scans=level_scans))
    assert np.corrcoef(flat.ravel(), bump.ravel())[0, 1] > 0.99
    assert any(s.startswith("background") for s in steps) and any(s.startswith("rows") for s in steps) == level_scans
    unit = robust_unit_range(flat, np.ones_like(flat, bool))
    assert unit.min() == 0.0 and unit.max() == 1.0


def test_working_view_maps_back_to_original_pixels_and_masks_nan():
    data = np.random.default_rng(0).normal(size=(200, 300))
    data[:20] = np.nan
    view = make_working_view(Image(data), 0.5, coarse_pixel_wpx=1.0, config=RegistrationConfig())
    assert view.image8.shape == (100, 150)
    assert view.image8.dtype == np.uint8
    assert not view.valid[:9].any() and view.valid[12:].all()
    np.testing.assert_allclose(view.to_original @ [0, 0, 1], [0.5, 0.5, 1])


def test_a_gradient_view_made_from_the_intensity_views_levelled_image_is_the_one_made_from_scratch(monkeypatch):
    from autoreg import preprocess
    from autoreg.synthetic import make_scene

    rng = np.random.default_rng(3)
    data = make_scene((300, 260), seed=2, feature_px=1.0).height + rng.normal(0, 0.3, (300, 1))  # line offsets
    config = RegistrationConfig()
    intensity = make_working_view(Image(data), 0.6, coarse_pixel_wpx=2.0, config=config)
    scratch = make_working_view(Image(data), 0.6, coarse_pixel_wpx=2.0, config=config, gradient=True)
    calls = []
    monkeypatch.setattr(preprocess, "reduced", lambda *a, **k: calls.append(a))
    shared = make_working_view(Image(data), 0.6, coarse_pixel_wpx=2.0, config=config, gradient=True,
                               levelled=intensity.levelled)
    assert calls == []  # nothing levelled again
    assert shared.levelled is intensity.levelled and shared.levelled.steps == scratch.levelled.steps
    np.testing.assert_allclose(shared.unit, scratch.unit, atol=1e-5)
    assert np.abs(shared.image8.astype(int) - scratch.image8.astype(int)).max() <= 1
    np.testing.assert_array_equal(shared.valid, scratch.valid)
    np.testing.assert_allclose(shared.to_original, scratch.to_original)
    assert not np.allclose(shared.unit, intensity.unit, atol=0.05)  # a gradient view, not the intensity one


def test_scan_line_contrast_tells_line_artefacts_from_texture():
    from autoreg.preprocess import scan_line_contrast
    from autoreg.synthetic import make_scene

    rng = np.random.default_rng(0)
    terrain = make_scene((192, 192), seed=1, feature_px=1.0).height + rng.normal(0, 0.005, (192, 192))
    assert 0.5 < scan_line_contrast(terrain) < 2.0
    assert 0.5 < scan_line_contrast(terrain.T.copy()) < 2.0
    lined = terrain + rng.normal(0, 0.3 * terrain.std(), (192, 1))
    assert scan_line_contrast(lined) > 5
    assert scan_line_contrast(np.ones((32, 32))) < 2.0


def test_rows_are_aligned_only_when_the_scan_shows_line_artefacts():
    rng = np.random.default_rng(1)
    y, x = np.mgrid[:64, :64].astype(float)
    texture = np.sin(x / 3.0) * np.cos(y / 5.0) + rng.normal(0, 0.05, (64, 64))
    _, clean_steps = level(texture, np.ones((64, 64), bool), RegistrationConfig())
    assert clean_steps[0].startswith("rows: none")
    lined = texture + rng.normal(0, 0.5, (64, 1))
    levelled, lined_steps = level(lined, np.ones((64, 64), bool), RegistrationConfig())
    assert lined_steps[0] == "rows: median_difference"
    assert np.corrcoef(levelled.ravel(), texture.ravel())[0, 1] > 0.95 > np.corrcoef(lined.ravel(), texture.ravel())[0, 1]


def test_a_dominant_bow_is_removed_and_mild_content_is_kept():
    """A 32 px map whose bow is 8 times its content: the quadratic goes (the plane alone leaves the bow); the same
    map without the bow keeps its levelling at a plane."""
    from autoreg.levelling import remove_background
    from autoreg.synthetic import make_scene

    terrain = make_scene((32, 32), seed=4, feature_px=1.0).height.astype(float)
    terrain = (terrain - terrain.mean()) / terrain.std()
    y, x = np.mgrid[:32, :32] / 31.0 * 2 - 1
    bowed = terrain + 8.0 * (0.7 * x**2 - 0.5 * y**2 + 0.3 * x)
    valid = np.ones(terrain.shape, bool)
    content = remove_background(terrain, order=2)  # what a quadratic background cannot tell from a bow

    def similarity(a: np.ndarray) -> float:
        return abs(float(np.corrcoef(a.ravel(), content.ravel())[0, 1]))

    cfg = RegistrationConfig()
    flattened, steps = level(bowed, valid, cfg)
    assert any(s.startswith("bow: order 2") for s in steps), steps
    assert similarity(flattened) > 0.99
    planar, _ = level(bowed, valid, cfg.with_(bow_max_residual=0.0))  # the plane only: the bow dominates
    assert similarity(planar) < 0.5
    _, kept_steps = level(terrain, valid, cfg)
    assert not any(s.startswith("bow") for s in kept_steps), kept_steps
