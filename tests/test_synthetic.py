"""The ground-truth generator and the bundled fixtures."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy import ndimage as ndi

from autoreg.geometry import apply_matrix
from autoreg.io import load_cube, load_image
from autoreg.fixture import load_truth
from autoreg.synthetic import (
    GENERATOR_VERSION,
    STS_BIAS_V,
    expected_spectra,
    make_pair,
    make_scene,
    make_stm_sts_pair,
    true_moving_to_fixed,
    write_same_resolution_pair,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
STM_FILE = FIXTURES / "stm_sts.h5"
TOPOGRAPHY = "Measurement_000/Channel_000/STM_Topography"
STS = "Measurement_001/Channel_000/STS"
Z_CONTRAST = "Measurement_001/Channel_001/STS_Z_Contrast"


@pytest.fixture(scope="module")
def stm():
    return make_stm_sts_pair(seed=0)


def _moving_grid(n_rows, n_cols):
    """Every moving pixel (x, y), in row-major order (the USID flat position order)."""
    y, x = np.mgrid[:n_rows, :n_cols].astype(float)
    return np.column_stack([x.ravel(), y.ravel()])


def _tip_sigma(truth):
    return 0.4 * truth.moving_pixel_nm / truth.fixed_pixel_nm



def test_generation_is_deterministic():
    a, b, c = make_pair(seed=1), make_pair(seed=1), make_pair(seed=2)
    assert np.array_equal(a.fixed, b.fixed) and np.array_equal(a.moving, b.moving)
    assert not np.array_equal(a.fixed, c.fixed) and not np.array_equal(a.moving, c.moving)
    assert np.array_equal(make_scene((64, 80), seed=3).height, make_scene((64, 80), seed=3).height)
    assert not np.array_equal(make_scene((64, 80), seed=3).height, make_scene((64, 80), seed=4).height)


def test_bundled_file_holds_the_generator_output_and_truth(stm):
    # the file was written on another machine: agreement within float32 rounding (transcendental functions may
    # differ in the last bit between CPUs) shows the generator is deterministic
    assert STM_FILE.stat().st_size <= 8 * 1024 * 1024
    np.testing.assert_allclose(load_image(f"{STM_FILE}::/{TOPOGRAPHY}").data, stm.fixed, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(load_image(f"{STM_FILE}::/{Z_CONTRAST}").data, stm.moving, rtol=1e-5, atol=1e-5)
    cube, meta = load_cube(f"{STM_FILE}::/{STS}")
    np.testing.assert_allclose(cube, stm.cube, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(meta["spectral"]["values"].ravel(), stm.bias, atol=1e-6)
    truth = load_truth(STM_FILE)
    np.testing.assert_allclose(truth.matrix, stm.truth.matrix, rtol=1e-9)
    np.testing.assert_allclose(truth.creep_xy, stm.truth.creep_xy, rtol=1e-9)
    assert (truth.moving_rows, truth.seed, truth.version) == (stm.truth.moving_rows, stm.truth.seed, GENERATOR_VERSION)
    with h5py.File(STM_FILE, "r") as f:
        np.testing.assert_allclose(f.attrs["moving_to_fixed_matrix"], stm.moving_to_fixed)
        np.testing.assert_allclose(f.attrs["creep_xy"], stm.truth.creep_xy)
        assert f.attrs["generator_seed"] == 0 and f.attrs["generator_version"] == GENERATOR_VERSION
        for name in (TOPOGRAPHY, STS, Z_CONTRAST):
            assert f[name].dtype == np.float32 and f[name].compression == "gzip", name


def test_bundled_file_is_valid_usid_and_reads_back_through_pyusid(stm):
    import pyUSID

    expected = {TOPOGRAPHY: stm.fixed[..., None], STS: stm.cube, Z_CONTRAST: stm.moving[..., None]}
    with h5py.File(STM_FILE, "r") as f:
        usid = {}
        for name, image in expected.items():
            assert pyUSID.hdf_utils.check_if_main(f[name]), name
            dset = usid[name] = pyUSID.USIDataset(f[name])
            assert list(dset.pos_dim_labels) == ["X", "Y"] and list(dset.pos_dim_sizes) == [image.shape[1],
                                                                                              image.shape[0]]
            # get_n_dim_form is (X, Y, spectral): swapping the first two axes gives rows = y, columns = x
            n_dim = np.moveaxis(np.asarray(dset.get_n_dim_form()), 0, 1)
            np.testing.assert_array_equal(n_dim, image, err_msg=name)
        sts, topography = usid[STS], usid[TOPOGRAPHY]
        assert list(sts.spec_dim_labels) == ["Bias"] and sts.spec_dim_descriptors == ["Bias (V)"]
        np.testing.assert_allclose(sts.get_spec_values("Bias"), STS_BIAS_V, atol=1e-6)
        for key in ("Position_Indices", "Position_Values"):  # shared by both STS channels
            assert f[f[Z_CONTRAST].attrs[key]].name == f[f[STS].attrs[key]].name == f"/Measurement_001/{key}"
        assert topography.pos_dim_descriptors == ["X (nm)", "Y (nm)"]
        topo_x = topography.get_pos_values("X")
        assert topo_x[0] == 0 and 99 < topo_x[-1] < 101
        # the STS positions are the nominal frame: its origin is not where the drifted frame really starts
        sts_x, sts_y = sts.get_pos_values("X"), sts.get_pos_values("Y")
        np.testing.assert_allclose(np.diff(sts_x), stm.truth.moving_pixel_nm, rtol=1e-6)
        true_origin_nm = true_moving_to_fixed(np.zeros((1, 2)), stm.truth)[0] * stm.truth.fixed_pixel_nm
        assert np.hypot(sts_x[0] - true_origin_nm[0], sts_y[0] - true_origin_nm[1]) > 1.0


def test_stm_sts_frame_and_creep_are_as_specified(stm):
    truth = stm.truth
    positions = true_moving_to_fixed(_moving_grid(40, 40), truth)
    margin = 2 * _tip_sigma(truth)  # every moving pixel maps inside the fixed image, footprint included
    assert positions.min() > margin and positions.max() < 1023 - margin
    linear = truth.matrix[:2, :2]
    scales = np.linalg.svd(linear, compute_uv=False) * 40 / 1024
    assert np.all((0.75 < scales) & (scales < 0.85))  # the STS frame spans 75-85 % of the topography
    assert 2 <= abs(np.degrees(np.arctan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1]))) <= 5
    creep = positions - apply_matrix(truth.matrix, _moving_grid(40, 40))
    norm = np.linalg.norm(creep, axis=1).reshape(40, 40)
    assert np.all(norm[0] == 0) and 1.0 < norm[-1].max() < 5.0  # grows with the row (time), a few px at most
    np.testing.assert_allclose(norm[20], norm[-1] * (20 / 39) ** 2)  # quadratically


def test_z_contrast_is_the_terrain_at_the_true_positions(stm):
    truth = stm.truth
    positions = true_moving_to_fixed(_moving_grid(40, 40), truth)
    blurred = ndi.gaussian_filter(stm.scene.height, _tip_sigma(truth))
    sampled = ndi.map_coordinates(blurred, [positions[:, 1], positions[:, 0]], order=1)
    at_truth = np.corrcoef(sampled, stm.moving.ravel())[0, 1]
    assert at_truth > 0.95
    # ... less at the affine part alone (the creep, <= 5 px, is well inside the 8 px footprint: a small drop)
    affine = apply_matrix(truth.matrix, _moving_grid(40, 40))
    without_creep = ndi.map_coordinates(blurred, [affine[:, 1], affine[:, 0]], order=1)
    assert np.corrcoef(without_creep, stm.moving.ravel())[0, 1] < at_truth
    # ... and clearly less one moving pixel off
    off = ndi.map_coordinates(blurred, [positions[:, 1] + 20, positions[:, 0]], order=1)
    assert np.corrcoef(off, stm.moving.ravel())[0, 1] < at_truth - 0.03
    # the contrast is changed monotonically and not inverted (the rank order is the terrain's)
    ranks = [np.argsort(np.argsort(v)) for v in (sampled, stm.moving.ravel())]
    assert np.corrcoef(*ranks)[0, 1] > 0.9
    assert not np.allclose(stm.moving.ravel(), sampled, atol=0.5)  # ... but it is a different contrast


def test_spectra_follow_the_terrain(stm):
    positions = true_moving_to_fixed(_moving_grid(40, 40), stm.truth)
    expected = expected_spectra(positions, stm.scene, stm.truth, stm.bias)
    residual = stm.cube.reshape(-1, 256) - expected
    assert abs(residual.std() - 0.02) < 0.005  # only the added noise is left
    # the surface state's bias rises with the terrace, on every terrace (not only the lowest few)
    level = stm.scene.level[np.round(positions[:, 1]).astype(int), np.round(positions[:, 0]).astype(int)]
    below_resonance = STS_BIAS_V < 0.35
    peak_bias = STS_BIAS_V[np.argmax(expected[:, below_resonance], axis=1)]
    present = [k for k in np.unique(level) if np.sum(level == k) >= 20]
    medians = [np.median(peak_bias[level == k]) for k in present]
    assert len(present) >= 6 and np.all(np.diff(medians) > 0.03)
    # the adsorbate resonance is there where the adsorbates are
    resonance = expected[:, np.argmin(abs(STS_BIAS_V - 0.55))] - expected[:, np.argmin(abs(STS_BIAS_V - 0.9))]
    adsorbate = ndi.map_coordinates(stm.scene.adsorbate, [positions[:, 1], positions[:, 0]], order=1)
    assert np.corrcoef(resonance, adsorbate)[0, 1] > 0.8


def test_expected_spectra_default_bias_and_shape(stm):
    xy = np.array([[500.0, 400.0], [600.5, 700.25]])
    spectra = expected_spectra(xy, stm.scene, stm.truth)
    assert spectra.shape == (2, 256)
    np.testing.assert_allclose(spectra, expected_spectra(xy, stm.scene, stm.truth, STS_BIAS_V), rtol=1e-12)


@pytest.mark.parametrize("matrix, moving_shape", [
    (np.array([[1.0, 0, 12.5], [0, 1, -7.25], [0, 0, 1]]), (128, 128)),  # translation
    (np.array([[0.9, -0.2, 40], [0.25, 1.05, 10], [0, 0, 1]]), (128, 128)),  # affine
    (np.array([[1.0, 0.05, 20], [-0.03, 0.95, 30], [4e-4, -2e-4, 1]]), (128, 128)),  # projective
    (np.array([[2.0, 0, 30], [0, 2, 25], [0, 0, 1]]), (96, 96)),  # moving at half the resolution
])
def test_make_pair_moving_is_the_scene_at_the_given_matrix(matrix, moving_shape):
    pair = make_pair(seed=5, fixed_shape=(256, 256), moving_shape=moving_shape, matrix=matrix, noise=0.0)
    assert pair.fixed.shape == (256, 256) and pair.moving.shape == moving_shape
    np.testing.assert_array_equal(pair.moving_to_fixed, matrix)
    grid = _moving_grid(*moving_shape)
    fixed_xy = apply_matrix(matrix, grid)
    source = pair.scene.height if matrix[0, 0] < 1.5 else ndi.gaussian_filter(pair.scene.height, 0.8)

    def corr(xy):
        sampled = ndi.map_coordinates(source, [xy[:, 1], xy[:, 0]], order=1, mode="nearest")
        return np.corrcoef(sampled, pair.moving.ravel())[0, 1]

    assert corr(fixed_xy) > 0.995
    # two moving pixels off leaves > 10x more unexplained variance
    two_moving_px = 2 * np.sqrt(abs(np.linalg.det(matrix[:2, :2])))
    assert 1 - corr(fixed_xy + [two_moving_px, 0.0]) > 10 * (1 - corr(fixed_xy))


def test_same_resolution_fixture_is_reproducible(tmp_path):
    matrix = write_same_resolution_pair(tmp_path, seed=1)
    stored = json.loads((FIXTURES / "same_res_truth.json").read_text())["moving_to_fixed_matrix"]
    np.testing.assert_allclose(matrix, stored)
    for name in ("same_res_fixed.tif", "same_res_moving.tif"):
        image = load_image(tmp_path / name).data
        assert image.shape == (384, 384)
        np.testing.assert_allclose(image, load_image(FIXTURES / name).data, rtol=1e-5, atol=1e-5)
    fixed_xy = apply_matrix(matrix, _moving_grid(384, 384))
    inside = np.all((fixed_xy >= 0) & (fixed_xy <= 383), axis=1)
    assert inside.mean() > 0.7  # most of the moving scan overlaps the fixed one
    assert 15 <= np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])) <= 30
