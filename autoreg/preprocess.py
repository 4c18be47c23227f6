"""Preprocessing: masks, flattening, robust normalisation, and comparable-resolution working views.

The working views are for the feature detector only. They bring both images to one pixel scale (the
coarser image's resolution decides how fine it is worth looking), blur the finer image down to the
coarser one's resolution, remove plane tilt and equalise contrast (CLAHE on 8 bits). Each view carries
the matrix that maps its pixel coordinates back to the original image's pixel coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import RegistrationConfig
from .datatypes import Image
from .units import pixel_size_ratio

__all__ = [
    "WorkingView",
    "valid_mask",
    "fill_invalid",
    "level",
    "Reduced",
    "reduced",
    "rescaled",
    "scan_line_contrast",
    "robust_unit_range",
    "to_uint8",
    "expected_scale",
    "working_scales",
    "make_working_view",
    "resize_matrix",
    "resize_valid",
]


@dataclass(frozen=True, slots=True, eq=False)
class Reduced:
    """A levelled copy of an image at a coarser (or the same) pixel size, for the search and the refinement.

    Attributes
    ----------
    data : ndarray of float32, shape (h, w)
        Levelled values, NaN where there is no data.
    to_original : ndarray of shape (3, 3)
        Maps reduced pixel (x, y) to original pixel (x, y).
    steps : tuple of str
        What levelling did.
    """

    data: np.ndarray
    to_original: np.ndarray
    steps: tuple[str, ...]

    @property
    def from_original(self) -> np.ndarray:
        """Maps original pixel (x, y) to reduced pixel (x, y)."""
        return np.linalg.inv(self.to_original)


@dataclass(frozen=True, slots=True, eq=False)
class WorkingView:
    """An 8-bit view of an image for the detector.

    Attributes
    ----------
    image8 : ndarray of uint8, shape (h, w)
        Contrast-equalised 8-bit view, for feature detectors.
    unit : ndarray of float32, shape (h, w)
        The same view before equalisation, scaled to [0, 1], for intensity-based registration.
    valid : ndarray of bool, shape (h, w)
        Where the view holds real data.
    to_original : ndarray of shape (3, 3)
        Maps view pixel (x, y) to original pixel (x, y).
    levelled : Reduced
        The levelled image before blurring and equalisation, at the smaller of the native and the working grid
        (the search and the refinement resample it instead of levelling again).
    """

    image8: np.ndarray
    unit: np.ndarray
    valid: np.ndarray
    to_original: np.ndarray
    levelled: Reduced

    @property
    def steps(self) -> tuple[str, ...]:
        """What levelling did (``"rows: median_difference"``, ``"background: order 1"``...), for the JSON."""
        return self.levelled.steps


def valid_mask(data: np.ndarray) -> np.ndarray:
    """True where ``data`` is finite."""
    return np.isfinite(data)


#: Gaussian sigma (px) of the neighbourhood that fills a missing pixel: scattered dropouts and small holes take the
#: local mean of their valid neighbours (normalised convolution), so they make no false corner and no false edge.
_FILL_SIGMA_PX = 2.0


def fill_invalid(data: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy of ``data`` as float32 with each invalid pixel set to the Gaussian-weighted mean of its valid
    neighbours (normalised convolution), or to the median of the valid pixels inside large holes."""
    import cv2

    out = np.asarray(data, np.float32).copy()
    if valid.all():
        return out
    if not valid.any():
        return np.zeros_like(out)
    weight = cv2.GaussianBlur(valid.astype(np.float32), (0, 0), _FILL_SIGMA_PX)
    total = cv2.GaussianBlur(np.where(valid, out, 0.0).astype(np.float32), (0, 0), _FILL_SIGMA_PX)
    near = weight > 1e-3
    out[~valid] = float(np.median(out[valid]))
    holes = ~valid & near
    out[holes] = total[holes] / weight[holes]
    return out


#: Columns (evenly spaced) whose row-to-row steps estimate the offset increments: a median of 128 steps is within
#: ~10 % of the full row's, which is all a contrast threshold of 2 needs, at a fraction of the cost on 1024 px.
_ROUGHNESS_COLUMNS = 128


def _offset_roughness(data: np.ndarray) -> float:
    """RMS of the median step from each row to the next: the offset increments row alignment removes."""
    columns = np.unique(np.linspace(0, data.shape[1] - 1, min(data.shape[1], _ROUGHNESS_COLUMNS)).astype(int))
    steps = np.diff(data[:, columns], axis=0)
    finite = np.isfinite(steps)
    if finite.all():
        increments = np.median(steps, axis=1)
    else:
        lines = finite.any(axis=1)  # row pairs with data (nanmedian would warn on the others)
        if not lines.any():
            return 0.0
        increments = np.nanmedian(steps[lines], axis=1)
    return float(np.sqrt(np.mean(increments**2)))


def scan_line_contrast(data: np.ndarray) -> float:
    """How much more the rows are offset from each other than the columns: ~1 without scan-line artefacts.

    Row alignment estimates one offset per row; on an image without line artefacts the same estimate along the
    columns is as large (both only follow the texture), while scan-line offsets make the row estimate stand out.
    The column figure is floored at 1e-3 of the image's robust spread, so flat or noise-free images read ~1.
    """
    spread = float(np.subtract(*np.nanpercentile(data, [99, 1]))) if np.isfinite(data).any() else 0.0
    floor = max(1e-3 * spread, 1e-30)
    return _offset_roughness(data) / max(_offset_roughness(np.ascontiguousarray(data.T)), floor)


def level(data: np.ndarray, valid: np.ndarray, config: RegistrationConfig) -> tuple[np.ndarray, tuple[str, ...]]:
    """Level a scan for matching as SPM packages do (:func:`autoreg.levelling.level_scan`).

    Rows are aligned only when the scan shows line artefacts (:func:`scan_line_contrast` at least
    ``config.min_scan_line_contrast``): aligning the rows of an image without them only distorts its content.
    With ``config.level_scans`` off, only the plane is removed. Returns the levelled data (float32, NaN where
    invalid) and the steps taken.
    """
    from .levelling import level_scan

    masked = np.where(valid, data, np.nan).astype(np.float32)
    if not config.level_scans:
        levelled = level_scan(masked, valid, rows=False, scars=False, spikes=False)
        return np.asarray(levelled.data, np.float32), levelled.steps
    contrast = scan_line_contrast(masked)
    rows = contrast >= config.min_scan_line_contrast
    levelled = level_scan(masked, valid, rows=rows)
    steps = levelled.steps if rows else (f"rows: none (line contrast {contrast:.2f})", *levelled.steps)
    data, bow = _without_bow(np.asarray(levelled.data, np.float32), valid, config.bow_max_residual)
    return data, (*steps, bow) if bow else steps


def _without_bow(levelled: np.ndarray, valid: np.ndarray, max_residual: float) -> tuple[np.ndarray, str]:
    """Remove a scanner bow (a robust quadratic background) from a plane-levelled scan when it dominates.

    The quadratic is taken out only when what it leaves has at most ``max_residual`` of the plane-levelled
    variance: then the scan is mostly bow (piezo bow on a small map easily dwarfs its content) and the plane
    alone would leave the search correlating the bow. Returns the data and a step note (empty when kept).
    """
    from .levelling import remove_background

    usable = valid & np.isfinite(levelled)
    if np.count_nonzero(usable) < 64:
        return levelled, ""
    before = float(np.var(levelled[usable]))
    flattened = remove_background(levelled, usable, order=2).astype(np.float32)
    after = float(np.var(flattened[usable]))
    if not (before > 0 and after <= max_residual * before):
        return levelled, ""
    return flattened, f"bow: order 2 (it leaves {after / before:.2f} of the variance)"


def robust_unit_range(data: np.ndarray, valid: np.ndarray, *, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Map the ``low``-``high`` percentile range of the valid pixels to [0, 1] (clipped)."""
    values = data[valid] if valid.any() else np.zeros(1)
    lo, hi = np.percentile(values, [low, high])
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        return np.zeros_like(data, dtype=np.float32)
    return np.clip((data - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def to_uint8(unit: np.ndarray, *, clahe_clip: float) -> np.ndarray:
    """8-bit view of a [0, 1] image, contrast-equalised with CLAHE."""
    import cv2

    image8 = np.round(unit * 255.0).astype(np.uint8)
    if clahe_clip > 0:
        tiles = max(1, min(8, min(image8.shape) // 32))
        image8 = cv2.createCLAHE(clipLimit=clahe_clip, tileGridSize=(tiles, tiles)).apply(image8)
    return image8


def expected_scale(fixed: Image, moving: Image, config: RegistrationConfig) -> tuple[float, str]:
    """Expected size of one moving pixel in fixed pixels, and where the guess comes from.

    From the physical pixel sizes when both images carry them in convertible units (``"metadata"``).
    Otherwise, when the image size ratio lies strictly inside ``config.same_pixel_size_band``, pixels are taken to be
    the same size (``"same_pixel_size"``) — two crops of one scan differ in size but not in pixel size; else both
    images are assumed to cover about the same field of view (``"field_of_view"``). Sizes exactly 2× apart (512²
    and 256²) are the commonest resolution change between scans, so they take the field of view (and, up to
    ``config.ambiguous_size_ratio``, a same-pixel-size search after it).
    """
    from_metadata = pixel_size_ratio(fixed.calibration, moving.calibration)
    if from_metadata is not None:
        return from_metadata, "metadata"
    ratio = float(np.sqrt(np.prod(np.asarray(fixed.shape, float) / np.asarray(moving.shape, float))))
    low, high = config.same_pixel_size_band
    if low < ratio < high:
        return 1.0, "same_pixel_size"
    return ratio, "field_of_view"


def working_scales(fixed: Image, moving: Image, ratio: float, config: RegistrationConfig) -> tuple[float, float]:
    """Resize factors (fixed, moving) that bring both images to one working pixel scale.

    The working scale is coarse enough that the scene spans about ``config.working_size`` pixels, unless
    both images are finer than that, in which case it is the coarser image's own resolution, capped at
    ``config.working_size_max`` pixels.
    """
    extent = max(max(fixed.shape), ratio * max(moving.shape))
    coarse_pixel = max(1.0, ratio)
    scale_fixed = max(config.working_size / extent, min(1.0 / coarse_pixel, config.working_size_max / extent))
    return scale_fixed, scale_fixed * ratio


def resize_matrix(scale_x: float, scale_y: float) -> np.ndarray:
    """Matrix mapping original pixel (x, y) to resized pixel (x, y) for ``cv2.resize`` (centre convention).

    Examples
    --------
    >>> resize_matrix(2.0, 2.0) @ [0.0, 0.0, 1.0]
    array([0.5, 0.5, 1. ])
    """
    return np.array([[scale_x, 0.0, 0.5 * scale_x - 0.5], [0.0, scale_y, 0.5 * scale_y - 0.5], [0.0, 0.0, 1.0]])


def resize_valid(data: np.ndarray, valid: np.ndarray,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``data`` resized to ``size`` (w, h): area average when shrinking, cubic when growing; the valid mask with it
    (a resized pixel is valid when its whole support is); and the matrix from resized to original pixels.

    Invalid pixels are filled from their neighbours first, so the resized values near them are defined; the mask says
    which to trust.
    """
    import cv2

    h, w = data.shape
    if size == (w, h):  # what cv2.resize does at the same size: a copy
        return fill_invalid(data, valid), valid.copy(), np.eye(3)
    interp = cv2.INTER_AREA if size[0] * size[1] < h * w else cv2.INTER_CUBIC
    if valid.all():  # nothing to fill, and every resized pixel is measured
        resized = cv2.resize(np.asarray(data, np.float32), size, interpolation=interp)
        return resized, np.ones((size[1], size[0]), bool), np.linalg.inv(resize_matrix(size[0] / w, size[1] / h))
    resized = cv2.resize(fill_invalid(data, valid), size, interpolation=interp)
    resized_valid = cv2.resize(valid.astype(np.float32), size, interpolation=cv2.INTER_AREA if size[0] * size[1] <
                               h * w else cv2.INTER_LINEAR) > 0.5  # mostly measured (the rest filled from neighbours)
    return resized, resized_valid, np.linalg.inv(resize_matrix(size[0] / w, size[1] / h))


def rescaled(source: Reduced, scale: float) -> Reduced:
    """``source`` area-averaged by ``scale`` (<= 1) relative to its own grid; no levelling again."""
    h, w = source.data.shape
    size = (max(8, int(round(w * min(scale, 1.0)))), max(8, int(round(h * min(scale, 1.0)))))
    if size == (w, h):
        return source
    valid = np.isfinite(source.data)
    small, small_valid, to_source = resize_valid(source.data, valid, size)
    return Reduced(data=np.where(small_valid, small, np.nan).astype(np.float32),
                   to_original=source.to_original @ to_source, steps=source.steps)


def reduced(image: Image, scale: float, config: RegistrationConfig) -> Reduced:
    """``image`` area-averaged by ``scale`` (<= 1; a map pixel is an area average, so is a reduced pixel), levelled.

    Levelling runs on the reduced grid, where it is cheap; its rows are still the scan's rows.
    """
    data = np.asarray(image.data, np.float32)
    valid = valid_mask(data)
    h, w = data.shape
    size = (max(8, int(round(w * min(scale, 1.0)))), max(8, int(round(h * min(scale, 1.0)))))
    if size == (w, h):
        levelled, steps = level(data, valid, config)
        return Reduced(data=levelled, to_original=np.eye(3), steps=steps)
    small, small_valid, to_original = resize_valid(data, valid, size)
    levelled, steps = level(small, small_valid, config)
    return Reduced(data=levelled, to_original=to_original, steps=steps)


def make_working_view(image: Image, scale: float, *, coarse_pixel_wpx: float, config: RegistrationConfig,
                      gradient: bool = False, levelled: Reduced | None = None) -> WorkingView:
    """Resize ``image`` by ``scale``, blur it to ``coarse_pixel_wpx`` resolution, flatten, equalise.

    With ``gradient`` the view shows the gradient magnitude instead of the intensity: it is the same for an
    image and its inverse, and close for other changes of contrast (cross-modal pairs).

    Parameters
    ----------
    image : Image
    scale : float
        Resize factor (working pixels per original pixel).
    coarse_pixel_wpx : float
        Size of the coarser image's pixel in working pixels; finer content is blurred away.
    config : RegistrationConfig
    gradient : bool
        Show the gradient magnitude instead of the intensity.
    levelled : Reduced, optional
        ``reduced(image, min(scale, 1), config)`` when the caller has it already (another view of the same image
        at the same scale: its ``levelled``); computed otherwise.
    """
    import cv2

    data = np.asarray(image.data)
    h, w = data.shape
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    # level the scan where it is smaller (rows stay rows when area-reduced), then bring it to the working grid
    if levelled is None:
        levelled = reduced(image, min(scale, 1.0), config)
    valid = np.isfinite(levelled.data)
    small, small_valid, to_levelled = resize_valid(levelled.data, valid, size)
    to_original = levelled.to_original @ to_levelled
    small = fill_invalid(small, small_valid)
    own_pixel_wpx = max(1.0, scale)
    sigma = config.match_blur * float(np.sqrt(max(coarse_pixel_wpx**2 - own_pixel_wpx**2, 0.0)))
    if scale > 1:  # an upsampled coarse image: soften the pixel grid it carries
        sigma = max(sigma, config.match_blur * 0.5 * scale)
    if sigma > 0.3:
        small = cv2.GaussianBlur(small, (0, 0), sigma)
    flat = small
    if gradient:
        smooth = cv2.GaussianBlur(flat, (0, 0), max(1.0, 0.5 * coarse_pixel_wpx))
        flat = cv2.magnitude(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1))
        small_valid = small_valid & (cv2.erode(small_valid.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
    unit = robust_unit_range(flat, small_valid)
    image8 = to_uint8(unit, clahe_clip=config.clahe_clip)
    return WorkingView(image8=image8, unit=unit, valid=small_valid, to_original=to_original, levelled=levelled)
