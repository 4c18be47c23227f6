"""Frozen dataclasses shared by every stage of the pipeline.

Conventions, everywhere in autoreg:

* coordinates are ``(x, y)`` with ``x`` the column and ``y`` the row, pixel centres at integers;
* ``moving_to_fixed`` maps moving-image pixel coordinates to fixed-image pixel coordinates;
* arrays held by these classes are read-only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._version import __version__
from .geometry import map_points
from .units import Calibration, physical_matrix
from .vocabulary import VERDICT_LEVELS

__all__ = [
    "CONTRACT_KEYS",
    "jsonable",
    "Image",
    "Matches",
    "Fit",
    "Scores",
    "Verdict",
    "Attempt",
    "RegistrationResult",
]

CONTRACT_KEYS = ("model", "matrix", "verdict", "reasons", "source", "n_matches", "n_inliers", "rmse_px", "pearson",
                 "pearson_before", "overlap_fraction")


def jsonable(value: Any) -> Any:
    """Convert numpy values and containers to JSON-able Python; NaN and infinities become None.

    Examples
    --------
    >>> jsonable({"a": np.float32(1.5), "b": [np.nan, 2]})
    {'a': 1.5, 'b': [None, 2]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


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

    @property
    def calibration(self) -> Calibration:
        """Pixel size, origin and units (None where unknown)."""
        return Calibration(pixel_size_xy=self.pixel_size_xy, origin=self.origin, units=self.units)


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
        Correlation of the intensity match under the fit (the refinement's on its ``matched_channel``, or the
        search peak's), NaN otherwise.
    n_inliers_general : int
        Inliers of an affine consensus on the same matches, for constrained models (-1 when not computed).
    peak_gap, peak_ratio : float
        How far the search's best correlation peak stands above the best separated one (difference and ratio);
        NaN for fits that did not come from the search.
    inverted : bool
        The moving image matched with inverted contrast.
    channel : str
        For search fits, the pairing that matched (:data:`autoreg.search.CHANNELS`: ``intensity``, ``gradient``,
        ``edges``, ``derivative``); empty otherwise.
    refinement_error_px : float
        Predicted mean grid error (fixed px) of the forward-model refinement that produced this fit; NaN when it
        was not refined; +inf when the refinement diverged from it (the intensities contradict the fit, whose
        error is then unknown).
    contrast_checked : bool
        The intensity refinement (on the fit's ``matched_channel``) ran to its optimum on this fit, and
        ``correlation`` is its robust correlation (whether or not its pose was kept): the verdict then judges how
        well a linear contrast explains the map.
    matched_channel : str
        The pairing of :data:`autoreg.search.CHANNELS` the refinement compares and the verdict judges the fit on:
        ``intensity``; a cross-modal one (``edges``, ``derivative``) when the search matched on it, or when the
        intensities' contrast was not linear and its terms explained the map best.
    consensus_model : str
        For a feature fit whose intensity refinement preferred a richer model than the keypoints chose, or whose
        inliers the mutual-match strategy's similarity consensus selected, the model whose robust consensus selected
        the inliers (its minimal sample sets the a-contrario test's count of hypotheses); empty when that is
        ``model``.
    candidates : tuple of ndarray
        For search fits, the sweep's best separated poses (moving px → fixed px, 3×3 each), best first; empty
        otherwise.
    other_candidates : tuple of (str, ndarray)
        For search fits, the best pose of each other pairing the sweep ran (its name and its matrix, moving px →
        fixed px), the pairing with the larger z-score first; empty otherwise.
    contrast_mapped : bool
        The intensity refinement ran through a contrast fitted to the map (:mod:`autoreg.contrast_map`), as no
        linear contrast explained it: the pose is the refined one, its error prediction is not calibrated for ``ok``.
    contest_gap : float
        For a search fit whose peak did not stand out, how far its refined pose's held-out correlation stands above
        the best refined pose elsewhere (Fisher z, :func:`autoreg.contest.contest`); NaN when not measured.
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
    peak_gap: float = float("nan")
    peak_ratio: float = float("nan")
    inverted: bool = False
    channel: str = ""
    refinement_error_px: float = float("nan")
    contrast_checked: bool = False
    matched_channel: str = "intensity"
    consensus_model: str = ""
    candidates: tuple[np.ndarray, ...] = ()
    other_candidates: tuple[tuple[str, np.ndarray], ...] = ()
    contest_gap: float = float("nan")
    contrast_mapped: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "inliers", _readonly(self.inliers, bool))

    def to_fixed(self, moving_xy: np.ndarray) -> np.ndarray:
        """Fixed (x, y) of moving points, shape (N, 2); NaN where the transform maps nothing (outside a mesh)."""
        return map_points(self.moving_to_fixed, moving_xy, self.model)

    def to_moving(self, fixed_xy: np.ndarray) -> np.ndarray:
        """Moving (x, y) of fixed points, shape (N, 2); NaN where the transform maps nothing (outside a mesh)."""
        return map_points(self.fixed_to_moving, fixed_xy, self.model)

    def with_note(self, note: str) -> Fit:
        """A copy whose ``why`` ends with ``note`` (how the fit was found, refined or judged)."""
        return replace(self, why=(self.why + "; " if self.why else "") + note)

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
    """Quality figures of one registration. NaN where a figure is undefined.

    ``log10_nfa``, ``peak_gap`` and ``peak_ratio`` (or, when the search's peak did not stand out, ``contest_gap``:
    :func:`autoreg.contest.contest`) say whether the match is real, ``shift_peak_gap`` whether
    the images support a different answer as well; ``predicted_error_px`` (also
    reported as ``uncertainty_px``) how accurate it is, against ``tolerance_px``. ``pearson``, ``pearson_before``
    and ``shift_peak_gap`` compare the two images on the fit's ``matched_channel`` (``Fit.matched_channel``):
    intensities, or the moving intensity against the fixed image's gradient magnitude (``edges``) or its slope
    along the moving x axis (``derivative``). ``pearson_detrended`` and ``pearson_before_detrended`` are the same
    correlations once a polynomial background (degree ``RegistrationConfig.correlation_background_order``) is
    removed from each image over the pixels compared: the verdict judges those.
    """

    n_matches: int = 0
    n_inliers: int = 0
    inlier_ratio: float = float("nan")
    rmse_px: float = float("nan")
    pearson: float = float("nan")
    pearson_before: float = float("nan")
    pearson_detrended: float = float("nan")
    pearson_before_detrended: float = float("nan")
    overlap_fraction: float = float("nan")
    inlier_spread: float = float("nan")
    scale: float = float("nan")
    expected_scale: float = float("nan")
    shear: float = float("nan")
    working_pixel_px: float = 1.0
    intensity_correlation: float = float("nan")
    n_inliers_general: int = -1
    uncertainty_px: float = float("nan")
    log10_nfa: float = float("nan")
    shift_peak_gap: float = float("nan")
    peak_gap: float = float("nan")
    peak_ratio: float = float("nan")
    contest_gap: float = float("nan")
    tolerance_px: float = float("nan")
    inverted_contrast: bool = False
    matched_channel: str = "intensity"


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
    seconds: float = float("nan")  # what the strategy cost, fit and scores (NaN when not timed)


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
    fixed_calibration, moving_calibration : Calibration
        Pixel sizes, origins and units of the inputs (for the physical matrix).
    extra : dict
        More JSON keys (the scale prior, the working scales, the time taken...).
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
    fixed_calibration: Calibration = Calibration()
    moving_calibration: Calibration = Calibration()
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

    def _physical(self) -> dict[str, Any]:
        """The physical-unit keys: the matrix between physical frames, pixel sizes, the uncertainty in units."""
        fixed, moving = self.fixed_calibration, self.moving_calibration
        physical = physical_matrix(self.matrix, fixed, moving)
        size = fixed.pixel_size_xy
        uncertainty = self.scores.uncertainty_px * math.sqrt(abs(size[0] * size[1])) if size else None
        return {"matrix_physical": None if physical is None else physical[0],
                "physical_units": None if physical is None else physical[1],
                "uncertainty_physical": uncertainty, "uncertainty_units": fixed.units if size else None,
                "pixel_size_fixed_xy": fixed.pixel_size_xy, "pixel_size_moving_xy": moving.pixel_size_xy,
                "units_fixed": fixed.units, "units_moving": moving.units}

    def _transform_record(self) -> dict[str, Any] | None:
        """Both directions of the transform, complete for every model (see :mod:`autoreg.transform_codec`)."""
        if self.fit is None or self.verdict.level == "failed":
            return None
        from .transform_codec import encode_transform

        fit = self.fit
        pairs = (fit.matches.moving_xy[fit.inliers], fit.matches.fixed_xy[fit.inliers]) if len(fit.matches) else None
        return encode_transform(fit.model, fit.moving_to_fixed, fit.fixed_to_moving, pairs)

    def __repr__(self) -> str:
        s = self.scores
        (fr, fc), (mr, mc) = self.fixed_shape, self.moving_shape
        return (f"<RegistrationResult {self.verdict.level}: {self.model or '-'} from {self.source or '-'}, "
                f"{s.n_inliers} inliers, rmse {s.rmse_px:.3g} px, Pearson {s.pearson:.3g}; "
                f"moving {mc}×{mr} px onto fixed {fc}×{fr} px>")

    def _repr_html_(self) -> str:
        """The verdict, its reasons and the report figure, for notebooks."""
        import base64
        import html

        from .report import render_png

        colour = {"ok": "#1a7f37", "low_confidence": "#9a6700", "failed": "#cf222e"}[self.verdict.level]
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in dict.fromkeys(self.verdict.reasons))
        figure = base64.b64encode(render_png(self)).decode("ascii")
        return (f"<div><b style='color:{colour}'>{html.escape(self.verdict.level)}</b> "
                f"{html.escape(repr(self)[1:-1])}<ul>{reasons}</ul>"
                f"<img src='data:image/png;base64,{figure}' style='max-width:100%'/></div>")

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the CLI contract (``--json``), plus more keys.

        ``matrix`` maps MOVING pixel (x, y) to FIXED pixel (x, y); None when failed or the model is not global.
        """
        s = self.scores
        out: dict[str, Any] = {
            "model": self.model,
            "matrix": self.matrix,
            "verdict": self.verdict.level,
            "reasons": list(dict.fromkeys(self.verdict.reasons)),  # each once; every attempt's own are in attempts
            "source": self.source,
            "n_matches": s.n_matches,
            "n_inliers": s.n_inliers,
            "rmse_px": s.rmse_px,
            "pearson": s.pearson,
            "pearson_before": s.pearson_before,
            "pearson_detrended": s.pearson_detrended,
            "pearson_before_detrended": s.pearson_before_detrended,
            "overlap_fraction": s.overlap_fraction,
            "inlier_ratio": s.inlier_ratio,
            "inlier_spread": s.inlier_spread,
            "scale": s.scale,
            "expected_scale": s.expected_scale,
            "shear": s.shear,
            "intensity_correlation": s.intensity_correlation,
            "uncertainty_px": s.uncertainty_px,
            "predicted_error_px": s.uncertainty_px,
            "tolerance_px": s.tolerance_px,
            "log10_nfa": s.log10_nfa,
            "shift_peak_gap": s.shift_peak_gap,
            "peak_gap": s.peak_gap,
            "peak_ratio": s.peak_ratio,
            "contest_gap": s.contest_gap,
            "inverted_contrast": s.inverted_contrast,
            "matched_channel": s.matched_channel,
            "why_model": self.fit.why if self.fit is not None else None,
            "attempts": [
                {"strategy": a.strategy, "verdict": a.verdict, "reasons": list(a.reasons), "n_inliers": a.n_inliers,
                 "rmse_px": a.rmse_px, "pearson": a.pearson, "seconds": a.seconds}
                for a in self.attempts
            ],
            "fixed_shape": list(self.fixed_shape),
            "moving_shape": list(self.moving_shape),
            "autoreg_version": __version__,
            **self._physical(),
            "transform": self._transform_record(),
        }
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return jsonable(out)
