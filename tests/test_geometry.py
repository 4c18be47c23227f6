"""autoreg.geometry: the one implementation of mapping points, grids, grid error and collinearity."""

import numpy as np
import pytest

from autoreg.geometry import apply_matrix, grid_xy, is_collinear, mean_grid_distance


def test_apply_matrix_affine_and_projective_against_homogeneous_algebra():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-50, 50, (20, 2))
    for matrix in (np.array([[1.2, 0.1, 3.0], [-0.2, 0.9, -4.0], [0, 0, 1.0]]),
                   np.array([[1.2, 0.1, 3.0], [-0.2, 0.9, -4.0], [1e-3, -2e-3, 1.1]])):
        h = np.column_stack([xy, np.ones(len(xy))]) @ matrix.T
        np.testing.assert_allclose(apply_matrix(matrix, xy), h[:, :2] / h[:, 2:], rtol=1e-12, atol=1e-12)
    assert apply_matrix(np.eye(3), xy.reshape(4, 5, 2)).shape == (4, 5, 2)


def test_grid_spans_the_pixel_centres_of_the_image():
    grid = grid_xy((40, 30), n=5)
    assert grid.shape == (25, 2)
    assert grid[:, 0].min() == 0 and grid[:, 0].max() == 29 and grid[:, 1].max() == 39
    assert len(np.unique(grid, axis=0)) == 25


def test_mean_grid_distance_is_the_mean_error_and_skips_unmapped_points():
    shift = np.array([3.0, 4.0])
    assert mean_grid_distance(lambda xy: xy + shift, lambda xy: xy, (10, 10)) == pytest.approx(5.0)

    def partly(xy):
        out = xy + shift
        out[0] = np.nan
        return out

    assert mean_grid_distance(partly, lambda xy: xy, (10, 10)) == pytest.approx(5.0)
    assert mean_grid_distance(lambda xy: np.full_like(xy, np.nan), lambda xy: xy, (10, 10)) == np.inf


def test_collinearity_is_scale_free():
    line = np.column_stack([np.arange(10.0), 2 * np.arange(10.0) + 1])
    assert is_collinear(line) and is_collinear(line * 1e6) and is_collinear(line * 1e-6)
    spread = line + np.array([[0, 0]] * 9 + [[0, 1]])
    assert not is_collinear(spread) and not is_collinear(spread * 1e6)
    assert is_collinear(line[:2]) and is_collinear(np.zeros((5, 2)))
