"""Frozen dataclasses shared by every stage of the pipeline.

Conventions, everywhere in autoreg:

* coordinates are ``(x, y)`` with ``x`` the column and ``y`` the row, pixel centres at integers;
* ``moving_to_fixed`` maps moving-image pixel coordinates to fixed-image pixel coordinates;
* arrays held by these classes are read-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Image",
    "Matches",
    "Fit",
    "Scores",
    "Verdict",
    "Attempt",
    "RegistrationResult",
    "VERDICT_LEVELS",
]

VERDICT_LEVELS = ("ok", "low_confidence", "failed")


def _readonly(array: Any, dtype: Any = None) -> np.ndarray:
    out = np.array(array, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Image:
    """A 2-D image with optional physical calibration.

    Attributes
    ----------
    data : ndarray of shape (H, W)
        Pixel values as float (NaN where there is no data). Read-only.
    pixel_size_xy : tuple of float or None
        Physical size of one pixel along x (columns) and y (rows), in ``units``.
    units : str or None
        Physical unit of ``pixel_size_xy`` and ``origin``.
    origin : tuple of float or None
        Physical position (x, y) of the centre of pixel (0, 0).
    name : str
        Where the image came from (file, dataset path), for messages and reports.
    value_units : str or None
        Unit of the pixel values (e.g. ``"nm"`` for a height map).
    cube : ndarray of shape (H, W, B) or None
        Data that rides along with the image (e.g. a spectroscopic cube), warped with it.
    """

    data: np.ndarray
    pixel_size_xy: tuple[float, float] | None = None
    units: str | None = None
    origin: tuple[float, float] | None = None
    name: str = "<array>"
    value_units: str | None = None
    cube: np.ndarray | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", _readonly(self.data, np.float64 if self.data.dtype != np.float32 else None))
        if self.cube is not None:
            object.__setattr__(self, "cube", _readonly(self.cube))

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the image."""
        return (int(self.data.shape[0]), int(self.data.shape[1]))


@dataclass(frozen=True, slots=True, eq=False)
class Matches:
    """Putative correspondences between the two images, in original pixel coordinates.

    Attributes
    ----------
    fixed_xy : ndarray of shape (N, 2)
        Points in the fixed image.
    moving_xy : ndarray of shape (N, 2)
        Corresponding points in the moving image.
    n_keypoints_fixed, n_keypoints_moving : int
        Keypoints detected before matching.
    """

    fixed_xy: np.ndarray
    moving_xy: np.ndarray
    n_keypoints_fixed: int = 0
    n_keypoints_moving: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixed_xy", _readonly(self.fixed_xy, float).reshape(-1, 2))
        object.__setattr__(self, "moving_xy", _readonly(self.moving_xy, float).reshape(-1, 2))
        if self.fixed_xy.shape != self.moving_xy.shape:
            raise ValueError("fixed_xy and moving_xy must have the same shape")

    def __len__(self) -> int:
        return int(self.fixed_xy.shape[0])


def _mapped(transform: Any, xy: np.ndarray, model: str) -> np.ndarray:
    out = np.array(transform(np.asarray(xy, float).reshape(-1, 2)), dtype=np.float64)
    if model == "piecewise-affine":  # scikit-image marks points outside the mesh with -1
        out[np.all(out == -1, axis=1)] = np.nan
    return out


@dataclass(frozen=True, slots=True, eq=False)
class Fit:
    """An estimated transform.

    Attributes
    ----------
    model : str
        Model name (see :data:`autoreg.models.MODELS`).
    moving_to_fixed : skimage transform
        Maps moving (x, y) to fixed (x, y).
    fixed_to_moving : skimage transform
        Maps fixed (x, y) to moving (x, y); used to warp. For non-invertible models it is estimated separately.
    inliers : ndarray of bool, shape (N,)
        Which of the matches (or control points) support the fit.
    source : str
        ``"features"``, ``"intensity"`` or ``"points"``.
    matches : Matches
        The correspondences the fit was made from.
    why : str
        Why this model was chosen (for ``model="auto"``), and how it was refined.
    correlation : float
        ECC correlation of the high-passed working views under the fit (intensity fits), NaN otherwise.
    n_inliers_general : int
        Inliers of an affine consensus on the same matches, for constrained models (-1 when not computed).
    """

    model: str
    moving_to_fixed: Any
    fixed_to_moving: Any
    inliers: np.ndarray
    source: str
    matches: Matches
    why: str = ""
    correlation: float = float("nan")
    n_inliers_general: int = -1

    def __post_init__(self) -> None:
        object.__setattr__(self, "inliers", _readonly(self.inliers, bool))

    def to_fixed(self, moving_xy: np.ndarray) -> np.ndarray:
        """Fixed (x, y) of moving points, shape (N, 2); NaN where the transform maps nothing (outside a mesh)."""
        return _mapped(self.moving_to_fixed, moving_xy, self.model)

    def to_moving(self, fixed_xy: np.ndarray) -> np.ndarray:
        """Moving (x, y) of fixed points, shape (N, 2); NaN where the transform maps nothing (outside a mesh)."""
        return _mapped(self.fixed_to_moving, fixed_xy, self.model)

    @property
    def n_inliers(self) -> int:
        """Number of inlier correspondences."""
        return int(self.inliers.sum())

    @property
    def is_global(self) -> bool:
        """True when the transform is a single 3×3 matrix."""
        from .models import is_global

        return is_global(self.model)

    @property
    def matrix(self) -> np.ndarray | None:
        """The 3×3 moving→fixed matrix, or None for non-global models."""
        if not self.is_global:
            return None
        return np.array(self.moving_to_fixed.params, dtype=float)


@dataclass(frozen=True, slots=True)
class Scores:
    """Quality figures of one registration. NaN where a figure is undefined."""

    n_matches: int = 0
    n_inliers: int = 0
    inlier_ratio: float = float("nan")
    rmse_px: float = float("nan")
    pearson: float = float("nan")
    pearson_before: float = float("nan")
    overlap_fraction: float = float("nan")
    inlier_spread: float = float("nan")
    scale: float = float("nan")
    expected_scale: float = float("nan")
    shear: float = float("nan")
    working_pixel_px: float = 1.0
    ecc_correlation: float = float("nan")
    n_inliers_general: int = -1
    uncertainty_px: float = float("nan")


@dataclass(frozen=True, slots=True)
class Verdict:
    """``level`` is one of ``ok``, ``low_confidence``, ``failed``; each reason starts with a stable slug."""

    level: str
    reasons: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.level not in VERDICT_LEVELS:
            raise ValueError(f"verdict level must be one of {VERDICT_LEVELS}, not {self.level!r}")

    @property
    def rank(self) -> int:
        """0 for ok, 1 for low_confidence, 2 for failed (higher is worse)."""
        return VERDICT_LEVELS.index(self.level)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One strategy the pipeline tried, with its outcome."""

    strategy: str
    verdict: str
    reasons: tuple[str, ...] = ()
    n_inliers: int = 0
    rmse_px: float = float("nan")
    pearson: float = float("nan")


@dataclass(frozen=True, slots=True, eq=False)
class RegistrationResult:
    """What :func:`autoreg.register` returns: always a value, never a silent identity.

    Attributes
    ----------
    fit : Fit or None
        The transform; None when the verdict is ``failed`` and nothing was estimated.
    scores : Scores
    verdict : Verdict
    warped : ndarray of shape fixed.shape or None
        The moving image resampled on the fixed grid, NaN outside the footprint.
    footprint : ndarray of bool, shape fixed.shape, or None
        True where ``warped`` holds data.
    warped_cube : ndarray of shape fixed.shape + (B,) or None
        The moving image's cube resampled on the fixed grid.
    model : str
        The model requested or chosen.
    attempts : tuple of Attempt
        Every strategy tried, in order.
    fixed_shape, moving_shape : tuple of int
        ``(rows, cols)`` of the inputs.
    """

    fit: Fit | None
    scores: Scores
    verdict: Verdict
    warped: np.ndarray | None = None
    footprint: np.ndarray | None = None
    warped_cube: np.ndarray | None = None
    model: str = ""
    attempts: tuple[Attempt, ...] = ()
    fixed_shape: tuple[int, int] = (0, 0)
    moving_shape: tuple[int, int] = (0, 0)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def matrix(self) -> np.ndarray | None:
        """3×3 moving→fixed pixel matrix; None when failed or the model is not global."""
        if self.fit is None or self.verdict.level == "failed":
            return None
        return self.fit.matrix

    @property
    def source(self) -> str | None:
        """Which strategy produced the result: ``features``, ``intensity`` or ``points``."""
        return None if self.fit is None else self.fit.source

    def to_dict(self) -> dict[str, Any]:
        """The JSON-able contract dict (see :func:`autoreg.report.result_to_dict`)."""
        from .report import result_to_dict

        return result_to_dict(self)
