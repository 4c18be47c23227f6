"""SPM levelling of scans before feature detection: row alignment, background, scars and spikes.

Raw scanning-probe scans carry artefacts that create false corners and break matching: every fast-scan row
is shifted in height (scan-line offsets), the whole scan is tilted or bowed, short streaks run along a row
(scars: the tip jumps for part of a line) and single pixels spike. Every SPM package (Gwyddion, SPIP, WSxM)
levels scans before anything else; :func:`level_scan` does the same for autoreg's working views (the data
written out stays raw).

Conventions: ``image`` is a 2-D array, rows = y = slow scan axis, columns = x = fast scan axis; NaN marks a
missing pixel. ``valid`` (optional, same shape, bool) marks the pixels that may be *used* to estimate
anything; a pixel is usable when it is valid and finite. Corrections (row offsets, background) are applied
to every pixel, usable or not; replacements (scars, spikes) only to usable pixels; NaN stays NaN and never
spreads. Inputs are never modified.

Each function costs a few full-array passes; order statistics (medians, MADs) are taken on row sorts or on
subsamples, never with ``scipy.ndimage.median_filter`` (0.3 s on a 1024² scan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from autoreg.errors import InputError

__all__ = [
    "ROW_METHODS",
    "Levelled",
    "align_rows",
    "level_scan",
    "remove_background",
    "remove_scars",
    "remove_spikes",
]

RowMethod = Literal["median_difference", "median"]
ROW_METHODS: tuple[str, ...] = ("median_difference", "median")

# Not tunables: the size of the subsample that robust noise estimates are taken on (the MAD of 4096
# differences is within ~2 % of the full image's: thresholds of 3-6 sigmas do not notice); the floor,
# relative to the data's magnitude, that keeps rounding noise from being mistaken for signal on constant
# or exactly planar images; and the floor of the noise estimate relative to the image's own robust
# spread, so that on (nearly) noise-free data differences far below what an 8-bit working view resolves
# are not called spikes or scars.
_NOISE_SAMPLES = 4096
_REL_FLOOR = 1e-9
_CONTRAST_FLOOR = 1e-3
_MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian is 0.6745 sigma
_MEANABS_TO_SIGMA = 1.2533  # mean absolute deviation of a Gaussian is sqrt(2/pi) sigma

# Defaults shared by the public functions and level_scan (documented, with their reasons, where used).
_MIN_OVERLAP, _ROW_TRIM = 3, 3.0
_SPIKE_K, _SPIKE_CLUSTER, _SPIKE_RELIEF, _SPIKE_SCREEN = 6.0, 2, 1.5, 0.5
_SCAR_K_HARD, _SCAR_K_SOFT, _SCAR_MIN_LENGTH, _SCAR_MAX_WIDTH, _SCAR_JUMP_RATIO = 6.0, 3.0, 3, 2, 2.0
_BG_K, _BG_MAX_ITER, _BG_SAMPLES = 3.0, 10, 4096


@dataclass(frozen=True, slots=True, eq=False)
class Levelled:
    """A levelled scan and what was done to it.

    Attributes
    ----------
    data : ndarray of float, shape (H, W)
        The levelled image (read-only); NaN where the input was NaN.
    steps : tuple of str
        One entry per step, in the order applied, each ``"slug: detail"`` with a stable slug
        (``rows``, ``scars``, ``spikes``, ``background``), e.g. ``("rows: median_difference",
        "scars: 3 streaks", "spikes: 0 pixels", "background: order 1")``. Meant for the JSON
        (``preprocessing``).
    """

    data: np.ndarray
    steps: tuple[str, ...]

    def __post_init__(self) -> None:
        self.data.flags.writeable = False


# ----------------------------------------------------------------------------------------------- helpers


def _prepare(image: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A private float copy of ``image`` and the mask of usable (valid and finite) pixels."""
    z = np.array(image, dtype=float)
    if z.ndim != 2:
        raise InputError(f"Levelling needs a 2-D image; got an array of shape {z.shape}.")
    usable = np.isfinite(z)
    if valid is not None:
        mask = np.asarray(valid)
        if mask.shape != z.shape:
            raise InputError(
                f"The valid mask has shape {mask.shape} but the image has shape {z.shape}; pass a mask of "
                "the image's shape."
            )
        usable &= mask.astype(bool)
    return z, usable


def _masked(z: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``z`` with NaN wherever it is not usable (a copy when needed)."""
    return z if usable.all() else np.where(usable, z, np.nan)


def _row_medians(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and count of the finite values of each row; NaN median for an empty row, no warnings.

    A row sort (NaN sorts last) and the middle of each row's finite part: on a 1024² array it is ~3× faster
    than ``np.median(axis=1)`` or a row partition, and it avoids ``nanmedian``'s slow path and all-NaN
    warnings.
    """
    n_rows, n_cols = a.shape
    if n_cols == 0:
        return np.full(n_rows, np.nan), np.zeros(n_rows, int)
    s = np.sort(a, axis=1)
    finite = np.isfinite(a)
    if finite.all():
        return 0.5 * (s[:, (n_cols - 1) // 2] + s[:, n_cols // 2]), np.full(n_rows, n_cols)
    counts = np.count_nonzero(finite, axis=1)
    lo = np.clip((counts - 1) // 2, 0, None)[:, None]
    hi = np.clip(counts // 2, 0, n_cols - 1)[:, None]
    med = 0.5 * (np.take_along_axis(s, lo, axis=1) + np.take_along_axis(s, hi, axis=1))[:, 0]
    med[counts == 0] = np.nan
    return med, counts


def _median_of_finite(v: np.ndarray) -> float:
    """``np.median`` of a non-empty 1-D array of finite values (the same number), without its generic machinery:
    one partition at the middle (two middles for an even count), a fraction of the cost on the few thousand values
    the robust estimates here take, which each levelling calls for a dozen times and more."""
    half = v.size // 2
    if v.size % 2:
        return float(np.partition(v, half)[half])
    middle = np.partition(v, (half - 1, half))
    return float((middle[half - 1] + middle[half]) / 2)


def _robust_sigma(values: np.ndarray) -> float:
    """Gaussian-equivalent sigma of ``values`` from their MAD (mean absolute deviation if the MAD is 0).

    The fallback matters for quantised or noise-free data, where more than half the values can be equal.
    Returns 0 for no finite value.
    """
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0
    dev = np.abs(v - _median_of_finite(v))
    sigma = _MAD_TO_SIGMA * _median_of_finite(dev)
    return sigma if sigma > 0 else _MEANABS_TO_SIGMA * float(dev.mean())


def _grid(shape: tuple[int, ...]) -> tuple[slice, slice]:
    """Strides over rows and columns that pick about ``_NOISE_SAMPLES`` pixels spread over the image."""
    stride = max(1, int(np.sqrt(shape[0] * shape[1] / _NOISE_SAMPLES)))
    return slice(None, None, stride), slice(None, None, stride)


def _pixel_noise(zz: np.ndarray, *, axis: int) -> float:
    """Robust per-pixel noise sigma from differences of neighbours along ``axis`` (NaN = missing).

    Along the rows (``axis=1``) it is blind to row offsets; across the rows (``axis=0``) it also counts what
    remains of them. Real edges are a minority of the differences and do not move the MAD. Floored at
    ``_REL_FLOOR`` times the data's magnitude and ``_CONTRAST_FLOOR`` times its robust spread.
    """
    rows, cols = _grid(zz.shape)
    if axis == 1:
        sample = zz[rows, :-1][:, cols]
        diff = zz[rows, 1:][:, cols] - sample
    else:
        sample = zz[:-1][rows, cols]
        diff = zz[1:][rows, cols] - sample
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return 0.0
    spread = _robust_sigma(finite[:: max(1, finite.size // 1024)])  # a floor needs no precision
    floor = max(_REL_FLOOR * float(np.abs(finite).max()), _CONTRAST_FLOOR * spread)
    return max(_robust_sigma(diff) / np.sqrt(2.0), floor)


# ------------------------------------------------------------------------------------------- row offsets


def _trimmed_row_means(
    diffs: np.ndarray, medians: np.ndarray, trim_sigma: float, min_count: int
) -> np.ndarray:
    """Mean of each row's values within ``trim_sigma`` pooled robust sigmas of its median (the median
    itself where fewer than ``min_count`` remain). Overwrites ``diffs``."""
    residual = np.subtract(diffs, medians[:, None], out=diffs)
    sigma = _robust_sigma(residual[_grid(residual.shape)])
    inliers = np.abs(residual) <= trim_sigma * sigma  # NaN is never an inlier
    np.copyto(residual, 0.0, where=~inliers)
    counts = np.count_nonzero(inliers, axis=1)
    shift = residual.sum(axis=1)
    return medians + np.divide(shift, counts, out=np.zeros_like(shift), where=counts >= min_count)


def _offsets_median_difference(zz: np.ndarray, min_overlap: int, trim_sigma: float) -> np.ndarray:
    """Accumulated (trimmed) median of differences between consecutive rows that hold data (NaN = missing)."""
    offsets = np.zeros(zz.shape[0])
    rows = np.flatnonzero(np.isfinite(zz).any(axis=1))
    if rows.size < 2:
        return offsets
    diffs = np.diff(zz, axis=0) if rows.size == zz.shape[0] else zz[rows[1:]] - zz[rows[:-1]]
    steps, counts = _row_medians(diffs)
    thin = counts < min_overlap
    if trim_sigma > 0 and not thin.any():
        steps = _trimmed_row_means(diffs, steps, trim_sigma, min_overlap)
    elif trim_sigma > 0 and not thin.all():
        steps[~thin] = _trimmed_row_means(diffs[~thin], steps[~thin], trim_sigma, min_overlap)
    if thin.any():  # too few shared columns: fall back to the difference of the two rows' medians
        medians, _ = _row_medians(zz[rows])
        steps[thin] = (medians[1:] - medians[:-1])[thin]
    offsets[rows[1:]] = np.cumsum(steps)
    offsets[rows] -= offsets[rows].mean()
    return offsets


def _offsets_median(zz: np.ndarray) -> np.ndarray:
    """Each row's median (0 for a row without data), centred."""
    medians, counts = _row_medians(zz)
    has = counts > 0
    offsets = np.zeros(zz.shape[0])
    if has.any():
        offsets[has] = medians[has] - medians[has].mean()
    return offsets


def _align_rows(z: np.ndarray, usable: np.ndarray, method: str, min_overlap: int, trim_sigma: float) -> str:
    """Subtract per-row offsets from ``z`` in place; return the step's note."""
    if method not in ROW_METHODS:
        raise InputError(f"Unknown row alignment method {method!r}; choose one of {', '.join(ROW_METHODS)}.")
    zz = _masked(z, usable)
    if method == "median_difference":
        offsets = _offsets_median_difference(zz, min_overlap, trim_sigma)
    else:
        offsets = _offsets_median(zz)
    z -= offsets[:, None]
    return f"rows: {method}"


def align_rows(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    method: RowMethod = "median_difference",
    min_overlap: int = _MIN_OVERLAP,
    trim_sigma: float = _ROW_TRIM,
) -> np.ndarray:
    """Remove per-row (scan-line) offsets.

    Parameters
    ----------
    image : array_like of shape (H, W)
        Rows are fast-scan lines. NaN marks missing pixels.
    valid : array_like of bool, shape (H, W), optional
        Pixels that may be used to estimate the offsets (default: all finite pixels).
    method : {"median_difference", "median"}
        ``"median_difference"`` (default, Gwyddion's "median of differences"): the offset between two
        consecutive rows is the median over columns of their difference, accumulated down the image. A step
        edge crossing the rows at an angle changes only a few columns between consecutive rows, so the median
        ignores it and terrace heights survive. ``"median"``: subtract each row's median; simpler, but a row
        whose majority crosses onto another terrace jumps by the step height, so it flattens terraced scans.
    min_overlap : int
        Fewest columns two consecutive rows with data must share for their median difference to be used
        (default 3: a median of 1–2 differences is one noisy pixel); below it (NaN gaps) the difference of
        the two rows' own medians is used instead.
    trim_sigma : float
        ``"median_difference"`` only: the differences within this many robust sigmas (pooled over the image)
        of a row pair's median are averaged, the rest dropped (default 3; 0 keeps the plain median). The
        columns where a step edge passes between the two rows pull the plain median by about the noise
        times their fraction, always the same way on a staircase, and that bias accumulates down the image
        into a false tilt that eats into the step heights; their differences lie far outside 3 sigmas. The
        mean of the rest is also 1.25× less noisy than a median, so the accumulated drift is smaller.

    Returns
    -------
    ndarray of float, shape (H, W)
        The image minus one offset per row; the offsets are centred, so the mean level is kept.

    Raises
    ------
    InputError
        If ``image`` is not 2-D, ``valid`` has another shape, or ``method`` is unknown.

    Notes
    -----
    A step edge *parallel to the rows* that spans more than half a row cannot be told from a row offset:
    it is removed (the two terraces end up at one height), and where it spans only part of the row the
    rest of that row is shifted by the opposite step. ``"median_difference"`` also removes any tilt or bow
    along y (it is a row offset too); ``remove_background`` then only has the x part left. Its per-row
    errors (noise / sqrt(W)) accumulate as a random walk down the image, a slow drift that a plane or
    low-order background mostly takes out. A feature covering more than about half a line (a wide island),
    or gentle slopes within the noise over a large part of it (broad adsorbates), is partly taken for an
    offset and flattened along y: on the synthetic terrain a clean scan changes by a smooth row-to-row
    drift of ~10 % of its standard deviation. Rows that share fewer than ``min_overlap`` columns (data
    split into disjoint halves) are joined through their medians, which is only as good as the terrain
    is flat.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((4, 5)) + np.array([[0.0], [3.0], [-1.0], [2.0]])
    >>> bool(np.allclose(align_rows(image), align_rows(image)[0, 0]))
    True
    """
    z, usable = _prepare(image, valid)
    _align_rows(z, usable, method, min_overlap, trim_sigma)
    return z


# -------------------------------------------------------------------------------------------- background


def polynomial_design(x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    """Monomials ``x**i * y**j`` with ``i + j <= order`` (columns), for normalised coordinates."""
    return np.stack([x**i * y**j for j in range(order + 1) for i in range(order + 1 - j)], axis=1)


def _normalised(n: int) -> np.ndarray:
    """Pixel coordinates 0..n-1 mapped to [-1, 1] (0 for a single pixel), for a well-conditioned fit."""
    return np.linspace(-1.0, 1.0, n) if n > 1 else np.zeros(1)


def _robust_polyfit(
    x: np.ndarray, y: np.ndarray, v: np.ndarray, order: int, k_sigma: float, max_iter: int, floor: float
) -> np.ndarray:
    """Least-squares polynomial coefficients, refitted while excluding residuals beyond ``k_sigma``."""
    design = polynomial_design(x, y, order)
    inliers = np.ones(v.size, bool)
    coef = np.zeros(design.shape[1])
    for _ in range(max_iter):
        coef = np.linalg.lstsq(design[inliers], v[inliers], rcond=None)[0]
        residual = v - design @ coef
        new = np.abs(residual) <= max(k_sigma * _robust_sigma(residual), floor)
        if new.sum() < 2 * design.shape[1] or np.array_equal(new, inliers):
            break
        inliers = new
    return coef


def _subtract_polynomial(z: np.ndarray, coef: np.ndarray, order: int) -> None:
    """Subtract the polynomial from ``z`` in place, one ``y**j * p_j(x)`` outer product at a time.

    Broadcasting instead of a matrix product: a multithreaded BLAS call gains nothing on a rank-4 product
    and stalls when the cores are busy; the ``j = 0`` term needs no temporary at all.
    """
    c = np.zeros((order + 1, order + 1))  # c[j, i] multiplies y**j * x**i
    terms = [(j, i) for j in range(order + 1) for i in range(order + 1 - j)]
    for value, (j, i) in zip(coef, terms):
        c[j, i] = value
    y, x = _normalised(z.shape[0]), _normalised(z.shape[1])
    per_column = c @ np.vander(x, order + 1, increasing=True).T  # row j: p_j(x)
    z -= per_column[0]
    if order:
        scratch = np.empty_like(z)
        for j in range(1, order + 1):
            np.multiply((y**j)[:, None], per_column[j], out=scratch)
            z -= scratch


def _remove_background(
    z: np.ndarray, usable: np.ndarray, order: int, k_sigma: float, max_iter: int, max_samples: int
) -> str:
    """Subtract the robust polynomial background from ``z`` in place; return the step's note."""
    if order not in (0, 1, 2, 3):
        raise InputError(f"Background order must be 0, 1, 2 or 3; got {order!r}.")
    n_rows, n_cols = z.shape
    stride = max(1, int(np.ceil(np.sqrt(n_rows * n_cols / max_samples))))
    rr, cc = np.nonzero(usable[::stride, ::stride])
    rr, cc = rr * stride, cc * stride
    if rr.size < 8 * (order + 1) and stride > 1:  # a sparse mask: sample every usable pixel
        rr, cc = np.nonzero(usable)
    used = order
    while used > 0 and rr.size < (used + 1) * (used + 2):  # twice the number of coefficients
        used -= 1
    if rr.size == 0:
        return "background: skipped (no valid pixels)"
    v = z[rr, cc]
    floor = _REL_FLOOR * float(np.abs(v).max())
    coef = _robust_polyfit(
        _normalised(n_cols)[cc], _normalised(n_rows)[rr], v, used, k_sigma, max_iter, floor
    )
    _subtract_polynomial(z, coef, used)
    note = f"background: order {used}"
    return note if used == order else f"{note} ({order} requested, too few valid pixels)"


def remove_background(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    order: int = 1,
    k_sigma: float = _BG_K,
    max_iter: int = _BG_MAX_ITER,
    max_samples: int = _BG_SAMPLES,
) -> np.ndarray:
    """Subtract a robust polynomial background (plane, or bow up to order 3).

    The polynomial in x and y of total degree ``order`` is fitted by least squares, then refitted without
    the pixels whose residual is beyond ``k_sigma`` robust sigmas (MAD), until the set of kept pixels no
    longer changes; a few high features (adsorbates, dirt) therefore do not tilt it. Features that cover
    most of the scan are the majority and the fit follows them.

    Parameters
    ----------
    image : array_like of shape (H, W)
    valid : array_like of bool, shape (H, W), optional
        Pixels that may be used in the fit (default: all finite pixels); the background is subtracted
        everywhere.
    order : int
        0 (mean level), 1 (plane, default: tilt is in every scan; higher orders also follow real
        large-scale topography), 2 or 3 (scanner bow).
    k_sigma : float
        Residuals beyond this many robust sigmas are excluded from the next fit (default 3: keeps 99.7 %
        of Gaussian noise, drops features that stand clearly above it).
    max_iter : int
        Most refits (default 10; the kept set usually settles in 3–5).
    max_samples : int
        The fit uses pixels on a regular grid of about this many points (default 4096, a 64² grid: the
        background's error is then ~2 % of the residual sigma, far below what detection notices, and a
        1024² scan costs the same as a 64² one).

    Returns
    -------
    ndarray of float, shape (H, W)
        The image minus the background. When there are too few usable pixels for ``order`` (fewer than
        twice the number of coefficients), the highest order they support is used; with none, the image is
        returned unchanged.

    Raises
    ------
    InputError
        If ``image`` is not 2-D, ``valid`` has another shape, or ``order`` is not 0–3.

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:16, :16]
    >>> bool(np.allclose(remove_background(2.0 + 0.3 * x - 0.1 * y), 0.0, atol=1e-9))
    True
    """
    z, usable = _prepare(image, valid)
    _remove_background(z, usable, order, k_sigma, max_iter, max_samples)
    return z


# ------------------------------------------------------------------------------------------------ spikes


def _stands_out(padded: np.ndarray, threshold: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether each pixel exceeds both its x neighbours or both its y neighbours by more than ``threshold``.

    ``padded`` is the image with one extra row above and below, C-contiguous; the neighbours are read as
    shifted views of its flat buffer (fast, contiguous), so a row's first and last pixels see the next or
    previous row as x neighbour: their x test is switched off, as if the pixel were its own outside
    neighbour. ``a`` and ``b`` are flat scratch buffers of the image's size.
    """
    n_cols = padded.shape[1]
    n = a.size
    flat = padded.ravel()
    np.maximum(flat[n_cols - 1 : n_cols - 1 + n], flat[n_cols + 1 : n_cols + 1 + n], out=a)
    edges = a.reshape(-1, n_cols)
    edges[:, 0] = edges[:, -1] = np.inf
    np.maximum(flat[:n], flat[2 * n_cols : 2 * n_cols + n], out=b)
    np.minimum(a, b, out=a)
    np.subtract(flat[n_cols : n_cols + n], a, out=a)
    return (a > threshold).reshape(-1, n_cols)


def _spike_candidates(zz: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (rows, cols) that stand more than ``threshold`` above (or below) both neighbours along x or
    both neighbours along y.

    A cheap screen (a dozen elementwise passes on contiguous buffers, without fresh temporaries: those are
    what costs on small images) so that the exact 3×3 test runs on few pixels: a single spike and a spike
    pair (in either direction) pass it; a pixel on a step edge does not (along the edge, or on the upper
    side across it, it has a neighbour of its own height). On the image border a pixel is its own outside
    neighbour; missing (NaN) neighbours count as infinitely far.
    """
    padded = np.concatenate([zz[:1], zz, zz[-1:]])
    missing = None if np.isfinite(zz).all() else np.isnan(padded)
    if missing is not None:
        padded[missing] = -np.inf
    a, b = np.empty(zz.size), np.empty(zz.size)
    with np.errstate(invalid="ignore"):  # -inf - -inf at a missing pixel: NaN, never a candidate
        candidate = _stands_out(padded, threshold, a, b)
        np.negative(padded, out=padded)  # below its neighbours = above them in the negated image
        if missing is not None:
            padded[missing] = -np.inf
        candidate |= _stands_out(padded, threshold, a, b)
    rows, cols = np.nonzero(candidate)
    return rows, cols


def _windows(zz: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The 3×3 neighbourhoods of the given pixels, shape (N, 9), centre at index 4, NaN outside."""
    n_rows, n_cols = zz.shape
    r = rows[:, None] + np.repeat([-1, 0, 1], 3)
    c = cols[:, None] + np.tile([-1, 0, 1], 3)
    window = zz[np.minimum(np.maximum(r, 0), n_rows - 1), np.minimum(np.maximum(c, 0), n_cols - 1)]
    window[(r < 0) | (r >= n_rows) | (c < 0) | (c >= n_cols)] = np.nan
    return window


def _isolated(window: np.ndarray, deviation: np.ndarray, max_cluster: int, relief_ratio: float) -> np.ndarray:
    """Whether each window's centre stands clear of its neighbours (all but ``max_cluster - 1`` of them).

    Flipped so that the outlier points up, the centre's *jump* above the ``max_cluster``-th highest neighbour
    must exceed ``relief_ratio`` times the neighbours' own *relief* (that neighbour minus the
    ``max_cluster``-th lowest, so that a pair of opposite spikes does not hide both). A
    spike on any ground passes; a terrace corner (a neighbour shares its height) or the top of a smooth
    bump (the neighbours vary about as much as the jump) does not. Where some neighbours are missing (image
    border, NaN) only single pixels count, since a pair there may be the visible end of a larger feature;
    with fewer than 5 known neighbours (an image corner, a pixel among holes) nothing is judged.
    """
    sign = np.where(deviation < 0, -1.0, 1.0)[:, None]
    neighbours = np.sort(sign * np.delete(window, 4, axis=1), axis=1)  # NaN last
    counts = np.isfinite(neighbours).sum(axis=1)
    cluster = np.where(counts == 8, max_cluster, 1)  # a partial window may show the end of a larger feature
    kth = np.take_along_axis(neighbours, np.clip(counts - cluster, 0, 7)[:, None], axis=1)[:, 0]
    jump = sign[:, 0] * window[:, 4] - kth
    low = np.take_along_axis(neighbours, (cluster - 1)[:, None], axis=1)[:, 0]  # likewise from below
    relief = kth - low
    return (counts >= 5) & (jump > relief_ratio * relief)


def _remove_spikes(
    z: np.ndarray, usable: np.ndarray, k_sigma: float, max_cluster: int, relief_ratio: float, screen: float
) -> int:
    """Replace spikes in ``z`` in place by their 3×3 median; return how many pixels were replaced."""
    zz = _masked(z, usable)
    threshold = k_sigma * _pixel_noise(zz, axis=1)
    if not threshold > 0:
        return 0
    rows, cols = _spike_candidates(zz, screen * threshold)
    if rows.size == 0:
        return 0
    window = _windows(zz, rows, cols)
    median, _ = _row_medians(window)
    deviation = window[:, 4] - median
    spike = (np.abs(deviation) > threshold) & _isolated(window, deviation, max_cluster, relief_ratio)
    z[rows[spike], cols[spike]] = median[spike]
    return int(spike.sum())


def remove_spikes(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    k_sigma: float = _SPIKE_K,
    max_cluster: int = _SPIKE_CLUSTER,
    relief_ratio: float = _SPIKE_RELIEF,
    screen: float = _SPIKE_SCREEN,
) -> np.ndarray:
    """Replace isolated outlier pixels by the median of their 3×3 neighbourhood.

    A pixel is a spike when it differs from its 3×3 median (NaN ignored) by more than ``k_sigma`` robust
    sigmas of the pixel noise, *and* it is isolated: it stands clear of all its 8 neighbours but
    ``max_cluster - 1`` by more than ``relief_ratio`` times the height range of those neighbours. The second
    condition keeps real sharp features: a terrace's corner pixel (a neighbour shares its height) and the
    top of a smooth bump (its neighbours vary about as much as it stands out), even in noise-free data.

    Parameters
    ----------
    image : array_like of shape (H, W)
    valid : array_like of bool, shape (H, W), optional
        Pixels that may be used and replaced (default: all finite pixels).
    k_sigma : float
        Threshold in robust sigmas of the pixel noise, itself the MAD of differences along the rows / sqrt(2)
        (blind to row offsets). Default 6: Gaussian noise passes it in ~2 pixels per billion, so a clean
        scan keeps every pixel, while spikes that make false corners are far larger.
    max_cluster : int
        Largest spike in pixels (default 2: hot pixels come singly or in pairs; longer streaks along a row
        are scars, see :func:`remove_scars`). On the image border and next to NaN, only single pixels;
        pixels with fewer than 5 known neighbours (image corners) are left alone.
    relief_ratio : float
        How many times the neighbours' own height range (without the ``max_cluster - 1`` highest and lowest)
        a spike must clear (default 1.5: over flat noisy ground the other neighbours span ~2 noise sigmas,
        so this asks less than ``k_sigma``; the top of a smooth bump clears its neighbours' range about
        once, and a spike on a step edge must clear 1.5 steps).
    screen : float
        Only pixels that stand more than ``screen * threshold`` above (or below) both their x neighbours or
        both their y neighbours are examined (default 0.5: a single spike or a pair in either direction
        clears that by nearly its full height, while step-edge pixels, which share a neighbour's height,
        never do; the exact test then runs on a few hundred pixels instead of all).

    Returns
    -------
    ndarray of float, shape (H, W)

    Raises
    ------
    InputError
        If ``image`` is not 2-D or ``valid`` has another shape.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).normal(0, 0.01, (32, 32))
    >>> image[10, 12] = 5.0
    >>> bool(abs(remove_spikes(image)[10, 12]) < 0.05)
    True
    """
    z, usable = _prepare(image, valid)
    _remove_spikes(z, usable, k_sigma, max_cluster, relief_ratio, screen)
    return z


# ------------------------------------------------------------------------------------------------- scars


def _runs_with_seed(
    flat: np.ndarray, seed: np.ndarray, n_cols: int, min_length: int
) -> tuple[np.ndarray, int]:
    """Of the flat indices ``flat`` (sorted), those in runs along a row that hold a ``seed`` and are at least
    ``min_length`` long; and the number of such runs."""
    breaks = np.flatnonzero((np.diff(flat) != 1) | (flat[1:] % n_cols == 0)) + 1
    starts = np.concatenate([[0], breaks])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    keep = (np.add.reduceat(seed.astype(np.int64), starts) > 0) & (lengths >= min_length)
    return flat[np.repeat(keep, lengths)], int(keep.sum())


def _scar_deviations(
    zz: np.ndarray, width: int, up: np.ndarray, down: np.ndarray, scratch: np.ndarray
) -> None:
    """For blocks of ``width`` rows starting at rows 1..H-width-1, write into ``up`` (``down``) how far the
    whole block stands above (below) both rows bordering it, per column; row ``i`` is the block at row
    ``i + 1``. The three buffers have shape (H - width - 1, W); nothing else is allocated."""
    n = zz.shape[0] - width - 1
    above, below = zz[:n], zz[1 + width : 1 + width + n]
    np.maximum(above, below, out=up)
    np.minimum(above, below, out=down)
    np.copyto(scratch, zz[1 : 1 + n])  # the block's lowest row, per column
    for k in range(1, width):
        np.minimum(scratch, zz[1 + k : 1 + k + n], out=scratch)
    np.subtract(scratch, up, out=up)
    np.copyto(scratch, zz[1 : 1 + n])  # the block's highest row
    for k in range(1, width):
        np.maximum(scratch, zz[1 + k : 1 + k + n], out=scratch)
    np.subtract(down, scratch, out=down)


def _is_jump(
    zz: np.ndarray, rows: np.ndarray, cols: np.ndarray, width: int, deviation: np.ndarray, jump_ratio: float
) -> np.ndarray:
    """Whether the blocks starting at ``rows + 1`` jump by more than ``jump_ratio`` times the ground's own
    change per row around them: between each bordering row and the next row out, and between the two
    bordering rows (per row crossed). Beyond the image border the outer change counts as 0; a missing (NaN)
    pixel there makes the block no seed, since the bordering row itself may be an unseen scar."""
    n_rows = zz.shape[0]
    far_up, far_down = rows - 1, rows + width + 2
    above, below = zz[rows, cols], zz[rows + width + 1, cols]
    up = np.where(far_up >= 0, above - zz[np.maximum(far_up, 0), cols], 0.0)
    down = np.where(far_down < n_rows, below - zz[np.minimum(far_down, n_rows - 1), cols], 0.0)
    across = np.abs(above - below) / (width + 1)
    return deviation > jump_ratio * np.maximum(np.maximum(np.abs(up), np.abs(down)), across)  # NaN: False


def _find_scars(
    zz: np.ndarray, *, k_hard: float, k_soft: float, min_length: int, max_width: int, jump_ratio: float
) -> tuple[np.ndarray, int, float]:
    """Mask of scar pixels, the number of streaks, and the noise sigma used (NaN = missing)."""
    mask = np.zeros(zz.shape, bool)
    sigma = _pixel_noise(zz, axis=0)
    n_cols = zz.shape[1]
    n_streaks = 0
    if not sigma > 0:
        return mask, 0, sigma
    buffers = np.empty((3, max(zz.shape[0] - 2, 0), n_cols))
    for width in range(1, min(max_width, zz.shape[0] - 2) + 1):
        up, down, scratch = buffers[:, : zz.shape[0] - width - 1]
        _scar_deviations(zz, width, up, down, scratch)
        for deviation in (up, down):
            flat = np.flatnonzero(deviation > k_soft * sigma)
            seed = deviation.ravel()[flat] > k_hard * sigma
            if not seed.any():
                continue
            # a seed is a jump on smooth ground: not a bump's crest, nor a crest cut off by a step edge
            rows, cols = np.divmod(flat[seed], n_cols)
            seed[seed] = _is_jump(zz, rows, cols, width, deviation[rows, cols], jump_ratio)
            kept, n = _runs_with_seed(flat, seed, n_cols, min_length)
            n_streaks += n
            rows, cols = np.divmod(kept, n_cols)
            for k in range(width):
                mask[rows + 1 + k, cols] = True
    return mask, n_streaks, sigma


def _from_rows(
    z: np.ndarray, mask: np.ndarray, usable: np.ndarray, reach: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For each masked pixel (rows, cols in row-major order): the linear interpolation between the nearest
    good pixels above and below in its column (within ``reach`` rows; one side if the other has none, NaN
    if neither), and how much those two differ (NaN unless both exist)."""
    good = usable & ~mask
    rows, cols = np.nonzero(mask)
    n_rows = z.shape[0]
    above = np.full(rows.size, -1)
    below = np.full(rows.size, -1)
    for k in range(reach, 0, -1):  # nearest last, so it wins
        for side, target in ((above, rows - k), (below, rows + k)):
            inside = (target >= 0) & (target < n_rows)
            ok = inside.copy()
            ok[inside] = good[target[inside], cols[inside]]
            side[ok] = target[ok]
    interp, across = np.full(rows.size, np.nan), np.full(rows.size, np.nan)
    both = (above >= 0) & (below >= 0)
    a, b, c = above[both], below[both], cols[both]
    interp[both] = z[a, c] + (z[b, c] - z[a, c]) * (rows[both] - a) / (b - a)
    across[both] = np.abs(z[b, c] - z[a, c])
    for side, only in ((above, (above >= 0) & ~both), (below, (below >= 0) & ~both)):
        interp[only] = z[side[only], cols[only]]
    return rows, cols, interp, across


def _run_medians(flat: np.ndarray, values: np.ndarray, n_cols: int) -> np.ndarray:
    """For sorted flat indices, the median of ``values`` (finite ones) over each pixel's run along its
    row, per pixel; NaN for a run without a finite value."""
    ids = np.concatenate([[0], np.cumsum((np.diff(flat) != 1) | (flat[1:] % n_cols == 0))])
    finite = np.isfinite(values)
    order = np.lexsort((values[finite], ids[finite]))
    sorted_values = values[finite][order]
    counts = np.bincount(ids[finite], minlength=int(ids[-1]) + 1)
    starts = np.cumsum(counts) - counts
    medians = np.full(counts.size, np.nan)
    has = counts > 0
    lo, hi = (starts + (counts - 1) // 2)[has], (starts + counts // 2)[has]
    medians[has] = 0.5 * (sorted_values[lo] + sorted_values[hi])
    return medians[ids]


def _fill_scars(z: np.ndarray, mask: np.ndarray, usable: np.ndarray, reach: int, edge: float) -> None:
    """Replace scar pixels in place from the rows above and below.

    Where those rows agree within ``edge``, by linear interpolation between them. Where they differ more
    (a step edge or a steep slope passes between them, and interpolating would land mid-step), by the
    pixel minus its streak's own offset: the median over the streak of (pixel - interpolation), taken
    where the rows agree (over the whole streak if they nowhere do). A scar is mostly a constant shift of
    part of a line, so this keeps the line's own detail.
    """
    rows, cols, interp, across = _from_rows(z, mask, usable, reach)
    flat = rows * z.shape[1] + cols
    shift = z[rows, cols] - interp
    at_edge = across > edge  # NaN: no
    offset = _run_medians(flat, np.where(at_edge, np.nan, shift), z.shape[1])
    offset = np.where(np.isfinite(offset), offset, _run_medians(flat, shift, z.shape[1]))
    value = np.where(at_edge & np.isfinite(offset), z[rows, cols] - offset, interp)
    keep = np.isfinite(value)
    z[rows[keep], cols[keep]] = value[keep]


def _remove_scars(
    z: np.ndarray,
    usable: np.ndarray,
    *,
    k_hard: float,
    k_soft: float,
    min_length: int,
    max_width: int,
    jump_ratio: float,
) -> int:
    """Replace scars in ``z`` in place; return how many streaks were found."""
    mask, n_streaks, sigma = _find_scars(
        _masked(z, usable),
        k_hard=k_hard,
        k_soft=k_soft,
        min_length=min_length,
        max_width=max_width,
        jump_ratio=jump_ratio,
    )
    if n_streaks:
        # rows two apart on smooth ground differ by noise * sqrt(2); k_soft of those is "they disagree"
        _fill_scars(z, mask, usable, max_width + 1, k_soft * np.sqrt(2.0) * sigma)
    return n_streaks


def remove_scars(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    k_hard: float = _SCAR_K_HARD,
    k_soft: float = _SCAR_K_SOFT,
    min_length: int = _SCAR_MIN_LENGTH,
    max_width: int = _SCAR_MAX_WIDTH,
    jump_ratio: float = _SCAR_JUMP_RATIO,
) -> np.ndarray:
    """Replace scars (short streaks along a row) by interpolation from the rows above and below.

    A scar is a run of pixels along a row, one or a few rows thick, that stands above (or below) *both*
    bordering rows. Detection uses hysteresis, as Gwyddion's "mark scars": a run of pixels beyond
    ``k_soft`` sigmas is kept when at least one of them is beyond ``k_hard`` sigmas and is a jump on
    smooth ground: the rows just outside the streak, and the two rows bordering it, change per row by less
    than ``1/jump_ratio`` of the jump. That rejects the crest of a smooth bump, and an adsorbate's crest
    cut off by a step edge (interpolating across the edge would put it mid-step). Step edges are monotonic across rows and are never scars. Run :func:`align_rows` first:
    unaligned rows inflate the noise estimate and hide scars.

    Parameters
    ----------
    image : array_like of shape (H, W)
    valid : array_like of bool, shape (H, W), optional
        Pixels that may be used and replaced (default: all finite pixels).
    k_hard : float
        Seed threshold in robust sigmas of the pixel noise, estimated from differences across rows
        (default 6: noise alone never gets there against both neighbours at once, and a sharp real
        feature rarely does; at 5 an adsorbate's crest meeting a step edge was taken for a scar).
    k_soft : float
        A streak extends along its row while beyond this many sigmas (default 3: captures a scar's
        fainter ends while noise pixels rarely line up at it).
    min_length : int
        Shortest streak in pixels along the row (default 3; 1–2 pixel events are spikes, see
        :func:`remove_spikes`).
    max_width : int
        Thickest streak in rows (default 2: a scar is one scan line, two when the feedback recovers slowly;
        thicker events are real features or tip changes).
    jump_ratio : float
        A seed's jump must exceed this many times the ground's change per row around it (default 2: a scar
        is a discontinuity on smooth ground; a small adsorbate that spans a few rows changes as fast outside
        its top row as into it). A scar weaker than a step edge right next to it is therefore missed.

    Returns
    -------
    ndarray of float, shape (H, W)
        Scar pixels replaced by linear interpolation along their column between the nearest good pixels
        above and below; where those two disagree beyond the noise (a step edge passes between them), by
        the pixel minus its streak's median offset instead, so the edge stays where the line had it. Not
        examined: the first and last rows, and pixels whose row above or below is missing there (NaN),
        since they lack a neighbour to compare with.

    Raises
    ------
    InputError
        If ``image`` is not 2-D or ``valid`` has another shape.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).normal(0, 0.01, (32, 32))
    >>> image[10, 5:20] += 1.0
    >>> bool(np.abs(remove_scars(image)[10, 5:20]).max() < 0.05)
    True
    """
    z, usable = _prepare(image, valid)
    _remove_scars(
        z,
        usable,
        k_hard=k_hard,
        k_soft=k_soft,
        min_length=min_length,
        max_width=max_width,
        jump_ratio=jump_ratio,
    )
    return z


# ------------------------------------------------------------------------------------------------- chain


def level_scan(
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    rows: bool | RowMethod = True,
    background_order: int | None = 1,
    scars: bool = True,
    spikes: bool = True,
) -> Levelled:
    """Level a raw SPM scan as SPM packages do: rows, scars, spikes, then background.

    The order, and why:

    1. **rows** first: row offsets are the largest artefact and every later step compares a pixel with the
       rows above and below it; with offsets left in, those comparisons measure the offsets (the scar and
       spike noise estimates inflate, whole lines look like scars). The median of row differences is
       itself insensitive to spikes, scars and tilt (a plane's x part cancels in row differences).
    2. **scars**, on aligned rows, before spikes: a scar's last two pixels look exactly like a spike pair
       and the spike filter would nibble them off, leaving a shorter streak (or none) to count.
    3. **spikes**: a spike next to a scar at most splits the streak; anything left over is caught here.
    4. **background** last, so the robust fit sees the cleaned data: spikes and scars cannot pull it,
       and its noise estimate (and so its outlier cut) is not inflated by row offsets.

    Parameters
    ----------
    image : array_like of shape (H, W)
        Rows are fast-scan lines. NaN marks missing pixels; they stay NaN.
    valid : array_like of bool, shape (H, W), optional
        Pixels that may be used (default: all finite pixels).
    rows : bool or {"median_difference", "median"}
        Align rows (default True = ``"median_difference"``, which keeps terrace steps); False to skip.
    background_order : int or None
        Order of the robust polynomial background (default 1: a plane, the tilt every scan has); None to
        skip. See :func:`remove_background`.
    scars, spikes : bool
        Remove scars / spikes (default True) with the defaults of :func:`remove_scars` and
        :func:`remove_spikes`.

    Returns
    -------
    Levelled
        ``data`` and ``steps`` (what was done, in order, for the JSON).

    Raises
    ------
    InputError
        If ``image`` is not 2-D, ``valid`` has another shape, or an option is out of range.

    Notes
    -----
    A step edge parallel to the rows is removed by row alignment (see :func:`align_rows`). Use
    ``rows=False`` for scans whose real structure runs along the fast axis.

    Examples
    --------
    >>> import numpy as np
    >>> levelled = level_scan(np.random.default_rng(0).normal(size=(24, 24)))
    >>> levelled.steps
    ('rows: median_difference', 'scars: 0 streaks', 'spikes: 0 pixels', 'background: order 1')
    """
    z, usable = _prepare(image, valid)
    steps: list[str] = []
    if rows:
        steps.append(
            _align_rows(
                z, usable, "median_difference" if rows is True else str(rows), _MIN_OVERLAP, _ROW_TRIM
            )
        )
    if scars:
        n = _remove_scars(
            z,
            usable,
            k_hard=_SCAR_K_HARD,
            k_soft=_SCAR_K_SOFT,
            min_length=_SCAR_MIN_LENGTH,
            max_width=_SCAR_MAX_WIDTH,
            jump_ratio=_SCAR_JUMP_RATIO,
        )
        steps.append(f"scars: {n} streaks")
    if spikes:
        n = _remove_spikes(z, usable, _SPIKE_K, _SPIKE_CLUSTER, _SPIKE_RELIEF, _SPIKE_SCREEN)
        steps.append(f"spikes: {n} pixels")
    if background_order is not None:
        steps.append(_remove_background(z, usable, background_order, _BG_K, _BG_MAX_ITER, _BG_SAMPLES))
    return Levelled(data=z, steps=tuple(steps))
