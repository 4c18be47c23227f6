"""Exhaustive similarity search when the scale is known: rotation × translation (× scale) by masked NCC.

Feature matching starves on a 40×40 spectroscopy map. When the size of one moving pixel in fixed pixels is
known (physical pixel sizes from metadata, or given by the user), the remaining unknowns of a similarity —
rotation and translation — are few enough to search exhaustively:

1. Both images are brought to one *working* pixel size: the fixed image is reduced by **area averaging**
   (``cv2.INTER_AREA``, fractional factor; a map pixel is an area average, not a point sample), the moving
   image is reduced the same way only when it is larger than ``sweep_px``. A plane is removed from each.
2. For every angle of a sweep over all 360° (step chosen so that the moving image's rim moves by at most
   ``angle_step_px`` working pixels), the moving image and its valid mask are rotated, and the **masked
   normalised cross-correlation** over all translations, partial overlap allowed, is computed in the Fourier
   domain (Padfield, "Masked object registration in the Fourier domain", IEEE TIP 21(5), 2012). Translations
   where the moving image overlaps valid fixed pixels by less than ``min_overlap`` of its area are ignored.
   Poses are ranked by the **full-overlap equivalent** of their NCC (:func:`_full_overlap_equivalent`:
   Fisher's ``atanh(NCC)`` scaled by the square root of the overlap fraction), so that a high correlation over a
   small corner of the moving image, which smooth content reaches by chance, does not outrank the true pose.
3. Up to four channels, each a (fixed, moving) pairing: intensity with intensity, gradient magnitude with
   gradient magnitude, and for cross-modal pairs the fixed gradient magnitude with the moving intensity
   (``edges``: the moving image is an edge map) and the fixed derivative along the moving image's own x axis
   with the moving intensity (``derivative``: an error signal such as AFM deflection, the topography's slope
   along the fast scan axis). On intensity and derivative both polarities count (the NCC of the inverted
   image is −NCC, so |NCC| is ranked and the intensity sign recorded); gradient magnitudes have no polarity.
   The cross-modal channels run in a second pass over the same rotated images, reusing the first pass's
   mask and moving-intensity terms, unless the first pass has a peak that stands out (below) where the
   intensities correlate too (the contrast is the same).
4. The peak's significance compares the best pose with the best *separated* pose (another translation, a
   clearly different angle, or a scale that puts the moving image elsewhere: the mean distance over a 5×5 grid
   spanning it beyond the peak's exclusion radius): the gap and the ratio best/second, and z-scores against
   the sweep's NCC distribution. On 200 unrelated and 200 true synthetic pairs (``tests/bench/bench_search.py
   --significance``) the gap and ratio separate them; the z-score of the maximum does not (it grows with the
   size of the search). Suggested rule for "ok": ``peak_gap > 0.1 and peak_ratio > 1.2``.
5. The best few poses are refined with a finer angle step, sub-pixel translation (quadratic fit on the 3×3
   neighbourhood of the peak) and sub-degree angle (parabola through the interpolated peaks); when the sweep
   ran on coarsened images, the pose is refined again at the moving image's own pixel size, in a small window.

Coordinates are (x, y) = (column, row) with pixel centres at integers. The returned ``moving_to_fixed`` maps
moving pixel ``(x, y, 1)`` to fixed pixel ``(x, y, 1)`` in the original pixel grids of both images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .budget import Deadline
from .errors import EstimationError, InputError

__all__ = ["CHANNELS", "CROSS_CHANNELS", "SearchCandidate", "SearchResult", "fixed_term", "refined_on",
           "search_similarity"]

#: Channels of the NCC, each a pair (fixed term, moving term); see :func:`_masked_ncc`.
CHANNELS = ("intensity", "gradient", "edges", "derivative")
#: Which moving channel each NCC channel correlates (0 intensity, 1 gradient magnitude).
_MOVING_OF = (0, 1, 0, 0)
#: Which fixed term each NCC channel correlates (0 intensity, 1 gradient magnitude); None for the derivative, a
#: combination of ∂x and ∂y that depends on each rotated image's direction.
_FIXED_OF = (0, 1, 1, None)
#: Channels ranked by |NCC| (both polarities count); the others by NCC.
_EITHER_SIGN = (True, False, False, True)
#: Channels that correlate two different quantities (an edge map or a slope against an intensity): their matches
#: have no contrast polarity, and an intensity refinement does not apply to them.
CROSS_CHANNELS = ("edges", "derivative")
_INVALID = -2.0  # below any NCC: marks translations without enough overlap or without contrast
_MAX_NCC = np.float32(0.9999)  # |NCC| is clipped below 1 before atanh (a perfect match ranks as 0.9999)


@dataclass(frozen=True, slots=True, eq=False)
class SearchCandidate:
    """One pose of the search (a local maximum of the NCC), for diagnostics.

    Attributes
    ----------
    moving_to_fixed : ndarray of shape (3, 3)
        Moving pixel ``(x, y, 1)`` → fixed pixel.
    score : float
        Ranked NCC of the pose in its channel (|NCC| on intensity and derivative, NCC on the others), as its
        full-overlap equivalent (:func:`_full_overlap_equivalent`; the NCC itself at full overlap).
    angle_deg, scale : float
        Rotation (counter-clockwise in the (x, y) frame, i.e. the angle of ``R`` in ``scale · R``) and scale.
    channel : str
        The pairing of :data:`CHANNELS` this pose was found on.
    inverted : bool
        The intensity NCC at this pose is negative (contrast inverted); always False on :data:`CROSS_CHANNELS`.
    overlap_fraction : float
        Fraction of the moving image's valid area that lies on valid fixed pixels.
    """

    moving_to_fixed: np.ndarray
    score: float
    angle_deg: float
    scale: float
    channel: str
    inverted: bool
    overlap_fraction: float


@dataclass(frozen=True, slots=True, eq=False)
class SearchResult:
    """The best similarity found by :func:`search_similarity` and how much it stands out.

    Attributes
    ----------
    moving_to_fixed : ndarray of shape (3, 3)
        Moving pixel ``(x, y, 1)`` → fixed pixel ``(x, y, 1)``, original pixel grids.
    score : float
        NCC of the refined pose in the winning channel (|NCC| on intensity and derivative, sign in ``inverted``),
        as its full-overlap equivalent (the NCC itself at full overlap). Every NCC figure below is one too.
    z_score : float
        Sweep maximum against the sweep's NCC distribution of the winning channel: ``(best − mean) / std``.
        Chooses the channel; a weak test on its own (null pairs reach 7–8 because the maximum of many
        samples grows with their number).
    second_score : float
        Best NCC of the sweep at a pose separated from the best (another translation, a clearly different
        angle, or a scale that moves a 5×5 grid spanning the moving image beyond the exclusion radius on
        average), same channel.
    peak_ratio : float
        ``best / second_score`` on the sweep (both at the sweep's sampling, so they compare fairly).
    peak_gap : float
        ``best − second_score`` on the sweep. With ``peak_ratio``, the figure to threshold: on the benchmark's
        200 unrelated and 200 true pairs, ``peak_gap > 0.1 and peak_ratio > 1.2`` passed 1 unrelated pair
        (0.5 %, 95 % CI 0–2.8 %) and every solved true pair, not the unsolved one; ``peak_gap > 0.12``
        passed no unrelated pair (CI 0–1.8 %) and every solved true pair (the smallest gap was 0.13).
    gap_z_score : float
        ``peak_gap`` in standard deviations of the sweep's NCC distribution.
    angle_deg : float
        Rotation of the moving image in the fixed frame (degrees, in [0, 360)).
    scale : float
        Size of one moving pixel in fixed pixels (the given ``scale`` unless a scale range was swept).
    inverted : bool
        Contrast of the moving image is inverted relative to the fixed image (intensity NCC < 0); always False
        on :data:`CROSS_CHANNELS`, which have no contrast polarity.
    channel : str
        The pairing of :data:`CHANNELS` that won.
    overlap_fraction : float
        Fraction of the moving image's valid area on valid fixed pixels at the result.
    working_pixel : float
        Fixed pixels per working pixel during the sweep.
    n_angles : int
        Angles of the coarse sweep (per scale).
    candidates : tuple of SearchCandidate
        The best separated poses of the sweep (winning channel first), best first.
    others : tuple of SearchCandidate
        The best pose of each other pairing the sweep ran, the pairing with the larger z-score first: where the
        winner's peak does not stand out, the right pose may be another pairing's best (on the calibration split, a
        crop of a clock photo at its pixel size: the gradient magnitudes' best pose 1 px from the truth, the five
        best of the winning derivative pairing 120-160 px off).
    """

    moving_to_fixed: np.ndarray
    score: float
    z_score: float
    second_score: float
    peak_ratio: float
    peak_gap: float
    gap_z_score: float
    angle_deg: float
    scale: float
    inverted: bool
    channel: str
    overlap_fraction: float
    working_pixel: float
    n_angles: int
    candidates: tuple[SearchCandidate, ...] = field(default_factory=tuple)
    others: tuple[SearchCandidate, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------- preparation


def _check_image(image: np.ndarray, name: str) -> np.ndarray:
    data = np.asarray(image)
    if data.ndim != 2 or min(data.shape) < 4:
        raise InputError(f"The {name} image must be 2-D with at least 4 pixels a side; "
                         f"got shape {data.shape}.")
    if not np.issubdtype(data.dtype, np.number) or np.iscomplexobj(data):
        raise InputError(f"The {name} image must hold real numbers; got dtype {data.dtype}.")
    data = data.astype(np.float32)
    if np.count_nonzero(np.isfinite(data)) < 16:
        raise InputError(f"The {name} image has fewer than 16 finite pixels.")
    return data


def _reduce(image: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Area-average ``image`` (NaN = missing) to about ``1/factor`` of its size.

    Returns the reduced image (NaN where less than half a pixel's area was valid), its valid mask, and the
    exact output/input size ratios ``(kx, ky)``: reduced ``x' = kx·x + 0.5·kx − 0.5`` (``cv2.resize``'s
    centre convention), likewise y.
    """
    import cv2

    rows, cols = image.shape
    if factor <= 1.0:
        mask = np.isfinite(image)
        return np.where(mask, image, np.nan).astype(np.float32), mask, (1.0, 1.0)
    size = (max(2, round(cols / factor)), max(2, round(rows / factor)))
    finite = np.isfinite(image)
    try:
        if finite.all():
            reduced = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            mask = np.ones(reduced.shape, bool)
        else:
            filled = np.where(finite, image, 0).astype(np.float32)
            total = cv2.resize(filled, size, interpolation=cv2.INTER_AREA)
            weight = cv2.resize(finite.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            mask = weight >= 0.5
            reduced = np.where(mask, total / np.maximum(weight, 1e-6), np.nan).astype(np.float32)
    except cv2.error as err:
        raise EstimationError(f"Area reduction of a {rows}×{cols} image failed: {err}") from err
    return reduced, mask, (size[0] / cols, size[1] / rows)


def _remove_plane(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Subtract the least-squares plane of the valid pixels; returns float32 with 0 where invalid."""
    rows, cols = image.shape
    y, x = np.nonzero(mask)
    design = np.column_stack([x, y, np.ones_like(x)]).astype(np.float64)
    try:
        coef = np.linalg.lstsq(design, image[mask].astype(np.float64), rcond=None)[0]
    except np.linalg.LinAlgError as err:
        raise EstimationError(f"Plane removal failed: {err}") from err
    yy, xx = np.mgrid[:rows, :cols]
    levelled = image - (coef[0] * xx + coef[1] * yy + coef[2])
    return np.where(mask, levelled, 0.0).astype(np.float32)


def _normalise(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation over ``mask``; 0 elsewhere (NCC does not care; FFT sums do)."""
    inside = values[mask].astype(np.float64)
    std = float(inside.std())
    out = (values - float(inside.mean())) / (std if std > 0 else 1.0)
    return np.where(mask, out, 0.0).astype(np.float32)


def _channels(image: np.ndarray, mask: np.ndarray, *, derivatives: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Intensity and gradient magnitude, normalised, as ``(2, rows, cols)``, with their shared valid mask.

    The gradient uses central differences (one-sided at the border); pixels next to a missing one have no
    gradient, so the shared mask is the gradient's (equal to ``mask`` when nothing is missing). With
    ``derivatives`` the signed derivatives ``∂/∂x`` and ``∂/∂y`` follow as ``(4, rows, cols)``, divided by one
    common factor (their RMS) so that any direction ``cos θ·∂x + sin θ·∂y`` keeps its relative size.
    """
    if np.count_nonzero(mask) < 9:
        raise EstimationError("Too few valid pixels remain after reduction to compare the images.")
    levelled = _remove_plane(image, mask)
    magnitude = float(np.abs(image[mask]).max())
    if float(levelled[mask].std()) <= 1e-6 * magnitude:
        raise EstimationError("An image is flat once a plane is removed; there is nothing to correlate.")
    with_nan = np.where(mask, levelled, np.nan)
    gy, gx = np.gradient(with_nan)
    gradient = np.hypot(gx, gy)
    shared = mask & np.isfinite(gradient)
    if np.count_nonzero(shared) < 9:
        raise EstimationError("Too few valid pixels remain after reduction to compare the images.")
    out = [_normalise(levelled, shared), _normalise(np.nan_to_num(gradient), shared)]
    if derivatives:
        rms = float(np.sqrt(np.mean(np.square(gradient[shared], dtype=np.float64)) / 2))
        out += [np.where(shared, d / (rms if rms > 0 else 1.0), 0.0).astype(np.float32) for d in (gx, gy)]
    return np.stack(out), shared


def refined_on(pairing: str) -> str:
    """What an intensity refinement of a pose found on ``pairing`` compares the moving image with: a cross-modal
    pairing's own fixed term (:data:`CROSS_CHANNELS`), else the fixed intensities (a gradient magnitude's pose is
    refined on the intensities it was computed from)."""
    return pairing if pairing in CROSS_CHANNELS else "intensity"


def fixed_term(fixed: np.ndarray, channel: str, moving_x_xy: np.ndarray | None = None) -> np.ndarray:
    """What a pairing of :data:`CHANNELS` compares on the fixed side (the search's sweep does the same on its own
    working grid): ``intensity`` the image itself, ``gradient`` and ``edges`` its gradient magnitude,
    ``derivative`` its slope along the moving image's own x axis (an error signal such as AFM deflection follows
    the topography's slope along its fast scan axis). The moving side is the moving intensity on every pairing but
    ``gradient``.

    Parameters
    ----------
    fixed : ndarray of shape (rows, cols)
        The fixed image (NaN where missing; a missing pixel leaves its neighbours' derivatives missing).
    channel : str
        One of :data:`CHANNELS`.
    moving_x_xy : array_like of shape (2,), optional
        The moving image's x axis in fixed pixels (x, y); only its direction counts. Required for ``derivative``.

    Returns
    -------
    ndarray of shape (rows, cols)

    Examples
    --------
    >>> import numpy as np
    >>> ramp = np.tile(np.arange(5.0), (3, 1))  # rises by 1 per column
    >>> float(fixed_term(ramp, "derivative", np.array([0.0, 2.0]))[1, 2])  # along y: flat
    0.0
    >>> float(fixed_term(ramp, "derivative", np.array([-3.0, 0.0]))[1, 2])
    -1.0
    """
    if channel not in CHANNELS:
        raise InputError(f"No pairing {channel!r}; expected one of {CHANNELS}.")
    if channel == "intensity":
        return np.asarray(fixed)
    gy, gx = np.gradient(np.asarray(fixed, np.float64))  # central differences, one-sided at the border
    if channel != "derivative":
        return np.hypot(gx, gy)
    direction = np.asarray(moving_x_xy if moving_x_xy is not None else (np.nan, np.nan), np.float64)
    length = float(np.hypot(*direction))
    if not (math.isfinite(length) and length > 0):
        raise InputError(f"The moving x axis must be a finite non-zero vector; got {moving_x_xy}.")
    return (direction[0] * gx + direction[1] * gy) / length


@dataclass(frozen=True, slots=True, eq=False)
class _Level:
    """Both images at one working pixel size (``pixel`` fixed px), channels normalised, zero where invalid."""

    pixel: float
    fixed: np.ndarray  # (4, H, W): intensity, gradient magnitude, ∂x, ∂y
    fixed_mask: np.ndarray  # (H, W) bool
    fixed_k: tuple[float, float]  # working px per fixed px (x, y)
    moving: np.ndarray  # (2, h, w)
    moving_mask: np.ndarray
    moving_k: tuple[float, float]  # reduced px per moving px (x, y)


def _make_level(fixed: np.ndarray, moving: np.ndarray, pixel: float, scale: float) -> _Level:
    fixed_r, fixed_mask, fixed_k = _reduce(fixed, pixel)
    moving_r, moving_mask, moving_k = _reduce(moving, pixel / scale)
    fixed_c, fixed_mask = _channels(fixed_r, fixed_mask, derivatives=True)
    moving_c, moving_mask = _channels(moving_r, moving_mask)
    return _Level(pixel, fixed_c, fixed_mask, fixed_k, moving_c, moving_mask, moving_k)


def _level_pixels(fixed_shape: tuple[int, int], moving_shape: tuple[int, int], scale: float, sweep_px: int,
                  max_fixed_px: int) -> list[float]:
    """Working pixel sizes (fixed px), coarsest first, ending at the moving pixel size ``scale``."""
    coarse = max(scale, scale * max(moving_shape) / sweep_px, max(fixed_shape) / max_fixed_px)
    pixels = [coarse]
    while pixels[-1] > 1.001 * scale:
        pixels.append(max(scale, pixels[-1] / 4.0))
        if pixels[-1] < 1.5 * scale:
            pixels[-1] = scale
    return pixels


# ------------------------------------------------------------------------------------------------- geometry


def _linear(level: _Level, angle: float, scale: float) -> np.ndarray:
    """2×2 map from reduced-moving px to working px: ``diag(k_fixed) · scale · R · diag(1/k_moving)``."""
    return _linears(level, np.array([angle]), np.array([scale]))[0]


def _linears(level: _Level, angles: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """:func:`_linear` for arrays of angles and scales: shape ``(A, 2, 2)``."""
    c, s = np.cos(angles), np.sin(angles)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)
    rot = rot * np.asarray(scales, float)[:, None, None]
    return np.asarray(level.fixed_k)[:, None] * rot / np.asarray(level.moving_k)[None, :]


def _canvas_size(level: _Level, scale: float) -> int:
    """Side of a square canvas holding the rotated moving image at any angle (plus a pixel of margin)."""
    rows, cols = level.moving_mask.shape
    stretch = scale * max(level.fixed_k) / min(level.moving_k)
    return int(math.ceil(math.hypot(rows, cols) * stretch)) + 2


def _rim_radius(level: _Level, scale: float) -> float:
    """Largest distance (working px) of a moving pixel centre from the moving image's centre."""
    rows, cols = level.moving_mask.shape
    return 0.5 * math.hypot(rows - 1, cols - 1) * scale * min(level.fixed_k) / max(level.moving_k)


def _canvas_centre(level: _Level, canvas: int) -> np.ndarray:
    """Where the moving image's centre sits on the canvas: the middle, with the centre's own half-pixel phase.

    Keeping the phase means that at 0° and unit scale the moving pixels land on canvas pixels, unblurred by
    the interpolation; otherwise every sample would be a two-pixel average and the peak biased by half a
    pixel.
    """
    rows, cols = level.moving_mask.shape
    return (canvas - 1) // 2 + np.array([(cols - 1) / 2 % 1, (rows - 1) / 2 % 1])


def _warp_stack(level: _Level, linears: list[np.ndarray], canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """Rotate/scale the moving channels and mask onto a ``canvas``² grid, centre on centre.

    Returns values ``(A, 2, canvas, canvas)`` (0 where invalid) and masks ``(A, canvas, canvas)`` (float32
    0/1): a canvas pixel is valid only when its whole bilinear support is valid.
    """
    import cv2

    rows, cols = level.moving_mask.shape
    source = np.dstack([level.moving[0], level.moving[1], level.moving_mask.astype(np.float32)])
    centre_m = np.array([(cols - 1) / 2, (rows - 1) / 2])
    centre_c = _canvas_centre(level, canvas)
    values = np.empty((len(linears), 2, canvas, canvas), np.float32)
    masks = np.empty((len(linears), canvas, canvas), np.float32)
    for i, lin in enumerate(linears):
        affine = np.hstack([lin, (centre_c - lin @ centre_m)[:, None]])
        try:
            warped = cv2.warpAffine(source, affine, (canvas, canvas), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        except cv2.error as err:
            raise EstimationError(f"Rotating the moving image failed: {err}") from err
        valid = (warped[..., 2] > 0.999).astype(np.float32)
        masks[i] = valid
        values[i, 0] = warped[..., 0] * valid
        values[i, 1] = warped[..., 1] * valid
    return values, masks


def _pose_matrix(level: _Level, angle: float, scale: float, centre_xy: np.ndarray) -> np.ndarray:
    """Moving px → fixed px for the pose whose moving-image centre lands on working px ``centre_xy``."""
    rows, cols = level.moving_mask.shape
    lin = _linear(level, angle, scale)
    centre_m = np.array([(cols - 1) / 2, (rows - 1) / 2])
    reduced_to_working = np.eye(3)
    reduced_to_working[:2, :2] = lin
    reduced_to_working[:2, 2] = np.asarray(centre_xy, float) - lin @ centre_m
    working_to_fixed = np.linalg.inv(_centre_scaling(level.fixed_k))
    return working_to_fixed @ reduced_to_working @ _centre_scaling(level.moving_k)


def _centre_scaling(k_xy: tuple[float, float]) -> np.ndarray:
    """3×3 of the resize centre convention: ``x' = k·x + 0.5·k − 0.5``."""
    kx, ky = k_xy
    return np.array([[kx, 0.0, 0.5 * kx - 0.5], [0.0, ky, 0.5 * ky - 0.5], [0.0, 0.0, 1.0]])


# ------------------------------------------------------------------------------------------- masked NCC


@dataclass(frozen=True, slots=True, eq=False)
class _FixedSpectra:
    """Fourier transforms of the fixed terms for one translation range.

    Map index ``v`` (per axis) is the canvas origin at working px ``v + origin``; ``n_shifts`` indices.
    """

    shape: tuple[int, int]
    origin_xy: tuple[int, int]
    n_shifts_xy: tuple[int, int]
    f1: np.ndarray  # (4, Py, Px//2+1): f·m per fixed channel (intensity, gradient magnitude, ∂x, ∂y)
    f2: np.ndarray  # (5, ...): f²·m of intensity, gradient magnitude, ∂x, ∂y, then ∂x·∂y·m
    fm: np.ndarray  # m
    full_rectangle: bool  # the fixed mask is one full rectangle inside the buffer (box sums apply)
    data_box: tuple[int, int, int, int]  # buffer rows [y0, y1), cols [x0, x1) holding fixed data


def _buffer_extent(n: int, origin: int, n_shifts: int, canvas: int) -> tuple[int, int, int]:
    """FFT length and the buffer range [d0, d1) that holds fixed data, with no wrap-around on the shifts."""
    from scipy import fft

    reach = n_shifts + canvas - 1  # buffer positions read by the correlation
    d0, d1 = max(0, -origin), min(reach, n - origin)
    if d1 <= d0:
        raise EstimationError("The translation window does not overlap the fixed image.")
    return fft.next_fast_len(max(d1, reach - d0), real=True), d0, d1


def _fixed_spectra(level: _Level, canvas: int, origin_xy: tuple[int, int],
                   n_shifts_xy: tuple[int, int]) -> _FixedSpectra:
    from scipy import fft

    rows, cols = level.fixed_mask.shape
    px, x0, x1 = _buffer_extent(cols, origin_xy[0], n_shifts_xy[0], canvas)
    py, y0, y1 = _buffer_extent(rows, origin_xy[1], n_shifts_xy[1], canvas)
    values = np.zeros((level.fixed.shape[0], py, px), np.float32)
    mask = np.zeros((py, px), np.float32)
    src_y, src_x = slice(y0 + origin_xy[1], y1 + origin_xy[1]), slice(x0 + origin_xy[0], x1 + origin_xy[0])
    values[:, y0:y1, x0:x1] = level.fixed[:, src_y, src_x]
    mask[y0:y1, x0:x1] = level.fixed_mask[src_y, src_x]
    f1 = fft.rfft2(values)
    f2 = fft.rfft2(np.concatenate([values * values, values[2:3] * values[3:4]]))
    fm = fft.rfft2(mask)
    return _FixedSpectra((py, px), origin_xy, n_shifts_xy, f1, f2, fm, bool(mask[y0:y1, x0:x1].all()),
                         (y0, y1, x0, x1))


def _box_sums(spec: _FixedSpectra, images: np.ndarray) -> np.ndarray:
    """``Σ_p m_f(p + v) · h(p)`` for a fixed mask that is one full rectangle: rectangle sums of ``h``.

    ``images`` has shape ``(..., a, a)``; returns ``(..., Vy, Vx)``, equal to the Fourier correlation with
    the rectangle at a fraction of its cost: shift ``v`` sums canvas rows ``[y0 − v, y1 − v)`` (clipped), a
    0/1 band matrix per axis applied by two matrix products.
    """
    y0, y1, x0, x1 = spec.data_box
    a = images.shape[-1]
    band_x = _band(x0, x1, spec.n_shifts_xy[0], a)
    band_y = _band(y0, y1, spec.n_shifts_xy[1], a)
    lead = images.shape[:-2]
    by_column = (images.reshape(-1, a) @ band_x.T).reshape(*lead, a, -1)  # (..., a, Vx)
    return np.matmul(band_y, by_column)


def _band(lo: int, hi: int, n_shifts: int, a: int) -> np.ndarray:
    """``band[v, p] = 1`` when ``lo <= p + v < hi`` (canvas index ``p`` lands on the fixed rectangle)."""
    v = np.arange(n_shifts)[:, None]
    p = np.arange(a)[None, :]
    return ((p + v >= lo) & (p + v < hi)).astype(np.float32)


def _unique_masks(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct masks of a stack and, for each mask, the index of its distinct copy."""
    keys: dict[bytes, int] = {}
    inverse = np.empty(len(masks), np.intp)
    for i, mask in enumerate(masks):
        inverse[i] = keys.setdefault(np.packbits(mask > 0).tobytes(), len(keys))
    first = np.unique(inverse, return_index=True)[1]
    return masks[first], inverse


@dataclass(frozen=True, slots=True, eq=False)
class _Shared:
    """The terms of one batch's masked NCC that do not depend on the channel pairing, kept for a later pass
    over other channels of the same batch (:func:`_masked_ncc`).

    Mask terms are per distinct mask (``U``); ``moving`` maps a moving term (0 intensity, 1 gradient magnitude)
    to its sums over every overlap ``(Σg, Σg²)``, each ``(A, Vy, Vx)``, and its conjugate spectrum; ``fixed``
    maps a fixed term (0 intensity, 1 gradient magnitude) to its mean, variance (times the count) and validity
    over every overlap, each ``(U, Vy, Vx)``.
    """

    inverse: np.ndarray  # (A,) index of each image's distinct mask
    mask_spectra: np.ndarray  # (U, 1, Py, Px//2+1) conjugate spectra of the distinct masks
    overlap: np.ndarray  # (U, Vy, Vx) overlap as a fraction of the mask's area
    inv_n: np.ndarray  # (U, Vy, Vx) 1 / overlap count
    floor: np.ndarray  # (U, Vy, Vx) smallest variance (times the count) with contrast
    enough: np.ndarray  # (U, Vy, Vx) overlap large enough
    moving: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]
    fixed: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]


def _masked_ncc(spec: _FixedSpectra, values: np.ndarray, masks: np.ndarray, directions: np.ndarray,
                channels: tuple[int, ...], min_overlap: float, min_contrast: float,
                shared: _Shared | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, _Shared]:
    """Padfield's masked NCC of every rotated moving image at every translation of ``spec``.

    Each channel of :data:`CHANNELS` pairs a fixed term with a moving one: ``intensity`` (fixed and moving
    intensity), ``gradient`` (both gradient magnitudes), ``edges`` (the fixed gradient magnitude against the
    moving intensity: a moving image that is an edge map of the fixed one) and ``derivative`` (the fixed
    derivative along the moving image's own x axis, ``cos θ·∂x + sin θ·∂y``, against the moving intensity: an
    error-signal channel, AFM deflection or STM current, which follows the topography's slope along the fast
    scan axis). A derivative of the fixed image is a linear combination of ``∂x`` and ``∂y``, so its sums over
    every translation combine those of ``∂x``, ``∂y``, ``∂x²``, ``∂y²`` and ``∂x·∂y``.

    Parameters
    ----------
    spec : _FixedSpectra
    values : ndarray of shape (A, 2, a, a)
        Moving channels on their canvases, 0 where invalid.
    masks : ndarray of shape (A, a, a)
        Valid masks (0/1).
    directions : ndarray of shape (A, 2)
        Unit vector (x, y), in working px, of each rotated moving image's x axis.
    channels : tuple of int
        Indices into :data:`CHANNELS` to compute; the others are ``_INVALID``. Only the fixed and moving terms
        these channels use are computed (the cross-modal ones use the moving intensity alone).
    min_overlap : float
        Minimum fraction of the moving image's valid area that must lie on valid fixed pixels.
    min_contrast : float
        Minimum variance per pixel (the channels have unit variance) in the overlap, on each side.
    shared : _Shared, optional
        The terms an earlier call on the same ``spec``, ``values`` and ``masks`` computed (same numbers,
        not computed again).

    Returns
    -------
    intensity : ndarray of shape (A, Vy, Vx)
        Signed NCC of the intensity channel; NaN where the overlap or the contrast is too small, and everywhere
        when channel 0 is not computed.
    ranked : ndarray of shape (A, C, Vy, Vx)
        Per channel, |NCC| where both polarities count (:data:`_EITHER_SIGN`), else the NCC; ``_INVALID``
        where undefined or not computed.
    overlap : ndarray of shape (A, Vy, Vx)
        Overlap as a fraction of each moving image's valid area.
    shared : _Shared
        The terms of this batch that other channels would use again.
    """
    from scipy import fft

    shape = spec.shape
    n_vy, n_vx = spec.n_shifts_xy[1], spec.n_shifts_xy[0]

    def back(product: np.ndarray) -> np.ndarray:
        # irfft2 in its own two passes (columns, then rows), the rows only where shifts are kept: the same numbers
        # as irfft2(product, s=shape)[..., :n_vy, :n_vx], a fifth cheaper; each pass applies its 1/n factor
        # inside the transform (no pass of its own over the result)
        columns = fft.ifft(product, axis=-2)[..., :n_vy, :]
        return fft.irfft(columns, n=shape[1], axis=-1)[..., :n_vx]

    def sums(images: np.ndarray) -> np.ndarray:
        """``Σ_p m_f(p + v) · h(p)`` over every translation ``v``."""
        if spec.full_rectangle:
            return _box_sums(spec, images)
        return back(spec.fm * _conj_spectra(images, shape))

    if shared is None:  # everything that depends on the mask only is computed once per distinct mask
        unique, inverse = _unique_masks(masks)  # rotations by 90°/180° often give the very same mask
        count = np.rint(sums(unique))
        overlap = count / np.maximum(unique.sum(axis=(1, 2))[:, None, None], 1.0)
        shared = _Shared(inverse, _conj_spectra(unique, shape)[:, None], overlap,
                         1.0 / np.maximum(count, 1.0), min_contrast * count, (overlap >= min_overlap) & (count >= 4),
                         {}, {})
    moving_terms, fixed_terms = dict(shared.moving), dict(shared.fixed)
    todo = sorted({_MOVING_OF[ch] for ch in channels} - set(moving_terms))  # intensity [and gradient magnitude]
    if todo:
        g = values[:, todo]
        boxed = sums(np.concatenate([g, g * g], axis=1))  # (A, 2t, Vy, Vx)
        spectra = _conj_spectra(g, shape)
        for i, term in enumerate(todo):
            moving_terms[term] = (boxed[:, i], boxed[:, len(todo) + i], spectra[:, i])
    todo = sorted({_FIXED_OF[ch] for ch in channels if _FIXED_OF[ch] is not None} - set(fixed_terms))
    if todo:
        terms = back(np.concatenate([spec.f1[todo], spec.f2[todo]])[None] * shared.mask_spectra)  # (U, 2t, ..)
        for i, term in enumerate(todo):
            mean = terms[:, i] * shared.inv_n
            var = terms[:, len(todo) + i] - terms[:, i] * mean
            fixed_terms[term] = (mean, var, (var > shared.floor) & shared.enough)
    shared = _Shared(shared.inverse, shared.mask_spectra, shared.overlap, shared.inv_n, shared.floor, shared.enough,
                     moving_terms, fixed_terms)
    inverse = shared.inverse
    inv_n, floor = shared.inv_n[inverse], shared.floor[inverse]
    c, s = (directions[:, i, None, None].astype(np.float32) for i in (0, 1))  # float32 keeps the FFTs single

    products = np.empty((masks.shape[0], len(channels), *spec.fm.shape), np.complex64)
    for i, ch in enumerate(channels):  # each fixed term times each moving image's spectrum, written in place
        fixed = c * spec.f1[2] + s * spec.f1[3] if _FIXED_OF[ch] is None else spec.f1[_FIXED_OF[ch]]
        np.multiply(fixed, moving_terms[_MOVING_OF[ch]][2], out=products[:, i])
    sum_fg = back(products)  # (A, n, Vy, Vx)
    del products
    fixed_of = {ch: tuple(x[inverse] for x in fixed_terms[_FIXED_OF[ch]]) for ch in channels
                if _FIXED_OF[ch] is not None}
    for ch in (ch for ch in channels if _FIXED_OF[ch] is None):
        fixed_of[ch] = _directional_terms(spec, shared.mask_spectra, back, inverse, c, s, inv_n, floor,
                                         shared.enough[inverse])
    ranked = np.empty((masks.shape[0], len(CHANNELS), n_vy, n_vx), np.float32)
    ranked[:, [ch for ch in range(len(CHANNELS)) if ch not in channels]] = _INVALID
    overlap = shared.overlap[inverse]
    intensity = np.full((masks.shape[0], n_vy, n_vx), np.nan, np.float32)
    moving_var: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # per moving term: variance (times the count), ok
    for i, ch in enumerate(channels):
        sum_g, sum_gg, _ = moving_terms[_MOVING_OF[ch]]
        if _MOVING_OF[ch] not in moving_var:  # the cross-modal pairings share the moving intensity's
            var_g = sum_g * sum_g  # in place from here on: the same operations, fewer temporaries
            var_g *= inv_n
            np.subtract(sum_gg, var_g, out=var_g)
            moving_var[_MOVING_OF[ch]] = var_g, var_g > floor
        var_g, ok_g = moving_var[_MOVING_OF[ch]]
        f_mean, f_var, f_ok = fixed_of[ch]
        cov = sum_g * f_mean
        np.subtract(sum_fg[:, i], cov, out=cov)
        ok = np.logical_and(ok_g, f_ok)
        den = np.multiply(f_var, var_g)
        np.sqrt(den, out=den, where=ok)
        np.divide(cov, den, out=cov, where=ok)
        if ch == 0:
            intensity = np.where(ok, cov, np.nan)
        if _EITHER_SIGN[ch]:
            np.abs(cov, out=cov)
        ranked_ch = _full_overlap_equivalent(cov, overlap)
        np.copyto(ranked_ch, _INVALID, where=~ok)  # exactly _INVALID where undefined: the sweep's statistics skip it
        ranked[:, ch] = ranked_ch
    return intensity, ranked, overlap, shared


def _full_overlap_equivalent(ncc: np.ndarray, overlap: np.ndarray) -> np.ndarray:
    """The correlation over the whole moving image that is as significant as ``ncc`` over a fraction ``overlap``.

    Fisher's ``atanh(r)`` has a spread of about ``1 / sqrt(n)`` over ``n`` independent samples, so a correlation
    measured over a small part of the moving image reaches high values by chance: smooth content correlates
    at 0.95 over a 30 % corner and beats the true pose at 0.9 over the whole image. Scaling ``atanh(r)`` by
    ``sqrt(overlap)`` gives the correlation whose significance over the full image is the same (the effective
    number of samples scales with the area whatever the content's correlation length); at full overlap it is
    ``ncc`` itself.

    Parameters
    ----------
    ncc : ndarray
        Correlations in [-1, 1].
    overlap : ndarray
        Fractions of the moving image's valid area they were measured over, in (0, 1]; broadcast with ``ncc``.

    Returns
    -------
    ndarray
        ``tanh(atanh(ncc) · sqrt(overlap))``, float32, of the sign of ``ncc``.

    Notes
    -----
    Computed as ``(q - 1) / (q + 1)`` with ``q = ((1 + r) / (1 - r)) ** sqrt(overlap)``, i.e. through ``exp(2 y)``
    for ``y = atanh(r) · sqrt(overlap)``: the same values to float32 rounding, from a logarithm and an exponential,
    which NumPy vectorises, instead of ``arctanh`` and ``tanh`` (with which this took a fifth of a whole search).

    Examples
    --------
    >>> import numpy as np
    >>> [round(float(v), 3) for v in _full_overlap_equivalent(np.array([0.9, 0.95]), np.array([1.0, 0.3]))]
    [0.9, 0.763]
    """
    r = np.clip(ncc, -_MAX_NCC, _MAX_NCC).astype(np.float32, copy=False)  # a new array: atanh(±1) is infinite
    q = np.divide(1 + r, 1 - r)  # exp(2 atanh r)
    np.log(q, out=q)
    q *= np.sqrt(overlap, dtype=np.float32)
    np.exp(q, out=q)  # exp(2 atanh(r) sqrt(overlap))
    np.subtract(q, 1, out=r)
    q += 1
    return np.divide(r, q, out=r)


def _conj_spectra(images: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``conj(rfft2(images, s=shape))`` without transforming the rows of zeros that pad an ``a × a`` image.

    ``rfft2`` transforms the last axis first, then the other: the same two passes, the first over the image's
    own rows only (a fraction ``a / Py`` of the buffer), give the same numbers.
    """
    from scipy import fft

    rows = fft.rfft(images, n=shape[1], axis=-1)
    spectra = fft.fft(rows, n=shape[0], axis=-2)
    return np.conj(spectra, out=spectra)


def _directional_terms(spec: _FixedSpectra, mask_spectra: np.ndarray, back: Callable[[np.ndarray], np.ndarray],
                       inverse: np.ndarray, c: np.ndarray, s: np.ndarray, inv_n: np.ndarray, floor: np.ndarray,
                       enough: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance (times the count) and validity of ``c·∂x + s·∂y`` of the fixed image over each overlap.

    The sums of ``∂x``, ``∂y``, ``∂x²``, ``∂y²``, ``∂x·∂y`` are computed once per distinct mask; their
    combination depends on each image's direction ``(c, s)``.
    """
    sums = back(np.concatenate([spec.f1[2:], spec.f2[2:]])[None] * mask_spectra)[inverse]  # (A, 5, Vy, Vx)
    total = c * sums[:, 0] + s * sums[:, 1]
    squares = c * c * sums[:, 2] + s * s * sums[:, 3] + 2 * c * s * sums[:, 4]
    mean = total * inv_n
    var = squares - total * mean
    return mean, var, (var > floor) & enough


# ------------------------------------------------------------------------------------------------ poses


@dataclass(frozen=True, slots=True)
class _Pose:
    """A pose at one level: the moving image's centre lands on working px ``centre_xy``."""

    value: float  # ranked NCC in its channel
    channel: int
    angle: float  # radians
    scale: float
    centre_xy: tuple[float, float]
    intensity_ncc: float  # signed; NaN when undefined
    overlap: float


def _pose_points(level: _Level, poses: list[_Pose]) -> np.ndarray:
    """Where each pose puts a 5×5 grid spanning the moving image: working px, shape ``(N, 25, 2)``."""
    from .geometry import grid_xy

    rows, cols = level.moving_mask.shape
    grid = grid_xy((rows, cols)) - [(cols - 1) / 2, (rows - 1) / 2]  # reduced-moving px about the centre
    linear = _linears(level, np.array([p.angle for p in poses]), np.array([p.scale for p in poses]))
    centres = np.array([p.centre_xy for p in poses], float)
    return centres[:, None, :] + np.einsum("nij,gj->ngi", linear, grid)


def _suppress(level: _Level, poses: list[_Pose], exclusion: float, rim: float, keep: int) -> list[_Pose]:
    """Greedy non-maximum suppression over poses: the best ``keep`` mutually separated poses.

    Two poses are the same peak when their centres lie within ``exclusion`` working px (per axis), the angle moves
    the rim by no more than that, *and* the mean distance between where they put a 5×5 grid spanning the moving
    image is within it too. The grid test adds scale (one pose at the same centre and angle but half the scale
    puts the map elsewhere: a competitor); it is not allowed to merge poses the per-axis test separates, because
    the significance thresholds were set with that test and merging more would raise the peaks of unrelated pairs
    (on the calibration split the grid test alone passed an unrelated map, gap 0.034 -> 0.150).
    """
    if not poses:
        return []
    order = np.argsort([-p.value for p in poses], kind="stable")
    points = _pose_points(level, poses)
    angles = np.array([p.angle for p in poses])
    centres = np.array([p.centre_xy for p in poses], float)
    kept: list[int] = []
    for i in order:
        if kept:
            turn = np.abs((angles[kept] - angles[i] + math.pi) % (2 * math.pi) - math.pi)
            shift = np.abs(centres[kept] - centres[i]).max(axis=1)
            grid = np.linalg.norm(points[kept] - points[i], axis=-1).mean(axis=-1)
            if ((shift <= exclusion) & (rim * turn <= exclusion) & (grid <= exclusion)).any():
                continue
        kept.append(int(i))
        if len(kept) == keep:
            break
    return [poses[i] for i in kept]


@dataclass(frozen=True, slots=True, eq=False)
class _Maps:
    """NCC maps of a batch of (angle, scale) samples over a translation range."""

    intensity: np.ndarray  # (A, Vy, Vx) signed intensity NCC
    ranked: np.ndarray  # (A, C, Vy, Vx)
    overlap: np.ndarray  # (A, Vy, Vx)
    angles: np.ndarray
    scales: np.ndarray
    centre_offset_xy: tuple[float, float]  # centre_xy = index (x, y) + this

    def pose(self, index: tuple[int, int, int, int], centre_xy: tuple[float, float] | None = None) -> _Pose:
        a, ch, vy, vx = index
        if centre_xy is None:
            centre_xy = (vx + self.centre_offset_xy[0], vy + self.centre_offset_xy[1])
        return _Pose(float(self.ranked[index]), ch, float(self.angles[a]), float(self.scales[a]), centre_xy,
                     float(self.intensity[a, vy, vx]), float(self.overlap[a, vy, vx]))


def _evaluate(level: _Level, angles: np.ndarray, scales: np.ndarray, origin_xy: tuple[int, int],
              radius: int, opts: _Options) -> _Maps:
    """NCC maps of the (angle, scale) samples for canvas origins ``origin_xy + [0, 2·radius]`` per axis."""
    canvas = _canvas_size(level, float(np.max(scales)))
    spec = _fixed_spectra(level, canvas, origin_xy, (2 * radius + 1, 2 * radius + 1))
    values, masks = _warp_stack(level, _linears(level, angles, scales), canvas)
    return _maps(spec, values, masks, angles, scales, _canvas_centre(level, canvas), opts)[0]


def _maps(spec: _FixedSpectra, values: np.ndarray, masks: np.ndarray, angles: np.ndarray, scales: np.ndarray,
          centre: np.ndarray, opts: _Options, shared: _Shared | None = None) -> tuple[_Maps, _Shared]:
    """NCC maps; ``centre`` is the moving centre's canvas position (map index + origin + centre = pose).

    Also returns the batch's terms that a later call over other channels uses again (``shared``).
    """
    angles = np.asarray(angles, float)
    directions = np.column_stack([np.cos(angles), np.sin(angles)])  # the moving x axis, in working px
    intensity, ranked, overlap, shared = _masked_ncc(spec, values, masks, directions, opts.channels,
                                                     opts.min_overlap, opts.min_contrast, shared)
    offset = (spec.origin_xy[0] + float(centre[0]), spec.origin_xy[1] + float(centre[1]))
    return _Maps(intensity, ranked, overlap, angles, np.asarray(scales, float), offset), shared


def _window_origin(level: _Level, centre_xy: tuple[float, float], scale: float,
                   radius: int) -> tuple[int, int]:
    centre = _canvas_centre(level, _canvas_size(level, scale))
    return (round(centre_xy[0] - centre[0]) - radius, round(centre_xy[1] - centre[1]) - radius)


def _parabolic(minus: float, centre: float, plus: float) -> float:
    """Offset of the vertex of the parabola through three equally spaced samples, within ±0.5."""
    if minus <= _INVALID or plus <= _INVALID:
        return 0.0
    curvature = minus - 2.0 * centre + plus
    if curvature >= 0:
        return 0.0
    return float(np.clip(0.5 * (minus - plus) / curvature, -0.5, 0.5))


def _vertex(minus: float, centre: float, plus: float) -> tuple[float, float]:
    """Offset (within ±0.5) and value of the vertex of the parabola through three equally spaced samples."""
    d = _parabolic(minus, centre, plus)
    return d, centre + (0.25 * (plus - minus) * d if d else 0.0)


def _interpolated_peak(ranked: np.ndarray) -> tuple[float, int, int, float, float]:
    """Peak of a 2-D map: ``(value, row, col, d_row, d_col)`` with sub-pixel offsets and value.

    A quadratic surface is fitted to the 3×3 samples around the maximum (least squares); its vertex gives the
    offsets (within ±0.5) and the value. The sub-pixel value matters when comparing maps (angles, scales): the
    sampled maximum is lower when the true peak falls between samples, which would bias the angle towards
    whatever puts the peak on a sample.
    """
    vy, vx = np.unravel_index(int(np.argmax(ranked)), ranked.shape)
    vy, vx = int(vy), int(vx)
    centre = float(ranked[vy, vx])
    rows, cols = ranked.shape
    if not (0 < vy < rows - 1 and 0 < vx < cols - 1):
        return centre, vy, vx, 0.0, 0.0
    patch = ranked[vy - 1 : vy + 2, vx - 1 : vx + 2].astype(np.float64)
    if (patch <= _INVALID).any():
        return centre, vy, vx, 0.0, 0.0
    coef = _QUADRATIC_FIT @ patch.ravel()  # c + a·x + b·y + d·x² + e·y² + f·x·y
    c, ax, by, dxx, eyy, fxy = coef
    hessian = np.array([[2 * dxx, fxy], [fxy, 2 * eyy]])
    if np.linalg.det(hessian) <= 0 or dxx >= 0:
        return centre, vy, vx, 0.0, 0.0
    dx, dy = np.clip(np.linalg.solve(hessian, [-ax, -by]), -0.5, 0.5)
    value = c + ax * dx + by * dy + dxx * dx * dx + eyy * dy * dy + fxy * dx * dy
    return float(max(value, centre)), vy, vx, float(dy), float(dx)


def _quadratic_fit_matrix() -> np.ndarray:
    y, x = np.mgrid[-1:2, -1:2]
    x, y = x.ravel().astype(float), y.ravel().astype(float)
    design = np.column_stack([np.ones(9), x, y, x * x, y * y, x * y])
    return np.linalg.pinv(design)


_QUADRATIC_FIT = _quadratic_fit_matrix()


# ------------------------------------------------------------------------------------------------- search


@dataclass(frozen=True, slots=True)
class _Options:
    min_overlap: float
    min_contrast: float
    angle_step_px: float
    exclusion_fraction: float
    n_candidates: int
    n_refine: int
    channels: tuple[int, ...] = (0, 1)  # indices into CHANNELS
    chunk: int = 32  # angles per batch (a multiple of 4): small batches stay in cache (faster than 64 or 176)
    deadline: Deadline | None = None  # checked before every batch


@dataclass(frozen=True, slots=True, eq=False)
class _Grid:
    """The samples of the sweep, shared by its passes over the pairings: the rotated (and scaled) moving
    images on their canvases and the fixed spectra over every feasible translation."""

    angles: tuple[np.ndarray, ...]  # per scale, the angles sampled (radians, in batching order)
    scales: np.ndarray  # (n_scales,)
    stacks: tuple[tuple[np.ndarray, np.ndarray], ...]  # per scale, the warped values and masks
    spec: _FixedSpectra
    centre: np.ndarray  # the moving centre's canvas position
    n_angles: int  # angles over 360° at this level's step (the samples may be a shortlist of them)
    rim: float
    exclusion: float


@dataclass(frozen=True, slots=True)
class _Sweep:
    poses: tuple[tuple[_Pose, ...], ...]  # per channel, mutually separated, best first
    mean_std: tuple[tuple[float, float], ...]  # per channel, of the ranked NCC over every valid sample
    n_angles: int
    rim: float
    exclusion: float
    channels: tuple[int, ...] = ()  # the channels swept (the others have no poses)

    def merged(self, other: _Sweep) -> _Sweep:
        """This sweep with the channels ``other`` swept taken from ``other`` (same samples)."""
        take = [ch in other.channels for ch in range(len(CHANNELS))]
        return _Sweep(tuple(b if t else a for a, b, t in zip(self.poses, other.poses, take)),
                      tuple(b if t else a for a, b, t in zip(self.mean_std, other.mean_std, take)),
                      self.n_angles, self.rim, self.exclusion, tuple(sorted({*self.channels, *other.channels})))


def _angle_count(rim: float, step_px: float) -> int:
    """Angles over 360° so that consecutive angles move the rim by at most ``step_px``."""
    return 4 * max(2, math.ceil(2 * math.pi * rim / step_px / 4))


def _scale_samples(scale: float, scale_range: float, rim: float, step_px: float) -> np.ndarray:
    """Geometric samples of [scale / r, scale · r] moving the rim by at most ``step_px`` per step."""
    if scale_range <= 1.0:
        return np.array([scale])
    n = max(3, math.ceil(2 * math.log(scale_range) / math.log1p(step_px / rim)) + 1)
    return scale * scale_range ** np.linspace(-1.0, 1.0, n)


def _batch_peaks(maps: _Maps, ch: int, exclusion: float) -> list[_Pose]:
    """Per angle, the best translation and the best one outside its exclusion window (vectorised).

    Non-maximum suppression across angles happens later (:func:`_suppress`); two peaks per angle are enough
    for the separated second-best peak unless three distinct peaks share one angle.
    """
    ranked = maps.ranked[:, ch]
    n, _, cols = ranked.shape
    flat = ranked.reshape(n, -1)
    first = flat.argmax(axis=1)
    fy, fx = np.divmod(first, cols)
    e = int(math.floor(exclusion))
    outside = ranked.copy()
    for a in range(n):  # the window about each first peak, excluded
        outside[a, max(0, fy[a] - e) : fy[a] + e + 1, max(0, fx[a] - e) : fx[a] + e + 1] = _INVALID
    second = outside.reshape(n, -1).argmax(axis=1)
    out = []
    for a in range(n):
        for index in (first[a], second[a]):
            vy, vx = divmod(int(index), cols)
            if ranked[a, vy, vx] > _INVALID:
                out.append(maps.pose((a, ch, vy, vx)))
    return out


def _feasible_origins(masks: np.ndarray, n: int, min_overlap: float, axis: int) -> tuple[int, int]:
    """Canvas origins along one axis where some mask can overlap ``[0, n)`` by ``min_overlap`` of its area.

    The 2-D overlap is at most the 1-D one, so no translation outside this range can qualify.
    """
    profile = masks.sum(axis=axis)  # (A, a): mass per column (axis=1) or per row (axis=2)
    a = profile.shape[-1]
    table = np.concatenate([np.zeros((profile.shape[0], 1)), np.cumsum(profile, axis=-1)], axis=-1)
    origins = np.arange(1 - a, n)
    inside = table[:, np.clip(n - origins, 0, a)] - table[:, np.clip(-origins, 0, a)]
    ok = np.nonzero((inside >= min_overlap * table[:, -1:] - 1e-6).any(axis=0))[0]
    if ok.size == 0:
        raise EstimationError(f"The moving image cannot overlap the fixed image by {min_overlap:.0%}.")
    return int(origins[ok[0]]), int(origins[ok[-1]])


def _grid(level: _Level, scale: float, scale_range: float, opts: _Options,
          shortlist: tuple[_Pose, ...] | None = None, near: tuple[float, float] = (0.0, 0.0)) -> _Grid:
    """Every angle (and scale) of the sweep, warped once, and the translations where an overlap can qualify.

    With ``shortlist``, only the samples within ``near = (angle, log scale)`` of one of its poses (a coarser
    sweep's best): the same angles and scales, fewer of them.
    """
    rim = _rim_radius(level, scale)
    n_angles = _angle_count(rim, opts.angle_step_px)
    quarter = n_angles // 4  # batch θ, θ+90°, θ+180°, θ+270° together: they often share one mask
    order = (np.arange(quarter)[:, None] + quarter * np.arange(4)[None, :]).ravel()
    angles = order * (2 * math.pi / n_angles)
    scales = _scale_samples(scale, scale_range, rim, 2 * opts.angle_step_px)  # refined afterwards
    sampled = tuple(angles for _ in scales)
    if shortlist is not None:  # each pose's own sample is near it: some scale keeps an angle
        sampled = tuple(angles[_near_poses(angles, s, shortlist, near)] for s in scales)
        scales, sampled = scales[[a.size > 0 for a in sampled]], tuple(a for a in sampled if a.size)
    side = min(level.moving_mask.shape) * scale * min(level.fixed_k) / max(level.moving_k)
    exclusion = max(2.0, opts.exclusion_fraction * side)
    canvas = _canvas_size(level, float(scales.max()))
    stacks = tuple(_warp_stack(level, _linears(level, a, np.full(a.size, s)), canvas)
                   for s, a in zip(scales, sampled))
    rows, cols = level.fixed_mask.shape
    spans = np.array([[*_feasible_origins(m, cols, opts.min_overlap, 1),
                       *_feasible_origins(m, rows, opts.min_overlap, 2)] for _, m in stacks])
    x_lo, y_lo = int(spans[:, 0].min()), int(spans[:, 2].min())
    spec = _fixed_spectra(level, canvas, (x_lo, y_lo),
                          (int(spans[:, 1].max()) - x_lo + 1, int(spans[:, 3].max()) - y_lo + 1))
    return _Grid(sampled, scales, stacks, spec, _canvas_centre(level, canvas), n_angles, rim, exclusion)


def _near_poses(angles: np.ndarray, scale: float, poses: tuple[_Pose, ...], near: tuple[float, float]) -> np.ndarray:
    """Indices of ``angles`` within ``near[0]`` radians of a pose whose scale is within a factor ``exp(near[1])``
    of ``scale`` (in the order of ``angles``)."""
    close = np.zeros(angles.size, bool)
    for pose in poses:
        if abs(math.log(scale / pose.scale)) <= near[1] + 1e-9:
            turn = np.abs((angles - pose.angle + math.pi) % (2 * math.pi) - math.pi)
            close |= turn <= near[0] + 1e-9
    return np.flatnonzero(close)


def _sweep(level: _Level, grid: _Grid, channels: tuple[int, ...], opts: _Options,
           shared: tuple[_Shared, ...] = (), later: tuple[int, ...] = ()) -> tuple[_Sweep, tuple[_Shared, ...]]:
    """One pass of the sweep over ``channels``: the best separated poses and the NCC statistics of each.

    ``shared`` holds, per batch, the terms an earlier pass computed; the terms channels ``later`` would use
    again are returned the same way (nothing when ``later`` is empty).
    """
    from dataclasses import replace

    opts = replace(opts, channels=channels)
    poses: list[list[_Pose]] = [[] for _ in CHANNELS]
    moments = np.zeros((len(CHANNELS), 3))
    keep = opts.n_candidates + 3
    batches = [(s, angles, values, masks, slice(start, start + opts.chunk))
               for s, angles, (values, masks) in zip(grid.scales, grid.angles, grid.stacks)
               for start in range(0, len(masks), opts.chunk)]
    kept_terms = []
    for b, (s, angles, values, masks, part) in enumerate(batches):
        if opts.deadline is not None:
            opts.deadline.check("the search")
        maps, terms = _maps(grid.spec, values[part], masks[part], angles[part], np.full(len(masks), s)[part],
                            grid.centre, opts, shared[b] if shared else None)
        if later:
            kept_terms.append(_pruned(terms, later))
        for ch in channels:
            ranked = maps.ranked[:, ch]
            n_invalid = ranked.size - np.count_nonzero(ranked > _INVALID)  # those hold exactly _INVALID
            moments[ch] += (ranked.size - n_invalid, ranked.sum(dtype=np.float64) - n_invalid * _INVALID,
                            np.square(ranked).sum(dtype=np.float64) - n_invalid * _INVALID**2)
            poses[ch] += _batch_peaks(maps, ch, grid.exclusion)
    mean_std = []
    for count, total, squares in moments:
        mean = total / max(count, 1)
        mean_std.append((mean, math.sqrt(max(squares / max(count, 1) - mean * mean, 0.0))))
    kept = tuple(tuple(_suppress(level, p, grid.exclusion, grid.rim, keep)) for p in poses)
    return _Sweep(kept, tuple(mean_std), grid.n_angles, grid.rim, grid.exclusion, channels), tuple(kept_terms)


def _pruned(terms: _Shared, channels: tuple[int, ...]) -> _Shared:
    """``terms`` without the moving and fixed terms that ``channels`` do not use (they are large)."""
    from dataclasses import replace

    fixed = {_FIXED_OF[ch] for ch in channels if _FIXED_OF[ch] is not None}
    return replace(terms, moving={m: terms.moving[m] for m in {_MOVING_OF[ch] for ch in channels}
                                  if m in terms.moving},
                   fixed={f: terms.fixed[f] for f in fixed if f in terms.fixed})


def _by_z_score(sweep: _Sweep) -> list[int]:
    """Every channel, the one whose sweep maximum has the largest z-score first (undefined ones last, in order)."""
    z = [_significance(sweep, ch)[2] for ch in range(len(CHANNELS))]
    return sorted(range(len(CHANNELS)), key=lambda ch: -z[ch] if np.isfinite(z[ch]) else np.inf)


def _winner(sweep: _Sweep) -> int:
    """The channel whose sweep maximum has the largest z-score (0 when none is defined)."""
    return _by_z_score(sweep)[0]


def _stands_out(sweep: _Sweep, ch: int, min_gap: float, min_ratio: float) -> bool:
    """The pairing's sweep maximum exceeds its best separated peak by more than ``min_gap`` and ``min_ratio`` (the
    verdict's test of a search match, :class:`~autoreg.config.RegistrationConfig`)."""
    best, second, _, ratio, _ = _significance(sweep, ch)
    return bool(best - second > min_gap and ratio > min_ratio)


def _first_pass_decides(sweep: _Sweep, min_gap: float, min_ratio: float, same_contrast: float,
                        intensity_same_contrast: float) -> bool:
    """A first-pass peak stands out (:func:`_stands_out`) where the contrast is the same: the intensity pairing's
    own peak, where the intensities correlate with |r| >= ``intensity_same_contrast``, or the winner's (the
    gradient magnitudes'), where they correlate with |r| >= ``same_contrast``."""
    intensity = CHANNELS.index("intensity")
    if _stands_out(sweep, intensity, min_gap, min_ratio) and abs(
            sweep.poses[intensity][0].intensity_ncc) >= intensity_same_contrast:
        return True
    ch = _winner(sweep)
    return (ch != intensity and _stands_out(sweep, ch, min_gap, min_ratio)
            and abs(sweep.poses[ch][0].intensity_ncc) >= same_contrast)


def _with_second_pass(first: _Sweep, second: _Sweep, min_gap: float, min_ratio: float) -> _Sweep:
    """The two passes' sweeps as one, unless the first pass's intensity peak stood out and the winner of every
    pairing (the larger z-score) does not stand out further (a larger gap to its best separated peak): the first
    pass is then kept as it is. A z-score alone does not overturn a standing intensity peak: on a lattice the
    derivative's maximum can have the larger z-score a period off."""
    merged = first.merged(second)
    intensity = CHANNELS.index("intensity")
    if not _stands_out(first, intensity, min_gap, min_ratio):
        return merged
    ch = _winner(merged)
    if _stands_out(merged, ch, min_gap, min_ratio) and _gap(merged, ch) > _gap(first, intensity):
        return merged
    return first


def _gap(sweep: _Sweep, ch: int) -> float:
    """The pairing's sweep maximum minus its best separated peak."""
    best, second, _, _, _ = _significance(sweep, ch)
    return best - second


def _significance(sweep: _Sweep, ch: int) -> tuple[float, float, float, float, float]:
    """(best, second separated, z-score, ratio, gap z-score) of one channel; NaN where undefined."""
    poses = sweep.poses[ch]
    if not poses:
        return (math.nan,) * 5
    best = poses[0].value
    second = poses[1].value if len(poses) > 1 else math.nan
    mean, std = sweep.mean_std[ch]
    z = (best - mean) / std if std > 0 else math.nan
    ratio = best / second if second > 0 else math.inf
    gap_z = (best - second) / std if std > 0 else math.nan
    return best, second, z, ratio, gap_z


def _refine_samples(level: _Level, pose: _Pose, angles: np.ndarray, scales: np.ndarray, vary_angle: bool,
                    radius: int, opts: _Options) -> _Pose:
    """Best of a 1-D set of samples (angles or scales) in a translation window, with parabolic vertices."""
    from dataclasses import replace

    origin = _window_origin(level, pose.centre_xy, float(scales.max()), radius)
    only = replace(opts, channels=tuple(sorted({0, pose.channel})))  # the pose's channel (intensity: its sign)
    maps = _evaluate(level, angles, scales, origin, radius, only)
    peaks = [_interpolated_peak(maps.ranked[j, pose.channel]) for j in range(len(angles))]
    values = np.array([peak[0] for peak in peaks])
    j = int(np.argmax(values))
    value, vy, vx, dy, dx = peaks[j]
    if maps.ranked[j, pose.channel, vy, vx] <= _INVALID:
        return pose
    centre = (vx + dx + maps.centre_offset_xy[0], vy + dy + maps.centre_offset_xy[1])
    best = replace(maps.pose((j, pose.channel, vy, vx), centre), value=float(value))
    d = _parabolic(values[j - 1], values[j], values[j + 1]) if 0 < j < len(values) - 1 else 0.0
    if vary_angle:
        return replace(best, angle=float(angles[j] + d * (angles[1] - angles[0])))
    return replace(best, scale=float(scales[j] * (scales[1] / scales[0]) ** d))


def _refine_pose(level: _Level, pose: _Pose, angle_step: float, scale_step: float | None, n: int,
                 radius: int, opts: _Options) -> _Pose:
    """Refine the angle (``2n + 1`` samples ``angle_step`` apart), then the scale, in a window."""
    offsets = np.arange(-n, n + 1)
    pose = _refine_samples(level, pose, pose.angle + offsets * angle_step, np.full(offsets.size, pose.scale),
                           True, radius, opts)
    if scale_step is not None:
        pose = _refine_samples(level, pose, np.full(offsets.size, pose.angle),
                               pose.scale * scale_step ** offsets.astype(float), False, radius, opts)
    return pose


def _to_level(pose: _Pose, old: _Level, new: _Level) -> _Pose:
    """The same pose with its centre in the working pixels of another level."""
    from dataclasses import replace

    centre = np.array([*pose.centre_xy, 1.0])
    moved = _centre_scaling(new.fixed_k) @ np.linalg.inv(_centre_scaling(old.fixed_k)) @ centre
    return replace(pose, centre_xy=(float(moved[0]), float(moved[1])))


def _inverted(pose: _Pose) -> bool:
    """The moving contrast is inverted: a negative intensity NCC, on a channel that compares like with like."""
    return CHANNELS[pose.channel] not in CROSS_CHANNELS and bool(pose.intensity_ncc < 0)


def _candidate(level: _Level, pose: _Pose) -> SearchCandidate:
    return SearchCandidate(
        moving_to_fixed=_pose_matrix(level, pose.angle, pose.scale, np.array(pose.centre_xy)),
        score=pose.value, angle_deg=math.degrees(pose.angle) % 360.0, scale=pose.scale,
        channel=CHANNELS[pose.channel], inverted=_inverted(pose), overlap_fraction=pose.overlap)


def search_similarity(
    fixed: np.ndarray,
    moving: np.ndarray,
    *,
    scale: float,
    scale_range: float = 1.0,
    min_overlap: float = 0.3,
    angle_step_px: float = 1.0,
    sweep_px: int = 48,
    max_fixed_px: int = 160,
    exclusion_fraction: float = 0.1,
    min_contrast: float = 1e-3,
    n_candidates: int = 5,
    n_refine: int = 3,
    channels: tuple[str, ...] = CHANNELS,
    first_pass_gap: float | None = 0.10,
    first_pass_ratio: float = 1.20,
    first_pass_same_contrast: float = 0.5,
    first_pass_intensity_same_contrast: float = 0.8,
    prune_px: int | None = None,
    deadline: Deadline | None = None,
) -> SearchResult:
    """Find rotation and translation (and optionally scale) of ``moving`` in ``fixed`` exhaustively.

    Parameters
    ----------
    fixed, moving : array_like of shape (rows, cols)
        The two images; NaN marks missing pixels. Raw or already levelled (a plane is removed either way).
    scale : float
        Expected size of one moving pixel in fixed pixels (25.6 for a 40×40 map of a 1024² scan's field;
        1.0 for the same resolution).
    scale_range : float, default 1.0
        1.0 when the scale is known exactly (pixel sizes in the metadata). ``r > 1`` also sweeps the scale
        geometrically over ``[scale / r, scale · r]`` (e.g. 1.15 when the scale comes from the image-size
        ratio). Scales are sampled two rim pixels apart (5 samples for 1.15 on a 40 px map) and the best
        pose is refined in scale; each sample costs one more rotation sweep.
    min_overlap : float, default 0.3
        Minimum fraction of the moving image's valid area that must lie on valid fixed pixels. Small
        overlaps give high NCC by chance; 30 % still admits a map that extends well beyond the fixed image.
    angle_step_px : float, default 1.0
        Rotation step of the sweep, as the displacement (working px) of the moving image's farthest pixel
        centre. One pixel keeps the true angle within half a pixel at the rim of a sampled angle; the best
        poses are then refined with a quarter of the step.
    sweep_px : int, default 48
        Largest side of the moving image during the sweep; larger moving images are area-averaged down for
        the sweep and the pose is refined at full resolution. The cost grows with the cube of this size; 48
        keeps a 64 px map under ~0.3 s and leaves 40×40 maps at their own resolution.
    max_fixed_px : int, default 160
        Largest side of the reduced fixed image during the sweep (bounds the translation range's cost when the
        moving image covers a small part of the fixed image).
    exclusion_fraction : float, default 0.1
        Two poses are the same peak when their centres are within this fraction of the moving image's side
        (at least 2 working px), the angle moves the rim by no more than that, and the mean distance between
        where they put a 5×5 grid spanning the moving image is within it too (scale); the second-best peak
        used for significance must be separated from the best by more.
    min_contrast : float, default 1e-3
        Translations where either image's variance over the overlap is below this fraction of its overall
        variance are skipped (NCC undefined on a flat overlap).
    n_candidates : int, default 5
        Separated poses returned in ``candidates``.
    n_refine : int, default 3
        Best separated poses of the sweep that are refined with a finer angle step; the best refined wins
        (the sweep's ranking can swap two close peaks).
    channels : tuple of str, default all of :data:`CHANNELS`
        Which pairings to correlate; ``"intensity"`` is always one. ``"gradient"``: both gradient magnitudes
        (contrast that differs but shares edges); ``"edges"``: the fixed gradient magnitude against the moving
        intensity (the moving image is an edge map); ``"derivative"``: the fixed image's signed derivative
        along the moving image's x axis against the moving intensity, either sign (the moving image is an
        error signal such as AFM deflection, the slope along the fast scan axis).
    first_pass_gap, first_pass_ratio : float, default 0.10 and 1.20
    first_pass_same_contrast, first_pass_intensity_same_contrast : float, default 0.5 and 0.8
        The sweep runs in two passes over the pairings: ``intensity`` and ``gradient`` first, then the
        cross-modal ones (:data:`CROSS_CHANNELS`) unless a first-pass peak stands out, i.e.
        ``peak_gap > first_pass_gap and peak_ratio > first_pass_ratio`` there (the verdict's test of a search
        match, ``min_peak_gap`` and ``min_peak_ratio`` of the configuration), *and* the contrast is the same: the
        intensity pairing's own peak stands out where the intensities correlate with |r| at least
        ``first_pass_intensity_same_contrast``, or the winner's does where they correlate with |r| at least
        ``first_pass_same_contrast`` (the configuration's ``search_intensity_same_contrast`` and
        ``search_same_contrast``). A deflection map's gradient magnitude matches the topography's about a pixel
        off while its intensities do not correlate there (|r| ≤ 0.3 on the tests' pairs, 0.39 or less on the
        benchmark's tuning splits, where same-contrast maps read as little as 0.15 at the search's working
        resolution), and its intensities match the topography's a few pixels beside the truth (|r| 0.42-0.64 at
        peaks that stood out); its derivative pairing does not miss. When the second pass runs, the result is that
        of one pass over every pairing — unless the intensity pairing's peak stood out and the winner of every
        pairing does not stand out further (a larger ``peak_gap``): then, as when the second pass does not run,
        that of ``intensity`` and ``gradient`` alone. ``first_pass_gap=None`` always runs both passes and takes
        every pairing's winner.
    prune_px : int, optional
        When the sweep's moving image is at least 1.3× this size, a sweep at this size (the same angle step in rim
        pixels, so fewer angles, on smaller images: half the angles and a quarter the area for a 48 px sweep at
        24) runs first, and the full sweep then samples only the angles and scales within one of that sweep's
        steps of its best separated poses, per pass. The peak's significance is taken over those samples: a
        competitor the coarser sweep did not rank among its best is not seen. None (default) samples every angle
        and scale.
    deadline : Deadline, optional
        Checked before every batch of the sweep (32 angles, a few to a few tens of milliseconds each): once it has
        expired the search stops with :class:`~autoreg.errors.TimeBudgetExceeded`, returning nothing (the
        significance of a peak is only known over the whole sweep).

    Returns
    -------
    SearchResult

    Raises
    ------
    InputError
        An image is not 2-D, has fewer than 16 finite pixels, or an option is out of range.
    EstimationError
        No translation overlaps the fixed image by ``min_overlap`` with contrast on both sides, or OpenCV or
        NumPy fails.
    TimeBudgetExceeded
        ``deadline`` expired during the sweep.

    Notes
    -----
    The NCC is Padfield's masked NCC (IEEE TIP 2012) computed with FFTs over all translations at once, batched
    over angles. The significance figures come from the sweep's own sampling (best and second-best separated
    poses, and the distribution of every valid NCC sample in the winning channel), so they compare across
    pairs; ``score`` is the refined NCC. The channel with the larger z-score wins.
    """
    fixed_data, moving_data = _check_image(fixed, "fixed"), _check_image(moving, "moving")
    _check_options(scale, scale_range, min_overlap, angle_step_px, sweep_px, max_fixed_px)
    if prune_px is not None and prune_px < 8:
        raise InputError(f"prune_px must be at least 8 (or None: no pruning sweep); got {prune_px}.")
    unknown = sorted(set(channels) - set(CHANNELS))
    if unknown or "intensity" not in channels:
        raise InputError(f"Search channels must include intensity and be among {', '.join(CHANNELS)}; "
                         f"got {', '.join(channels)}.")
    if first_pass_gap is not None and not all(math.isfinite(v) for v in (
            first_pass_gap, first_pass_ratio, first_pass_same_contrast, first_pass_intensity_same_contrast)):
        raise InputError(f"The first pass's gap, ratio and same-contrast bounds must be finite numbers; got "
                         f"{first_pass_gap}, {first_pass_ratio}, {first_pass_same_contrast} and "
                         f"{first_pass_intensity_same_contrast}.")
    opts = _Options(min_overlap, min_contrast, angle_step_px, exclusion_fraction, n_candidates,
                    max(1, n_refine), tuple(i for i, name in enumerate(CHANNELS) if name in channels),
                    deadline=deadline)
    pixels = _level_pixels(fixed_data.shape, moving_data.shape, scale, sweep_px, max_fixed_px)
    coarse = _make_level(fixed_data, moving_data, pixels[0], scale)
    first = tuple(ch for ch in opts.channels if CHANNELS[ch] not in CROSS_CHANNELS)
    later = tuple(ch for ch in opts.channels if CHANNELS[ch] in CROSS_CHANNELS)

    def decided(sweep: _Sweep) -> bool:
        return bool(first_pass_gap is not None
                    and _first_pass_decides(sweep, first_pass_gap, first_pass_ratio, first_pass_same_contrast,
                                            first_pass_intensity_same_contrast))

    def with_second_pass(sweep: _Sweep, second: _Sweep) -> _Sweep:
        if first_pass_gap is None:  # one pass over every pairing
            return sweep.merged(second)
        return _with_second_pass(sweep, second, first_pass_gap, first_pass_ratio)

    factor = max(coarse.moving_mask.shape) / prune_px if prune_px else 0.0
    if factor < _MIN_PRUNE_FACTOR:  # every sample of the sweep
        grid = _grid(coarse, scale, scale_range, opts)
        sweep, shared = _sweep(coarse, grid, first, opts, later=later)  # keeps what the later pass would reuse
        if later and not decided(sweep):
            sweep = with_second_pass(sweep, _sweep(coarse, grid, later, opts, shared)[0])
        del shared
    else:  # the samples near a coarser sweep's best poses
        pre = _make_level(fixed_data, moving_data, pixels[0] * factor, scale)
        pre_grid = _grid(pre, scale, scale_range, opts)
        near = (2 * math.pi / pre_grid.n_angles, _log_step(pre_grid.scales))
        pre_sweep, pre_shared = _sweep(pre, pre_grid, first, opts, later=later)
        shortlist = _best_of(pre_sweep, first)
        if not shortlist:
            raise _nothing_to_compare(opts)
        sweep = _sweep(coarse, _grid(coarse, scale, scale_range, opts, shortlist, near), first, opts)[0]
        if later and not decided(sweep):
            shortlist = _best_of(_sweep(pre, pre_grid, later, opts, pre_shared)[0], later)
            if shortlist:  # else those pairings have no defined pose, as a full sweep of them would find
                sweep = with_second_pass(sweep, _sweep(coarse, _grid(coarse, scale, scale_range, opts, shortlist,
                                                                     near), later, opts)[0])
        del pre_shared
    if not any(sweep.poses):
        raise _nothing_to_compare(opts)
    ch = _winner(sweep)  # the larger z-score wins
    best, second, z, ratio, gap_z = _significance(sweep, ch)
    if not sweep.poses[ch]:
        raise EstimationError("No pose of the sweep has a defined NCC; the images have no usable contrast.")
    level, pose = _refine_best(coarse, sweep, ch, fixed_data, moving_data, pixels, scale, scale_range > 1, opts)
    candidates = tuple(_candidate(coarse, p) for p in sweep.poses[ch][: opts.n_candidates])
    others = tuple(_candidate(coarse, sweep.poses[c][0]) for c in _by_z_score(sweep) if c != ch and sweep.poses[c])
    return SearchResult(
        moving_to_fixed=_pose_matrix(level, pose.angle, pose.scale, np.array(pose.centre_xy)),
        score=pose.value, z_score=z, second_score=second, peak_ratio=ratio, peak_gap=best - second,
        gap_z_score=gap_z, angle_deg=math.degrees(pose.angle) % 360.0, scale=pose.scale,
        inverted=_inverted(pose),
        channel=CHANNELS[ch], overlap_fraction=pose.overlap, working_pixel=pixels[0], n_angles=sweep.n_angles,
        candidates=candidates, others=others)


def _nothing_to_compare(opts: _Options) -> EstimationError:
    return EstimationError(f"No translation overlaps the fixed image by {opts.min_overlap:.0%} of the moving image "
                           "with contrast on both sides; nothing to compare.")


#: Pruning pays once the coarser sweep is this many times coarser: each of its samples costs about 1/factor² as
#: much, and its shorter rim needs about 1/factor as many angles (and scales). At 1.3 (maps of 32 px or more at
#: ``prune_px`` 24) a 40×40 map's search took 1.4-1.8× less CPU and a 32 px map's 1.1-1.5× less than every sample
#: (three runs on ``tests/bench/bench_search.py``'s cases), with the same pose and peak gap. Smaller sweeps are not
#: pruned: the coarser one would be barely coarser.
_MIN_PRUNE_FACTOR = 1.3


def _log_step(scales: np.ndarray) -> float:
    """Logarithm of the ratio between consecutive scale samples (0 for a single scale)."""
    return float(math.log(scales[1] / scales[0])) if scales.size > 1 else 0.0


def _best_of(sweep: _Sweep, channels: tuple[int, ...]) -> tuple[_Pose, ...]:
    """The best separated poses of a sweep's ``channels``: where a finer sweep looks."""
    return tuple(p for ch in channels for p in sweep.poses[ch])


def _refine_best(coarse: _Level, sweep: _Sweep, ch: int, fixed: np.ndarray, moving: np.ndarray,
                 pixels: list[float], scale: float, ranged: bool, opts: _Options) -> tuple[_Level, _Pose]:
    """Refine the sweep's best poses at the sweep's level, then the winner at each finer level."""
    scale_step = 1 + opts.angle_step_px / (2 * sweep.rim) if ranged else None
    refined = [_refine_pose(coarse, p, math.pi / (2 * sweep.n_angles), scale_step, 3, 2, opts)
               for p in sweep.poses[ch][: opts.n_refine]]
    level, pose = coarse, max(refined, key=lambda p: p.value)
    for pixel in pixels[1:]:
        finer = _make_level(fixed, moving, pixel, scale)
        pose = _to_level(pose, level, finer)
        rim = _rim_radius(finer, pose.scale)
        step = 1 + opts.angle_step_px / (2 * rim) if ranged else None
        radius = math.ceil(level.pixel / pixel) + 1
        pose = _refine_pose(finer, pose, opts.angle_step_px / (2 * rim), step, 2, radius, opts)
        level = finer
    if len(pixels) > 1:  # the angle peak is sharp at full resolution: a second, finer pass
        rim = _rim_radius(level, pose.scale)
        pose = _refine_pose(level, pose, opts.angle_step_px / (8 * rim), None, 2, 2, opts)
    return level, pose


def _check_options(scale: float, scale_range: float, min_overlap: float, angle_step_px: float, sweep_px: int,
                   max_fixed_px: int) -> None:
    if not (math.isfinite(scale) and scale > 0):
        raise InputError(f"The scale must be a positive number of fixed pixels per moving pixel; "
                         f"got {scale}.")
    if not (math.isfinite(scale_range) and 1.0 <= scale_range <= 4.0):
        raise InputError(f"The scale range must be between 1 and 4; got {scale_range}.")
    if not 0 < min_overlap <= 1:
        raise InputError(f"The minimum overlap must be a fraction in (0, 1]; got {min_overlap}.")
    if not 0 < angle_step_px <= 4:
        raise InputError(f"The angle step must be between 0 and 4 rim pixels; got {angle_step_px}.")
    if sweep_px < 8 or max_fixed_px < 8:
        raise InputError(f"sweep_px and max_fixed_px must be at least 8; got {sweep_px} and {max_fixed_px}.")
