"""Physical calibration: pixel sizes, origins and length units, and matrices between physical frames.

A leaf module (numpy only). A pixel (x, y) of a calibrated image sits at ``origin + (x * size_x, y * size_y)`` in
its ``units``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibration", "unit_factor", "pixel_to_physical", "physical_matrix", "pixel_size_ratio"]

_UNIT_TO_METRE = {
    "m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "nm": 1e-9,
    "pm": 1e-12, "a": 1e-10, "å": 1e-10, "angstrom": 1e-10,
}


@dataclass(frozen=True, slots=True)
class Calibration:
    """Where an image's pixels are: pixel size (x, y), origin (position of pixel (0, 0)) and their length unit.

    Any field may be None when the input does not say.
    """

    pixel_size_xy: tuple[float, float] | None = None
    origin: tuple[float, float] | None = None
    units: str | None = None


def unit_factor(units: str | None) -> float | None:
    """Metres per ``units`` (``"nm"`` → 1e-9); None for an unknown or missing unit.

    Examples
    --------
    >>> unit_factor("nm"), unit_factor(" µm "), unit_factor("furlong")
    (1e-09, 1e-06, None)
    """
    if units is None:
        return None
    return _UNIT_TO_METRE.get(units.strip().lower().replace(" ", ""))


def _to_fixed_units(fixed: Calibration, moving: Calibration) -> float | None:
    """Factor converting a length in the moving image's units to the fixed image's units; None if unknown."""
    if fixed.units == moving.units:
        return 1.0
    ff, fm = unit_factor(fixed.units), unit_factor(moving.units)
    return None if ff is None or fm is None else fm / ff


def pixel_size_ratio(fixed: Calibration, moving: Calibration) -> float | None:
    """Size of one moving pixel in fixed pixels (geometric mean over x and y), from the calibrations; else None."""
    factor = _to_fixed_units(fixed, moving)
    if factor is None or fixed.pixel_size_xy is None or moving.pixel_size_xy is None:
        return None
    f = np.abs(np.asarray(fixed.pixel_size_xy, float))
    m = np.abs(np.asarray(moving.pixel_size_xy, float)) * factor
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = m / f
    if not (np.all(f > 0) and np.all(m > 0) and np.all(np.isfinite(ratio))):
        return None
    return float(np.sqrt(np.prod(ratio)))


def pixel_to_physical(calibration: Calibration) -> np.ndarray | None:
    """3×3 matrix from pixel (x, y) to physical (x, y); None without pixel size and origin."""
    if calibration.pixel_size_xy is None or calibration.origin is None:
        return None
    (sx, sy), (ox, oy) = calibration.pixel_size_xy, calibration.origin
    return np.array([[sx, 0.0, ox], [0.0, sy, oy], [0.0, 0.0, 1.0]])


def physical_matrix(moving_to_fixed: np.ndarray | None, fixed: Calibration,
                    moving: Calibration) -> tuple[np.ndarray, str] | None:
    """The moving physical (x, y) → fixed physical (x, y) matrix, in the fixed image's units; None if undefined.

    Defined for a 3×3 pixel matrix when both images carry pixel sizes and origins in convertible units.
    """
    to_fixed, to_moving = pixel_to_physical(fixed), pixel_to_physical(moving)
    factor = _to_fixed_units(fixed, moving)
    if moving_to_fixed is None or to_fixed is None or to_moving is None or factor is None:
        return None
    to_moving = np.diag([factor, factor, 1.0]) @ to_moving  # moving physical, in fixed units
    return to_fixed @ np.asarray(moving_to_fixed, float) @ np.linalg.inv(to_moving), fixed.units or ""
