"""Moving pixels that are not square in fixed pixels: registered as a square-pixelled copy (autoreg.regrid)."""

import numpy as np
import pytest
from helpers import REAL_PFM_SCAN, centred, rigid_matrix

import autoreg
from autoreg.datatypes import Image
from autoreg.geometry import apply_matrix, mean_grid_distance
from autoreg.regrid import pixel_aspect, squared
from autoreg.synthetic import make_pair
from autoreg.units import Calibration, pixel_to_physical

FIXED_SHAPE = (512, 512)


def _error(result, truth: np.ndarray, moving_shape: tuple[int, int]) -> float:
    return mean_grid_distance(result.fit.to_fixed, lambda xy: apply_matrix(truth, xy), moving_shape)


@pytest.fixture(scope="module")
def skewed_map():
    """A 60×20 map (W×H) whose pixels are 6 × 18 fixed px, at 35°, with USID-like pixel sizes: 3:1 pixels."""
    moving_shape = (20, 60)
    truth = centred(rigid_matrix(35.0, 0.0, 0.0) @ np.diag([6.0, 18.0, 1.0]), FIXED_SHAPE, moving_shape, (7.0, -5.0))
    pair = make_pair(seed=11, fixed_shape=FIXED_SHAPE, moving_shape=moving_shape, matrix=truth)
    fixed = Image(pair.fixed, pixel_size_xy=(1.0, 1.0), units="nm", origin=(0.0, 0.0))
    moving = Image(pair.moving, pixel_size_xy=(6.0, 18.0), units="nm", origin=(0.0, 0.0),
                   cube=np.stack([pair.moving, 2.0 * pair.moving + 1.0], axis=-1))
    return fixed, moving, truth


def test_the_aspect_comes_from_both_pixel_sizes():
    assert pixel_aspect(Calibration((1.0, 1.0)), Calibration((6.0, 18.0))) == pytest.approx(3.0)
    assert pixel_aspect(Calibration((2.0, 1.0)), Calibration((6.0, 6.0))) == pytest.approx(2.0)  # fixed skewed
    assert pixel_aspect(Calibration((1.0, -1.0)), Calibration((-4.0, 2.0))) == pytest.approx(0.5)  # signs ignored
    assert pixel_aspect(Calibration(), Calibration((6.0, 18.0))) is None


@pytest.mark.parametrize(("aspect", "copy_shape", "scale_xy"), [(3.0, (60, 60), (1.0, 3.0)),
                                                                 (1 / 3, (20, 180), (3.0, 1.0))])
def test_the_square_copy_resamples_the_coarser_axis_and_keeps_physical_positions(aspect, copy_shape, scale_xy):
    rng = np.random.default_rng(0)
    data = rng.normal(size=(20, 60)).astype(np.float32)
    data[3, 4] = np.nan
    size = (6.0, 18.0) if aspect > 1 else (18.0, 6.0)
    image = Image(data, pixel_size_xy=size, units="nm", origin=(5.0, -3.0))
    copy, given_to_copy = squared(image, aspect)
    assert copy.shape == copy_shape and copy.cube is None
    np.testing.assert_allclose(np.diag(given_to_copy)[:2], scale_xy)
    assert abs(copy.pixel_size_xy[0]) == pytest.approx(abs(copy.pixel_size_xy[1]))  # square now
    xy = np.array([[0.0, 0.0], [59.0, 19.0], [10.5, 7.25]])
    np.testing.assert_allclose(apply_matrix(pixel_to_physical(copy.calibration), apply_matrix(given_to_copy, xy)),
                               apply_matrix(pixel_to_physical(image.calibration), xy), atol=1e-9)
    # values at the pixel centres of the given grid are kept where the copy samples them (every third line)
    step = 3
    kept = copy.data[1::step] if aspect > 1 else copy.data[:, 1::step]
    ok = np.isfinite(kept) & np.isfinite(data)
    np.testing.assert_allclose(kept[ok], data[ok], atol=1e-5)
    assert np.isnan(copy.data).sum() >= 1  # the missing pixel stays missing


def test_a_map_with_3_to_1_pixels_is_registered_through_a_square_copy(skewed_map):
    fixed, moving, truth = skewed_map
    result = autoreg.register(fixed, moving)
    assert result.verdict.level == "ok", result.verdict.reasons
    assert _error(result, truth, moving.shape) < 0.25 * 6.0  # a quarter of the map pixel's short side
    assert result.moving_shape == (20, 60) and result.warped.shape == FIXED_SHAPE
    assert "square pixels" in result.fit.why
    payload = result.to_dict()
    assert payload["pixel_aspect"] == pytest.approx(3.0) and payload["moving_shape"] == [20, 60]
    json_matrix = np.asarray(payload["matrix"], float)  # what scripts read: the map of the map as given
    assert mean_grid_distance(lambda xy: apply_matrix(json_matrix, xy), lambda xy: apply_matrix(truth, xy),
                              moving.shape) < 0.25 * 6.0
    # the inlier keypoints are in the map's own pixels: the fit takes them onto their fixed partners
    inl = result.fit.inliers
    moved = apply_matrix(result.matrix, result.fit.matches.moving_xy[inl])
    assert np.median(np.linalg.norm(moved - apply_matrix(truth, result.fit.matches.moving_xy[inl]), axis=1)) < 2.0
    # the warped image and the cube are the data as given, interpolated once, on the fixed grid
    both = result.footprint & np.isfinite(result.warped)
    assert both.mean() > 0.2
    band0, band1 = result.warped_cube[..., 0], result.warped_cube[..., 1]
    finite = both & np.isfinite(band0) & np.isfinite(band1)
    np.testing.assert_allclose(band1[finite], 2.0 * band0[finite] + 1.0, rtol=1e-4, atol=1e-4)
    assert np.corrcoef(result.warped[both], fixed.data[both])[0, 1] > 0.9


def test_control_points_stay_in_the_maps_own_pixels(skewed_map):
    fixed, moving, truth = skewed_map
    moving_xy = np.array([[3.0, 2.0], [55.0, 3.0], [50.0, 17.0], [6.0, 16.0], [30.0, 10.0], [20.0, 5.0]])
    fixed_xy = apply_matrix(truth, moving_xy)
    result = autoreg.register(fixed, moving, points=(fixed_xy, moving_xy), automatic=False, model="affine",
                              cube_step=None)
    assert result.source == "points" and "square pixels" in result.fit.why
    assert _error(result, truth, moving.shape) < 1.0


def test_nearly_square_pixels_are_registered_as_they_are(skewed_map):
    fixed, moving, _ = skewed_map
    near = Image(moving.data[:, :40], pixel_size_xy=(6.0, 6.06), units="nm", origin=(0.0, 0.0))  # 1 % skew
    result = autoreg.register(fixed, near)
    assert result.to_dict()["pixel_aspect"] == pytest.approx(1.01)
    assert result.fit is None or "square pixels" not in result.fit.why


def test_a_mirrored_map_with_skewed_pixels_is_both_unmirrored_and_squared():
    moving_shape = (24, 48)
    truth = centred(rigid_matrix(-20.0, 0.0, 0.0) @ np.diag([8.0, 16.0, 1.0]), FIXED_SHAPE, moving_shape, (7.0, -5.0))
    pair = make_pair(seed=12, fixed_shape=FIXED_SHAPE, moving_shape=moving_shape, matrix=truth)
    from autoreg.mirror import flip_rows_matrix

    fixed = Image(pair.fixed, pixel_size_xy=(1.0, 1.0), units="nm", origin=(0.0, 0.0))
    # stored bottom row first, as its falling y positions say
    moving = Image(pair.moving[::-1].copy(), pixel_size_xy=(8.0, -16.0), units="nm", origin=(0.0, 23 * 16.0))
    result = autoreg.register(fixed, moving)
    assert result.verdict.level == "ok", result.verdict.reasons
    payload = result.to_dict()
    assert payload["mirrored"] is True and payload["mirror_source"] == "metadata"
    assert payload["pixel_aspect"] == pytest.approx(2.0)
    assert np.linalg.det(result.matrix[:2, :2]) < 0
    assert _error(result, truth @ flip_rows_matrix(moving_shape), moving_shape) < 0.25 * 8.0


def test_the_user_can_say_the_pixels_are_not_square(skewed_map):
    """Plain arrays (a TIFF export has no pixel size): ``pixel_size`` with an (x, y) pair does what metadata does."""
    fixed, moving, truth = skewed_map
    result = autoreg.register(fixed.data, moving.data, pixel_size=(1.0, (6.0, 18.0)))
    assert result.verdict.level == "ok", result.verdict.reasons
    assert result.to_dict()["pixel_aspect"] == pytest.approx(3.0) and result.to_dict()["scale_source"] == "user"
    assert _error(result, truth, moving.shape) < 0.25 * 6.0
    square = autoreg.register(fixed.data, moving.data, pixel_size=(1.0, 6.0))  # said square: taken at its word
    assert square.to_dict()["pixel_aspect"] == pytest.approx(1.0)
    assert square.fit is None or "square pixels" not in square.fit.why


def test_the_command_line_takes_a_pixel_as_width_x_height(skewed_map, tmp_path):
    """`register --pixel-size 1 6x18` and `batch --pixel-size 1 6x18` on TIFF exports; a malformed size is one line
    and exit 2, with nothing written."""
    import json

    import tifffile
    from typer.testing import CliRunner

    from autoreg.cli import app

    fixed, moving, truth = skewed_map
    tifffile.imwrite(tmp_path / "topo.tif", fixed.data.astype(np.float32))
    tifffile.imwrite(tmp_path / "grid.tif", moving.data.astype(np.float32))
    runner = CliRunner()
    done = runner.invoke(app, ["register", str(tmp_path / "topo.tif"), str(tmp_path / "grid.tif"), "--pixel-size",
                               "1", "6x18", "--json"])
    assert done.exit_code == 0, done.stdout + done.stderr
    payload = json.loads(done.stdout)
    assert payload["pixel_aspect"] == pytest.approx(3.0) and payload["scale_source"] == "user"
    matrix = np.asarray(payload["matrix"], float)
    assert mean_grid_distance(lambda xy: apply_matrix(matrix, xy), lambda xy: apply_matrix(truth, xy),
                              (20, 60)) < 0.25 * 6.0
    batch = runner.invoke(app, ["batch", str(tmp_path / "grid.tif"), "--reference", str(tmp_path / "topo.tif"),
                                "--pixel-size", "1", "6×18", "--out-dir", str(tmp_path / "rows"), "--workers", "1"])
    assert batch.exit_code == 0, batch.stdout + batch.stderr
    for bad in (["1", "6x"], ["1", "6x18x2"], ["a", "6"], ["1", "0x6"]):
        refused = runner.invoke(app, ["register", str(tmp_path / "topo.tif"), str(tmp_path / "grid.tif"),
                                      "--pixel-size", *bad, "--out", str(tmp_path / "never.tif")])
        assert refused.exit_code == 2, (bad, refused.stdout + refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1 and not (tmp_path / "never.tif").exists()


REAL = REAL_PFM_SCAN


@pytest.mark.skipif(not REAL.exists(), reason=f"real USID scan not found at {REAL}")
@pytest.mark.parametrize("channel", ["000", "002"])  # height, deflection
@pytest.mark.parametrize(("step", "crop"), [(2, (20, 100, 10, 110)), (3, (10, 118, 20, 120))])
def test_a_real_scan_with_every_second_or_third_line_is_registered_onto_the_full_scan(channel, step, crop):
    """The real PFM scan, cropped and keeping every ``step``-th scan line (a faster scan of part of the area, its
    pixels ``step`` times as high as wide), registered onto the full scan from the pixel sizes alone."""
    full = autoreg.load_image(f"{REAL}::/Measurement_000/Channel_{channel}/Raw_Data")
    size = abs(full.pixel_size_xy[0])
    r0, r1, c0, c1 = crop
    lines = Image(np.asarray(full.data)[r0:r1:step, c0:c1], pixel_size_xy=(size, step * size), units=full.units,
                  origin=(0.0, 0.0))
    truth = np.array([[1.0, 0.0, c0], [0.0, step, r0], [0.0, 0.0, 1.0]])
    result = autoreg.register(full, lines)
    assert result.verdict.level == "ok", result.verdict.reasons
    assert result.to_dict()["pixel_aspect"] == pytest.approx(step, rel=1e-3)
    assert _error(result, truth, lines.shape) < 0.25
