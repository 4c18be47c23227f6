"""A saved registration read back as a usable transform: from a result JSON or a USID results group.

A result JSON (``autoreg register --json``, ``result.to_dict()``, a batch item, the demo's ``auto.json``) holds
the complete transform of every model under ``transform`` (see :mod:`autoreg.transform_codec`), with the shapes
and pixel sizes of both images, the verdict and its reasons. Older JSONs without ``transform`` still work for
global models (from ``matrix``), and a results group's stored inlier pairs rebuild the other models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .datatypes import Fit, Matches
from .errors import InputError

__all__ = ["SavedTransform", "load_saved", "saved_from_dict"]


def _shape(value: Any) -> tuple[int, int] | None:
    try:
        rows, cols = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (rows, cols) if rows > 0 and cols > 0 else None


def _pair(value: Any) -> tuple[float, float] | None:
    try:
        x, y = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (x, y) if np.isfinite([x, y]).all() else None


@dataclass(frozen=True, slots=True, eq=False)
class SavedTransform:
    """A transform read from a saved result, with what it was estimated on.

    Attributes
    ----------
    fit : Fit or None
        The transform (moving → fixed and back); None for a failed registration.
    verdict : str
        ``ok``, ``low_confidence`` or ``failed``.
    reasons : tuple of str
    fixed_shape, moving_shape : tuple of int or None
        ``(rows, cols)`` of the images it was estimated on; None when the record does not say.
    pixel_size_fixed_xy, pixel_size_moving_xy : tuple of float or None
    units_fixed, units_moving : str or None
    tolerance_px : float or None
        How far (fixed px) a mapped point may be off, when the record gives it.
    where : str
        Where it was read from, for messages.
    """

    fit: Fit | None
    verdict: str
    reasons: tuple[str, ...]
    fixed_shape: tuple[int, int] | None
    moving_shape: tuple[int, int] | None
    pixel_size_fixed_xy: tuple[float, float] | None
    pixel_size_moving_xy: tuple[float, float] | None
    units_fixed: str | None
    units_moving: str | None
    tolerance_px: float | None
    where: str

    def inverse(self) -> Fit:
        """The fit with its directions swapped (fixed → moving as the forward map)."""
        assert self.fit is not None
        fit = self.fit
        return Fit(model=fit.model, moving_to_fixed=fit.fixed_to_moving, fixed_to_moving=fit.moving_to_fixed,
                   inliers=fit.inliers, source=fit.source,
                   matches=Matches(fixed_xy=fit.matches.moving_xy, moving_xy=fit.matches.fixed_xy))


def _fit_from(stored: dict[str, Any], where: str) -> Fit | None:
    from skimage.transform import ProjectiveTransform

    from .estimate import fit_pair
    from .models import check_model, is_global
    from .transform_codec import decode_transform

    model = stored.get("model")
    if stored.get("verdict") == "failed" or model is None:
        return None
    record = stored.get("transform")
    empty = Matches(np.zeros((0, 2)), np.zeros((0, 2)))
    if isinstance(record, dict):
        model, forward, backward = decode_transform(record, where)
        pairs = empty
    else:
        try:
            check_model(str(model))
        except ValueError as err:
            raise InputError(f"{where} names an unknown model {model!r}.") from err
        if is_global(model) and stored.get("matrix") is not None:
            matrix = np.asarray(stored["matrix"], float)
            if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
                raise InputError(f"{where} has a malformed matrix; it must be 3×3 and finite.")
            forward, backward = ProjectiveTransform(matrix=matrix), ProjectiveTransform(matrix=np.linalg.inv(matrix))
            pairs = empty
        elif "inliers_moving_xy" in stored:
            pairs = Matches(fixed_xy=stored["inliers_fixed_xy"], moving_xy=stored["inliers_moving_xy"])
            forward, backward = fit_pair(model, pairs.moving_xy, pairs.fixed_xy)
        else:
            raise InputError(f"{where} holds a {model} transform without its coefficients or point pairs (written "
                             "by an older autoreg); register again to save it completely.")
    return Fit(model=str(model), moving_to_fixed=forward, fixed_to_moving=backward,
               inliers=np.ones(len(pairs), bool), source=str(stored.get("source") or "points"), matches=pairs)


def saved_from_dict(stored: dict[str, Any], where: str = "the result") -> SavedTransform:
    """A :class:`SavedTransform` from a result dict (the JSON of ``register --json`` or ``to_dict()``).

    Raises
    ------
    InputError
        Not a result (no verdict), an unknown model or a malformed transform.
    """
    if not isinstance(stored, dict) or stored.get("verdict") not in ("ok", "low_confidence", "failed"):
        raise InputError(f"{where} is not an autoreg result (no verdict ok, low_confidence or failed).")
    tolerance = stored.get("tolerance_px")
    return SavedTransform(
        fit=_fit_from(stored, where), verdict=str(stored["verdict"]),
        reasons=tuple(str(r) for r in stored.get("reasons") or ()),
        fixed_shape=_shape(stored.get("fixed_shape")), moving_shape=_shape(stored.get("moving_shape")),
        pixel_size_fixed_xy=_pair(stored.get("pixel_size_fixed_xy")),
        pixel_size_moving_xy=_pair(stored.get("pixel_size_moving_xy")),
        units_fixed=stored.get("units_fixed"), units_moving=stored.get("units_moving"),
        tolerance_px=float(tolerance) if isinstance(tolerance, (int, float)) else None, where=where)


def load_saved(spec: str | Path) -> SavedTransform:
    """Read a saved transform: a result JSON file, or a results group ``FILE.h5::/.../<Moving>-Registration_NNN``.

    Raises
    ------
    InputError
        Unreadable file, not a result, or a malformed transform.
    """
    text = str(spec)
    if "::" in text:
        from .results_h5 import read_registration

        return saved_from_dict(read_registration(text), text)
    path = Path(text)
    if not path.is_file():
        raise InputError(f"Saved transform not found: {path}.")
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"Cannot read a saved transform from {path}: {err}.") from err
    return saved_from_dict(stored, text)
