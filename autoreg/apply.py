"""Re-applying a saved transform: to images of the moving grid, to a spectral cube, or to tables of points.

Everything is checked before anything is written: the verdict (``failed`` never applies, ``low_confidence`` only
when allowed), each target's shape and physical extent against the image the transform was estimated on (unless
forced), and every output path. With ``inverse`` the direction flips: fixed points map to moving points (which
spectrum lies under this topography feature?) and fixed-grid images are resampled onto the moving grid.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError
from .saved import SavedTransform, load_saved

__all__ = ["apply_saved", "ApplyJob", "plan_outputs", "MOVING_POINT_COLUMNS", "MAPPED_POINT_COLUMNS",
           "INVERSE_POINT_COLUMNS", "EXTENT_TOLERANCE"]

MOVING_POINT_COLUMNS = ("x", "y")
MAPPED_POINT_COLUMNS = ("x", "y", "fixed_x", "fixed_y")
INVERSE_POINT_COLUMNS = ("x", "y", "moving_x", "moving_y")
#: A target whose physical extent differs from the registered image's by more than this fraction is refused:
#: the same grid scanned over another area is not the image the transform was estimated on. 1 % is above the
#: rounding of stored pixel sizes (float32 positions) and well below any real change of scan size.
EXTENT_TOLERANCE = 0.01
IMAGE_SUFFIXES = {".tif", ".tiff", ".npy", ".png"}
CUBE_SUFFIXES = {".npy", ".h5", ".hdf5"}


@dataclass(frozen=True, slots=True)
class ApplyJob:
    """One target and where its result goes: ``kind`` is ``image``, ``points`` or ``cube``."""

    kind: str
    target: str
    out: Path


def _safe_stem(spec: str) -> str:
    path, _, dataset = spec.partition("::")
    stem = Path(path).stem + (dataset.replace("/", "_") if dataset else "")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("_") or "target"


def plan_outputs(targets: list[str], cubes: list[str], *, out: str | Path | None,
                 out_dir: str | Path | None) -> list[ApplyJob]:
    """Pair every target with its output: ``out`` for a single target, else ``out_dir/<name>.<ext>``.

    Images go to ``.tif``, point tables to ``.csv`` and cubes to ``.npy`` in ``out_dir``.

    Raises
    ------
    InputError
        No target; both or neither of ``out`` and ``out_dir``; ``out`` with several targets.
    """
    kinds = [("points" if t.lower().endswith(".csv") else "image", t) for t in targets] + [("cube", c) for c in cubes]
    if not kinds:
        raise InputError("Give at least one target: an image, a CSV of points, or --cube FILE.h5::/cube.")
    if (out is None) == (out_dir is None):
        raise InputError("Give either --out FILE (one target) or --out-dir DIR (any number of targets).")
    if out is not None:
        if len(kinds) > 1:
            raise InputError(f"--out names one output but {len(kinds)} targets were given; use --out-dir DIR.")
        return [ApplyJob(kinds[0][0], kinds[0][1], Path(out))]
    folder = Path(out_dir)  # type: ignore[arg-type]
    suffix = {"image": ".tif", "points": ".csv", "cube": ".npy"}
    jobs = [ApplyJob(kind, target, folder / f"{_safe_stem(target)}{suffix[kind]}") for kind, target in kinds]
    names = [j.out.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise InputError(f"Two targets would both be written to {duplicates[0]}; apply them in separate calls.")
    return jobs


def _check_verdict(saved: SavedTransform, allow_low_confidence: bool) -> None:
    reasons = "; ".join(dict.fromkeys(saved.reasons)) or "no reasons recorded"
    if saved.verdict == "failed" or saved.fit is None:
        raise InputError(f"{saved.where} holds a failed registration ({reasons}); there is no transform to apply.")
    if saved.verdict == "low_confidence" and not allow_low_confidence:
        raise InputError(f"{saved.where} was judged low_confidence ({reasons}); pass --allow-low-confidence to "
                         "apply it anyway.")


def _extent_problem(shape: tuple[int, int], size_xy: Any, units: Any, expected_shape: tuple[int, int] | None,
                    expected_size: Any, expected_units: Any) -> str | None:
    from .units import unit_factor

    if expected_shape is not None and tuple(shape) != tuple(expected_shape):
        return (f"is {shape[1]}×{shape[0]} px but the transform was estimated on a {expected_shape[1]}×"
                f"{expected_shape[0]} px image")
    if size_xy is None or expected_size is None:
        return None
    factor_a, factor_b = unit_factor(units), unit_factor(expected_units)
    if units != expected_units and (factor_a is None or factor_b is None):
        return None  # units that cannot be compared: the pixel grid check above is all we can do
    scale = 1.0 if units == expected_units else factor_a / factor_b  # type: ignore[operator]
    extent = np.abs(np.asarray(size_xy, float)) * np.array([shape[1], shape[0]]) * scale
    wanted = np.abs(np.asarray(expected_size, float)) * np.array([shape[1], shape[0]])
    if np.any(np.abs(extent - wanted) > EXTENT_TOLERANCE * wanted):
        return (f"covers {extent[0]:.4g}×{extent[1]:.4g} {expected_units} but the transform was estimated on "
                f"{wanted[0]:.4g}×{wanted[1]:.4g} {expected_units}")
    return None


def _grids(saved: SavedTransform, inverse: bool) -> tuple[Any, ...]:
    """(source shape, source pixel size, source units, output shape, output pixel size, output units)."""
    if inverse:
        return (saved.fixed_shape, saved.pixel_size_fixed_xy, saved.units_fixed, saved.moving_shape,
                saved.pixel_size_moving_xy, saved.units_moving)
    return (saved.moving_shape, saved.pixel_size_moving_xy, saved.units_moving, saved.fixed_shape,
            saved.pixel_size_fixed_xy, saved.units_fixed)


def _load_target(job: ApplyJob, saved: SavedTransform, inverse: bool, force: bool) -> Any:
    from .io import load_coordinate_table, load_cube, load_image

    grid = "fixed" if inverse else "moving"
    if job.kind == "points":
        return load_coordinate_table(job.target, MOVING_POINT_COLUMNS)
    if job.kind == "cube":
        data, meta = load_cube(job.target)
        shape, size, units = data.shape[:2], meta.get("pixel_size_xy"), meta.get("units")
    else:
        image = load_image(job.target)
        data, meta, shape, size, units = image.data, {}, image.shape, image.pixel_size_xy, image.units
    expected_shape, expected_size, expected_units, out_shape = _grids(saved, inverse)[:4]
    if out_shape is None:
        raise InputError(f"{saved.where} does not record the {'moving' if inverse else 'fixed'} image's shape; "
                         "cannot resample onto it.")
    problem = _extent_problem(shape, size, units, expected_shape, expected_size, expected_units)
    if problem and not force:
        raise InputError(f"{job.target} {problem}; it is not on the {grid} grid of {saved.where} (pass --force to "
                         "apply it anyway).")
    return data, meta


def _write(job: ApplyJob, saved: SavedTransform, loaded: Any, inverse: bool, cube_step: float) -> Path:
    from .io import write_coordinate_table, write_image
    from .warp import apply_transform, apply_transform_cube

    fit = saved.inverse() if inverse else saved.fit
    assert fit is not None
    if job.kind == "points":
        mapped = fit.to_fixed(loaded)  # with inverse, the swapped fit maps fixed -> moving
        columns = INVERSE_POINT_COLUMNS if inverse else MAPPED_POINT_COLUMNS
        return write_coordinate_table(job.out, columns, np.column_stack([loaded, mapped]))
    _, _, _, out_shape, out_size, out_units = _grids(saved, inverse)
    data, meta = loaded
    if job.kind == "image":
        warped, _ = apply_transform(data, fit, out_shape)
        return write_image(job.out, warped, pixel_size_xy=out_size, units=out_units)
    warped, _ = apply_transform_cube(data, fit, out_shape, step=cube_step)
    if job.out.suffix.lower() == ".npy":
        return write_image(job.out, warped)
    return _write_cube_h5(job.out, warped, meta, out_size, out_units, cube_step)


def _write_cube_h5(path: Path, cube: np.ndarray, meta: dict[str, Any], size: Any, units: Any, step: float) -> Path:
    """The warped cube as a USID main dataset ``/Measurement_000/Channel_000/Registered_Cube`` of a new file."""
    import h5py

    from ._atomic import atomic_path
    from .usid import write_main

    spectral = meta.get("spectral") or {}
    label = (spectral.get("labels") or ["Spectral"])[0]
    spec_units = (spectral.get("units") or ["a. u."])[0]
    values = np.asarray(spectral.get("values", np.arange(cube.shape[2])), float).ravel()
    if values.size != cube.shape[2]:
        values = np.arange(cube.shape[2], dtype=float)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            write_main(f.create_group("Measurement_000/Channel_000"), "Registered_Cube", cube,
                       quantity="Registered cube", units=meta.get("value_units") or "a. u.",
                       pixel_size=(size[0] if size else 1.0) * step, position_units=units or "px",
                       spectral=(label, spec_units, values))
    return path


def apply_saved(transform: str | os.PathLike[str], targets: Sequence[str] | str = (), *,
                out: str | Path | None = None, out_dir: str | Path | None = None, cubes: Sequence[str] = (),
                overwrite: bool = False, force: bool = False, allow_low_confidence: bool = False,
                inverse: bool = False, cube_step: float = 1.0) -> list[Path]:
    """Apply the transform saved in ``transform`` to every target; write one output per target.

    Parameters
    ----------
    transform : str or path
        A result JSON (``register --json``, ``to_dict()``, a batch item) or a results group
        ``FILE.h5::/.../<Moving>-Registration_NNN``.
    targets : str or sequence of str
        Images on the moving grid (any input format; with ``inverse``, on the fixed grid), or CSVs of points with
        columns ``x,y`` (moving points; with ``inverse``, fixed points).
    out : str or Path, optional
        The one output when there is one target: ``.tif``/``.npy``/``.png`` for an image (a PNG is an 8-bit
        preview), ``.csv`` for points (``x,y,fixed_x,fixed_y``; with ``inverse`` ``x,y,moving_x,moving_y``),
        ``.npy``/``.h5`` for a cube.
    out_dir : str or Path, optional
        A directory for any number of targets: ``<name>.tif``, ``<name>.csv``, ``<name>.npy``.
    cubes : sequence of str
        Spectral cubes ``FILE.h5::/cube`` (USID) on the moving grid, resampled every ``cube_step`` fixed pixels.
    overwrite : bool
        Replace existing outputs.
    force : bool
        Apply to targets whose shape or physical extent differs from the registered image's.
    allow_low_confidence : bool
        Apply a ``low_confidence`` transform (a ``failed`` one never applies).
    inverse : bool
        Map from the fixed grid to the moving one.
    cube_step : float
        Output grid spacing of cubes, in fixed pixels.

    Returns
    -------
    list of Path
        The outputs, in the order of the targets (cubes last).

    Raises
    ------
    InputError
        Anything that would make an output wrong, before any output is written.
    """
    from .io import check_output_path, parse_spec

    if isinstance(targets, str):
        targets = [targets]
    jobs = plan_outputs(list(targets), list(cubes), out=out, out_dir=out_dir)
    if out_dir is not None and not Path(out_dir).is_dir():
        raise InputError(f"Output directory {out_dir} does not exist; create it first.")
    if inverse and any(job.kind == "cube" for job in jobs):
        raise InputError("--inverse maps fixed-grid data onto the moving grid; a cube lives on the moving grid.")
    inputs = [parse_spec(transform)[0]] + [parse_spec(job.target)[0] for job in jobs]
    allowed = {"points": {".csv"}, "image": IMAGE_SUFFIXES, "cube": CUBE_SUFFIXES}
    for job in jobs:
        check_output_path(job.out, inputs=inputs, overwrite=overwrite, suffixes=allowed[job.kind])
    if len({j.out.resolve() for j in jobs}) < len(jobs):
        raise InputError("Two targets would be written to the same output; give each its own.")
    saved = load_saved(transform)
    _check_verdict(saved, allow_low_confidence)
    loaded = [_load_target(job, saved, inverse, force) for job in jobs]  # every check before any write
    return [_write(job, saved, data, inverse, cube_step) for job, data in zip(jobs, loaded)]
