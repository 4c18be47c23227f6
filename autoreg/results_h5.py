"""Registration results written back in USID's conventions, and read again.

A results group ``<Moving>-Registration_NNN`` holds the registered image on the fixed grid (a USID main dataset),
the warped cube (if any), the matrices (pixel and physical), the inlier pairs and control points, scores,
verdict and reasons, parameters, software versions and source references. Its ``complete`` attribute is written
last; readers ignore groups without it. Files are never edited where they lie: the new content is written to a
copy that replaces the original by an atomic rename, so an interrupted run leaves the old file intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import usid
from ._atomic import atomic_path
from .datatypes import Image, RegistrationResult, jsonable
from .errors import InputError
from .io import parse_spec
from .units import physical_matrix

__all__ = ["write_results", "list_registrations", "read_registration", "describe_file", "GROUP_SUFFIX"]

GROUP_SUFFIX = "-Registration_"


def _versions() -> dict[str, str]:
    import cv2
    import h5py
    import scipy
    import skimage

    from ._version import __version__

    return {"autoreg": __version__, "numpy": np.__version__, "opencv": cv2.__version__, "scikit-image":
            skimage.__version__, "scipy": scipy.__version__, "h5py": h5py.__version__}


def _next_group_name(parent: Any, stem: str) -> str:
    index = 0
    while f"{stem}{GROUP_SUFFIX}{index:03d}" in parent:
        index += 1
    return f"{stem}{GROUP_SUFFIX}{index:03d}"


def _dataset_ref(f: Any, spec: str, file_path: Path) -> Any:
    """Object reference to the dataset ``spec`` names when it lives in the file being written (``file_path``)."""
    if "::" not in spec:
        return None
    path, dataset = parse_spec(spec)
    same = dataset is not None and Path(path).resolve() == file_path.resolve() and dataset in f
    return f[dataset].ref if same else None


def _fill_group(group: Any, result: RegistrationResult, fixed: Image, moving: Image,
                warped_cube: np.ndarray | None, cube_meta: dict[str, Any] | None, parameters: dict[str, Any],
                file_path: Path) -> None:
    fixed_ref = _dataset_ref(group.file, fixed.name, file_path)
    position = None
    if fixed_ref is not None:  # the fixed image lives in this file: reuse its position ancillaries
        source = group.file[fixed_ref]
        if "Position_Indices" in source.attrs:
            position = (group.file[source.attrs["Position_Indices"]], group.file[source.attrs["Position_Values"]])
    pixel = fixed.pixel_size_xy[0] if fixed.pixel_size_xy else 1.0
    origin = fixed.origin or (0.0, 0.0)
    units = fixed.units or "px"
    warped = result.warped if result.warped is not None else np.full(fixed.shape, np.nan, np.float32)
    main = usid.write_main(group, "Registered_Image", warped, quantity="Registered moving image",
                           units=moving.value_units or "a. u.", position=position, pixel_size=pixel, origin=origin,
                           position_units=units)
    if warped_cube is not None:
        label, spec_units, values = "Spectral", "a. u.", np.arange(warped_cube.shape[2], dtype=float)
        if cube_meta and cube_meta.get("spectral"):
            spectral = cube_meta["spectral"]
            label = (spectral.get("labels") or [label])[0]
            spec_units = (spectral.get("units") or [spec_units])[0]
            values = np.asarray(spectral.get("values"), float).ravel()
        cube_group = group.create_group("Cube")
        same_grid = warped_cube.shape[:2] == warped.shape
        step = float(parameters.get("cube_step", 1.0))  # the cube's grid spacing in fixed pixels
        usid.write_main(cube_group, "Registered_Cube", warped_cube, quantity="Registered cube",
                        units=(cube_meta or {}).get("value_units") or "a. u.",
                        position=(group.file[main.attrs["Position_Indices"]],
                                  group.file[main.attrs["Position_Values"]]) if same_grid else None,
                        pixel_size=pixel * (1.0 if same_grid else step), origin=origin,
                        position_units=units, spectral=(label, spec_units, values))
    if result.matrix is not None:
        group.create_dataset("matrix_moving_to_fixed", data=result.matrix)
    physical = physical_matrix(result.matrix, fixed.calibration, moving.calibration)
    if physical is not None:
        group.create_dataset("matrix_physical", data=physical[0]).attrs["units"] = physical[1]
    if result.fit is not None:
        fit = result.fit
        group.create_dataset("inliers_fixed_xy", data=fit.matches.fixed_xy[fit.inliers])
        group.create_dataset("inliers_moving_xy", data=fit.matches.moving_xy[fit.inliers])
        if fit.source == "points":
            group.create_dataset("control_points_fixed_xy", data=fit.matches.fixed_xy)
            group.create_dataset("control_points_moving_xy", data=fit.matches.moving_xy)
    summary = result.to_dict()
    group.attrs["verdict"] = result.verdict.level
    group.attrs["reasons"] = json.dumps(list(result.verdict.reasons))
    group.attrs["model"] = result.model
    group.attrs["source"] = result.source or ""
    group.attrs["result_json"] = json.dumps(jsonable(summary))
    group.attrs["parameters_json"] = json.dumps(jsonable(parameters))
    group.attrs["versions_json"] = json.dumps(_versions())
    group.attrs["fixed_source"] = fixed.name
    group.attrs["moving_source"] = moving.name
    for key, spec in (("fixed_ref", fixed.name), ("moving_ref", moving.name)):
        ref = _dataset_ref(group.file, spec, file_path)
        if ref is not None:
            group.attrs[key] = ref
    group.attrs["complete"] = True  # last: a group without it is not a result


def write_results(result: RegistrationResult, *, fixed: Image, moving: Image, path: str | Path | None = None,
                  in_place: bool = False, warped_cube: np.ndarray | None = None,
                  cube_meta: dict[str, Any] | None = None, parameters: dict[str, Any] | None = None) -> str:
    """Write a results group; return ``FILE.h5::/path/of/group``.

    Parameters
    ----------
    result : RegistrationResult
    fixed, moving : Image
        The inputs (their ``name`` is the spec they were read from).
    path : str or Path, optional
        A new results file (refused if it exists).
    in_place : bool
        Append the group next to the moving dataset in its own file (through a copy renamed over it).
    warped_cube, cube_meta
        A cube on the fixed grid and its spectroscopic metadata.
    parameters : dict
        Options of the run, stored for provenance.

    Raises
    ------
    InputError
        Neither or both of ``path`` and ``in_place``; in place on a moving image that is not an HDF5 dataset.
    """
    import h5py

    if (path is None) == (not in_place):
        raise InputError("Give either a new results file or in_place=True.")
    if in_place:
        target, dataset = parse_spec(moving.name)
        if dataset is None:
            raise InputError("--in-place needs a moving image read from FILE.h5::/dataset.")
        parent_path, stem = dataset.rsplit("/", 1)
    else:
        target, parent_path, stem = Path(path), "", Path(moving.name.split("::")[-1]).name or "Moving"
    with atomic_path(target) as tmp:
        if in_place:
            shutil.copy2(target, tmp)
        with h5py.File(tmp, "a" if in_place else "w") as f:
            parent = f[parent_path] if parent_path else f
            name = _next_group_name(parent, stem)
            group = parent.create_group(name)
            _fill_group(group, result, fixed, moving, warped_cube, cube_meta, parameters or {}, Path(target))
            written = group.name
    return f"{target}::{written}"


def list_registrations(path: str | Path) -> list[dict[str, Any]]:
    """Complete registration groups of a file: path, verdict, model, source. Incomplete ones are skipped."""
    found: list[dict[str, Any]] = []
    with usid.open_hdf5(Path(path)) as f:
        def visit(name: str, obj: Any) -> None:
            if GROUP_SUFFIX in name.rsplit("/", 1)[-1] and obj.attrs.get("complete", False):
                found.append({"group": "/" + name, "verdict": str(obj.attrs.get("verdict")),
                              "model": str(obj.attrs.get("model")), "source": str(obj.attrs.get("source"))})

        f.visititems(visit)
    return found


def read_registration(spec: str) -> dict[str, Any]:
    """The stored result (``result_json``) of a complete group ``FILE.h5::/group``, with its inlier pairs."""
    path, group_path = parse_spec(spec)
    if group_path is None:
        raise InputError("Name the results group: FILE.h5::/path/to/<Moving>-Registration_NNN.")
    with usid.open_hdf5(path) as f:
        if group_path not in f or not f[group_path].attrs.get("complete", False):
            raise InputError(f"{group_path} in {path} is not a complete registration group.")
        group = f[group_path]
        stored = json.loads(group.attrs["result_json"])
        for key in ("inliers_fixed_xy", "inliers_moving_xy"):
            if key in group:
                stored[key] = np.asarray(group[key][()])
    return stored


def _describe_pixels(obj: Any) -> str:
    """``; pixel 0.977 × 0.977 nm`` for a USID main dataset whose position values give pixel sizes (a negative one
    is said in words: the files of two programs that differ in it are each other's mirror images); empty when they
    do not."""
    try:
        found = usid.ancillaries(obj)
        if found is None:
            return ""
        grid = usid.position_grid(obj, found["Position_Indices"])
        known = usid.calibration(grid, found["Position_Values"], found["Position_Indices"])
    except InputError as err:
        return f"; register refuses it: {err}"
    if known["pixel_size_xy"] is None:
        return "; no pixel size (position values missing or degenerate)"
    size_x, size_y = known["pixel_size_xy"]
    unit = f" {known['units']}" if known["units"] else ""
    falling = [f"{axis} falls along the {along}" for axis, along, size in (("x", "columns", size_x),
                                                                           ("y", "rows", size_y)) if size < 0]
    return f"; pixel {size_x:.4g} × {size_y:.4g}{unit}" + (f": {' and '.join(falling)}" if falling else "")


def _describe_dataset(f: Any, obj: Any) -> str | None:
    """``[main: ...]`` for a USID main dataset, ``[image: W×H px ...]`` for a plain dataset ``register`` reads."""
    if "Position_Indices" in obj.attrs and "quantity" in obj.attrs:
        positions = f[obj.attrs["Position_Indices"]]
        sizes = [int(positions[:, k].max()) + 1 for k in range(positions.shape[1])]
        grid = "×".join(str(n) for n in sizes)
        return (f"[main: {grid} positions × {obj.shape[1]} steps, {obj.attrs.get('quantity')} "
                f"({obj.attrs.get('units')}){_describe_pixels(obj)}]")
    if obj.shape is None or obj.dtype.kind not in "biuf":
        return None
    squeezed = [int(n) for n in obj.shape if n != 1]
    if len(squeezed) == 2 and min(squeezed) >= 8:
        rows, cols = squeezed
        units = usid.value_units(obj)
        return f"[image: {cols}×{rows} px, {obj.dtype}{f' ({units})' if units else ''}]"
    return None


def describe_file(path: str | Path) -> list[str]:
    """Lines describing an HDF5 file: its groups, USID main datasets (grid, steps, quantity, units, pixel size), the plain
    2-D datasets that ``autoreg register`` reads as images (W×H px), and registration groups with verdicts."""
    import h5py

    lines: list[str] = []
    with usid.open_hdf5(Path(path)) as f:
        def visit(name: str, obj: Any) -> None:
            depth = "  " * name.count("/")
            leaf = name.rsplit("/", 1)[-1]
            if isinstance(obj, h5py.Group):
                if GROUP_SUFFIX in leaf:
                    state = (f"verdict {obj.attrs.get('verdict')}, model {obj.attrs.get('model')}, source "
                             f"{obj.attrs.get('source')}" if obj.attrs.get("complete", False) else "INCOMPLETE")
                    lines.append(f"{depth}{leaf}/  [registration: {state}]")
                else:
                    lines.append(f"{depth}{leaf}/")
            elif leaf not in usid.ANCILLARIES:
                described = _describe_dataset(f, obj)
                if described:
                    lines.append(f"{depth}{leaf}  {described}")

        f.visititems(visit)
    return lines
