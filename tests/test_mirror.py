"""Mirrored scans: a moving image whose pixel grid is the fixed one's mirror image (autoreg.mirror)."""

import json
import subprocess

import numpy as np
import pytest
from helpers import autoreg_command, centred, rigid_matrix

import autoreg
from autoreg.datatypes import Image
from autoreg.errors import InputError
from autoreg.geometry import apply_matrix, mean_grid_distance
from autoreg.mirror import flip_rows_matrix, flipped, mirrored_by_metadata
from autoreg.synthetic import make_pair
from autoreg.units import Calibration, pixel_to_physical


def _error(result, truth: np.ndarray, moving_shape: tuple[int, int]) -> float:
    return mean_grid_distance(result.fit.to_fixed, lambda g: apply_matrix(truth, g), moving_shape)


@pytest.fixture(scope="module")
def same_resolution():
    """A 256² pair at 12°; the moving scan as stored with its rows reversed, and the truth for that storage."""
    shape = (256, 256)
    truth = centred(rigid_matrix(12.0, 0.0, 0.0), shape, shape)
    pair = make_pair(seed=4, fixed_shape=shape, moving_shape=shape, matrix=truth)
    return pair.fixed, pair.moving[::-1].copy(), truth @ flip_rows_matrix(shape)


@pytest.fixture(scope="module")
def coarse_map():
    """A 40×40 map of a 512² scan's field at 15°, 12.8 fixed px per map pixel, stored with its rows reversed."""
    fixed_shape, moving_shape = (512, 512), (40, 40)
    truth = centred(rigid_matrix(15.0, 0.0, 0.0, scale=12.8), fixed_shape, moving_shape)
    pair = make_pair(seed=2, fixed_shape=fixed_shape, moving_shape=moving_shape, matrix=truth)
    return pair.fixed, pair.moving[::-1].copy(), truth @ flip_rows_matrix(moving_shape), truth


def test_the_row_flip_is_its_own_inverse_and_reverses_the_rows():
    flip = flip_rows_matrix((40, 30))
    np.testing.assert_allclose(flip @ flip, np.eye(3))
    corners = np.array([[0.0, 0.0], [29.0, 0.0], [29.0, 39.0], [0.0, 39.0]])
    np.testing.assert_allclose(apply_matrix(flip, corners), [[0, 39], [29, 39], [29, 0], [0, 0]])
    image = Image(np.arange(12.0).reshape(4, 3), pixel_size_xy=(2.0, 3.0), units="nm", origin=(10.0, 20.0),
                  cube=np.arange(24.0).reshape(4, 3, 2))
    mirror = flipped(image)
    np.testing.assert_array_equal(mirror.data, image.data[::-1])
    np.testing.assert_array_equal(mirror.cube, image.cube[::-1])
    # the same physical position for pixel (x, y) of the mirror as for pixel (x, rows - 1 - y) of the image
    xy = np.array([[0.0, 0.0], [2.0, 3.0], [1.0, 1.5]])
    np.testing.assert_allclose(apply_matrix(pixel_to_physical(mirror.calibration), xy),
                               apply_matrix(pixel_to_physical(image.calibration), apply_matrix(flip_rows_matrix((4, 3)), xy)))


@pytest.mark.parametrize(("fixed_size", "moving_size", "mirrored"), [
    ((1.0, 1.0), (2.0, 2.0), False), ((1.0, 1.0), (2.0, -2.0), True), ((1.0, -1.0), (2.0, 2.0), True),
    ((-1.0, 1.0), (2.0, -2.0), False), ((1.0, 1.0), (-2.0, -2.0), False), ((1.0, 1.0), None, None),
])
def test_the_pixel_sizes_signs_say_whether_the_grids_are_mirrored(fixed_size, moving_size, mirrored):
    assert mirrored_by_metadata(Calibration(fixed_size), Calibration(moving_size)) is mirrored


def test_a_mirrored_scan_is_registered_when_the_user_says_so(same_resolution):
    fixed, moving, truth = same_resolution
    result = autoreg.register(fixed, moving, mirrored=True)
    assert result.verdict.level == "ok", result.verdict.reasons
    assert np.linalg.det(result.matrix[:2, :2]) < 0  # the map of the image as given holds the reflection
    assert _error(result, truth, moving.shape) < 0.3
    assert result.extra["mirrored"] is True and result.extra["mirror_source"] == "user"
    assert "mirror image" in result.fit.why
    # the keypoints are where they are in the image as given: the fit maps them onto their fixed partners
    inliers = result.fit.matches
    assert len(inliers) > 10
    assert np.median(np.linalg.norm(apply_matrix(truth, inliers.moving_xy[result.fit.inliers])
                                    - inliers.fixed_xy[result.fit.inliers], axis=1)) < 2.0
    # the warped image is the data as given on the fixed grid
    forward = autoreg.register(fixed, moving[::-1].copy())
    both = result.footprint & forward.footprint
    assert both.mean() > 0.5
    np.testing.assert_allclose(result.warped[both], forward.warped[both], atol=0.05 * np.nanstd(fixed))
    # the report says so, and the report of the unmirrored registration does not
    from autoreg.report import build_figure

    def title(fig):
        return " ".join(text.get_text() for text in fig.texts)  # the suptitle is the figure's own text

    assert "mirrored (said by the user)" in title(build_figure(result, fixed, moving))
    assert "mirrored" not in title(build_figure(forward, fixed, moving[::-1]))


def test_a_mirrored_scan_is_not_ok_unless_autoreg_knows(same_resolution):
    fixed, moving, _ = same_resolution
    result = autoreg.register(fixed, moving)
    assert result.verdict.level != "ok"
    assert result.extra["mirrored"] is False and result.extra["mirror_source"] == "none"


def test_the_metadata_says_a_map_is_mirrored_and_its_physical_map_turns_only(coarse_map):
    fixed, moving, truth, _ = coarse_map
    fixed_img = Image(fixed, pixel_size_xy=(1.0, 1.0), units="nm", origin=(0.0, 0.0))
    # the map stored bottom row first: its y positions fall with the row index
    moving_img = Image(moving, pixel_size_xy=(12.8, -12.8), units="nm", origin=(0.0, 39 * 12.8))
    result = autoreg.register(fixed_img, moving_img)
    assert result.verdict.level == "ok", result.verdict.reasons
    assert result.extra["mirrored"] is True and result.extra["mirror_source"] == "metadata"
    assert _error(result, truth, moving.shape) < 0.5 * 12.8 / 4
    physical = np.asarray(result.to_dict()["matrix_physical"], float)
    assert np.linalg.det(physical[:2, :2]) > 0  # in physical units both scans are one frame, turned
    np.testing.assert_allclose(np.degrees(np.arctan2(physical[1, 0], physical[0, 0])), 15.0, atol=0.5)
    # the user's word overrides the metadata
    assert autoreg.register(fixed_img, moving_img, mirrored=False).extra["mirrored"] is False


def test_a_map_mirrored_left_to_right_is_a_row_flip_and_a_half_turn(coarse_map):
    fixed, moving, _, unflipped_truth = coarse_map
    as_given = moving[::-1, ::-1].copy()  # rows back, columns reversed: mirrored about the other axis
    flip_columns = np.array([[-1.0, 0.0, 39.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    result = autoreg.register(fixed, as_given, mirrored=True)
    assert result.verdict.level == "ok", result.verdict.reasons
    assert _error(result, unflipped_truth @ flip_columns, as_given.shape) < 0.5 * 12.8 / 4


def test_control_points_stay_in_the_moving_image_as_given(same_resolution):
    fixed, moving, truth = same_resolution
    rng = np.random.default_rng(0)
    moving_xy = rng.uniform(30, 220, size=(12, 2))
    fixed_xy = apply_matrix(truth, moving_xy)
    for model in ("affine", "piecewise-affine"):
        result = autoreg.register(fixed, moving, model=model, points=(fixed_xy, moving_xy), automatic=False,
                                  mirrored=True)
        assert result.source == "points" and result.verdict.level != "failed", result.verdict.reasons
        np.testing.assert_allclose(result.fit.to_fixed(moving_xy), fixed_xy, atol=0.5)
        np.testing.assert_allclose(result.fit.to_moving(fixed_xy), moving_xy, atol=0.5)
        np.testing.assert_allclose(result.fit.matches.moving_xy, moving_xy, atol=0.5)


def test_the_cube_rides_along_a_mirrored_map(coarse_map):
    fixed, moving, _, _ = coarse_map
    cube = np.stack([moving, 2.0 * moving], axis=-1)
    result = autoreg.register(fixed, Image(moving, cube=cube), mirrored=True)
    assert result.verdict.level == "ok"
    inside = result.footprint & np.isfinite(result.warped_cube[..., 0])
    assert inside.mean() > 0.1
    np.testing.assert_allclose(result.warped_cube[..., 0][inside], result.warped[inside], atol=1e-4)
    np.testing.assert_allclose(result.warped_cube[..., 1][inside], 2.0 * result.warped[inside], atol=2e-4)


def test_mirrored_must_be_a_yes_or_no():
    image = np.random.default_rng(0).normal(size=(64, 64))
    with pytest.raises(InputError, match="mirrored must be True, False or None"):
        autoreg.register(image, image, mirrored="yes")


def test_the_command_line_registers_a_mirrored_map(tmp_path, coarse_map):
    fixed, moving, truth, _ = coarse_map
    np.save(tmp_path / "fixed.npy", fixed)
    np.save(tmp_path / "moving.npy", moving)
    done = subprocess.run(autoreg_command("register", str(tmp_path / "fixed.npy"), str(tmp_path / "moving.npy"),
                                          "--mirrored", "--json"), capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    payload = json.loads(done.stdout)
    assert payload["verdict"] == "ok" and payload["mirrored"] is True and payload["mirror_source"] == "user"
    matrix = np.asarray(payload["matrix"], float)
    assert mean_grid_distance(lambda g: apply_matrix(matrix, g), lambda g: apply_matrix(truth, g), (40, 40)) < 1.6
    table = subprocess.run(autoreg_command("register", str(tmp_path / "fixed.npy"), str(tmp_path / "moving.npy"),
                                           "--mirrored"), capture_output=True, text=True, check=False)
    assert table.returncode == 0, table.stderr
    assert "said by the user" in table.stdout and "reflection" in table.stdout


# --- the mirror check: an untold mirrored lattice is not a silent wrong ok

def _lattice_pair(mirror: bool):
    """A same-resolution lattice pair of the calibration split (a tuning split; its lattice has mirror lines and
    defects) as drawn, or with its moving rows reversed and nobody told; its moving → fixed truth matrix."""
    from bench.bench_accuracy import make_case

    case = make_case("calibration", "same_res", 4)
    assert case.source.startswith("lattice")
    moving, truth = np.asarray(case.moving), np.asarray(case.truth.matrix)
    if mirror:
        moving, truth = moving[::-1].copy(), truth @ flip_rows_matrix(moving.shape)
    return np.asarray(case.fixed), moving, truth, case.tolerance_px


@pytest.fixture(scope="module")
def lattice_results():
    """The lattice pair as drawn and mirrored, each registered without saying whether it is mirrored."""
    out = {}
    for mirror in (False, True):
        fixed, moving, truth, tolerance = _lattice_pair(mirror)
        out[mirror] = autoreg.register(fixed, moving), truth, tolerance
    return out


def test_an_untold_mirrored_lattice_is_doubted_not_ok(lattice_results):
    result, truth, tolerance = lattice_results[True]
    assert _error(result, truth, result.moving_shape) > 10 * tolerance  # the unmirrored pose: wrong
    assert result.verdict.level == "low_confidence", result.verdict
    (reason,) = result.verdict.reasons
    assert reason.startswith("mirror_doubt: the moving image's mirror image fits about as well")
    assert "--mirrored" in reason
    check = result.extra["mirror_check"]
    assert check["ran"] and check["doubt"]
    assert check["mirror_pearson_detrended"] > check["pearson_detrended"]  # the mirror fits better
    assert check["mirror_apart_px"] > 10 * tolerance


def test_the_same_lattice_as_drawn_stays_ok_as_its_mirror_fits_clearly_worse(lattice_results):
    result, truth, tolerance = lattice_results[False]
    assert result.verdict.level == "ok" and _error(result, truth, result.moving_shape) <= tolerance
    check = result.extra["mirror_check"]
    assert check["ran"] and not check["doubt"]
    margin = autoreg.RegistrationConfig().mirror_check_margin
    assert check["mirror_pearson_detrended"] < check["pearson_detrended"] - margin


def test_saying_whether_the_lattice_is_mirrored_skips_the_check():
    fixed, moving, truth, tolerance = _lattice_pair(True)
    told = autoreg.register(fixed, moving, mirrored=True)
    assert told.verdict.level != "failed" and _error(told, truth, moving.shape) <= tolerance
    assert "mirror_check" not in told.extra
    denied = autoreg.register(fixed, moving, mirrored=False)  # the user's word is kept, wrong as it is here
    assert "mirror_check" not in denied.extra


def test_content_that_does_not_repeat_is_not_checked(coarse_map):
    fixed, _, _, truth = coarse_map
    pair = make_pair(seed=2, fixed_shape=fixed.shape, moving_shape=(40, 40), matrix=truth)
    result = autoreg.register(pair.fixed, pair.moving)
    assert result.verdict.level == "ok"
    check = result.extra["mirror_check"]
    assert not check["ran"] and check["why"] in ("the content does not repeat", "the shift check was not measured")


def test_a_spent_time_budget_skips_the_check_says_so_and_keeps_no_ok():
    """A budget leaves the check out; the ok it was owed is not kept (it was kept before: the wrong ok below)."""
    from autoreg.budget import Deadline
    from autoreg.pipeline import _mirror_checked

    fixed, moving, truth, tolerance = _lattice_pair(True)
    result = autoreg.register(fixed, moving, mirrored=False)  # the wrong ok the check is for
    assert result.verdict.level == "ok" and _error(result, truth, moving.shape) > 10 * tolerance
    deadline = Deadline(1e-9)
    kept, check = _mirror_checked(result, "features", Image(fixed), Image(moving), model="auto",
                                  config=autoreg.RegistrationConfig(), seed=0, scale=None, pixel_size=None,
                                  deadline=deadline, say=lambda _msg: None)
    assert check == {"ran": False, "why": "the time budget was spent"}
    assert kept.verdict.level == "low_confidence" and len(kept.verdict.reasons) == 1
    assert kept.verdict.reasons[0].startswith("mirror_unchecked:") and "--not-mirrored" in kept.verdict.reasons[0]
    assert kept.fit is result.fit  # the pose stays; only the promise goes


def test_a_mirror_strategy_the_budget_stops_leaves_no_ok():
    """The check started in time, but the budget stopped the mirror's search part way: nothing was checked."""
    from autoreg.budget import Deadline
    from autoreg.pipeline import _mirror_checked

    class NotYetSpent(Deadline):  # spent only for the mirror's own registration, which gets the 1 ms left
        def expired(self) -> bool:
            return False

    fixed, moving, _, _ = _lattice_pair(True)
    result = autoreg.register(fixed, moving, mirrored=False)
    assert result.verdict.level == "ok"
    kept, check = _mirror_checked(result, "search", Image(fixed), Image(moving), model="auto",
                                  config=autoreg.RegistrationConfig(), seed=0, scale=None, pixel_size=None,
                                  deadline=NotYetSpent(1e-3), say=lambda _msg: None)
    assert check["ran"] and check["mirror_verdict"] == "failed" and not check["doubt"]
    assert check["why"] == "the time budget stopped the mirror's strategy"
    assert kept.verdict.level == "low_confidence" and kept.verdict.reasons[0].startswith("mirror_unchecked:")
    # with time to finish, the same search is a check like any other: the ok is doubted or kept, never unchecked
    full, done = _mirror_checked(result, "search", Image(fixed), Image(moving), model="auto",
                                 config=autoreg.RegistrationConfig(), seed=0, scale=None, pixel_size=None,
                                 deadline=Deadline(None), say=lambda _msg: None)
    assert done["ran"] and "why" not in done
    assert not any(r.startswith("mirror_unchecked:") for r in full.verdict.reasons)


def test_the_command_line_says_the_mirror_doubt_and_exits_3(tmp_path):
    fixed, moving, _, _ = _lattice_pair(True)
    np.save(tmp_path / "fixed.npy", fixed)
    np.save(tmp_path / "moving.npy", moving)
    files = (str(tmp_path / "fixed.npy"), str(tmp_path / "moving.npy"))
    done = subprocess.run(autoreg_command("register", *files, "--json"), capture_output=True, text=True, check=False)
    assert done.returncode == 3, done.stderr
    payload = json.loads(done.stdout)
    assert payload["verdict"] == "low_confidence" and payload["reasons"][0].startswith("mirror_doubt:")
    assert payload["mirror_check"]["ran"] is True and payload["mirror_check"]["doubt"] is True
    told = subprocess.run(autoreg_command("register", *files, "--not-mirrored", "--json"), capture_output=True,
                          text=True, check=False)
    assert told.returncode == 0, told.stderr  # the user's word: no check
    assert "mirror_check" not in json.loads(told.stdout)


def test_a_mirror_that_passes_elsewhere_but_fits_clearly_worse_leaves_ok():
    from bench.bench_accuracy import make_case

    case = make_case("lattice", "near_periodic", 12)  # the lattice tuning split: a lattice with few defects
    result = autoreg.register(case.fixed, case.moving)
    assert result.verdict.level == "ok"
    assert _error(result, np.asarray(case.truth.matrix), result.moving_shape) <= case.tolerance_px
    check = result.extra["mirror_check"]
    assert check["ran"] and not check["doubt"] and check["mirror_verdict"] != "failed"
    assert check["mirror_apart_px"] > 10 * case.tolerance_px  # the mirror lines the lattice up elsewhere
    margin = autoreg.RegistrationConfig().mirror_check_margin
    assert check["mirror_pearson_detrended"] < check["pearson_detrended"] - 2 * margin


def test_an_untold_mirrored_lattice_with_non_square_pixels_is_checked_too():
    """A map whose pixels are twice as high as wide is registered as a copy with square pixels; the copy is checked
    like any untold pair (before, it was registered as said not mirrored: a wrong ok, 135 px off)."""
    import cv2

    fixed, moving, truth, tolerance = _lattice_pair(True)
    rows, cols = moving.shape
    coarse = cv2.resize(moving.astype(np.float32), (cols, rows // 2), interpolation=cv2.INTER_AREA)
    coarse_to_moving = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.5], [0.0, 0.0, 1.0]])  # row y' averages 2y', 2y'+1
    result = autoreg.register(fixed, coarse, pixel_size=((1.0, 1.0), (1.0, 2.0)))
    assert result.extra["pixel_aspect"] == pytest.approx(2.0)
    assert _error(result, truth @ coarse_to_moving, coarse.shape) > 10 * tolerance  # the unmirrored pose: wrong
    assert result.verdict.level == "low_confidence", result.verdict
    assert result.verdict.reasons[0].startswith("mirror_doubt:")
    assert result.extra["mirror_check"]["ran"] and result.extra["mirror_check"]["doubt"]
    told = autoreg.register(fixed, coarse, pixel_size=((1.0, 1.0), (1.0, 2.0)), mirrored=True)
    assert told.verdict.level == "ok" and _error(told, truth @ coarse_to_moving, coarse.shape) <= tolerance
    assert "mirror_check" not in told.extra
