"""The ground-truth generator and the bundled fixtures."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage as ndi

from autoreg.io import load_cube, load_image
from autoreg.synthetic import (
    expected_spectra,
    load_truth,
    make_pair,
    make_stm_sts_pair,
    true_moving_to_fixed,
    write_same_resolution_pair,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.fixture(scope="module")
def stm():
    return make_stm_sts_pair(seed=0)


def test_generation_is_deterministic():
    a, b, c = make_pair(seed=1), make_pair(seed=1), make_pair(seed=2)
    assert np.array_equal(a.fixed, b.fixed) and np.array_equal(a.moving, b.moving)
    assert not np.array_equal(a.fixed, c.fixed)


def test_bundled_file_holds_the_generator_output_and_truth(stm):
    path = FIXTURES / "stm_sts.h5"
    assert path.stat().st_size <= 8 * 1024 * 1024
    np.testing.assert_array_equal(load_image(f"{path}::/Measurement_000/Channel_000/STM_Topography").data, stm.fixed)
    np.testing.assert_array_equal(load_image(f"{path}::/Measurement_001/Channel_001/STS_Z_Contrast").data, stm.moving)
    cube, meta = load_cube(f"{path}::/Measurement_001/Channel_000/STS")
    np.testing.assert_array_equal(cube, stm.cube)
    np.testing.assert_allclose(meta["spectral"]["values"].ravel(), stm.bias, atol=1e-6)
    truth = load_truth(path)
    assert truth == stm.truth
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f.attrs["moving_to_fixed_matrix"], stm.moving_to_fixed)


def test_bundled_file_is_valid_usid():
    import pyUSID

    path = FIXTURES / "stm_sts.h5"
    with h5py.File(path, "r") as f:
        shapes = {}
        for name in ("Measurement_000/Channel_000/STM_Topography", "Measurement_001/Channel_000/STS",
                     "Measurement_001/Channel_001/STS_Z_Contrast"):
            assert pyUSID.hdf_utils.check_if_main(f[name]), name
            shapes[name.rsplit("/", 1)[1]] = np.asarray(pyUSID.USIDataset(f[name]).get_n_dim_form()).shape
    assert shapes == {"STM_Topography": (1024, 1024, 1), "STS": (40, 40, 256), "STS_Z_Contrast": (40, 40, 1)}


def test_z_contrast_is_the_terrain_at_the_true_positions(stm):
    truth = stm.truth
    grid = np.stack(np.meshgrid(np.arange(40.0), np.arange(40.0)), axis=-1).reshape(-1, 2)
    positions = true_moving_to_fixed(grid, truth)
    assert positions.min() > 0 and positions.max() < 1023  # every moving pixel maps inside the fixed image
    blurred = ndi.gaussian_filter(stm.scene.height, 0.4 * truth.moving_pixel_nm / truth.fixed_pixel_nm)
    sampled = ndi.map_coordinates(blurred, [positions[:, 1], positions[:, 0]], order=1)
    at_truth = np.corrcoef(sampled, stm.moving.ravel())[0, 1]
    assert at_truth > 0.95
    # ... and clearly less at positions one moving pixel off
    off = ndi.map_coordinates(blurred, [positions[:, 1] + 20, positions[:, 0]], order=1)
    assert np.corrcoef(off, stm.moving.ravel())[0, 1] < at_truth - 0.03


def test_spectra_follow_the_terrain(stm):
    grid = np.stack(np.meshgrid(np.arange(40.0), np.arange(40.0)), axis=-1).reshape(-1, 2)
    expected = expected_spectra(true_moving_to_fixed(grid, stm.truth), stm.scene, stm.truth, stm.bias)
    residual = stm.cube.reshape(-1, 256) - expected
    assert abs(residual.std() - 0.02) < 0.005  # only the added noise is left


def test_same_resolution_fixture_is_reproducible(tmp_path):
    matrix = write_same_resolution_pair(tmp_path, seed=1)
    stored = json.loads((FIXTURES / "same_res_truth.json").read_text())["moving_to_fixed_matrix"]
    np.testing.assert_allclose(matrix, stored)
    for name in ("same_res_fixed.tif", "same_res_moving.tif"):
        np.testing.assert_array_equal(load_image(tmp_path / name).data, load_image(FIXTURES / name).data)
