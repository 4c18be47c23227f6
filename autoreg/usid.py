"""HDF5 and the USID layout: open files and datasets read-only, read a main dataset's position grid and
calibration, and write a main dataset with its ancillaries (used by the results writer and the fixture generator).

USID axis order
---------------
A USID main dataset is stored flat, ``(n_positions, n_spectral)``; row ``i`` of ``Position_Indices`` holds the
index of position ``i`` along each position dimension, one column per dimension, named by its ``labels``
attribute. pyUSID 0.0.12 (``hdf_utils.reshape_to_n_dims``) finds the fastest-varying dimension by counting the
changes down each column (``get_sort_order``), reshapes slowest-first, and, because ``USIDataset`` defaults
to ``sort_dims=False``, then transposes the position axes back to the *column order of the file*,
spectroscopic axes after them. pycroscopy writes the columns ``[X, Y]`` with X varying fastest (the fast-scan
axis), so ``get_n_dim_form()`` is ``(n_x, n_y, n_spectral)``. autoreg returns rows = Y, columns = X, i.e.
``np.moveaxis(n_dim, [labels.index("Y"), labels.index("X")], [0, 1])``. Columns are recognised as X and Y by
their labels (``"X"``/``"Y"``, any case); without such labels the fastest-varying dimension is X. Both
X-fastest and Y-fastest grids are read; the grid is verified on a spread of rows rather than read whole, so
opening a million-pixel scan costs about as much as reading its pixels.

Everything is written with plain h5py: pyUSID 0.0.12's ``write_main_dataset`` calls ``np.product``, which
numpy 2 removed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError

__all__ = ["ANCILLARIES", "PositionGrid", "attr_list", "open_hdf5", "get_dataset", "read_dataset", "value_units",
           "ancillaries", "position_grid", "calibration", "spectral_meta", "write_positions", "write_main"]

ANCILLARIES = ("Position_Indices", "Position_Values", "Spectroscopic_Indices", "Spectroscopic_Values")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_COMPRESSION: dict[str, Any] = {"compression": "gzip", "compression_opts": 6, "shuffle": True}


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return _decode(value.ravel()[0]) if value.size else ""
    return str(value)


def attr_list(obj: Any, key: str) -> list[str]:
    """A string or array-of-strings attribute as a list of str (bytes decoded); [] when absent."""
    if key not in obj.attrs:
        return []
    return [_decode(v) for v in np.atleast_1d(obj.attrs[key])]


def open_hdf5(path: Path) -> Any:
    """Open an HDF5 file read-only (use as a context manager); InputError if it is missing or not HDF5."""
    import h5py

    try:
        with open(path, "rb") as fh:
            signature = fh.read(8)
    except FileNotFoundError as err:
        raise InputError(f"File not found: {path}.") from err
    except IsADirectoryError as err:
        raise InputError(f"{path} is not a file; give the path of an image file.") from err
    except OSError as err:
        raise InputError(f"Cannot open {path}: {err.strerror or err}.") from err
    if signature != _HDF5_SIGNATURE:
        raise InputError(f"{path} is not an HDF5 file; give an .h5 file (written by h5py, pycroscopy...).")
    try:
        return h5py.File(path, "r", locking="best-effort")
    except OSError as err:
        if "lock file" in str(err).lower():  # HDF5: "unable to lock file, errno = 11 ..."
            raise InputError(f"Cannot read HDF5 file {path}: another program holds a lock on it; close that "
                             "program, or set HDF5_USE_FILE_LOCKING=FALSE.") from err
        raise InputError(f"Cannot read HDF5 file {path} (corrupt or truncated?): {err}.") from err


def get_dataset(f: Any, path: Path, dataset: str) -> Any:
    import h5py

    try:
        obj = f.get(dataset)
    except (KeyError, ValueError, OSError) as err:  # broken soft or external links
        raise InputError(f"Cannot open {dataset} in {path} (broken link?): {err}.") from err
    if obj is None:
        raise InputError(f"No dataset {dataset} in {path}; list its datasets with `autoreg inspect {path}` "
                         "or h5ls.")
    if not isinstance(obj, h5py.Dataset):
        raise InputError(f"{dataset} in {path} is a group, not a dataset; give the path of a dataset inside "
                         "it.")
    return obj


def read_dataset(dset: Any) -> np.ndarray:
    if dset.shape is None:
        raise InputError(f"{dset.name} in {dset.file.filename} holds no data (an empty dataset).")
    try:
        return np.asarray(dset[()])
    except (OSError, ValueError, TypeError) as err:
        raise InputError(f"Cannot read {dset.name} (corrupt or truncated file, or a compression filter that "
                         f"is not installed): {err}.") from err


@dataclass(frozen=True)
class PositionGrid:
    """A full grid of USID positions: sizes, the Position_Indices columns of X and Y, which is fastest."""

    n_x: int
    n_y: int
    x_col: int
    y_col: int
    x_fastest: bool

    def flat_index(self, x: int, y: int) -> int:
        """Row of the main dataset that holds pixel (x, y)."""
        return y * self.n_x + x if self.x_fastest else x * self.n_y + y

    def to_image(self, flat: np.ndarray) -> np.ndarray:
        """``(n_positions, n_spectral)`` → ``(n_y, n_x, n_spectral)``: rows = Y, columns = X."""
        if self.x_fastest:
            return flat.reshape(self.n_y, self.n_x, -1)
        return flat.reshape(self.n_x, self.n_y, -1).transpose(1, 0, 2)


def ancillaries(dset: Any) -> dict[str, Any] | None:
    """The four ancillary datasets of a USID main dataset; None for a plain dataset (no Position_Indices)."""
    import h5py

    if not isinstance(dset.attrs.get("Position_Indices"), h5py.Reference):
        return None
    found = {}
    for key in ANCILLARIES:
        ref = dset.attrs.get(key)
        target = dset.file[ref] if isinstance(ref, h5py.Reference) and ref else None
        if not isinstance(target, h5py.Dataset):
            raise InputError(f"{dset.name} is a USID main dataset without a usable {key}; repair the file or "
                             "give a plain 2-D dataset.")
        found[key] = target
    index_shape = found["Position_Indices"].shape
    if dset.ndim != 2 or index_shape != (dset.shape[0], index_shape[-1]):
        raise InputError(f"{dset.name} has shape {dset.shape} but Position_Indices {index_shape}; a USID "
                         "main dataset is (positions, spectral steps) with one index row per position.")
    return found


def position_grid(dset: Any, index_ds: Any) -> PositionGrid:
    """The position grid, verified on a spread of ``Position_Indices`` rows (see the module notes)."""
    n, n_dims = index_ds.shape
    if n_dims != 2:
        raise InputError(f"{dset.name} has {n_dims} position dimension(s); autoreg reads a 2-D grid of "
                         "positions (X, Y).")
    if n == 0:
        raise InputError(f"{dset.name} holds no positions (an empty USID dataset).")
    first, last = np.asarray(index_ds[: min(n, 2)], np.int64), np.asarray(index_ds[n - 1], np.int64)
    fast = int(np.argmax(first[-1] != first[0]))  # the column that changes between positions 0 and 1
    sizes = last + 1
    # Verify the grid on the first two fast lines, ~256 evenly spread rows and the last row: two contiguous
    # reads and one strided read, cheap even for gzip-chunked millions of positions.
    head, stride = min(n, 2 * int(sizes[fast]) + 2), max(1, n // 256)
    rows = np.concatenate([np.arange(head), np.arange(0, n, stride), [n - 1]])
    sampled = np.concatenate([np.asarray(index_ds[:head]), np.asarray(index_ds[::stride]),
                              np.asarray(index_ds[n - 1 : n])]).astype(np.int64)
    expected = np.empty_like(sampled)
    expected[:, fast], expected[:, 1 - fast] = rows % sizes[fast], rows // sizes[fast]
    if int(np.prod(sizes)) != n or not np.array_equal(sampled, expected):
        raise InputError(f"{dset.name} does not store its positions as a full 2-D grid, one position per row "
                         "in scan order; autoreg reads only such grids.")
    labels = [label.strip().lower() for label in attr_list(index_ds, "labels")]
    x_col = labels.index("x") if sorted(labels) == ["x", "y"] else fast
    return PositionGrid(n_x=int(sizes[x_col]), n_y=int(sizes[1 - x_col]), x_col=x_col, y_col=1 - x_col,
                 x_fastest=x_col == fast)


def calibration(grid: PositionGrid, values_ds: Any, index_ds: Any) -> dict[str, Any]:
    """Pixel size (mean spacing along X, Y), origin (position of pixel (0, 0)), units; None if degenerate."""
    none = {"pixel_size_xy": None, "origin": None, "units": None}
    if values_ds.shape != index_ds.shape:
        return none
    corner = np.asarray(values_ds[grid.flat_index(0, 0)], np.float64)
    end_x = np.asarray(values_ds[grid.flat_index(grid.n_x - 1, 0)], np.float64)
    end_y = np.asarray(values_ds[grid.flat_index(0, grid.n_y - 1)], np.float64)
    size = ((end_x[grid.x_col] - corner[grid.x_col]) / max(grid.n_x - 1, 1),
            (end_y[grid.y_col] - corner[grid.y_col]) / max(grid.n_y - 1, 1))
    origin = (corner[grid.x_col], corner[grid.y_col])
    if not np.all(np.isfinite(size + origin)) or 0.0 in size:
        return none
    units = attr_list(values_ds, "units") or attr_list(index_ds, "units")
    unit = (units[grid.x_col] if len(units) > grid.x_col else units[0]) if units else ""
    return {"pixel_size_xy": (float(size[0]), float(size[1])), "origin": (float(origin[0]), float(origin[1])),
            "units": unit.strip() or None}


def spectral_meta(spec_values: Any, spec_indices: Any) -> dict[str, Any]:
    return {"labels": attr_list(spec_values, "labels") or attr_list(spec_indices, "labels"),
            "units": attr_list(spec_values, "units") or attr_list(spec_indices, "units"),
            "values": np.atleast_2d(np.asarray(spec_values[()], np.float64))}


def value_units(dset: Any) -> str | None:
    units = attr_list(dset, "units")
    return (units[0].strip() or None) if units else None


def write_positions(group: Any, shape: tuple[int, int], *, pixel_size: float, origin: tuple[float, float],
                    units: str, compress: bool = True) -> tuple[Any, Any]:
    """Write ``Position_Indices`` and ``Position_Values`` of a ``shape`` = (n_y, n_x) grid into ``group``.

    Columns ``(X, Y)`` with X varying fastest, as pycroscopy writes them; position (x, y) is at
    ``origin + (x, y) * pixel_size``. Returns the two datasets (to share between main datasets).
    """
    n_y, n_x = shape
    cols, rows = np.meshgrid(np.arange(n_x), np.arange(n_y))
    indices = np.column_stack([cols.ravel(), rows.ravel()]).astype(np.uint32)  # X fastest
    values = (np.asarray(origin, float) + indices * pixel_size).astype(np.float32)
    packing = _COMPRESSION if compress else {}
    position = (group.create_dataset("Position_Indices", data=indices, **packing),
                group.create_dataset("Position_Values", data=values, **packing))
    for anc in position:
        anc.attrs["labels"] = np.array([b"X", b"Y"])
        anc.attrs["units"] = np.array([units.encode()] * 2)
    return position


def write_main(group: Any, name: str, data: np.ndarray, *, quantity: str, units: str,
                    position: tuple[Any, Any] | None = None, pixel_size: float = 1.0,
                    origin: tuple[float, float] = (0.0, 0.0), position_units: str = "nm",
                    spectral: tuple[str, str, np.ndarray] | None = None, compress: bool = True) -> Any:
    """Write a USID main dataset (``(positions, spectral)``) with its ancillaries, using plain h5py.

    Parameters
    ----------
    group : h5py.Group
    name : str
    data : ndarray of shape (n_y, n_x) or (n_y, n_x, n_spectral)
        Rows = Y, columns = X.
    quantity, units : str
        What the values are.
    position : tuple of (h5py.Dataset, h5py.Dataset), optional
        Existing ``Position_Indices`` and ``Position_Values`` to share; written next to the dataset otherwise.
    pixel_size, origin, position_units
        Physical position of pixel (row, col) = origin + (col, row) * pixel_size.
    spectral : tuple of (label, units, values), optional
        The spectroscopic dimension; a single-valued ``arb`` dimension otherwise.
    compress : bool
        gzip the main dataset and the position ancillaries (pycroscopy itself writes them uncompressed).

    Returns
    -------
    h5py.Dataset
    """
    import h5py

    data = np.asarray(data)
    n_y, n_x = data.shape[:2]
    n_spec = 1 if data.ndim == 2 else data.shape[2]
    if position is None:
        position = write_positions(group, (n_y, n_x), pixel_size=pixel_size, origin=origin, units=position_units,
                                   compress=compress)
    label, spec_units, spec_values = spectral or ("arb", "a. u.", np.zeros(1))
    spec_idx = group.create_dataset("Spectroscopic_Indices", data=np.arange(n_spec, dtype=np.uint32)[None, :])
    spec_val = group.create_dataset("Spectroscopic_Values", data=np.asarray(spec_values, np.float32)[None, :])
    for anc in (spec_idx, spec_val):
        anc.attrs["labels"] = np.array([label.encode()])
        anc.attrs["units"] = np.array([spec_units.encode()])
    main = group.create_dataset(name, data=data.reshape(n_y * n_x, n_spec).astype(np.float32),
                                **(_COMPRESSION if compress else {}))
    main.attrs["quantity"] = quantity
    main.attrs["units"] = units
    for key, anc in (("Position_Indices", position[0]), ("Position_Values", position[1]),
                     ("Spectroscopic_Indices", spec_idx), ("Spectroscopic_Values", spec_val)):
        main.attrs[key] = anc.ref
    assert isinstance(main, h5py.Dataset)
    return main
