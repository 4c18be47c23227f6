"""Reading inputs and writing outputs.

Inputs: ``FILE.h5::/path/to/dataset`` (USID main datasets — read with plain h5py, reshaped rows = Y,
columns = X, physical position values kept — or plain 2-D HDF5 datasets), TIFF, PNG, JPEG and NPY.
Inputs are only ever opened for reading. Outputs are written atomically: to a temporary name in the target
directory, then renamed, so an interrupted run leaves the old file or none, never half a file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .datatypes import Image
from .errors import InputError

__all__ = [
    "parse_spec",
    "load_image",
    "load_cube",
    "load_points",
    "atomic_path",
    "write_image",
    "write_json",
    "check_output_path",
    "POINTS_HEADER",
]

POINTS_HEADER = ("fixed_x", "fixed_y", "moving_x", "moving_y")
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".he5", ".nxs"}
_TIFF_SUFFIXES = {".tif", ".tiff"}
_RASTER_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
_MIN_SIDE = 8
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def parse_spec(spec: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Split ``"FILE.h5::/path/to/dataset"`` into the file and the dataset path.

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
    dataset = parts[1] if parts[1].startswith("/") else "/" + parts[1]
    return Path(parts[0]), dataset


def _as_float(array: np.ndarray, name: str) -> np.ndarray:
    """Any real numeric array → float32 (float64 kept), NaN for non-finite; InputError otherwise."""
    array = np.asarray(array)
    if np.iscomplexobj(array):
        raise InputError(f"{name} holds complex values; pass a real channel (e.g. np.abs or .real) instead.")
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has data type {array.dtype}, not numbers; pass a numeric image.")
    out = array.astype(np.float64 if array.dtype == np.float64 else np.float32)  # also native byte order
    out[~np.isfinite(out)] = np.nan
    return out


def _to_2d(array: np.ndarray, name: str, hint: str) -> np.ndarray:
    if array.ndim == 2 and min(array.shape) < _MIN_SIDE:
        raise InputError(f"{name} is only {array.shape[1]} x {array.shape[0]} px; autoreg needs at least "
                         f"{_MIN_SIDE} x {_MIN_SIDE}.")
    squeezed = np.squeeze(array)
    if squeezed.ndim != 2:
        if squeezed.ndim == 3:
            raise InputError(f"{name} is a stack of {squeezed.shape[0]} images of {squeezed.shape[1:]} (shape "
                             f"{array.shape}); {hint}")
        raise InputError(f"{name} has shape {array.shape}; autoreg needs a 2-D image. {hint}")
    if min(squeezed.shape) < _MIN_SIDE:
        raise InputError(f"{name} is only {squeezed.shape[1]} x {squeezed.shape[0]} px; autoreg needs at least "
                         f"{_MIN_SIDE} x {_MIN_SIDE}.")
    return squeezed


def _check_budget(shape: tuple[int, ...], name: str, max_pixels: int | None) -> None:
    n = int(np.prod(shape[:2])) if len(shape) >= 2 else int(np.prod(shape))
    if max_pixels is not None and n > max_pixels:
        raise InputError(f"{name} has {n:,} pixels, over the budget of {max_pixels:,}; crop or bin it first, or "
                         "raise RegistrationConfig.max_pixels.")


def _finish_image(array: np.ndarray, name: str, hint: str, **meta: Any) -> Image:
    data = _as_float(_to_2d(array, name, hint), name)
    if not np.isfinite(data).any():
        raise InputError(f"{name} holds no finite pixel (all NaN or infinite).")
    return Image(data=data, name=name, **meta)


def _require_file(path: Path) -> None:
    if not path.exists():
        raise InputError(f"File not found: {path}.")
    if not path.is_file():
        raise InputError(f"{path} is not a file.")


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.size:
        return _decode(value.ravel()[0])
    return str(value)


def _open_hdf5(path: Path) -> Any:
    import h5py

    _require_file(path)
    with open(path, "rb") as fh:
        if fh.read(8) != _HDF5_SIGNATURE:
            raise InputError(f"{path} is not an HDF5 file.")
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise InputError(f"Cannot read HDF5 file {path} (corrupt or truncated?): {err}.") from err


def _usid_layout(dset: Any) -> dict[str, Any] | None:
    """Position grid and calibration of a USID main dataset, or None for a plain dataset."""
    import h5py

    keys = ("Position_Indices", "Position_Values", "Spectroscopic_Values")
    if not all(isinstance(dset.attrs.get(k), h5py.Reference) for k in keys) or dset.ndim != 2:
        return None
    f = dset.file
    index_ds, value_ds = f[dset.attrs["Position_Indices"]], f[dset.attrs["Position_Values"]]
    spec = f[dset.attrs["Spectroscopic_Values"]]
    labels = [_decode(v) for v in np.atleast_1d(index_ds.attrs.get("labels", []))]
    units = [_decode(v) for v in np.atleast_1d(value_ds.attrs.get("units", []))]
    if index_ds.ndim != 2 or index_ds.shape[1] != 2 or index_ds.shape[0] != dset.shape[0]:
        raise InputError(f"{dset.name} has {index_ds.shape[1] if index_ds.ndim == 2 else '?'} position dimensions; "
                         "autoreg reads 2-D position grids (X, Y).")
    order = [labels.index("X"), labels.index("Y")] if {"X", "Y"} <= set(labels) else [0, 1]
    n = index_ds.shape[0]
    last = np.asarray(index_ds[n - 1])
    n_x, n_y = int(last[order[0]]) + 1, int(last[order[1]]) + 1
    # A full grid with X varying fastest has row r at (r % n_x, r // n_x). Checking a spread of rows (rather
    # than reading millions of indices) keeps reading as cheap as the image itself; odd layouts still fail.
    head = min(n, 2 * n_x + 2)
    stride = max(1, n // 256)
    probe = np.concatenate([np.arange(head), np.arange(0, n, stride)])  # contiguous and strided reads: cheap
    sampled = np.concatenate([np.asarray(index_ds[:head]), np.asarray(index_ds[::stride])])[:, order]
    expected = np.column_stack([probe % n_x, probe // n_x])
    if n_x * n_y != n or not np.array_equal(sampled, expected):
        raise InputError(f"{dset.name} does not store its positions as a full grid with X varying fastest.")
    rows = np.asarray(value_ds[: n_x + 1] if n_x > 1 and n_y > 1 else value_ds[:1], float)[:, order]
    corner = rows[[0, 1, n_x]] if n_x > 1 and n_y > 1 else rows
    pixel = (float(corner[1, 0] - corner[0, 0]) if n_x > 1 and n_y > 1 else 1.0,
             float(corner[2, 1] - corner[0, 1]) if n_x > 1 and n_y > 1 else 1.0)
    vx, vy = corner[0, 0], corner[0, 1]
    spectral = {"labels": [_decode(v) for v in np.atleast_1d(spec.attrs.get("labels", []))],
                "units": [_decode(v) for v in np.atleast_1d(spec.attrs.get("units", []))],
                "values": np.asarray(spec[()], float)}
    return {"n_x": n_x, "n_y": n_y, "pixel_size_xy": pixel, "origin": (float(vx), float(vy)),
            "units": units[order[0]] if len(units) > order[0] else None, "spectral": spectral}


def _dataset(f: Any, path: Path, dataset: str) -> Any:
    import h5py

    if dataset not in f:
        raise InputError(f"No dataset {dataset} in {path}; list them with h5ls or `autoreg inspect`.")
    dset = f[dataset]
    if not isinstance(dset, h5py.Dataset):
        raise InputError(f"{dataset} in {path} is a group, not a dataset; give the path of a dataset inside it.")
    return dset


def _read_hdf5(path: Path, dataset: str, name: str, max_pixels: int | None, *, cube: bool) -> tuple[np.ndarray, dict]:
    with _open_hdf5(path) as f:
        dset = _dataset(f, path, dataset)
        try:
            layout = _usid_layout(dset)
        except (KeyError, ValueError, OSError) as err:
            raise InputError(f"{dataset} in {path} has unreadable USID ancillary datasets: {err}.") from err
        if layout is None:
            if cube:
                raise InputError(f"{dataset} in {path} is not a USID main dataset with a spectroscopic dimension.")
            _check_budget(dset.shape, name, max_pixels)
            return _read(dset), {"value_units": _decode(dset.attrs["units"]) if "units" in dset.attrs else None}
        _check_budget((layout["n_y"], layout["n_x"]), name, max_pixels)
        n_spec = int(dset.shape[1])
        if n_spec > 1 and not cube:
            raise InputError(f"{dataset} in {path} is a spectroscopic cube ({layout['n_x']} x {layout['n_y']} "
                             f"positions x {n_spec} steps); register a 2-D channel and pass the cube along.")
        data = _read(dset).reshape(layout["n_y"], layout["n_x"], n_spec)
        meta = {"pixel_size_xy": layout["pixel_size_xy"], "origin": layout["origin"], "units": layout["units"],
                "value_units": _decode(dset.attrs["units"]) if "units" in dset.attrs else None,
                "spectral": layout["spectral"]}
        return (data if cube else data[:, :, 0]), meta


def _read(dset: Any) -> np.ndarray:
    try:
        return np.asarray(dset[()])
    except OSError as err:
        raise InputError(f"Cannot read {dset.name} (corrupt or truncated file?): {err}.") from err


def _read_tiff(path: Path, name: str, max_pixels: int | None) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            _check_budget(tuple(s for s in series.shape if s > 1)[-2:] or series.shape, name, max_pixels)
            return series.asarray()
    except (tifffile.TiffFileError, ValueError, IndexError, OSError, EOFError) as err:
        raise InputError(f"Cannot read TIFF {path} (corrupt, truncated or not a TIFF): {err}.") from err


def _read_raster(path: Path, name: str) -> np.ndarray:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"Cannot read image {path} (corrupt, truncated or not a {path.suffix[1:].upper()}).")
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    return image


def _read_npy(path: Path, name: str, max_pixels: int | None) -> np.ndarray:
    try:
        mapped = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"Cannot read NPY {path} (corrupt, truncated, or holds Python objects): {err}.") from err
    shape = tuple(s for s in mapped.shape if s > 1)
    if len(shape) >= 2:
        _check_budget(shape[-2:], name, max_pixels)
    return np.array(mapped)


def load_image(source: Any, *, name: str | None = None, max_pixels: int | None = None) -> Image:
    """Read a 2-D image with its physical calibration.

    Parameters
    ----------
    source : str, path, ndarray or Image
        ``FILE.h5::/dataset``, a TIFF/PNG/JPEG/NPY path, an array, or an Image (returned as is).
    name : str, optional
        Name used in messages; defaults to the spec.
    max_pixels : int, optional
        Refuse images with more pixels than this (checked before reading where the format allows).

    Returns
    -------
    Image
        Float data (float32, or float64 for float64 input), NaN where the input is not finite.

    Raises
    ------
    InputError
        Missing, unreadable or unsupported input; not 2-D; too small; no finite pixel; over budget.
    """
    if isinstance(source, Image):
        return source
    hint = "pick one 2-D image (a slice, or a dataset path to a 2-D channel)."
    if isinstance(source, np.ndarray) or (not isinstance(source, (str, os.PathLike)) and hasattr(source, "__array__")):
        label = name or "the array"
        array = np.asarray(source)
        _check_budget(np.squeeze(array).shape, label, max_pixels)
        return _finish_image(array, label, hint)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"Cannot read an image from a {type(source).__name__}; give a path or an array.")
    path, dataset = parse_spec(source)
    label = name or os.fspath(source)
    suffix = path.suffix.lower()
    if dataset is not None or suffix in _HDF5_SUFFIXES:
        if dataset is None:
            raise InputError(f"{path} is an HDF5 file; name a dataset: {path}::/path/to/dataset.")
        data, meta = _read_hdf5(path, dataset, label, max_pixels, cube=False)
        meta.pop("spectral", None)
        return _finish_image(data, label, hint, **meta)
    _require_file(path)
    if suffix in _TIFF_SUFFIXES:
        return _finish_image(_read_tiff(path, label, max_pixels), label, hint)
    if suffix in _RASTER_SUFFIXES:
        image = _read_raster(path, label)
        _check_budget(image.shape, label, max_pixels)
        return _finish_image(image, label, hint)
    if suffix == ".npy":
        return _finish_image(_read_npy(path, label, max_pixels), label, hint)
    raise InputError(f"Unsupported file type {suffix or '(none)'} for {path}; use HDF5 (FILE.h5::/dataset), TIFF, "
                     "PNG, JPEG or NPY.")


def load_cube(spec: str | os.PathLike[str], *, max_pixels: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Read a USID spectroscopic main dataset as an array of shape (n_y, n_x, n_spectral).

    Returns
    -------
    cube : ndarray of float32, shape (rows, cols, bands)
    metadata : dict
        ``pixel_size_xy``, ``origin``, ``units``, ``value_units`` and ``spectral`` (labels, units, values).

    Raises
    ------
    InputError
    """
    path, dataset = parse_spec(spec)
    if dataset is None:
        raise InputError(f"A cube is read from a USID dataset: {path}::/path/to/dataset.")
    data, meta = _read_hdf5(path, dataset, os.fspath(spec), max_pixels, cube=True)
    return _as_float(data, os.fspath(spec)).astype(np.float32), meta


def load_points(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read control points from a CSV with header ``fixed_x,fixed_y,moving_x,moving_y`` (any column order).

    Returns
    -------
    fixed_xy, moving_xy : ndarray of shape (N, 2)

    Raises
    ------
    InputError
        Missing or empty file, wrong header, wrong field count, non-numeric or non-finite values.
    """
    path = Path(path)
    _require_file(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"Cannot read points file {path}: {err}.") from err
    rows = [r for r in csv.reader(text.splitlines()) if any(cell.strip() for cell in r)]
    if not rows:
        raise InputError(f"Points file {path} is empty; it needs the header {','.join(POINTS_HEADER)} and rows.")
    header = [c.strip().lower() for c in rows[0]]
    if sorted(header) != sorted(POINTS_HEADER):
        raise InputError(f"Points file {path} has header {','.join(header)}; it must be {','.join(POINTS_HEADER)}.")
    columns = [header.index(c) for c in POINTS_HEADER]
    values = []
    for line_no, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InputError(f"Points file {path}, line {line_no}: {len(row)} fields, expected {len(header)}.")
        try:
            numbers = [float(row[c]) for c in columns]
        except ValueError as err:
            raise InputError(f"Points file {path}, line {line_no}: not a number ({err}).") from err
        if not np.all(np.isfinite(numbers)):
            raise InputError(f"Points file {path}, line {line_no}: NaN or infinite coordinate.")
        values.append(numbers)
    if not values:
        raise InputError(f"Points file {path} has a header but no points.")
    table = np.array(values, float)
    return table[:, 0:2], table[:, 2:4]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success, remove it on any error.

    The temporary name keeps the suffix, so writers that look at it (tifffile, numpy) behave.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> Path:
    """Write ``array`` as float32 TIFF (``.tif``/``.tiff``) or NPY (``.npy``), atomically."""
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in _TIFF_SUFFIXES | {".npy"}:
        raise InputError(f"Cannot write {target.name}: use a .tif, .tiff or .npy output.")
    with atomic_path(target) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as fh:
                np.save(fh, np.asarray(array, np.float32))
        else:
            import tifffile

            tifffile.imwrite(tmp, np.asarray(array, np.float32))
    return target


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as JSON, atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    return target


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def check_output_path(path: str | os.PathLike[str], *, inputs: list[Path], overwrite: bool,
                      suffixes: set[str] | None = None) -> Path:
    """Refuse an output path that would harm an input or an existing file, before any work is done.

    Raises
    ------
    InputError
        The output is an input, exists without ``overwrite``, has an unsupported suffix, or its directory is
        missing or not a directory.
    """
    target = Path(path)
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise InputError(f"Cannot write {target.name}: use one of {', '.join(sorted(suffixes))}.")
    for source in inputs:
        if _same_file(target, Path(source)):
            raise InputError(f"Output {target} is also an input; choose another output path.")
    parent = target.parent if str(target.parent) else Path(".")
    if not parent.exists():
        raise InputError(f"Output directory {parent} does not exist; create it first.")
    if not parent.is_dir():
        raise InputError(f"Output directory {parent} is not a directory.")
    if target.exists() and not overwrite:
        raise InputError(f"Output {target} already exists; pass --overwrite to replace it.")
    if target.exists() and target.is_dir():
        raise InputError(f"Output {target} is a directory; give a file name.")
    return target
