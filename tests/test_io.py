"""autoreg.io: every format and dtype, USID as pyUSID reads it, points CSV, atomic writes, clear errors.

Every test file is generated here under tmp_path; the one exception is the real PFM scan in /work/shared/data.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import tifffile
from helpers import REAL_PFM_SCAN

from autoreg._atomic import atomic_path
from autoreg.datatypes import Image
from autoreg.errors import InputError
from autoreg.io import (
    check_output_path,
    load_cube,
    load_image,
    load_points,
    parse_spec,
    write_image,
    write_json,
)

REAL = REAL_PFM_SCAN
needs_real = pytest.mark.skipif(not REAL.exists(), reason=f"real USID scan not found at {REAL}")


def _ramp(dtype: str, shape: tuple[int, ...] = (20, 30)) -> np.ndarray:
    """Distinct values per pixel; 32/64-bit integers get values above 2**24, where float32 is not exact."""
    dt = np.dtype(dtype)
    base = np.arange(int(np.prod(shape))).reshape(shape)
    if dt.kind == "b":
        return (base % 3 == 0).astype(dt)
    if dt.kind in "iu" and dt.itemsize >= 4:
        return (base + 2**24 + 1).astype(dt)
    if dt.kind in "iu":
        return (base % min(np.iinfo(dt).max, 250)).astype(dt)
    return (base / 7.0 - 30).astype(dt)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _open_fds_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process has open (Linux; [] elsewhere)."""
    fd_dir = Path("/proc/self/fd")
    targets = []
    for fd in os.listdir(fd_dir) if fd_dir.exists() else []:
        with contextlib.suppress(OSError):
            targets.append(os.readlink(fd_dir / fd))
    return [t for t in targets if t.startswith(str(folder.resolve()))]


# ------------------------------------------------------------------------------------------------- USID


def write_usid(group: h5py.Group, name: str, data: np.ndarray, *, columns: tuple[str, str] = ("X", "Y"),
               labels: tuple[str, str] | None = None, x_fastest: bool = True,
               pixel: tuple[float, float] = (0.5, 0.25), origin: tuple[float, float] = (3.0, 4.0),
               position_units: str = "nm", units: str = "pA",
               spectral: tuple[str, str, np.ndarray] | None = None) -> h5py.Dataset:
    """A USID main dataset of ``data`` (rows = Y, columns = X[, spectral]) written with plain h5py.

    ``columns`` orders the Position_Indices columns; ``labels`` names them (default: ``columns``);
    ``x_fastest`` chooses the scan order of the rows (X fastest: row ``y * n_x + x``; else ``x * n_y + y``).
    """
    data = np.asarray(data)
    n_y, n_x = data.shape[:2]
    n_spec = 1 if data.ndim == 2 else data.shape[2]
    cube = data.reshape(n_y, n_x, n_spec)
    yy, xx = np.mgrid[:n_y, :n_x]
    if not x_fastest:
        yy, xx, cube = yy.T, xx.T, cube.transpose(1, 0, 2)
    index = {"X": xx.ravel(), "Y": yy.ravel()}
    value = {"X": origin[0] + index["X"] * pixel[0], "Y": origin[1] + index["Y"] * pixel[1]}
    pos_ind = group.create_dataset("Position_Indices", data=np.column_stack([index[c] for c in columns]),
                                   dtype="u4")
    pos_val = group.create_dataset("Position_Values", data=np.column_stack([value[c] for c in columns]),
                                   dtype="f4")
    for anc in (pos_ind, pos_val):
        anc.attrs["labels"] = np.array([c.encode() for c in (labels or columns)])
        anc.attrs["units"] = np.array([position_units.encode()] * 2)
    label, spec_units, spec_values = spectral or ("arb", "a. u.", np.zeros(1))
    spec_ind = group.create_dataset("Spectroscopic_Indices", data=np.arange(n_spec, dtype="u4")[None, :])
    spec_val = group.create_dataset("Spectroscopic_Values", data=np.asarray(spec_values, "f4")[None, :])
    for anc in (spec_ind, spec_val):
        anc.attrs["labels"] = np.array([label.encode()])
        anc.attrs["units"] = np.array([spec_units.encode()])
    main = group.create_dataset(name, data=cube.reshape(n_y * n_x, n_spec))
    main.attrs["quantity"] = "Signal"
    main.attrs["units"] = units
    for key, anc in (("Position_Indices", pos_ind), ("Position_Values", pos_val),
                     ("Spectroscopic_Indices", spec_ind), ("Spectroscopic_Values", spec_val)):
        main.attrs[key] = anc.ref
    return main


def pyusid_image(path: Path, dataset: str) -> np.ndarray:
    """pyUSID's ``get_n_dim_form()``, position axes moved to rows = Y, columns = X (spectral axes after)."""
    import pyUSID

    with h5py.File(path, "r") as f:
        usid = pyUSID.USIDataset(f[dataset])
        labels = [str(label) for label in usid.pos_dim_labels]
        n_dim = np.asarray(usid.get_n_dim_form())
    if {"X", "Y"} <= set(labels):
        x_axis, y_axis = labels.index("X"), labels.index("Y")
    else:  # no X/Y labels: autoreg takes the fastest-varying column (in these tests, the first) as X
        x_axis, y_axis = 0, 1
    return np.moveaxis(n_dim, [y_axis, x_axis], [0, 1])


@needs_real
@pytest.mark.parametrize(("channel", "value_units"), [(0, "m"), (1, "m"), (2, "m"), (3, "deg")])
def test_real_usid_scan_reads_like_pyusid(channel, value_units):
    dataset = f"/Measurement_000/Channel_00{channel}/Raw_Data"
    digest = _sha(REAL)
    image = load_image(f"{REAL}::{dataset}")
    expected = pyusid_image(REAL, dataset)
    assert expected.shape == (128, 128, 1)
    np.testing.assert_array_equal(image.data, expected[..., 0])
    assert image.data.dtype == np.float64  # stored float64
    assert image.units == "m" and image.value_units == value_units and image.origin == (0.0, 0.0)
    np.testing.assert_allclose(image.pixel_size_xy, (3.968e-8, 3.968e-8), rtol=1e-4)
    assert image.name == f"{REAL}::{dataset}"
    assert _sha(REAL) == digest


@pytest.mark.parametrize(
    ("columns", "labels", "x_fastest"),
    [
        (("X", "Y"), None, True),  # pycroscopy's layout (the real scan's)
        (("Y", "X"), None, True),  # pyUSID's own writer: columns slowest first
        (("X", "Y"), None, False),  # column-major scan: Y varies fastest
        (("X", "Y"), ("Fast", "Slow"), True),  # no X/Y labels: the fastest column is X
    ],
)
def test_non_square_usid_reads_like_pyusid_with_calibration(tmp_path, columns, labels, x_fastest):
    truth = np.random.default_rng(0).normal(size=(12, 20))  # 12 rows (Y) x 20 columns (X)
    path = tmp_path / "ns.h5"
    with h5py.File(path, "w") as f:
        write_usid(f.create_group("M/C0"), "Img", truth, columns=columns, labels=labels, x_fastest=x_fastest)
    image = load_image(f"{path}::/M/C0/Img")
    np.testing.assert_array_equal(image.data, truth)
    np.testing.assert_array_equal(pyusid_image(path, "/M/C0/Img")[..., 0], truth)
    assert image.shape == (12, 20)
    assert image.pixel_size_xy == pytest.approx((0.5, 0.25)) and image.origin == pytest.approx((3.0, 4.0))
    assert image.units == "nm" and image.value_units == "pA"


def test_usid_cube_reads_like_pyusid_and_is_refused_as_an_image(tmp_path):
    rng = np.random.default_rng(1)
    truth = rng.normal(size=(10, 16, 7)).astype(np.float32)
    bias = np.linspace(-1, 1, 7)
    path = tmp_path / "sts.h5"
    with h5py.File(path, "w") as f:
        write_usid(f.create_group("M/C1"), "STS", truth, units="a. u.", spectral=("Bias", "V", bias))
    spec = f"{path}::/M/C1/STS"
    with pytest.raises(InputError, match=r"spectroscopic cube \(16×10 positions × 7 steps\).*--cube"):
        load_image(spec)
    cube, meta = load_cube(spec)
    assert cube.shape == (10, 16, 7) and cube.dtype == np.float32
    np.testing.assert_array_equal(cube, truth)
    np.testing.assert_array_equal(pyusid_image(path, "/M/C1/STS"), truth)
    assert meta["spectral"]["labels"] == ["Bias"] and meta["spectral"]["units"] == ["V"]
    np.testing.assert_allclose(meta["spectral"]["values"], [bias], atol=1e-6)
    assert meta["pixel_size_xy"] == pytest.approx((0.5, 0.25)) and meta["units"] == "nm"
    assert meta["value_units"] == "a. u."


def test_usid_layouts_autoreg_does_not_read_are_clear_errors(tmp_path):
    path = tmp_path / "odd.h5"
    image = np.arange(16 * 10, dtype=float).reshape(10, 16)
    with h5py.File(path, "w") as f:
        shuffled = write_usid(f.create_group("shuffled"), "Img", image)
        f["shuffled/Position_Indices"][3] = f["shuffled/Position_Indices"][4]
        broken = write_usid(f.create_group("broken"), "Img", image)
        del broken.attrs["Spectroscopic_Values"]
        write_usid(f.create_group("plain_cube"), "Img", image)
        f["plain3d"] = np.zeros((4, 10, 10))
        three = f.create_group("three")
        three["Position_Indices"] = np.zeros((160, 3), "u4")
        main = three.create_dataset("Img", data=np.zeros((160, 1)))
        for key in ("Position_Indices", "Position_Values", "Spectroscopic_Indices", "Spectroscopic_Values"):
            main.attrs[key] = three["Position_Indices"].ref
        shuffled.attrs["units"] = "nm"
    with pytest.raises(InputError, match="full 2-D grid"):
        load_image(f"{path}::/shuffled/Img")
    with pytest.raises(InputError, match="USID main dataset without a usable Spectroscopic_Values"):
        load_image(f"{path}::/broken/Img")
    with pytest.raises(InputError, match="3 position dimension"):
        load_image(f"{path}::/three/Img")
    with pytest.raises(InputError, match="not a USID main dataset"):
        load_cube(f"{path}::/plain3d")
    with pytest.raises(InputError, match="A cube is read from a USID dataset"):
        load_cube(tmp_path / "cube.npy")
    with pytest.raises(InputError, match="over the budget of 100"):
        load_image(f"{path}::/plain_cube/Img", max_pixels=100)
    assert load_image(f"{path}::/plain_cube/Img", max_pixels=160).shape == (10, 16)


def test_degenerate_usid_positions_give_no_calibration(tmp_path):
    path = tmp_path / "flat.h5"
    with h5py.File(path, "w") as f:
        write_usid(f.create_group("g"), "Img", np.ones((9, 9)), pixel=(0.0, 0.0))
    image = load_image(f"{path}::/g/Img")
    assert image.pixel_size_xy is None and image.origin is None and image.units is None


# ------------------------------------------------------------------------------------- formats and dtypes

DTYPES = ["uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "bool", "float16",
          "float32", "float64", ">f4", ">i2", ">f8"]


def _expected_dtype(dtype: str) -> type:
    dt = np.dtype(dtype)
    wide = dt.kind == "f" and dt.itemsize == 8 or dt.kind in "iu" and dt.itemsize >= 4
    return np.float64 if wide else np.float32


def _save(array: np.ndarray, path: Path) -> str:
    if path.suffix == ".npy":
        np.save(path, array)
    elif path.suffix == ".tif":
        tifffile.imwrite(path, array)
    else:
        with h5py.File(path, "w") as f:
            f["/group/image"] = array
        return f"{path}::/group/image"
    return str(path)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5", "array"])
def test_every_real_dtype_round_trips_exactly(tmp_path, dtype, suffix):
    array = _ramp(dtype)
    source = array if suffix == "array" else _save(array, tmp_path / f"image{suffix}")
    image = load_image(source)
    assert image.data.dtype == _expected_dtype(dtype)
    assert image.data.shape == (20, 30) and not image.data.flags.writeable
    np.testing.assert_array_equal(image.data, array.astype(np.float64))  # lossless, also above 2**24


def test_singleton_axes_are_squeezed():
    array = _ramp("float32", (1, 20, 30, 1))
    np.testing.assert_array_equal(load_image(array).data, array[0, :, :, 0])


def test_png_and_jpeg_gray_round_trip_and_colour_becomes_luminance(tmp_path):
    gray8, gray16 = _ramp("uint8"), (_ramp("uint16") * 200).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "g8.png"), gray8)
    cv2.imwrite(str(tmp_path / "g16.png"), gray16)
    np.testing.assert_array_equal(load_image(tmp_path / "g8.png").data, gray8)
    np.testing.assert_array_equal(load_image(tmp_path / "g16.png").data, gray16)
    rgb = np.random.default_rng(2).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    luminance = rgb.astype(float) @ [0.299, 0.587, 0.114]
    cv2.imwrite(str(tmp_path / "c.png"), rgb[..., ::-1])  # OpenCV writes BGR
    colour = load_image(tmp_path / "c.png")
    assert colour.data.dtype == np.float32 and colour.shape == (20, 30)
    np.testing.assert_allclose(colour.data, luminance, atol=1e-3)
    smooth = np.add.outer(np.arange(40), np.arange(48)).astype(np.uint8) * 2
    cv2.imwrite(str(tmp_path / "g.jpg"), smooth, [cv2.IMWRITE_JPEG_QUALITY, 100])
    np.testing.assert_allclose(load_image(tmp_path / "g.jpg").data, smooth, atol=3)


def test_bmp_and_non_ascii_paths(tmp_path):
    gray = _ramp("uint8")
    for name in ("g.bmp", "Ångström scan.png"):
        ok, encoded = cv2.imencode(Path(name).suffix, gray)
        assert ok
        encoded.tofile(tmp_path / name)
        np.testing.assert_array_equal(load_image(tmp_path / name).data, gray)


def test_transparent_png_pixels_become_nan(tmp_path):
    bgra = np.full((16, 16, 4), 255, np.uint8)
    bgra[:4, :, 3] = 0
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    data = load_image(tmp_path / "a.png").data
    assert np.isnan(data[:4]).all() and np.allclose(data[4:], 255, atol=1e-3)
    bgra[..., 3] = 0  # nothing opaque: the alpha channel is no mask, ignore it
    cv2.imwrite(str(tmp_path / "clear.png"), bgra)
    assert np.isfinite(load_image(tmp_path / "clear.png").data).all()


def test_rgb_tiff_photo_becomes_luminance_but_float_rgb_is_a_stack(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 65535, (20, 30, 3), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_allclose(load_image(tmp_path / "rgb.tif").data, rgb @ [0.299, 0.587, 0.114], rtol=1e-6)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb",
                     planarconfig="separate")
    np.testing.assert_allclose(load_image(tmp_path / "planar.tif").data, rgb @ [0.299, 0.587, 0.114],
                               rtol=1e-6)
    channels = np.random.default_rng(4).normal(size=(3, 20, 30)).astype(np.float32)
    tifffile.imwrite(tmp_path / "channels.tif", channels, photometric="rgb", planarconfig="separate")
    with pytest.raises(InputError, match="stack of 3 images of 30×20 px.*own TIFF"):
        load_image(tmp_path / "channels.tif")


def test_nan_is_kept_and_inf_becomes_nan_in_every_format(tmp_path):
    array = _ramp("float32")
    array[0, 0], array[1, 1], array[2, 2] = np.nan, np.inf, -np.inf
    for suffix in (".npy", ".tif", ".h5"):
        data = load_image(_save(array, tmp_path / f"n{suffix}")).data
        assert np.isnan(data[[0, 1, 2], [0, 1, 2]]).all() and np.isfinite(data).sum() == array.size - 3
    data = load_image(array).data
    assert np.isnan(data[[0, 1, 2], [0, 1, 2]]).all() and np.isfinite(array).sum() == array.size - 3
    assert np.isinf(array[1, 1])  # the caller's array is not modified


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.ones((10, 10)) * (1 + 1j), "complex values"),
        (np.full((10, 10), np.nan), "no finite pixel"),
        (np.full((10, 10), np.inf, np.float16), "no finite pixel"),
        (np.ones((3, 10, 12)), r"stack of 3 images of 12×10 px \(shape \(3, 10, 12\)\); pass one 2-D"),
        (np.ones((10, 12, 3)), r"stack of 3 images of 12×10 px"),
        (np.ones((2, 3, 10, 10)), r"has shape \(2, 3, 10, 10\); autoreg needs a 2-D image"),
        (np.ones(100), "needs a 2-D image"),
        (np.ones((4, 4)), "only 4×4 px; autoreg needs at least 8×8"),
        (np.ones((1, 1)), "only 1×1 px"),
        (np.ones((7, 100)), "only 100×7 px"),
        (np.array([["a"] * 10] * 10), "not real numbers"),
        (np.zeros((10, 10), "datetime64[s]"), "not real numbers"),
        (np.zeros((10, 10), [("a", "f4"), ("b", "f4")]), "not real numbers"),
        (np.full((10, 10), None), "not real numbers"),
    ],
)
def test_unusable_arrays_are_input_errors(array, message):
    with pytest.raises(InputError, match=message):
        load_image(array)


def test_image_is_returned_as_is_and_other_objects_are_refused():
    image = Image(data=np.ones((8, 8), np.float32))
    assert load_image(image) is image
    with pytest.raises(InputError, match="Cannot read an image from a dict"):
        load_image({"a": 1})


@pytest.mark.parametrize(
    ("write", "name", "message"),
    [
        (lambda p: np.save(p, np.zeros((3, 20, 20))), "s.npy", r"stack of 3 images.*np\.save"),
        (lambda p: tifffile.imwrite(p, np.zeros((3, 20, 20), np.float32), photometric="minisblack"), "s.tif",
         r"stack of 3 images.*own TIFF"),
        (lambda p: _save(np.zeros((3, 20, 20)), p), "s.h5", r"stack of 3 images.*FILE\.h5::/path/to/channel"),
    ],
)
def test_stacks_in_files_say_how_to_pick_one_image(tmp_path, write, name, message):
    path = tmp_path / name
    write(path)
    with pytest.raises(InputError, match=message):
        load_image(f"{path}::/group/image" if name.endswith(".h5") else path)


def _budget_files(folder: Path) -> dict[str, str]:
    image = _ramp("uint8", (40, 50))
    specs = {suffix: _save(image, folder / f"b{suffix}") for suffix in (".npy", ".tif", ".h5")}
    cv2.imwrite(str(folder / "b.png"), image)
    cv2.imwrite(str(folder / "b.jpg"), image)
    with h5py.File(folder / "u.h5", "w") as f:
        write_usid(f.create_group("g"), "Img", image)
    return {**specs, ".png": str(folder / "b.png"), ".jpg": str(folder / "b.jpg"),
            "usid": f"{folder / 'u.h5'}::/g/Img"}


def test_pixel_budget_refuses_every_format(tmp_path):
    for kind, spec in _budget_files(tmp_path).items():
        with pytest.raises(InputError, match=r"2,000 pixels \(50×40 px\), over the budget of 1,999"):
            load_image(spec, max_pixels=1999)
        assert load_image(spec, max_pixels=2000).shape == (40, 50), kind
    with pytest.raises(InputError, match="over the budget of 10"):
        load_image(np.ones((8, 8)), max_pixels=10)


def test_pixel_budget_is_checked_before_the_pixels_are_read(tmp_path):
    """Files that claim 2.5e9 pixels: reading them would take minutes and 20 GB; refusing, milliseconds."""
    huge = (50_000, 50_000)
    with h5py.File(tmp_path / "huge.h5", "w") as f:
        f.create_dataset("image", shape=huge, dtype="f8", chunks=(1000, 1000))  # nothing allocated
    header = np.lib.format.header_data_from_array_1_0(np.zeros((1, 1)))
    with open(tmp_path / "huge.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": huge})
        fh.truncate(fh.tell() + huge[0] * huge[1] * 8)  # sparse: no disk used
    png = b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sIIBBBBB", 13, b"IHDR", huge[1], huge[0], 8, 0, 0, 0, 0)
    (tmp_path / "huge.png").write_bytes(png + b"\0" * 64)
    jpeg = (b"\xff\xd8" + b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\0" + b"\0" * 9
            + b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, huge[0], huge[1], 1) + b"\x01\x11\x00")
    (tmp_path / "huge.jpg").write_bytes(jpeg)
    for spec in (f"{tmp_path / 'huge.h5'}::/image", tmp_path / "huge.npy", tmp_path / "huge.png",
                 tmp_path / "huge.jpg"):
        with pytest.raises(InputError, match="2,500,000,000 pixels .* over the budget of 1,000,000"):
            load_image(spec, max_pixels=1_000_000)


# ------------------------------------------------------------------------------------------- bad files


def _truncated(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        (b"not a tiff at all", "x.tif", "Cannot read TIFF"),
        (b"\x89PNG\r\n\x1a\nbroken", "x.png", "Cannot read image .*not a PNG"),
        (b"\xff\xd8\xff\xe0broken", "x.jpg", "Cannot read image"),
        (b"", "x.png", "Cannot read image"),
        (b"garbage", "x.npy", "Cannot read NPY"),
        (b"garbage", "x.h5", "is not an HDF5 file"),
        (b"data", "x.xyz", r"Unsupported file type \.xyz"),
        (b"data", "noextension", r"Unsupported file type \(none\)"),
        (b"GIF89a", "x.gif", r"Unsupported file type \.gif"),
    ],
)
def test_corrupt_and_unknown_files_are_input_errors(tmp_path, content, name, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        load_image(f"{path}::/a" if name.endswith(".h5") else path)


def test_truncated_files_are_input_errors(tmp_path):
    rng = np.random.default_rng(5)
    tifffile.imwrite(tmp_path / "t.tif", rng.normal(size=(64, 64)).astype(np.float32))
    np.save(tmp_path / "t.npy", rng.normal(size=(64, 64)))
    cv2.imwrite(str(tmp_path / "t.png"), rng.integers(0, 255, (64, 64), dtype=np.uint8))
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f.create_dataset("image", data=rng.normal(size=(256, 256)))
    cases = {"t.tif": "Cannot read TIFF", "t.npy": "Cannot read NPY", "t.png": "Cannot read image",
             "t.h5": "corrupt or truncated"}
    for name, message in cases.items():
        path = _truncated(tmp_path / name)
        with pytest.raises(InputError, match=message):
            load_image(f"{path}::/image" if name.endswith(".h5") else path)


def test_npy_with_objects_or_an_npz_inside_is_refused(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[object()] * 10] * 10), allow_pickle=True)
    with pytest.raises(InputError, match="Python objects"):
        load_image(tmp_path / "obj.npy")
    with open(tmp_path / "z.npy", "wb") as fh:
        np.savez(fh, a=np.ones((10, 10)))
    with pytest.raises(InputError, match="NPZ archive"):
        load_image(tmp_path / "z.npy")


def test_missing_and_wrong_paths(tmp_path):
    with pytest.raises(InputError, match="File not found"):
        load_image(tmp_path / "nope.tif")
    with pytest.raises(InputError, match="File not found"):
        load_image(f"{tmp_path / 'nope.h5'}::/a")
    with pytest.raises(InputError, match="is not a file"):
        load_image(tmp_path)
    with pytest.raises(InputError, match="File not found"):
        load_points(tmp_path / "nope.csv")


def test_hdf5_dataset_paths(tmp_path):
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as f:
        f["group/image"] = _ramp("float32")
        f["group/image"].attrs["units"] = b"nm"
        f["line"] = np.arange(50.0)
        f["scalar"] = 3.0
        f["text"] = np.array([b"abc"] * 100).reshape(10, 10)
        f.create_dataset("empty", data=h5py.Empty("f4"))
        f["link"] = h5py.SoftLink("/nowhere")
    image = load_image(f"{path}::group/image")  # a relative dataset path is taken from the root
    assert image.value_units == "nm" and image.pixel_size_xy is None and image.name == f"{path}::group/image"
    cases = {"/nope": "No dataset /nope in", "/group": "is a group, not a dataset",
             "/line": "needs a 2-D image", "/scalar": "needs a 2-D image", "/text": "not real numbers",
             "/empty": "holds no data",
             "/link": "No dataset /link"}
    for dataset, message in cases.items():
        with pytest.raises(InputError, match=message):
            load_image(f"{path}::{dataset}")
    with pytest.raises(InputError, match="is an HDF5 file; name a dataset"):
        load_image(path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "Empty input path"),
        ("   ", "Empty input path"),
        ("scan.h5::", "Malformed input"),
        ("::/a", "Malformed input"),
        ("  ::/a", "Malformed input"),
        ("a.h5::/b::/c", "Malformed input"),
        ("image.tif::/a", r"image\.tif is not an HDF5 file.*drop the '::' part"),
        ("image.NPY::/a", "is not an HDF5 file"),
        ("points.csv::/a", "is not an HDF5 file"),
    ],
)
def test_malformed_specs(spec, message):
    with pytest.raises(InputError, match=message):
        parse_spec(spec)
    with pytest.raises(InputError, match=message):
        load_image(spec)


def test_parse_spec():
    assert parse_spec("scan.h5::/M/C/Raw") == (Path("scan.h5"), "/M/C/Raw")
    assert parse_spec("scan.h5::M/C") == (Path("scan.h5"), "/M/C")
    assert parse_spec(Path("dir/image.tif")) == (Path("dir/image.tif"), None)
    assert parse_spec("odd.dat::/x") == (Path("odd.dat"), "/x")  # unknown extension: judged when read


# ---------------------------------------------------------------------------------------------- points


def test_points_csv_any_order_whitespace_blank_lines_and_bom(tmp_path):
    path = tmp_path / "p.csv"
    text = "\ufeff moving_x , moving_y,fixed_x,fixed_y \n1,2,3,4\n\n 5 , 6,7,8.5e0\n\n"
    path.write_text(text, encoding="utf-8")
    fixed_xy, moving_xy = load_points(path)
    np.testing.assert_array_equal(fixed_xy, [[3, 4], [7, 8.5]])
    np.testing.assert_array_equal(moving_xy, [[1, 2], [5, 6]])
    assert fixed_xy.shape == moving_xy.shape == (2, 2)


HEADER = "fixed_x,fixed_y,moving_x,moving_y\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "is empty"),
        ("\n  \n", "is empty"),
        ("x,y,u,v\n1,2,3,4\n", "missing fixed_x, fixed_y, moving_x, moving_y; unexpected x, y, u, v"),
        ("fixed_x,fixed_y,moving_x\n1,2,3\n", "missing moving_y"),
        ("fixed_x,fixed_y,moving_x,moving_y,extra\n1,2,3,4,5\n", "unexpected extra"),
        ("fixed_x,fixed_x,moving_x,moving_y\n1,2,3,4\n", "missing fixed_y; unexpected fixed_x"),
        ("fixed_x;fixed_y;moving_x;moving_y\n1;2;3;4\n", "comma-separated"),
        (HEADER, "no points"),
        (HEADER + "1,2,3\n", "line 2: 3 fields, expected 4"),
        (HEADER + "1,2,3,4\n\n1,2,3,4,5\n", "line 4: 5 fields"),
        (HEADER + "1,2,3,abc\n", "line 2: not a number"),
        (HEADER + "1,2,3,\n", "line 2: not a number"),
        (HEADER + "1,2,3,4\n1,2,3,nan\n", "line 3: NaN or infinite"),
        (HEADER + "1,2,-inf,4\n", "line 2: NaN or infinite"),
    ],
)
def test_bad_points_csv(tmp_path, text, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_points(path)


def test_points_file_that_is_not_text(tmp_path):
    path = tmp_path / "p.csv"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(InputError, match="Cannot read points file"):
        load_points(path)


# ---------------------------------------------------------------------------------------------- writing


def test_atomic_path_writes_through_a_hidden_temporary_with_the_same_suffix(tmp_path):
    target = tmp_path / "out.tif"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tif.tmp-") and tmp.suffix == ".tif"
        assert tmp.exists() and not target.exists()
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["out.tif"]
    reference = tmp_path / "made_by_open"
    reference.write_bytes(b"")  # a file made the ordinary way: mode 0o666 less the umask
    assert target.stat().st_mode & 0o777 == reference.stat().st_mode & 0o777


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
@pytest.mark.parametrize("existed", [True, False])
def test_atomic_path_leaves_the_target_untouched_and_no_temporary_on_error(tmp_path, error, existed):
    target = tmp_path / "out.npy"
    if existed:
        target.write_bytes(b"old")
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise error("interrupted")
    assert [p.name for p in tmp_path.iterdir()] == (["out.npy"] if existed else [])
    if existed:
        assert target.read_bytes() == b"old"


@pytest.mark.parametrize("suffix", [".tif", ".tiff", ".npy", ".TIF"])
def test_write_image_round_trips_as_float32(tmp_path, suffix):
    array = np.random.default_rng(6).normal(size=(12, 20))
    array[0, 0] = np.nan
    path = write_image(tmp_path / f"w{suffix}", array)
    assert path == tmp_path / f"w{suffix}" and [p.name for p in tmp_path.iterdir()] == [path.name]
    stored = np.load(path) if suffix == ".npy" else tifffile.imread(path)
    assert stored.dtype == np.float32
    np.testing.assert_array_equal(stored, array.astype(np.float32))
    np.testing.assert_array_equal(load_image(path).data, array.astype(np.float32))


def test_write_image_refuses_other_extensions(tmp_path):
    for name in ("w.jpg", "w.h5", "w"):
        with pytest.raises(InputError, match=r"use a \.tif, \.tiff or \.npy output"):
            write_image(tmp_path / name, np.ones((8, 8)))
    assert list(tmp_path.iterdir()) == []


def test_write_json_is_atomic_and_strict_json(tmp_path):
    obj = {"a": np.float32(1.5), "b": [np.nan, -np.inf, 2], "c": np.arange(2)}
    path = write_json(tmp_path / "r.json", obj)
    text = path.read_text()
    assert json.loads(text) == {"a": 1.5, "b": [None, None, 2], "c": [0, 1]}
    assert "NaN" not in text and "Infinity" not in text and text.endswith("}\n")
    with pytest.raises(TypeError):
        write_json(tmp_path / "r.json", {"bad": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"] and path.read_text() == text


def test_check_output_path(tmp_path):
    source = tmp_path / "in.h5"
    source.write_bytes(b"x")
    (tmp_path / "link.h5").symlink_to(source)
    os.link(source, tmp_path / "hard.h5")
    for same in (tmp_path / "." / "in.h5", tmp_path / "link.h5", tmp_path / "hard.h5"):
        with pytest.raises(InputError, match="is also an input"):
            check_output_path(same, inputs=[source], overwrite=True)
    with pytest.raises(InputError, match="is also an input"):
        check_output_path(source, inputs=[f"{source}::/M/C/Raw"], overwrite=True)
    existing = tmp_path / "exists.tif"
    existing.write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists; pass --overwrite"):
        check_output_path(existing, inputs=[source], overwrite=False)
    assert check_output_path(existing, inputs=[source], overwrite=True) == existing
    assert check_output_path(tmp_path / "new.tif", inputs=[source], overwrite=False) == tmp_path / "new.tif"
    with pytest.raises(InputError, match="does not exist; create it first"):
        check_output_path(tmp_path / "no" / "w.tif", inputs=[], overwrite=False)
    with pytest.raises(InputError, match="is not a directory"):
        check_output_path(existing / "w.tif", inputs=[], overwrite=True)
    (tmp_path / "sub.tif").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        check_output_path(tmp_path / "sub.tif", inputs=[], overwrite=True)
    with pytest.raises(InputError, match=r"use one of \.npy, \.tif"):
        check_output_path(tmp_path / "w.jpg", inputs=[], overwrite=False, suffixes={".tif", ".npy"})
    assert existing.read_bytes() == b"keep" and source.read_bytes() == b"x"


# ------------------------------------------------------------------------------- inputs stay untouched


def test_reading_leaves_inputs_byte_identical_and_closes_every_file(tmp_path):
    files = _budget_files(tmp_path)
    _truncated(tmp_path / "b.tif", 0.3)  # an error path too
    before = {p.name: (_sha(p), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    for spec in files.values():
        with contextlib.suppress(InputError):  # the truncated TIFF
            load_image(spec)
        with pytest.raises(InputError):
            load_image(spec, max_pixels=10)
    with pytest.raises(InputError):
        load_cube(files["usid"], max_pixels=10)
    load_cube(files["usid"])
    assert {p.name: (_sha(p), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before
    assert _open_fds_under(tmp_path) == []


def test_hdf5_file_locked_by_a_writer_is_a_clear_error(tmp_path):

    path = tmp_path / "busy.h5"
    code = ("import sys; from autoreg.io import load_image; from autoreg.errors import InputError\n"
            "try:\n    load_image(sys.argv[1])\nexcept InputError as err:\n    print(err)")
    with h5py.File(path, "w") as f:  # HDF5 locks a file open for writing
        f["image"] = np.zeros((16, 16))
        f.flush()
        done = subprocess.run([sys.executable, "-c", code, f"{path}::/image"], capture_output=True, text=True,
                              check=False, cwd=Path(__file__).resolve().parents[1],
                              env={**os.environ, "HDF5_USE_FILE_LOCKING": "TRUE"})
    assert "another program holds a lock on it" in done.stdout, done.stdout + done.stderr


def test_inspect_says_each_datasets_pixel_size_and_which_axis_falls(tmp_path):
    """The listing shows what register will read as the pixel size, and says in words when an axis falls (two
    programs that differ in it store each other's mirror images); datasets register refuses say why."""
    from autoreg.results_h5 import describe_file

    path = tmp_path / "scans.h5"
    image = np.arange(16 * 10, dtype=float).reshape(10, 16)
    with h5py.File(path, "w") as f:
        write_usid(f.create_group("up"), "Img", image, pixel=(0.5, 0.25))
        write_usid(f.create_group("down"), "Img", image, pixel=(0.5, -0.25))
        write_usid(f.create_group("both"), "Img", image, pixel=(-2.0, -2.0), position_units="um")
        write_usid(f.create_group("flat"), "Img", image, pixel=(0.0, 0.0))
        write_usid(f.create_group("shuffled"), "Img", image)
        f["shuffled/Position_Indices"][3] = f["shuffled/Position_Indices"][4]
    lines = describe_file(path)
    by_group = {group.strip().rstrip("/"): line for group, line in itertools.pairwise(lines) if "[main:" in line}
    assert sorted(by_group) == ["both", "down", "flat", "shuffled", "up"]
    assert all(line.startswith("  Img  [main: 16×10 positions × 1 steps, Signal (pA); ") for line in by_group.values())
    assert by_group["up"].endswith("; pixel 0.5 × 0.25 nm]")
    assert by_group["down"].endswith("; pixel 0.5 × -0.25 nm: y falls along the rows]")
    assert by_group["both"].endswith("; pixel -2 × -2 um: x falls along the columns and y falls along the rows]")
    assert by_group["flat"].endswith("; no pixel size (position values missing or degenerate)]")
    assert "register refuses it" in by_group["shuffled"] and "full 2-D grid" in by_group["shuffled"]
    assert load_image(f"{path}::/down/Img").pixel_size_xy == pytest.approx((0.5, -0.25))
