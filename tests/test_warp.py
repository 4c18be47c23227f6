"""Warp direction and footprint, checked against analytic ground truth."""

import numpy as np
import pytest
from helpers import exact_fit, fit_from_matrix, rigid_matrix, sample_moving, smooth_field

from autoreg.warp import apply_transform, apply_transform_cube, grid_to_moving_maps

FIXED_SHAPE = (120, 140)


@pytest.mark.parametrize(
    "matrix",
    [
        rigid_matrix(0, 7.0, -3.0),
        rigid_matrix(20, 30.0, -10.0, scale=1.1),
        np.array([[1.05, 0.1, 5.0], [-0.08, 0.95, 12.0], [1e-4, -2e-4, 1.0]]),
    ],
    ids=["shift", "similarity", "projective"],
)
def test_warp_puts_moving_content_where_the_matrix_says(matrix):
    moving = sample_moving(matrix, (100, 110))
    warped, footprint = apply_transform(moving, fit_from_matrix(matrix), FIXED_SHAPE)
    y, x = np.mgrid[: FIXED_SHAPE[0], : FIXED_SHAPE[1]].astype(float)
    truth = smooth_field(x, y)
    assert footprint.sum() > 0.3 * footprint.size
    # bilinear interpolation of a smooth field: small error; the backwards warp would be off by O(1)
    assert np.nanmax(np.abs(warped[footprint] - truth[footprint])) < 0.02
    assert np.all(np.isnan(warped[~footprint]))


def test_backwards_application_is_wrong():
    """The tutorial's mistake (applying the inverse) gives a clearly different image."""
    matrix = rigid_matrix(15, 20.0, 5.0)
    moving = sample_moving(matrix, (100, 110))
    wrong, fp = apply_transform(moving, fit_from_matrix(np.linalg.inv(matrix)), FIXED_SHAPE)
    y, x = np.mgrid[: FIXED_SHAPE[0], : FIXED_SHAPE[1]].astype(float)
    assert fp.sum() > 100
    assert np.nanmean(np.abs(wrong[fp] - smooth_field(x, y)[fp])) > 0.2


def test_nan_pixels_stay_out_of_the_footprint():
    matrix = rigid_matrix(0, 10.0, 10.0)
    moving = sample_moving(matrix, (60, 60))
    moving[20:25, 30:35] = np.nan
    warped, footprint = apply_transform(moving, fit_from_matrix(matrix), FIXED_SHAPE)
    # moving (30..34, 20..24) lands at fixed (40..44, 30..34)
    assert not footprint[30:35, 40:45].any()
    assert np.isnan(warped[30:35, 40:45]).all()
    assert footprint[10:28, 10:38].all()


def test_global_and_map_paths_agree():
    matrix = rigid_matrix(12, 25.0, -5.0)
    fit = fit_from_matrix(matrix)
    map_x, map_y = grid_to_moving_maps(fit, FIXED_SHAPE)
    y, x = np.mgrid[: FIXED_SHAPE[0], : FIXED_SHAPE[1]].astype(float)
    inv = np.linalg.inv(matrix)
    assert np.allclose(map_x, inv[0, 0] * x + inv[0, 1] * y + inv[0, 2], atol=1e-3)
    assert np.allclose(map_y, inv[1, 0] * x + inv[1, 1] * y + inv[1, 2], atol=1e-3)


@pytest.mark.parametrize("n_bands", [1, 2, 5, 7, 9])
def test_cube_bands_warp_like_the_image(n_bands):
    matrix = rigid_matrix(10, 15.0, 4.0, scale=1.2)
    moving = sample_moving(matrix, (50, 60))
    cube = np.stack([moving * (k + 1) for k in range(n_bands)], axis=2)
    fit = fit_from_matrix(matrix)
    warped, fp = apply_transform(moving, fit, FIXED_SHAPE)
    warped_cube, fp_cube = apply_transform_cube(cube, fit, FIXED_SHAPE)
    assert warped_cube.shape == FIXED_SHAPE + (n_bands,)
    assert np.array_equal(fp, fp_cube)
    for k in range(n_bands):
        np.testing.assert_allclose(warped_cube[..., k][fp], warped[fp] * (k + 1), rtol=1e-5, atol=1e-5)


def test_cube_on_a_coarser_grid_samples_the_fixed_positions():
    matrix = rigid_matrix(0, 3.0, 2.0)
    moving = sample_moving(matrix, (100, 100))
    fit = fit_from_matrix(matrix)
    full, _ = apply_transform(moving, fit, FIXED_SHAPE)
    coarse, fp = apply_transform_cube(moving[:, :, None], fit, FIXED_SHAPE, step=4)
    assert coarse.shape[:2] == (30, 35)
    np.testing.assert_allclose(coarse[..., 0][fp], full[::4, ::4][fp], atol=1e-5)


@pytest.mark.parametrize("model", ["polynomial", "piecewise-affine"])
def test_node_interpolated_maps_match_the_exact_maps(model):
    from autoreg.datatypes import Fit, Matches
    from autoreg.estimate import fit_pair

    rng = np.random.default_rng(2)
    moving_xy = rng.uniform(-50, 700, (40, 2))
    fixed_xy = moving_xy * 1.1 + 0.0004 * moving_xy[:, ::-1] ** 2 + rng.normal(0, 2, (40, 2))
    forward, backward = fit_pair(model, moving_xy, fixed_xy)
    fit = Fit(model=model, moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(40, bool),
              source="points", matches=Matches(fixed_xy=fixed_xy, moving_xy=moving_xy))
    fast_x, fast_y = grid_to_moving_maps(fit, (600, 700))
    exact_x, exact_y = grid_to_moving_maps(fit, (600, 700), node_spacing=1)
    both = np.isfinite(fast_x) & np.isfinite(exact_x)
    assert both.sum() > 0.5 * both.size
    error = np.hypot(fast_x[both] - exact_x[both], fast_y[both] - exact_y[both])
    if model == "polynomial":  # smooth: linear interpolation between nodes 4 px apart is nearly exact
        assert error.max() < 5e-3
    else:  # piecewise linear: exact inside cells, off only in cells that straddle a triangle edge
        assert np.median(error) < 1e-3
        assert np.percentile(error, 99) < 0.5
    assert not (np.isfinite(fast_x) & ~np.isfinite(exact_x)).any()  # never maps where the mesh does not


def test_cube_with_missing_pixels_has_the_image_footprint():
    matrix = rigid_matrix(7, 12.0, 9.0, scale=1.3)
    moving = sample_moving(matrix, (50, 60))
    moving[10:13, 20:24] = np.nan
    cube = np.stack([moving, 2 * moving, moving + 1], axis=2)
    fit = fit_from_matrix(matrix)
    warped, fp = apply_transform(moving, fit, FIXED_SHAPE)
    warped_cube, fp_cube = apply_transform_cube(cube, fit, FIXED_SHAPE)
    assert (~fp).sum() > 0 and np.array_equal(fp, fp_cube)
    np.testing.assert_allclose(warped_cube[..., 2][fp], warped[fp] + 1, atol=1e-5)
    assert np.isnan(warped_cube[~fp]).all()


# ------------------------------------------------------------------ footprint: geometry, exact at the edges

_ORTHOGONAL = {"identity": [[1, 0], [0, 1]], "rot90": [[0, -1], [1, 0]], "rot180": [[-1, 0], [0, -1]],
               "rot270": [[0, 1], [-1, 0]], "flip_x": [[-1, 0], [0, 1]], "flip_y": [[1, 0], [0, -1]],
               "transpose": [[0, 1], [1, 0]]}
_MOVING_SHAPE = (20, 30)
_FIXED_SHAPE = (44, 52)
_HOLES = [(3, 4), (11, 29), (0, 17), (19, 0)]  # (row, col) of NaN pixels, some on the edges


def _analytic_footprint(rotation: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Footprint from exact arithmetic: moving (x, y) = R^T ((x_f, y_f) - t) holds only integers and halves."""
    rows, cols = _MOVING_SHAPE
    y_f, x_f = np.mgrid[: _FIXED_SHAPE[0], : _FIXED_SHAPE[1]]
    twice = np.stack([2 * x_f - round(2 * shift[0]), 2 * y_f - round(2 * shift[1])], axis=-1) @ rotation.astype(int)
    x2, y2 = twice[..., 0], twice[..., 1]
    inside = (x2 >= 0) & (x2 <= 2 * (cols - 1)) & (y2 >= 0) & (y2 <= 2 * (rows - 1))
    valid = np.ones(_MOVING_SHAPE, bool)
    valid[tuple(np.array(_HOLES).T)] = False
    footprint = inside.copy()
    for r, c in zip(*np.nonzero(inside)):
        xs = {x2[r, c] // 2, -(-x2[r, c] // 2)}  # the one or two neighbours with non-zero weight
        ys = {y2[r, c] // 2, -(-y2[r, c] // 2)}
        footprint[r, c] = all(valid[yy, xx] for yy in ys for xx in xs)
    return footprint


@pytest.mark.parametrize("perturb", ["exact", "last_bit", "fitted"])
@pytest.mark.parametrize("shift", [(11.0, 9.0), (10.5, 12.0), (12.5, 9.5), (-3.0, 30.0)],
                         ids=["integer", "half_x", "half_xy", "partly_outside"])
@pytest.mark.parametrize("kind", list(_ORTHOGONAL))
def test_footprint_is_the_analytic_one_for_image_and_cube(kind, shift, perturb):
    rotation = np.array(_ORTHOGONAL[kind], float)
    centre = np.array([(_MOVING_SHAPE[1] - 1) / 2, (_MOVING_SHAPE[0] - 1) / 2])
    shift = np.asarray(shift) + np.round(centre - rotation @ centre)  # keep the rotated image near the fixed one
    matrix = np.eye(3)
    matrix[:2, :2], matrix[:2, 2] = rotation, shift
    if perturb == "exact":
        fit = exact_fit(matrix)
    elif perturb == "last_bit":
        nudged = matrix.copy()
        nudged[:2] = np.nextafter(nudged[:2], np.where(np.arange(6).reshape(2, 3) % 2, np.inf, -np.inf))
        fit = exact_fit(nudged)
    else:  # a least-squares fit off the truth by ~1e-15
        fit = fit_from_matrix(matrix, model="affine")
    moving = sample_moving(matrix, _MOVING_SHAPE)
    moving[tuple(np.array(_HOLES).T)] = np.nan
    expected = _analytic_footprint(rotation, shift)
    assert expected.any() and not expected.all()
    warped, footprint = apply_transform(moving, fit, _FIXED_SHAPE)
    cube = np.stack([moving, -moving], axis=2)
    warped_cube, cube_footprint = apply_transform_cube(cube, fit, _FIXED_SHAPE)
    np.testing.assert_array_equal(footprint, expected)
    np.testing.assert_array_equal(cube_footprint, expected)
    assert np.isfinite(warped[expected]).all() and np.isnan(warped[~expected]).all()
    assert np.isnan(warped_cube[~expected]).all()
    np.testing.assert_allclose(warped_cube[..., 1][expected], -warped[expected], atol=1e-4)


def test_integer_shift_keeps_every_edge_row_and_column():
    """The reported failure: a fitted matrix ~1e-16 off an integer shift must not drop the first row."""
    matrix = rigid_matrix(0, 10.0, 10.0)
    fit = fit_from_matrix(matrix, model="translation")
    warped, footprint = apply_transform(sample_moving(matrix, (60, 60)), fit, FIXED_SHAPE)
    expected = np.zeros(FIXED_SHAPE, bool)
    expected[10:70, 10:70] = True
    np.testing.assert_array_equal(footprint, expected)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("step", [1.0, 3.0])
def test_row_intervals_agree_with_testing_every_position(seed, step):
    """The fast global footprint (row intervals + exact tests near holes) equals the per-pixel geometric test."""
    from autoreg.warp import footprint, footprint_of

    rng = np.random.default_rng(seed)
    matrix = rigid_matrix(rng.uniform(-180, 180), rng.uniform(0, 40), rng.uniform(0, 40), scale=rng.uniform(0.5, 3))
    matrix[0, 1] += rng.uniform(-0.2, 0.2)
    if seed % 2:
        matrix[2, :2] = rng.uniform(-2e-3, 2e-3, 2)
    valid = rng.random((30, 40)) > 0.03
    fit = exact_fit(matrix)
    fast = footprint(fit, FIXED_SHAPE, valid, step=step)
    slow = footprint_of(*grid_to_moving_maps(fit, FIXED_SHAPE, step=step), valid)
    assert slow.sum() > 20
    np.testing.assert_array_equal(fast, slow)
