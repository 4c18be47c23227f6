"""Reading inputs and writing outputs.

Inputs
------
``FILE.h5::/path/to/dataset``
    A USID main dataset (reshaped to an image, physical calibration kept) or a plain 2-D HDF5 dataset.
TIFF, PNG, JPEG, BMP, NPY
    By extension. Colour photos (8/16-bit RGB(A) PNG, JPEG, BMP, TIFF) become luminance
    ``0.299 R + 0.587 G + 0.114 B``; fully transparent pixels become NaN.

Every input is opened read-only and closed before the function returns. Shapes are checked (2-D after
squeezing singleton axes, at least 8×8 px, ``max_pixels``) *before* the pixels are read wherever the format
tells the shape first: HDF5, TIFF, NPY (memory-mapped), PNG and JPEG headers.

Pixel values
------------
float64 input, and integers of 32 or 64 bits (float32 holds integers exactly only up to 2**24), become
float64. Everything else real (bool, 8- and 16-bit integers, float16, float32, any byte order) becomes
float32, exactly. Non-finite values become NaN and are kept: later stages mask them. Complex, string and
object data are refused.

The USID layout (axis order, calibration) is read by :mod:`autoreg.usid`.

Outputs
-------
Written atomically (:func:`atomic_path`): to a hidden temporary file in the target directory, then renamed
onto the target, so an interrupted run leaves the old file or none, never half a file.
"""

from __future__ import annotations

import csv
import json
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import usid
from ._atomic import atomic_path, write_text
from .datatypes import Image, jsonable
from .errors import InputError

__all__ = [
    "POINTS_HEADER",
    "check_output_path",
    "describe_image",
    "load_cube",
    "load_image",
    "load_coordinate_table",
    "load_points",
    "save_inlier_pairs",
    "write_coordinate_table",
    "parse_spec",
    "preview_8bit",
    "write_image",
    "write_json",
]

POINTS_HEADER = ("fixed_x", "fixed_y", "moving_x", "moving_y")
MIN_SIDE = 8
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".he5", ".nxs"}
_TIFF_SUFFIXES = {".tif", ".tiff"}
_RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_NOT_HDF5_SUFFIXES = _TIFF_SUFFIXES | _RASTER_SUFFIXES | {".npy", ".npz", ".csv", ".json", ".txt", ".gif"}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

_HINT_ARRAY = "pass one 2-D slice of it (e.g. stack[0], or stack[..., 0] for channels last)."
_HINT_NPY = "save the 2-D image you want in its own .npy file (e.g. np.save('one.npy', stack[0]))."
_HINT_TIFF = "save the page or channel you want as its own TIFF (e.g. tifffile.imwrite('one.tif', stack[0]))."
_HINT_HDF5 = ("give the path of a dataset that holds one 2-D image (FILE.h5::/path/to/channel), or copy the "
              "image you want into its own dataset.")


# --------------------------------------------------------------------------------------------------- specs


def parse_spec(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Split ``"FILE.h5::/path/to/dataset"`` into the file and the dataset path.

    Parameters
    ----------
    spec : str or path
        A file path, or an HDF5 file and a dataset inside it joined by ``::``. A leading ``/`` is added to a
        relative dataset path.

    Returns
    -------
    path : Path
    dataset : str or None
        The absolute dataset path, or None for a plain file.

    Raises
    ------
    InputError
        Empty path; empty file or dataset part; more than one ``::``; ``::`` after a file that is not HDF5
        (judged by extension: TIFF, PNG, JPEG, BMP, NPY, CSV...).

    Examples
    --------
    >>> parse_spec("scan.h5::/Measurement_000/Channel_000/Raw_Data")
    (PosixPath('scan.h5'), '/Measurement_000/Channel_000/Raw_Data')
    >>> parse_spec("image.tif")
    (PosixPath('image.tif'), None)
    """
    text = os.fspath(spec)
    if "::" not in text:
        if not text.strip():
            raise InputError("Empty input path; give an image file or FILE.h5::/path/to/dataset.")
        return Path(text), None
    parts = text.split("::")
    if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
        raise InputError(f"Malformed input {text!r}; write FILE.h5::/path/to/dataset (one '::').")
    path, dataset = Path(parts[0]), parts[1] if parts[1].startswith("/") else "/" + parts[1]
    if path.suffix.lower() in _NOT_HDF5_SUFFIXES:
        raise InputError(f"{path} is not an HDF5 file, so '::{parts[1]}' cannot name a dataset in it; drop "
                         "the '::' part, or give an HDF5 file.")
    return path, dataset


# ------------------------------------------------------------------------------------- shapes and values


def _float_dtype(dtype: np.dtype) -> type:
    """float64 for float64 (and wider) and 32/64-bit integers; float32, which holds the rest exactly."""
    if dtype.kind == "f" and dtype.itemsize >= 8 or dtype.kind in "iu" and dtype.itemsize >= 4:
        return np.float64
    return np.float32


def _as_float(array: np.ndarray, name: str, dtype: Any = None) -> np.ndarray:
    """A real numeric array as native float (see :func:`_float_dtype`) with NaN for every non-finite value."""
    array = np.asarray(array)
    if array.dtype.kind == "c":
        raise InputError(f"Input {name} holds complex values; pass a real channel (e.g. its amplitude "
                         "np.abs(z) or phase np.angle(z)) instead.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"Input {name} has data type {array.dtype}, not real numbers; pass a numeric image.")
    out = array.astype(dtype or _float_dtype(array.dtype))  # a copy, in native byte order
    if array.dtype.kind == "f":
        out[~np.isfinite(out)] = np.nan
    return out


def _stack_message(squeezed: tuple[int, ...], shape: tuple[int, ...], name: str, hint: str) -> str:
    a, b, c = squeezed
    n, rows, cols = (c, a, b) if c <= 4 < min(a, b) else (a, b, c)  # channels last, or images first
    return f"Input {name} is a stack of {n} images of {cols}×{rows} px (shape {shape}); {hint}"


def _image_shape(shape: tuple[int, ...], name: str, hint: str, max_pixels: int | None) -> tuple[int, int]:
    """``(rows, cols)`` of an array of ``shape`` without its singleton axes; InputError if it is no image.

    Refuses stacks and other non-2-D shapes, images under ``MIN_SIDE`` px a side, and more pixels than
    ``max_pixels``. Needs only the shape, so it runs before the pixels are read.
    """
    shape = tuple(int(s) for s in shape)
    squeezed = tuple(s for s in shape if s != 1)
    if len(shape) == 2 and min(shape) < MIN_SIDE or len(squeezed) == 2 and min(squeezed) < MIN_SIDE:
        rows, cols = shape if len(shape) == 2 else squeezed
        raise InputError(f"Input {name} is only {cols}×{rows} px; autoreg needs at least {MIN_SIDE}×"
                         f"{MIN_SIDE} px.")
    if len(squeezed) == 3:
        raise InputError(_stack_message(squeezed, shape, name, hint))
    if len(squeezed) != 2:
        advice = f": {hint}" if len(squeezed) > 3 else "."
        raise InputError(f"Input {name} has shape {shape}; autoreg needs a 2-D image{advice}")
    rows, cols = squeezed
    if max_pixels is not None and rows * cols > max_pixels:
        raise InputError(f"Input {name} has {rows * cols:,} pixels ({cols}×{rows} px), over the budget of "
                         f"{max_pixels:,}; crop or bin it first, or raise max_pixels.")
    return rows, cols


def _finish_image(array: np.ndarray, name: str, hint: str, max_pixels: int | None, **meta: Any) -> Image:
    shape = _image_shape(np.shape(array), name, hint, max_pixels)
    data = _as_float(np.reshape(array, shape), name)
    if not np.isfinite(data).any():
        raise InputError(f"Input {name} holds no finite pixel (all NaN or infinite); check the file or "
                         "channel.")
    return Image(data=data, name=name, **meta)


def _luminance(rgb: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``0.299 R + 0.587 G + 0.114 B`` as float32; NaN where ``alpha`` is 0 (unless nothing is opaque)."""
    gray = rgb[..., :3].astype(np.float32) @ _LUMA
    if alpha is not None and (alpha > 0).any():
        gray[alpha == 0] = np.nan
    return gray


# -------------------------------------------------------------------------------------------------- files


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"File not found: {path}.")
    if not path.is_file():
        raise InputError(f"{path} is not a file; give the path of an image file.")


def _read_usid(dset: Any, anc: dict[str, Any], label: str, max_pixels: int | None,
               *, cube: bool) -> tuple[np.ndarray, dict[str, Any]]:
    grid = usid.position_grid(dset, anc["Position_Indices"])
    _image_shape((grid.n_y, grid.n_x), label, _HINT_HDF5, max_pixels)
    n_spec = int(dset.shape[1])
    if n_spec == 0:
        raise InputError(f"Input {label} holds no values (0 spectroscopic steps per position).")
    if n_spec != 1 and not cube:
        raise InputError(f"Input {label} is a spectroscopic cube ({grid.n_x}×{grid.n_y} positions × "
                         f"{n_spec} steps); register a 2-D channel of the same scan and pass this cube along "
                         "(--cube).")
    meta = {**usid.calibration(grid, anc["Position_Values"], anc["Position_Indices"]),
            "value_units": usid.value_units(dset),
            "spectral": usid.spectral_meta(anc["Spectroscopic_Values"], anc["Spectroscopic_Indices"])}
    data = grid.to_image(usid.read_dataset(dset))
    return (data if cube else data[:, :, 0]), meta


def _read_hdf5(path: Path, dataset: str, label: str, max_pixels: int | None,
               *, cube: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels and metadata of one dataset: USID (reshaped, calibrated) or plain (as stored)."""
    with usid.open_hdf5(path) as f:
        return _read_hdf5_dataset(usid.get_dataset(f, path, dataset), label, max_pixels, cube=cube)


def _read_hdf5_dataset(dset: Any, label: str, max_pixels: int | None,
                       *, cube: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """Pixels and metadata of an open ``h5py.Dataset``: USID (reshaped, calibrated) or plain (as stored)."""
    where = f"{dset.name} in {dset.file.filename}"
    try:
        anc = usid.ancillaries(dset)
        if anc is not None:
            return _read_usid(dset, anc, label, max_pixels, cube=cube)
    except InputError:
        raise
    except (KeyError, ValueError, OSError, TypeError, IndexError) as err:
        raise InputError(f"{where} has unreadable USID ancillary datasets: {err}.") from err
    if cube:
        raise InputError(f"{where} is not a USID main dataset with a spectroscopic dimension; a cube is read "
                         "from one.")
    if dset.shape is None:
        raise InputError(f"{where} holds no data (an empty dataset).")
    _image_shape(dset.shape, label, _HINT_HDF5, max_pixels)
    return usid.read_dataset(dset), {"value_units": usid.value_units(dset)}


def _h5py_dataset(source: Any) -> bool:
    """True for an open ``h5py.Dataset`` (pyUSID's ``USIDataset`` is one), without importing h5py."""
    import sys

    h5py = sys.modules.get("h5py")
    return h5py is not None and isinstance(source, h5py.Dataset)


def _load_h5py_dataset(dset: Any, name: str | None, max_pixels: int | None) -> Image:
    """An image from an open ``h5py.Dataset`` or pyUSID ``USIDataset``, with its USID grid and positions."""
    if not dset.id.valid:
        raise InputError("The h5py dataset is closed (its file was closed); open the file again.")
    label = name or f"{dset.file.filename}::{dset.name}"
    data, meta = _read_hdf5_dataset(dset, label, max_pixels, cube=False)
    meta.pop("spectral", None)
    return _finish_image(data, label, _HINT_HDF5, max_pixels, **meta)


# ------------------------------------------------------------------------------------ TIFF, PNG/JPEG, NPY


def _tiff_colour_axis(series: Any) -> int | None:
    """Axis of the samples of an 8/16-bit RGB(A) TIFF photo; None for grayscale, stacks and float 'RGB'."""
    import tifffile

    axis = series.axes.find("S")
    is_photo = series.keyframe.photometric == tifffile.PHOTOMETRIC.RGB and np.dtype(series.dtype).kind in "u"
    return axis if is_photo and axis >= 0 and series.shape[axis] in (3, 4) else None


def _tiff_calibration(tif: Any) -> dict[str, Any]:
    """Pixel size and unit of an ImageJ TIFF with a length unit (as :func:`write_image` writes); {} otherwise."""
    from .units import unit_factor

    unit = str((tif.imagej_metadata or {}).get("unit", "")).strip()
    unit = {"micron": "µm", "angstrom": "Å"}.get(unit, unit)
    page = tif.pages[0]
    if unit_factor(unit) is None or "XResolution" not in page.tags or "YResolution" not in page.tags:
        return {}
    (xn, xd), (yn, yd) = page.tags["XResolution"].value, page.tags["YResolution"].value
    if not (xn and yn and xd and yd):
        return {}
    return {"pixel_size_xy": (xd / xn, yd / yn), "units": unit, "origin": (0.0, 0.0)}


def _read_tiff(path: Path, label: str, max_pixels: int | None) -> tuple[np.ndarray, dict[str, Any]]:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            colour = _tiff_colour_axis(series)
            shape = tuple(s for i, s in enumerate(series.shape) if i != colour)
            _image_shape(shape, label, _HINT_TIFF, max_pixels)
            data = series.asarray()
            meta = _tiff_calibration(tif)
    except InputError:
        raise
    except (tifffile.TiffFileError, ValueError, IndexError, KeyError, TypeError, OSError, EOFError,
            struct.error, NotImplementedError) as err:
        raise InputError(f"Cannot read TIFF {path} (corrupt, truncated, not a TIFF, or an unsupported "
                         f"compression): {err}.") from err
    if colour is None:
        return data, meta
    data = np.moveaxis(data, colour, -1)
    return _luminance(data[..., :3], data[..., 3] if data.shape[-1] == 4 else None), meta


def _raster_header_shape(path: Path) -> tuple[int, int] | None:
    """``(rows, cols)`` from a PNG IHDR or JPEG SOF header, without decoding; None when not found."""
    with open(path, "rb") as fh:
        head = fh.read(24)
        if head[:8] == _PNG_SIGNATURE and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return height, width
        if head[:2] != b"\xff\xd8":
            return None
        fh.seek(2)
        while (marker := fh.read(2))[:1] == b"\xff" and len(marker) == 2:
            kind = marker[1]
            if kind == 0xFF:  # fill byte
                fh.seek(-1, os.SEEK_CUR)
                continue
            if kind == 0x01 or 0xD0 <= kind <= 0xD8:  # markers without a length
                continue
            size = fh.read(2)
            if kind in (0xD9, 0xDA) or len(size) < 2 or struct.unpack(">H", size)[0] < 2:  # no frame header
                return None
            if 0xC0 <= kind <= 0xCF and kind not in (0xC4, 0xC8, 0xCC):  # start of frame
                frame = fh.read(5)
                if len(frame) < 5:
                    return None
                _, height, width = struct.unpack(">BHH", frame)
                return (height, width) if height else None
            fh.seek(struct.unpack(">H", size)[0] - 2, os.SEEK_CUR)
    return None


def _read_raster(path: Path, label: str, max_pixels: int | None) -> np.ndarray:
    import cv2

    try:
        shape = _raster_header_shape(path)
        if shape is not None:
            _image_shape(shape, label, "", max_pixels)
        buffer = np.fromfile(path, np.uint8)  # imdecode, unlike imread, takes any path on any OS
    except OSError as err:
        raise InputError(f"Cannot open {path}: {err.strerror or err}.") from err
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # no decoder chatter on stderr
    try:
        image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    finally:
        cv2.utils.logging.setLogLevel(level)
    if image is None:
        raise InputError(f"Cannot read image {path} (corrupt, truncated or not a {path.suffix[1:].upper()}).")
    if image.ndim == 3 and image.shape[2] >= 3:  # OpenCV order: BGR(A)
        return _luminance(image[..., 2::-1], image[..., 3] if image.shape[2] == 4 else None)
    return image


def _read_npy(path: Path, label: str, max_pixels: int | None) -> np.ndarray:
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"Cannot read NPY {path} (corrupt, truncated, or holds Python objects): "
                         f"{err}.") from err
    if not isinstance(mapped, np.ndarray):
        mapped.close()
        raise InputError(f"{path} is an NPZ archive of several arrays; save the image alone with np.save.")
    try:
        _image_shape(mapped.shape, label, _HINT_NPY, max_pixels)  # from the header: nothing read yet
        return np.array(mapped)
    finally:
        del mapped  # unmaps the file


# ------------------------------------------------------------------------------------------ public readers


def _load_file(path: Path, dataset: str | None, label: str, max_pixels: int | None) -> Image:
    suffix = path.suffix.lower()
    if dataset is not None or suffix in _HDF5_SUFFIXES:
        if dataset is None:
            raise InputError(f"{path} is an HDF5 file; name a dataset: {path}::/path/to/dataset.")
        data, meta = _read_hdf5(path, dataset, label, max_pixels, cube=False)
        meta.pop("spectral", None)
        return _finish_image(data, label, _HINT_HDF5, max_pixels, **meta)
    _require_file(path)
    if suffix in _TIFF_SUFFIXES:
        data, meta = _read_tiff(path, label, max_pixels)
        return _finish_image(data, label, _HINT_TIFF, max_pixels, **meta)
    if suffix in _RASTER_SUFFIXES:
        return _finish_image(_read_raster(path, label, max_pixels), label, "", max_pixels)
    if suffix == ".npy":
        return _finish_image(_read_npy(path, label, max_pixels), label, _HINT_NPY, max_pixels)
    raise InputError(f"Unsupported file type {suffix or '(none)'} for {path}; use HDF5 (FILE.h5::/dataset), "
                     "TIFF, PNG, JPEG, BMP or NPY.")


def describe_image(source: Any) -> str:
    """One line on an image file as ``register`` reads it: ``image: W×H px; pixel 0.5 × 0.5 nm`` (from an ImageJ
    TIFF's calibration), or ``no pixel size`` when the file has none.

    Raises
    ------
    InputError
        What :func:`load_image` refuses.
    """
    image = load_image(source)
    rows, cols = image.shape
    if image.pixel_size_xy is None:
        pixel = "no pixel size (tell register with --pixel-size when the scale matters)"
    else:
        size_x, size_y = image.pixel_size_xy
        pixel = f"pixel {size_x:.4g} × {size_y:.4g}{f' {image.units}' if image.units else ''}"
    return f"image: {cols}×{rows} px; {pixel}"


def load_image(source: Any, *, name: str | None = None, max_pixels: int | None = None) -> Image:
    """Read a 2-D image, with its physical calibration when the file has one.

    Parameters
    ----------
    source : str, path, h5py.Dataset, pyUSID.USIDataset, array_like or Image
        ``FILE.h5::/path/to/dataset`` (USID main dataset or plain 2-D dataset), a TIFF, PNG, JPEG, BMP or NPY
        path, an open ``h5py.Dataset`` or pyUSID ``USIDataset`` (a USID main dataset is read with its position
        grid and physical positions, like a spec), an array, or an :class:`~autoreg.datatypes.Image` (returned
        as is).
    name : str, optional
        Name used in messages and stored in ``Image.name``; defaults to the spec (``"array"`` for arrays).
    max_pixels : int, optional
        Refuse images with more pixels than this, checked before the pixels are read where the format allows.

    Returns
    -------
    Image
        ``data`` as float32 (float64 for float64 and 32/64-bit integer input), NaN where the input is not
        finite; for USID, ``pixel_size_xy``, ``origin`` and ``units`` from ``Position_Values`` and
        ``value_units`` from the dataset's ``units``. See the module notes for the USID axis order.

    Raises
    ------
    InputError
        Missing, unreadable, corrupt or unsupported input; bad dataset path or a group; a stack, cube or other
        non-2-D shape; smaller than 8×8 px; over ``max_pixels``; complex or non-numeric; no finite pixel.

    Examples
    --------
    >>> load_image(np.eye(8, dtype=np.uint8)).data.dtype
    dtype('float32')
    """
    if isinstance(source, Image):
        return source
    if isinstance(source, (str, os.PathLike)):
        path, dataset = parse_spec(source)
        return _load_file(path, dataset, name or os.fspath(source), max_pixels)
    if _h5py_dataset(source):
        return _load_h5py_dataset(source, name, max_pixels)
    if isinstance(source, np.ndarray) or hasattr(source, "__array__"):
        label = name or "array"
        array = np.asarray(source)
        _image_shape(array.shape, label, _HINT_ARRAY, max_pixels)
        return _finish_image(array, label, _HINT_ARRAY, max_pixels)
    raise InputError(f"Cannot read an image from a {type(source).__name__}; give a path, a spec or an array.")


def load_cube(spec: Any, *, max_pixels: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a USID main dataset with a spectroscopic dimension as an array ``(rows, cols, bands)``.

    Parameters
    ----------
    spec : str, path, h5py.Dataset or pyUSID.USIDataset
        ``FILE.h5::/path/to/dataset`` of a USID main dataset (e.g. STS: 40×40 positions × 256 bias steps), or
        that dataset open.
    max_pixels : int, optional
        Refuse more positions than this, before reading.

    Returns
    -------
    cube : ndarray of float32, shape (n_y, n_x, n_spectral)
        Rows = Y, columns = X, NaN where not finite. Several spectroscopic dimensions are flattened into the
        last axis in file order (as stored).
    metadata : dict
        ``pixel_size_xy``, ``origin``, ``units`` (positions), ``value_units`` (the data), and ``spectral``: a
        dict of ``labels`` and ``units`` (lists of str, one per spectroscopic dimension) and ``values``
        (ndarray of shape (n_spectral_dims, n_spectral), e.g. the bias of each step).

    Raises
    ------
    InputError
        Not ``FILE.h5::/dataset``; not a USID main dataset; not a 2-D position grid; over ``max_pixels``;
        complex or non-numeric; or any reading error of :func:`load_image`.
    """
    if _h5py_dataset(spec):
        if not spec.id.valid:  # type: ignore[union-attr]
            raise InputError("The h5py dataset is closed (its file was closed); open the file again.")
        label = f"{spec.file.filename}::{spec.name}"  # type: ignore[union-attr]
        data, meta = _read_hdf5_dataset(spec, label, max_pixels, cube=True)
        return _as_float(data, label, np.float32), meta
    path, dataset = parse_spec(spec)
    if dataset is None:
        raise InputError(f"A cube is read from a USID dataset: {path}::/path/to/dataset.")
    label = os.fspath(spec)
    data, meta = _read_hdf5(path, dataset, label, max_pixels, cube=True)
    return _as_float(data, label, np.float32), meta


def _table_header(row: list[str], columns: tuple[str, ...], path: Path) -> list[int]:
    """Position of each of ``columns`` in the header ``row``; InputError naming what is wrong."""
    header = [cell.strip().lower() for cell in row]
    if sorted(header) == sorted(columns):
        return [header.index(c) for c in columns]
    missing = [c for c in columns if c not in header]
    extra = [c for c in header if c not in columns or header.count(c) > 1]
    problems = "; ".join(p for p in (missing and f"missing {', '.join(missing)}",
                                     extra and f"unexpected {', '.join(dict.fromkeys(extra))}") if p)
    raise InputError(f"Points file {path} has the header {','.join(row)!r} ({problems}); the first line must "
                     f"be {','.join(columns)} (comma-separated, any order).")


def _table_row(row: list[str], positions: list[int], path: Path, line: int) -> list[float]:
    if len(row) != len(positions):
        raise InputError(f"Points file {path}, line {line}: {len(row)} fields, expected {len(positions)}.")
    try:
        numbers = [float(row[c]) for c in positions]
    except ValueError as err:
        raise InputError(f"Points file {path}, line {line}: not a number ({err}).") from err
    if not np.all(np.isfinite(numbers)):
        raise InputError(f"Points file {path}, line {line}: NaN or infinite coordinate.")
    return numbers


def load_coordinate_table(path: str | os.PathLike[str], columns: tuple[str, ...]) -> np.ndarray:
    """Read a CSV of finite numbers whose header holds exactly ``columns`` (any order, any case).

    Blank lines are skipped; whitespace around names and numbers is ignored; a UTF-8 byte-order mark is allowed.

    Returns
    -------
    ndarray of shape (N, len(columns))
        The values, columns in the order of ``columns``.

    Raises
    ------
    InputError
        Missing, unreadable or empty file; wrong header; no rows; a line with the wrong number of fields, or a
        value that is not a finite number (the message names the line).
    """
    path = Path(path)
    _require_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"Cannot read points file {path}: {err}.") from err
    reader = csv.reader(text.splitlines())
    rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not rows:
        raise InputError(f"Points file {path} is empty; it needs the header {','.join(columns)} and one line "
                         "per point.")
    positions = _table_header(rows[0][1], columns, path)
    values = [_table_row(row, positions, path, line) for line, row in rows[1:]]
    if not values:
        raise InputError(f"Points file {path} has a header but no points; add one line per point.")
    return np.array(values, np.float64)


def _points_table(points: Any) -> np.ndarray:
    """An (N, 4) table ``fixed_x, fixed_y, moving_x, moving_y`` from a path, an array or a pandas DataFrame."""
    if isinstance(points, (str, os.PathLike)):
        return load_coordinate_table(points, POINTS_HEADER)
    columns = getattr(points, "columns", None)
    if columns is not None and hasattr(points, "to_numpy"):  # a pandas DataFrame, without importing pandas
        names = {str(c).strip().lower(): c for c in columns}
        missing = [c for c in POINTS_HEADER if c not in names]
        if missing:
            raise InputError(f"The points DataFrame lacks the column(s) {', '.join(missing)}; it needs "
                             f"{', '.join(POINTS_HEADER)}.")
        try:
            return np.column_stack([np.asarray(points[names[c]].to_numpy(), np.float64) for c in POINTS_HEADER])
        except (TypeError, ValueError) as err:
            raise InputError(f"The points DataFrame holds values that are not numbers: {err}.") from err
    if isinstance(points, np.ndarray) or isinstance(points, (list, tuple)) and points:
        try:
            table = np.asarray(points, np.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"Control points must be numbers: {err}.") from err
        if table.ndim != 2 or table.shape[1] != 4:
            raise InputError(f"A points array must have shape (N, 4) with columns {', '.join(POINTS_HEADER)}; got "
                             f"shape {table.shape}.")
        return table
    raise InputError(f"Cannot read control points from a {type(points).__name__}; give a CSV path, an (N, 4) "
                     f"array or a DataFrame with columns {', '.join(POINTS_HEADER)}.")


def load_points(points: Any) -> tuple[np.ndarray, np.ndarray]:
    """Read control points: a CSV with the header ``fixed_x,fixed_y,moving_x,moving_y`` (any order), an array
    of shape (N, 4) in that column order, or a pandas DataFrame with those columns.

    Whether the points are enough, spread out and inside the images is checked later, not here.

    Returns
    -------
    fixed_xy, moving_xy : ndarray of shape (N, 2)
        Pixel coordinates (x = column, y = row).

    Raises
    ------
    InputError
        Another type, a wrong shape or missing columns, or see :func:`load_coordinate_table`.

    Examples
    --------
    >>> fixed_xy, moving_xy = load_points(np.array([[10.0, 20.0, 1.0, 2.0]]))
    >>> fixed_xy.tolist(), moving_xy.tolist()
    ([[10.0, 20.0]], [[1.0, 2.0]])
    """
    table = _points_table(points)
    return table[:, 0:2], table[:, 2:4]


def save_inlier_pairs(result: Any, path: str | os.PathLike[str]) -> bool:
    """Write a result's point pairs (feature inliers, or control points) as a control-point CSV, atomically.

    The file has the header of :data:`POINTS_HEADER` and reads back with :func:`load_points` (``register
    --points``, ``autoreg pick --points``): a keypoint found twice at one place (two pyramid levels) is written
    once, since a control-point file repeats no point. Returns False, writing nothing, when the result has no pairs.
    """
    fit = getattr(result, "fit", None)
    if fit is None or fit.n_inliers == 0:
        return False
    pairs = np.column_stack([fit.matches.fixed_xy[fit.inliers], fit.matches.moving_xy[fit.inliers]])
    for columns in (slice(0, 2), slice(2, 4)):  # first occurrence of each fixed, then each moving position
        _, first = np.unique(np.round(pairs[:, columns], 6), axis=0, return_index=True)
        pairs = pairs[np.sort(first)]
    write_coordinate_table(path, POINTS_HEADER, pairs)
    return True


def write_coordinate_table(path: str | os.PathLike[str], columns: tuple[str, ...], values: np.ndarray) -> Path:
    """Write a CSV with the header ``columns`` and one row of ``values`` (N, len(columns)) per line, atomically.

    Numbers are written with 10 significant digits (sub-micro-pixel for any image size autoreg accepts).
    """
    values = np.asarray(values, float).reshape(-1, len(columns))
    lines = [",".join(columns)] + [",".join(f"{v:.10g}" for v in row) for row in values]
    return write_text(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------ writers


def _imagej_unit(units: str) -> str:
    """ImageJ's ASCII spelling of a length unit (its metadata is ASCII; ImageJ reads ``micron`` as µm)."""
    unit = units.strip()
    spelled = {"um": "micron", "µm": "micron", "μm": "micron", "å": "angstrom", "a": "angstrom"}.get(unit.lower(), unit)
    return spelled if spelled.isascii() else "pixel"


def preview_8bit(array: np.ndarray) -> np.ndarray:
    """An 8-bit view of an image for people: the 1st–99th percentile stretched to 0–255, NaN transparent.

    Returns
    -------
    ndarray of uint8, shape (H, W, 2)
        Gray and alpha (0 where the image is NaN).
    """
    data = np.asarray(array, np.float64)
    finite = np.isfinite(data)
    gray = np.zeros(data.shape, np.uint8)
    if finite.any():
        lo, hi = np.percentile(data[finite], [1, 99])
        scaled = np.clip((data - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
        gray[finite] = np.round(scaled[finite] * 255).astype(np.uint8)
    return np.dstack([gray, np.where(finite, 255, 0).astype(np.uint8)])


def write_image(path: str | os.PathLike[str], array: np.ndarray, *,
                pixel_size_xy: tuple[float, float] | None = None, units: str | None = None) -> Path:
    """Write ``array`` as float32 TIFF, NPY, or an 8-bit PNG preview, atomically.

    Parameters
    ----------
    path : str or path
        ``.tif``/``.tiff`` (float32, NaN kept; with a pixel size, the TIFF resolution tags and ImageJ's ``unit``
        carry it, so ImageJ/Fiji and tifffile show physical sizes), ``.npy`` (float32 as is) or ``.png`` (an
        8-bit gray-and-alpha preview scaled for display, transparent where NaN: not the data).
    array : array_like
        2-D image (a stack is written as TIFF pages or as is to NPY; a PNG takes one image).
    pixel_size_xy : tuple of float, optional
        Physical size of a pixel along x and y, in ``units``.
    units : str, optional
        Length unit of ``pixel_size_xy`` (``"nm"``...).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    InputError
        Any other extension, or a PNG of something other than one 2-D image.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _TIFF_SUFFIXES | {".npy", ".png"}:
        raise InputError(f"Cannot write {target.name}: use a .tif, .tiff or .npy output (or .png for an 8-bit "
                         "preview).")
    data = np.asarray(array, np.float32)
    if suffix == ".png" and data.ndim != 2:
        raise InputError(f"Cannot write {target.name}: a PNG preview holds one 2-D image; use .tif or .npy for a "
                         f"{data.ndim}-D array.")
    with atomic_path(target) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, data)
        elif suffix == ".png":
            import cv2

            preview = preview_8bit(data)
            if not cv2.imwrite(str(tmp), np.dstack([preview[..., 0]] * 3 + [preview[..., 1]])):
                raise InputError(f"Cannot write the PNG preview {target}.")
        else:
            import tifffile

            if pixel_size_xy is not None and all(np.isfinite(pixel_size_xy)) and 0 not in pixel_size_xy:
                sx, sy = (abs(float(v)) for v in pixel_size_xy)
                metadata: dict[str, Any] = {"unit": _imagej_unit(units or "pixel")}
                if data.ndim == 3:
                    metadata["axes"] = "ZYX"
                tifffile.imwrite(tmp, data, imagej=True, resolution=(1.0 / sx, 1.0 / sy), metadata=metadata)
            else:
                tifffile.imwrite(tmp, data, photometric="minisblack")
    return target


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically; numpy values become Python, NaN and infinities ``null``."""
    return write_text(path, json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_path(path: str | os.PathLike[str], *, inputs: Sequence[str | os.PathLike[str]],
                      overwrite: bool, suffixes: set[str] | None = None) -> Path:
    """Refuse an output path that would harm an input or an existing file, before any work is done.

    Parameters
    ----------
    path : str or path
        The output file.
    inputs : sequence of str or path
        Input files (``FILE.h5::/dataset`` specs count as their file); symlinks and hard links are resolved.
    overwrite : bool
        Whether an existing output may be replaced.
    suffixes : set of str, optional
        Allowed extensions (lower case, with the dot).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        Unsupported suffix; the output is an input; its directory is missing, not a directory or not writable;
        it is a directory; it exists and ``overwrite`` is False.
    """
    target = Path(path)
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise InputError(f"Cannot write {target.name}: use one of {', '.join(sorted(suffixes))}.")
    for source in inputs:
        if _same_file(target, Path(os.fspath(source).split("::", 1)[0])):
            raise InputError(f"Output {target} is also an input; choose another output path.")
    parent = target.parent
    if not parent.exists():
        raise InputError(f"Output directory {parent} does not exist; create it first.")
    if not parent.is_dir():
        raise InputError(f"Output directory {parent} is not a directory.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"Output directory {parent} is not writable; choose another output path.")
    if target.is_dir():
        raise InputError(f"Output {target} is a directory; give a file name.")
    if target.exists() and not overwrite:
        raise InputError(f"Output {target} already exists; pass --overwrite to replace it.")
    return target
