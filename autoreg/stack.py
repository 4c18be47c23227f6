"""An aligned stack from a finished batch: every scan resampled onto one grid, as StackReg users expect.

``reference`` batches stack the registered scans on the reference's grid; ``first`` and ``predecessor`` batches
start with the first scan itself. A drift series (``predecessor``) chains each scan's transform onto its
predecessor's back to the first scan (matrices multiply; polynomial and piecewise-affine maps are composed point
by point). A scan whose own registration (or a link of its chain) failed or erred becomes a NaN frame, so frame
``k`` is always scan ``k``. Frames are read back from each item's saved result, so a resumed batch stacks too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .datatypes import Fit, Matches
from .errors import InputError

__all__ = ["write_stack", "STACK_SUFFIXES"]

STACK_SUFFIXES = {".tif", ".tiff", ".h5", ".hdf5"}


class _Chain:
    """Point maps applied one after the other (each an (N, 2) → (N, 2) callable; NaN stays NaN)."""

    def __init__(self, maps: Sequence[Callable[[np.ndarray], np.ndarray]]) -> None:
        self.maps = list(maps)

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        out = np.asarray(xy, float)
        for step in self.maps:
            out = step(out)
        return out


def _compose(fits: list[Fit]) -> Fit:
    """The fit of ``fits[0] ∘ fits[1] ∘ …``: fits[k] maps scan k+1 onto scan k; the result maps the last onto 0."""
    from skimage.transform import ProjectiveTransform

    from .models import is_global

    if len(fits) == 1:
        return fits[0]
    empty = Matches(np.zeros((0, 2)), np.zeros((0, 2)))
    if all(is_global(f.model) for f in fits):
        matrix = np.eye(3)
        for fit in fits:
            matrix = matrix @ np.asarray(fit.moving_to_fixed.params, float)
        return Fit(model="projective", moving_to_fixed=ProjectiveTransform(matrix=matrix),
                   fixed_to_moving=ProjectiveTransform(matrix=np.linalg.inv(matrix)), inliers=np.zeros(0, bool),
                   source="chain", matches=empty)
    forward = _Chain([f.to_fixed for f in reversed(fits)])
    backward = _Chain([f.to_moving for f in fits])
    return Fit(model="polynomial", moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.zeros(0, bool),
               source="chain", matches=empty)


def _saved(item: Any) -> Any:
    from .saved import saved_from_dict

    try:
        payload = json.loads(Path(item.output).read_text(encoding="utf-8"))
        return saved_from_dict(payload, item.output)
    except (OSError, ValueError, InputError):
        return None  # an error row, or a result that cannot be used: a NaN frame


def _frames(items: list[Any], against: str) -> tuple[list[str], list[Fit | None], str]:
    """The scans in stack order, the fit that maps each onto the stack's grid (None: identity or unusable),
    and the spec of the grid image."""
    saved = [_saved(item) for item in items]
    fits = [s.fit if s is not None and s.verdict != "failed" else None for s in saved]
    if against == "reference":
        return [item.moving for item in items], fits, items[0].fixed
    scans = [items[0].fixed] + [item.moving for item in items]
    if against == "first":
        return scans, [None] + fits, items[0].fixed
    chained: list[Fit | None] = [None]
    for k in range(len(fits)):
        links = fits[: k + 1]
        chained.append(None if any(f is None for f in links) else _compose(links))  # type: ignore[arg-type]
    return scans, chained, items[0].fixed


def write_stack(items: list[Any], against: str, path: str | Path,
                log: Callable[[str], None] = lambda _msg: None) -> Path:
    """Write the aligned stack of a finished batch to ``path`` (``.tif`` ImageJ stack or ``.h5`` USID).

    Parameters
    ----------
    items : list of BatchItem
        The batch's items, whose result JSONs exist.
    against : {"reference", "first", "predecessor"}
        How the batch paired the scans.
    path : str or Path
        ``.tif``/``.tiff`` (frames × rows × cols, float32, with the grid's pixel size) or ``.h5``/``.hdf5``
        (a USID main dataset ``/Measurement_000/Channel_000/Aligned_Stack`` with a ``Frame`` dimension).
    log : callable
        Told about frames that could not be aligned.

    Raises
    ------
    InputError
        Another suffix, or no item.
    """
    from .io import load_image, write_image
    from .warp import apply_transform

    target = Path(path)
    if target.suffix.lower() not in STACK_SUFFIXES:
        raise InputError(f"Cannot write the stack {target.name}: use .tif or .h5.")
    if not items:
        raise InputError("No scans to stack.")
    scans, fits, grid_spec = _frames(items, against)
    grid = load_image(grid_spec)
    frames = np.full((len(scans),) + grid.shape, np.nan, np.float32)
    first_is_grid = against != "reference"
    for k, (scan, fit) in enumerate(zip(scans, fits)):
        if k == 0 and first_is_grid:
            frames[0] = grid.data
        elif fit is None:
            log(f"stack frame {k} ({scan}) left empty (NaN): its registration failed or erred, or one before it in "
                "the chain did")
        else:
            try:
                frames[k], _ = apply_transform(load_image(scan).data, fit, grid.shape)
            except InputError as err:
                log(f"stack frame {k} ({scan}) left empty (NaN): {err}")
    if target.suffix.lower() in {".tif", ".tiff"}:
        return write_image(target, frames, pixel_size_xy=grid.pixel_size_xy, units=grid.units)
    return _write_h5(target, frames, grid, scans)


def _write_h5(target: Path, frames: np.ndarray, grid: Any, scans: list[str]) -> Path:
    import h5py

    from ._atomic import atomic_path
    from .usid import write_main

    with atomic_path(target) as tmp:
        with h5py.File(tmp, "w") as f:
            main = write_main(f.create_group("Measurement_000/Channel_000"), "Aligned_Stack",
                              np.moveaxis(frames, 0, -1), quantity="Aligned stack",
                              units=grid.value_units or "a. u.",
                              pixel_size=grid.pixel_size_xy[0] if grid.pixel_size_xy else 1.0,
                              origin=grid.origin or (0.0, 0.0), position_units=grid.units or "px",
                              spectral=("Frame", "index", np.arange(len(frames), dtype=float)))
            main.attrs["frames_json"] = json.dumps(scans)
    return target
