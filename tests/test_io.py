"""Reading every format and dtype, USID like pyUSID, points CSV, atomic writes, clear errors."""

import hashlib
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import tifffile

from autoreg.errors import InputError
from autoreg.io import (
    atomic_path,
    check_output_path,
    load_cube,
    load_image,
    load_points,
    parse_spec,
    write_image,
)
from autoreg.synthetic import write_usid_main

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "SingFreqPFM_0003.h5"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"


def _ramp(dtype, shape=(20, 30)):
    return (np.arange(np.prod(shape)).reshape(shape) % 200).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32", "int16", "int32", "int64", "bool", "float16",
                                   "float32", "float64", ">f4", ">i2"])
@pytest.mark.parametrize("suffix", [".npy", ".tif"])
def test_every_real_dtype_round_trips(tmp_path, dtype, suffix):
    array = _ramp(dtype)
    path = tmp_path / f"image{suffix}"
    np.save(path, array) if suffix == ".npy" else tifffile.imwrite(path, array)
    image = load_image(path)
    assert image.data.dtype in (np.float32, np.float64)
    np.testing.assert_array_equal(image.data, array.astype(np.float64))


def test_png_colour_becomes_gray_and_16_bit_is_kept(tmp_path):
    colour = np.zeros((20, 30, 3), np.uint8)
    colour[..., 1] = 200
    cv2.imwrite(str(tmp_path / "c.png"), colour)
    gray = load_image(tmp_path / "c.png").data
    assert gray.shape == (20, 30) and np.allclose(gray, round(0.587 * 200), atol=1)
    deep = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), deep)
    np.testing.assert_array_equal(load_image(tmp_path / "d.png").data, deep)


def test_nan_is_kept_and_inf_becomes_nan():
    array = np.ones((10, 10))
    array[0, 0], array[1, 1] = np.nan, np.inf
    data = load_image(array).data
    assert np.isnan(data[0, 0]) and np.isnan(data[1, 1]) and np.isfinite(data[2:]).all()


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((10, 10)) * (1 + 1j), "complex"),
        (np.full((10, 10), np.nan), "no finite pixel"),
        (np.ones((3, 10, 10)), "stack of 3 images"),
        (np.ones((4, 4)), "at least 8 x 8"),
        (np.array([["a"] * 10] * 10), "not numbers"),
    ],
)
def test_unusable_arrays_are_input_errors(array, message):
    with pytest.raises(InputError, match=message):
        load_image(array)


def test_pixel_budget_is_checked_before_reading(tmp_path):
    np.save(tmp_path / "big.npy", np.zeros((100, 100)))
    with pytest.raises(InputError, match="over the budget"):
        load_image(tmp_path / "big.npy", max_pixels=5000)


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"not a tiff at all", "x.tif", "Cannot read TIFF"),
        (b"\x89PNG\r\n\x1a\nbroken", "x.png", "Cannot read image"),
        (b"garbage", "x.npy", "Cannot read NPY"),
        (b"garbage", "x.h5", "not an HDF5 file"),
        (b"data", "x.xyz", "Unsupported file type"),
    ],
)
def test_corrupt_and_unknown_files_are_input_errors(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_bytes(content)
    spec = f"{path}::/a" if name.endswith(".h5") else path
    with pytest.raises(InputError, match=message):
        load_image(spec)


def test_truncated_hdf5_and_tiff_are_input_errors(tmp_path):
    data = FIXTURE.read_bytes()
    (tmp_path / "t.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(InputError):
        load_image(f"{tmp_path / 't.h5'}::/Measurement_000/Channel_000/STM_Topography")
    tifffile.imwrite(tmp_path / "full.tif", np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32))
    (tmp_path / "t.tif").write_bytes((tmp_path / "full.tif").read_bytes()[:3000])
    with pytest.raises(InputError, match="TIFF"):
        load_image(tmp_path / "t.tif")


@pytest.mark.parametrize(
    ("spec", "message"),
    [("scan.h5::", "Malformed"), ("::/a", "Malformed"), ("a.h5::/b::/c", "Malformed"), ("", "Empty")],
)
def test_malformed_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_spec(spec)


def test_hdf5_dataset_errors():
    with pytest.raises(InputError, match="No dataset /nope"):
        load_image(f"{FIXTURE}::/nope")
    with pytest.raises(InputError, match="is a group"):
        load_image(f"{FIXTURE}::/Measurement_000")
    with pytest.raises(InputError, match="spectroscopic cube"):
        load_image(f"{FIXTURE}::/Measurement_001/Channel_000/STS")
    with pytest.raises(InputError, match="name a dataset"):
        load_image(FIXTURE)


def _pyusid_image(path, dataset):
    import pyUSID

    with h5py.File(path, "r") as f:
        dset = f[dataset]
        assert pyUSID.hdf_utils.check_if_main(dset)
        labels = pyUSID.USIDataset(dset).pos_dim_labels
        n_dim = np.asarray(pyUSID.USIDataset(dset).get_n_dim_form())
    # get_n_dim_form orders position axes by label (X, Y): transpose to rows = Y, cols = X
    assert list(labels) == ["X", "Y"]
    return np.moveaxis(n_dim, [0, 1], [1, 0])


@pytest.mark.skipif(not REAL.exists(), reason="shared/data is not beside the checkout")
@pytest.mark.parametrize("channel", [0, 1, 2, 3])
def test_real_usid_file_reads_like_pyusid(channel):
    dataset = f"/Measurement_000/Channel_00{channel}/Raw_Data"
    image = load_image(f"{REAL}::{dataset}")
    expected = _pyusid_image(REAL, dataset)[..., 0]
    np.testing.assert_allclose(image.data, expected)
    assert image.shape == (128, 128)
    assert image.units == "m" and image.pixel_size_xy[0] > 0


def test_non_square_usid_and_cube_read_like_pyusid(tmp_path):
    path = tmp_path / "ns.h5"
    rng = np.random.default_rng(0)
    image, cube = rng.normal(size=(12, 20)), rng.normal(size=(12, 20, 5))
    with h5py.File(path, "w") as f:
        write_usid_main(f.create_group("M/C0"), "Img", image, quantity="Height", units="nm", pixel_size=0.5,
                        origin=(3.0, 4.0))
        write_usid_main(f.create_group("M/C1"), "Cube", cube, quantity="Current", units="pA", pixel_size=0.5,
                        spectral=("Bias", "V", np.linspace(-1, 1, 5)))
    loaded = load_image(f"{path}::/M/C0/Img")
    np.testing.assert_allclose(loaded.data, image, rtol=1e-6)
    np.testing.assert_allclose(_pyusid_image(path, "/M/C0/Img")[..., 0], image, rtol=1e-6)
    assert loaded.pixel_size_xy == (0.5, 0.5) and loaded.origin == (3.0, 4.0) and loaded.units == "nm"
    data, meta = load_cube(f"{path}::/M/C1/Cube")
    np.testing.assert_allclose(data, cube, rtol=1e-6)
    np.testing.assert_allclose(_pyusid_image(path, "/M/C1/Cube"), cube, rtol=1e-6)
    assert meta["spectral"]["labels"] == ["Bias"] and meta["spectral"]["units"] == ["V"]


def test_points_csv(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("moving_x, moving_y,fixed_x,fixed_y\n1,2,3,4\n5,6,7,8\n")
    fixed_xy, moving_xy = load_points(path)
    np.testing.assert_array_equal(fixed_xy, [[3, 4], [7, 8]])
    np.testing.assert_array_equal(moving_xy, [[1, 2], [5, 6]])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("x,y,u,v\n1,2,3,4\n", "header"),
        ("fixed_x,fixed_y,moving_x,moving_y\n", "no points"),
        ("fixed_x,fixed_y,moving_x,moving_y\n1,2,3\n", "line 2: 3 fields"),
        ("fixed_x,fixed_y,moving_x,moving_y\n1,2,3,abc\n", "line 2: not a number"),
        ("fixed_x,fixed_y,moving_x,moving_y\n1,2,3,nan\n", "line 2: NaN"),
    ],
)
def test_bad_points_csv(tmp_path, text, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_points(path)


def test_atomic_write_leaves_old_file_on_error(tmp_path):
    target = tmp_path / "out.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]


def test_write_image_and_output_checks(tmp_path):
    write_image(tmp_path / "a.npy", np.ones((4, 4)))
    assert np.load(tmp_path / "a.npy").dtype == np.float32
    with pytest.raises(InputError, match=".tif"):
        write_image(tmp_path / "a.bmp", np.ones((4, 4)))
    source = tmp_path / "in.tif"
    source.write_bytes(b"x")
    with pytest.raises(InputError, match="also an input"):
        check_output_path(tmp_path / "." / "in.tif", inputs=[source], overwrite=True)
    with pytest.raises(InputError, match="already exists"):
        check_output_path(tmp_path / "a.npy", inputs=[], overwrite=False)
    regular = tmp_path / "file"
    regular.write_text("")
    with pytest.raises(InputError, match="not a directory"):
        check_output_path(regular / "x.tif", inputs=[], overwrite=False)


def test_loading_never_modifies_inputs():
    digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    load_image(f"{FIXTURE}::/Measurement_000/Channel_000/STM_Topography")
    load_cube(f"{FIXTURE}::/Measurement_001/Channel_000/STS")
    assert hashlib.sha256(FIXTURE.read_bytes()).hexdigest() == digest
