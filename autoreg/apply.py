"""Re-applying a saved transform: to another image of the moving grid, or to a table of moving points."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError

__all__ = ["apply_saved", "MOVING_POINT_COLUMNS", "MAPPED_POINT_COLUMNS"]

MOVING_POINT_COLUMNS = ("x", "y")
MAPPED_POINT_COLUMNS = ("x", "y", "fixed_x", "fixed_y")


def apply_saved(transform: str, target: str, out: str | Path, *, overwrite: bool = False) -> Path:
    """Apply the transform saved in ``transform`` to ``target`` and write ``out``.

    Parameters
    ----------
    transform : str
        A result JSON, or a results group ``FILE.h5::/.../<Moving>-Registration_NNN``.
    target : str
        An image on the moving grid (any input format), or a CSV of moving points with columns ``x,y``.
    out : str or Path
        The warped image (``.tif``/``.npy``) or the mapped points (``.csv``, columns ``x,y,fixed_x,fixed_y``).
    overwrite : bool
        Replace an existing output.

    Raises
    ------
    InputError
        Unreadable transform or target, a failed result, or an output that is refused.
    """
    from .io import check_output_path, load_coordinate_table, load_image, parse_spec, write_coordinate_table, \
        write_image
    from .results_h5 import load_transform
    from .warp import apply_transform

    out = Path(out)
    points = target.lower().endswith(".csv")
    check_output_path(out, inputs=[parse_spec(transform)[0], parse_spec(target)[0]], overwrite=overwrite,
                      suffixes={".csv"} if points else {".tif", ".tiff", ".npy"})
    fit, shape = load_transform(transform)
    if points:
        moving_xy = load_coordinate_table(target, MOVING_POINT_COLUMNS)
        return write_coordinate_table(out, MAPPED_POINT_COLUMNS, np.column_stack([moving_xy, fit.to_fixed(moving_xy)]))
    if 0 in shape:
        raise InputError(f"{transform} does not record the fixed image's shape; cannot warp onto it.")
    warped, _ = apply_transform(load_image(target).data, fit, shape)
    return write_image(out, warped)
