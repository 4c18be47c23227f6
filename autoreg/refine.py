"""Sub-pixel refinement of a global moving → fixed matrix by intensity, on the coarser grid.

A map pixel is an area average, not a point sample. So the refinement works on the grid of the *coarser*
image (the "grid" image, one residual per pixel) and compares each of its pixels with the *finer* image (the
"reference") averaged over that pixel's footprint and sampled bilinearly at the mapped pixel centre: a forward
model of how the coarse image was measured. When the moving image is the coarser one (a spectroscopy map on a
topography), the grid is the moving image; when it is the finer one, the roles swap and the grid is the
fixed image; at the same resolution this is ordinary image-to-image alignment (coarse to fine).

The solver is Gauss–Newton (Lucas–Kanade, forward compositional) on the model's parameters, with the
photometric gain, a polynomial background and (by default) a free offset per grid row solved in closed form at
every iteration, so inverted contrast (a negative gain), a tilt or bow difference and scan-line offsets cost
nothing and the images need no levelling first. Only pixels valid in both images count;
Huber (or Tukey) weights keep a few artefacts from pulling the result. The parameter covariance comes from
the Gauss–Newton Hessian and the residuals, and is mapped to ``predicted_error_px``: the RMS displacement of a
5×5 grid spanning the moving image, in fixed pixels. An independent score — correlation on held-out pixels
(a checkerboard: fit on one half, score on the other) before and after — tells the caller whether the
refinement helps.

Conventions: coordinates ``(x, y)``, ``x`` = column, ``y`` = row, pixel centres at integers;
``moving_to_fixed`` maps moving pixel ``(x, y, 1)`` to fixed pixel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import EstimationError
from .geometry import apply_matrix, grid_xy

__all__ = ["MODELS", "Refinement", "RefinementDiverged", "refine_matrix"]


class RefinementDiverged(EstimationError):
    """The refinement started, then walked away from its starting matrix: further than its limit, off the
    overlap, or to a non-finite matrix. The intensities put their optimum far from the start (or have none)."""

#: Models and their geometric parameter names, in the order of :attr:`Refinement.covariance`. Parameters
#: are increments composed on the right of the final grid → reference matrix, in grid coordinates
#: normalised to ``[-1, 1]`` over the grid image (translations in half-widths, angles in radians).
MODELS: dict[str, tuple[str, ...]] = {
    "translation": ("tx", "ty"),
    "rigid": ("tx", "ty", "angle"),
    "similarity": ("tx", "ty", "a", "b"),
    "affine": ("tx", "ty", "a11", "a12", "a21", "a22"),
    "projective": ("tx", "ty", "a11", "a12", "a21", "a22", "h31", "h32"),
}


COARSE_TOL_PX = 0.05  # stop a coarse pyramid level once updates move its grid by less than this (level px)
SWAP_BELOW = (
    0.9  # the fixed image is the grid only when the moving one is clearly finer (not at ~1 by rounding)
)
RICHER = {"translation": "affine", "rigid": "affine", "similarity": "affine", "affine": "projective"}
MISFIT_ITERATIONS = 8  # Gauss–Newton steps of the richer model in the misfit check (converges in 2-5)
SLOPE_STEP_PX = 0.05  # finite-difference step (grid px) of the estimating equations' measured slope


@dataclass(frozen=True, slots=True, eq=False)
class Refinement:
    """Result of :func:`refine_matrix`.

    Attributes
    ----------
    moving_to_fixed : ndarray of shape (3, 3)
        The refined matrix (read-only), moving pixel → fixed pixel.
    model : str
    iterations : int
        Gauss–Newton iterations, summed over pyramid levels.
    converged : bool
        Whether the last level stopped on a small update (not on ``max_iterations``).
    correlation : float
        Pearson correlation of the grid image, its fitted background (and row offsets) taken out, with the
        footprint-averaged reference at the result, over the valid pixels weighted as the robust fit weighs them
        (a few spikes do not lower it; a contrast the linear model cannot follow does); negative for inverted
        contrast.
    gain : float
        Photometric gain (grid ≈ gain × reference + background [+ row offset]); negative for inverted contrast.
    covariance : ndarray of shape (k, k)
        Covariance of the geometric parameters (:data:`MODELS` order), photometric terms marginalised.
    predicted_error_px : float
        RMS displacement, in fixed pixels, of a 5×5 grid spanning the moving image implied by ``covariance``,
        combined (in quadrature) with ``misfit_px``.
    holdout_before, holdout_after : float
        Correlation on held-out pixels (a checkerboard half) of the photometric prediction fitted on the other
        half, at the initial matrix and after refining on that other half. NaN when ``holdout=False``.
    n_valid : int
        Grid pixels that took part in the final iteration.
    grid : {"moving", "fixed"}
        Which image's pixels were the residuals (the coarser one).
    sigma : float
        Robust standard deviation of the final residuals, in grid-image units.
    misfit_px : float
        RMS displacement (fixed px) towards the next richer model beyond noise: the model's misfit (0 when
        not checked or for ``projective``; NaN when stopped by ``require_improvement``).
    """

    moving_to_fixed: np.ndarray
    model: str
    iterations: int
    converged: bool
    correlation: float
    gain: float
    covariance: np.ndarray
    predicted_error_px: float
    holdout_before: float
    holdout_after: float
    n_valid: int
    grid: str
    sigma: float
    misfit_px: float = 0.0

    @property
    def improved(self) -> bool:
        """True when the held-out correlation rose (False when it fell or was not measured)."""
        return bool(self.holdout_after > self.holdout_before)


# --------------------------------------------------------------------------------------------- geometry


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def _project_model(matrix: np.ndarray, model: str, scale: float, centre_xy: np.ndarray) -> np.ndarray:
    """The matrix of ``model`` closest to ``matrix`` that maps ``centre_xy`` to the same place."""
    matrix = matrix / matrix[2, 2]
    if model == "projective":
        return matrix
    linear = matrix[:2, :2]
    target = apply_matrix(matrix, centre_xy[None])[0]
    if model == "affine":
        out_linear = linear
    else:
        a, b = (linear[0, 0] + linear[1, 1]) / 2, (linear[1, 0] - linear[0, 1]) / 2
        angle = np.arctan2(b, a) if model != "translation" else 0.0
        s = np.hypot(a, b) if model == "similarity" else scale
        out_linear = s * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out = np.eye(3)
    out[:2, :2] = out_linear
    out[:2, 2] = target - out_linear @ centre_xy
    return out


def _delta(model: str, p: np.ndarray) -> np.ndarray:
    """The increment D(p) in normalised grid coordinates (D(0) = identity)."""
    d = np.eye(3)
    d[:2, 2] = p[:2]
    if model == "rigid":
        c, s = np.cos(p[2]), np.sin(p[2])
        d[:2, :2] = [[c, -s], [s, c]]
    elif model == "similarity":
        d[:2, :2] = [[1 + p[2], -p[3]], [p[3], 1 + p[2]]]
    elif model in ("affine", "projective"):
        d[:2, :2] += p[2:6].reshape(2, 2)
        if model == "projective":
            d[2, :2] = p[6:8]
    return d


def _warp(a: np.ndarray, xn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``a · x̃`` (..., n, 2) and their homogeneous denominators (..., n), for ``a`` of shape (..., 3, 3)."""
    h = xn @ np.swapaxes(a[..., :2], -1, -2) + a[..., None, :, 2]
    return h[..., :2] / h[..., 2:], h[..., 2]


def _geometric_jacobian(
    model: str, a: np.ndarray, u: np.ndarray, w: np.ndarray, grad: np.ndarray, xn: np.ndarray
) -> np.ndarray:
    """d(reference at ``a · D(p) x̃``)/dp at p = 0, shape (..., n, k), from the reference gradient ``grad``
    (..., n, 2); ``a`` (..., 3, 3), ``u`` and ``w`` as :func:`_warp` returns them for ``xn`` (n, 2).

    The gradient is first carried back to the homogeneous point ``v = D(p) x̃`` (q = ∇R · ∂u/∂h · a); each
    parameter then moves ``v`` along a simple direction (e.g. the angle along (-ỹ, x̃, 0)).
    """
    # q = (∇R_x (a₀ − u_x a₂) + ∇R_y (a₁ − u_y a₂)) / w for the rows a₀, a₁, a₂ of ``a``: one product
    carried = np.concatenate([grad, -np.sum(grad * u, axis=-1, keepdims=True)], axis=-1)  # (..., n, 3)
    q = (carried @ a) / w[..., None]
    x, y = xn[:, 0], xn[:, 1]
    qx, qy = q[..., 0], q[..., 1]
    cols = [qx, qy]
    if model == "rigid":
        cols.append(-y * qx + x * qy)
    elif model == "similarity":
        cols += [x * qx + y * qy, -y * qx + x * qy]
    elif model in ("affine", "projective"):
        cols += [x * qx, y * qx, x * qy, y * qy]
        if model == "projective":
            cols += [x * q[..., 2], y * q[..., 2]]
    return np.stack(cols, axis=-1)


def _normaliser(shape_rc: tuple[int, int]) -> np.ndarray:
    """Grid pixel → normalised coordinates in [-1, 1] (better-conditioned parameters)."""
    cx, cy = (shape_rc[1] - 1) / 2, (shape_rc[0] - 1) / 2
    half = max(cx, cy, 0.5)
    return np.array([[1 / half, 0, -cx / half], [0, 1 / half, -cy / half], [0, 0, 1.0]])


# --------------------------------------------------------------------------------------------- images


@dataclass(frozen=True, slots=True, eq=False)
class _Reference:
    """The finer image averaged over a grid pixel's footprint, reduced by ``factor``."""

    channels: tuple[np.ndarray, ...]  # (rows, cols) value, and valid (0/1, eroded by one pixel)
    factor: int


def _footprint_reference(
    image: np.ndarray, valid: np.ndarray, footprint: float, *, min_footprint_valid: float, min_sigma: float
) -> tuple[_Reference, float]:
    """Average ``image`` over a footprint ``footprint`` reference px wide (a gaussian of the box's variance).

    The image is first block-averaged by an integer factor (about a quarter of the footprint), which costs
    little accuracy and makes the filter and the samples cheap; NaN-aware (normalised convolution). When the
    footprint's sigma is under ``min_sigma`` reduced px, the reference is smoothed up to it and the extra
    sigma (reference px) is returned, for the grid image to receive the same.
    """
    import cv2

    factor = max(1, int(footprint // 4))
    mean, frac = _block_mean_ref(
        np.where(valid, image, 0).astype(np.float32), valid.astype(np.float32), factor
    )
    variance = footprint**2 / 12 - (factor**2 - 1) / 12  # box of side `footprint` minus the block mean's own
    sigma = np.sqrt(max(variance, 0.0)) / factor
    extra = np.sqrt(max(min_sigma**2 - sigma**2, 0.0))
    value, weight = _normalised_blur(mean, frac, max(sigma, min_sigma))
    ok = weight >= min_footprint_valid
    value = np.where(ok, value, 0.0)
    # a cubic sample needs a 4×4 support: erode by one pixel, then a cell with four valid corners is enough
    ok = cv2.erode(
        ok.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    channels = tuple(np.ascontiguousarray(c, dtype=np.float64) for c in (value, ok))
    return _Reference(channels=channels, factor=factor), float(extra * factor)


def _normalised_blur(mean: np.ndarray, frac: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian average of the valid data (``frac`` = valid weight per pixel) and the valid weight around."""
    import cv2

    if sigma <= 0.05:
        return mean.astype(np.float64), frac.astype(np.float64)
    ksize = 2 * int(np.ceil(3.5 * sigma)) + 1

    def blur(a: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(a.astype(np.float32), (ksize, ksize), sigma, borderType=cv2.BORDER_CONSTANT)
        return out.astype(np.float64)

    weight = blur(frac)
    return blur(frac * mean) / np.maximum(weight, 1e-12), weight


def _block_mean_ref(filled: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Block means by ``factor`` of the valid pixels, and the valid fraction of each block (zero-padded)."""
    import cv2

    if factor == 1:
        return filled, valid
    rows, cols = (-(-n // factor) * factor for n in filled.shape)
    pad = ((0, rows - filled.shape[0]), (0, cols - filled.shape[1]))
    size = (cols // factor, rows // factor)
    total = cv2.resize(np.pad(filled, pad), size, interpolation=cv2.INTER_AREA)  # exact block means
    frac = cv2.resize(np.pad(valid, pad), size, interpolation=cv2.INTER_AREA)
    return total / np.maximum(frac, 1e-12), frac


def _keys_weights(t: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Keys cubic-convolution weights (a = -0.5) of the taps at -1, 0, 1, 2 and their derivatives."""
    h = 0.5 * t  # Horner forms of the cubics and their derivatives, halved
    weights = [((2 - t) * t - 1) * h, (3 * t - 5) * t * h + 1, ((4 - 3 * t) * t + 1) * h, (t - 1) * t * h]
    slopes = [(2 - 1.5 * t) * t - 0.5, (4.5 * t - 5) * t, (4 - 4.5 * t) * t + 0.5, (1.5 * t - 1) * t]
    return weights, slopes


def _sample(ref: _Reference, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Samples (value, d/dx, d/dy) at reference px ``xy`` and where their 4×4 support is valid.

    Keys cubic convolution: its derivative is continuous and is the exact derivative of the sampled values,
    so Gauss–Newton sees the objective it minimises (bilinear samples with a separate gradient image do
    not, which slows convergence and biases the error prediction), and it favours no sub-pixel position.
    """
    f = ref.factor
    u = (xy - (f - 1) / 2) / f
    value, valid = ref.channels
    rows, cols = value.shape
    if rows < 4 or cols < 4:  # no 4×4 support anywhere (a pyramid level of a tiny map)
        return np.zeros((len(u), 3)), np.zeros(len(u), bool)
    inside = (u[:, 0] >= 1) & (u[:, 0] <= cols - 2) & (u[:, 1] >= 1) & (u[:, 1] <= rows - 2)
    u = np.where(inside[:, None], u, 1.0)
    x0 = np.clip(np.floor(u[:, 0]).astype(np.intp), 1, max(cols - 3, 1))
    y0 = np.clip(np.floor(u[:, 1]).astype(np.intp), 1, max(rows - 3, 1))
    wx, sx = _keys_weights(u[:, 0] - x0)
    wy, sy = _keys_weights(u[:, 1] - y0)
    base = y0 * cols + x0
    out = np.zeros((3, len(u)))  # value, d/dx, d/dy; the sums in place (no temporary per tap)
    along, slope, term = np.empty(len(u)), np.empty(len(u)), np.empty(len(u))
    for i in range(4):  # the support's rows
        first = base + ((i - 1) * cols - 1)
        tap = value.take(first)
        np.multiply(wx[0], tap, out=along)
        np.multiply(sx[0], tap, out=slope)
        for j in range(1, 4):
            tap = value.take(first + j)
            along += np.multiply(wx[j], tap, out=term)
            slope += np.multiply(sx[j], tap, out=term)
        out[0] += np.multiply(wy[i], along, out=term)
        out[1] += np.multiply(wy[i], slope, out=term)
        out[2] += np.multiply(sy[i], along, out=term)
    # the valid channel is eroded by one pixel: its four cell corners valid means the 4×4 support is
    ok = inside & (
        valid.take(base) * valid.take(base + 1) * valid.take(base + cols) * valid.take(base + cols + 1) > 0
    )
    out[1:] /= f
    return out.T, ok


def _block_mean_grid(image: np.ndarray, valid: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Pyramid level of the grid image: block means, valid only where the whole block is."""
    if factor == 1:
        return image, valid
    rows, cols = image.shape[0] // factor, image.shape[1] // factor

    def blocks(a: np.ndarray) -> np.ndarray:
        return a[: rows * factor, : cols * factor].reshape(rows, factor, cols, factor)

    return blocks(np.where(valid, image, 0.0)).mean(axis=(1, 3)), blocks(valid).all(axis=(1, 3))


# --------------------------------------------------------------------------------------------- statistics


def _robust_weights(
    residual: np.ndarray, loss: str, tuning: float, scale: float | None = None
) -> tuple[np.ndarray, np.ndarray, float]:
    """IRLS weights ψ(r)/r, curvatures ψ'(r) and the robust scale (``scale``, or 1.4826 × MAD)."""
    if scale is None:
        scale = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))
    ones = np.ones_like(residual)
    if not scale > 0 or loss == "l2":
        return ones, ones, max(scale, 0.0)
    z = np.abs(residual) / (tuning * scale)
    if loss == "huber":
        return np.minimum(1.0, 1.0 / np.maximum(z, 1e-12)), (z < 1).astype(float), scale
    return np.where(z < 1, (1 - z**2) ** 2, 0.0), np.where(z < 1, (1 - z**2) * (1 - 5 * z**2), 0.0), scale


def _photometric_design(values: np.ndarray, xn: np.ndarray, background_order: int, row_offsets: bool) -> np.ndarray:
    """Columns of the photometric model, (..., n, p) for ``values`` (..., n): the reference values (the gain's),
    then the background's monomials ``x^i y^j`` (``i + j <= background_order``); with ``row_offsets`` those
    constant along a row (``y^j``) are left out, since the free offset per row holds them."""
    cols = [values]
    for total in range(background_order + 1):
        for j in range(total + 1):
            if not (row_offsets and j == total):
                cols.append(xn[:, 0] ** (total - j) * xn[:, 1] ** j)
    return np.stack(np.broadcast_arrays(*cols), axis=-1)


@dataclass(frozen=True, slots=True, eq=False)
class _Rows:
    """The grid row of each pixel (ascending: pixels in raster order, as every level holds them) and the runs of
    pixels that share one, found once for every row-wise sum over the same pixels."""

    row: np.ndarray  # (n,) grid row of each pixel
    starts: np.ndarray  # first pixel of each row present
    lengths: np.ndarray  # pixels in each row present

    @classmethod
    def of(cls, row: np.ndarray) -> _Rows:
        starts = np.concatenate(([0], np.flatnonzero(row[1:] != row[:-1]) + 1))
        return cls(row, starts, np.diff(starts, append=len(row)))


def _within_rows(a: np.ndarray, rows: _Rows, weights: np.ndarray) -> np.ndarray:
    """``a`` (per column) minus its ``weights``-weighted mean over each grid row.

    Least squares with a free offset per row equals least squares on row-centred data and columns
    (Frisch–Waugh–Lovell): hundreds of nuisance offsets are eliminated exactly, in linear time.

    ``a`` is (n,) or (n, p) with ``weights`` (n,), or a stack (m, n, p) with ``weights`` (m, n), each centred
    with its own weights. The pixels' rows (``rows``, shared by the stack) are ascending, so each row is one run
    of pixels, summed in one pass.
    """
    axis = weights.ndim - 1  # the pixel axis
    columns = a.ndim > weights.ndim
    sums = np.add.reduceat(a * (weights[..., None] if columns else weights), rows.starts, axis=axis)
    total = np.add.reduceat(weights, rows.starts, axis=axis)
    total = np.where(total > 0, total, 1.0)
    return a - np.repeat(sums / (total[..., None] if columns else total), rows.lengths, axis=axis)


def _photometry(
    design: np.ndarray, target: np.ndarray, rows: _Rows, weights: np.ndarray, level: _Level, opts: _Options
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Weighted photometric fit: coefficients, residuals, the design as fitted (row-centred with row offsets)
    and the offset of every grid row (zeros without row offsets)."""
    if not opts.row_offsets:
        coef = _wls(design, target, weights)
        return coef, target - design @ coef, design, np.zeros(level.n_rows)
    centred = _within_rows(design, rows, weights)
    coef = _wls(centred, _within_rows(target, rows, weights), weights)
    rest = target - design @ coef
    residual = _within_rows(rest, rows, weights)
    offsets = np.zeros(level.n_rows)  # rows without pixels keep 0
    offsets[rows.row] = rest - residual  # each row's weighted mean, the same at every pixel of the row
    return coef, residual, centred, offsets


#: Largest condition number of the column-equilibrated Gram matrix for which :func:`_wls` solves the normal
#: equations (relative error ~ cond × 1e-16 <= 1e-10); beyond it, the SVD least squares.
_MAX_GRAM_CONDITION = 1e6


def _wls(design: np.ndarray, target: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted least squares: by the normal equations when well conditioned (a few columns, many rows: five
    times cheaper than the SVD), else by ``lstsq``."""
    weighted = design * weights[:, None]
    gram = weighted.T @ design
    norms = np.sqrt(np.diag(gram))
    if np.all(norms > 0) and np.all(np.isfinite(gram)):
        scaled = gram / np.outer(norms, norms)
        if np.linalg.cond(scaled) < _MAX_GRAM_CONDITION:
            return np.linalg.solve(scaled, (weighted.T @ target) / norms) / norms
    root = np.sqrt(weights)[:, None]
    try:
        coef, *_ = np.linalg.lstsq(design * root, target * root[:, 0], rcond=None)
    except np.linalg.LinAlgError as err:
        raise EstimationError("The photometric fit failed (the images may be flat).") from err
    return coef


def _pearson(a: np.ndarray, b: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Pearson correlation of ``a`` and ``b`` (``weights``-weighted when given); NaN without variation."""
    w = np.ones(len(a)) if weights is None else weights
    total = float(np.sum(w))
    if total <= 0:
        return float("nan")
    a, b = a - np.sum(w * a) / total, b - np.sum(w * b) / total
    denom = np.sqrt(np.sum(w * a * a) * np.sum(w * b * b))
    return float(np.sum(w * a * b) / denom) if denom > 0 else float("nan")


# --------------------------------------------------------------------------------------------- the solver


@dataclass(frozen=True, slots=True, eq=False)
class _Level:
    """One pyramid level of the grid image and the reference filtered for its pixel footprint."""

    values: np.ndarray  # (n,) valid grid pixels
    xn: np.ndarray  # (n, 2) their normalised coordinates
    row: np.ndarray  # (n,) their row on this level, ascending (raster order)
    n_rows: int
    to_level0: np.ndarray  # normalised level coordinates → level-0 grid px
    half_px: float  # level px per normalised unit
    fit_mask: np.ndarray  # (n,) pixels in the fitting half (all True without hold-out)
    cluster: np.ndarray  # (n,) block id, for the correlated-residual covariance
    ref: _Reference


@dataclass(frozen=True, slots=True, eq=False)
class _Options:
    model: str
    loss: str
    tuning: float
    background_order: int
    row_offsets: bool
    max_iterations: int
    tol_px: float
    min_valid_pixels: int


@dataclass(frozen=True, slots=True, eq=False)
class _State:
    """Residuals and Jacobian at one matrix, on the pixels that count."""

    ok: np.ndarray  # (n,) used pixels
    residual: np.ndarray
    weights: np.ndarray  # IRLS weights ψ(r)/r
    slope_weights: np.ndarray  # ψ'(r): the robust loss's curvature, for the covariance
    jacobian: np.ndarray  # (n_ok, k + n_photometric)
    sampled: np.ndarray  # reference values at the used pixels
    coef: np.ndarray  # photometric coefficients
    row_offset: np.ndarray  # (n_rows,) photometric offset of each grid row (zeros without row offsets)
    scale: float


def _evaluate(
    level: _Level, matrix: np.ndarray, opts: _Options, subset: np.ndarray, scale: float | None = None
) -> _State:
    """Sample, fit the photometry in closed form, robust weights and the joint Jacobian.

    ``scale`` fixes the robust scale (default: the MAD of these residuals).
    """
    a = matrix @ level.to_level0
    taken = None if subset.all() else np.flatnonzero(subset)  # sample the subset only (the hold-out's half)
    u, w = _warp(a, level.xn if taken is None else level.xn[taken])
    sampled, ok_taken = _sample(level.ref, u)
    if taken is None:
        ok = ok_taken
    else:
        ok = np.zeros(len(subset), bool)
        ok[taken] = ok_taken
    n_params = len(MODELS[opts.model]) + (opts.background_order + 1) * (opts.background_order + 2) // 2 + 1
    if ok.sum() < max(opts.min_valid_pixels, 3 * n_params):
        raise EstimationError(f"Too few valid pixels in the overlap to refine ({int(ok.sum())}).")
    ref, target, xn = sampled[ok_taken], level.values[ok], level.xn[ok]
    u, w = u[ok_taken], w[ok_taken]
    design = _photometric_design(ref[:, 0], xn, opts.background_order, opts.row_offsets)
    rows = _Rows.of(level.row[ok])
    _, residual, _, _ = _photometry(design, target, rows, np.ones(len(target)), level, opts)
    weights, _, scale = _robust_weights(residual, opts.loss, opts.tuning, scale)
    # once more with the robust weights
    coef, residual, fitted, row_offset = _photometry(design, target, rows, weights, level, opts)
    slope_weights = _robust_weights(residual, opts.loss, opts.tuning, scale)[1]
    geometric = coef[0] * _geometric_jacobian(opts.model, a, u, w, ref[:, 1:3], xn)
    if opts.row_offsets:  # the Jacobian of the row-centred problem (the offsets eliminated)
        geometric = _within_rows(geometric, rows, weights)
    return _State(
        ok=ok,
        residual=residual,
        weights=weights,
        slope_weights=slope_weights,
        jacobian=np.column_stack([geometric, fitted]),
        sampled=ref[:, 0],
        coef=coef,
        row_offset=row_offset,
        scale=scale,
    )


def _step(state: _State) -> np.ndarray:
    jw = state.jacobian * state.weights[:, None]
    try:
        delta = np.linalg.solve(jw.T @ state.jacobian, jw.T @ state.residual)
    except np.linalg.LinAlgError as err:
        raise EstimationError(
            "The refinement's normal equations are singular (featureless overlap?)."
        ) from err
    if not np.all(np.isfinite(delta)):
        raise EstimationError("The refinement produced a non-finite update.")
    return delta


def _gauss_newton(
    level: _Level, matrix: np.ndarray, opts: _Options, tol_px: float, started: bool = False,
    within: Callable[[np.ndarray], None] | None = None,
) -> tuple[np.ndarray, int, bool]:
    """Iterate on one level; returns the grid → reference matrix, the iterations and whether it converged.

    Coarse levels stop at a looser ``tol_px``: they only need to bring the next level within its capture
    range. ``matrix`` may already have moved from the caller's start (``started``: a coarser level refined it);
    losing the overlap after moving is a divergence (:class:`RefinementDiverged`), at the start an
    EstimationError. ``within`` is called with every updated matrix and raises :class:`RefinementDiverged` once it
    has travelled too far: the iterations that would follow are not spent on a refinement that diverged.
    """
    k = len(MODELS[opts.model])
    back = np.linalg.inv(level.to_level0)
    scale = None  # the robust scale is set at a level's first iteration: IRLS with a drifting scale crawls
    for iteration in range(1, opts.max_iterations + 1):
        try:
            state = _evaluate(level, matrix, opts, level.fit_mask, scale)
        except EstimationError as err:
            if iteration == 1 and not started:
                raise
            raise RefinementDiverged(f"The refinement diverged: it left the overlap ({err})") from err
        scale = state.scale or None
        delta = _step(state)[:k]
        increment = _delta(opts.model, delta)
        matrix = matrix @ level.to_level0 @ increment @ back
        if not np.all(np.isfinite(matrix)):
            raise RefinementDiverged("The refinement diverged (non-finite matrix).")
        if within is not None:
            within(matrix)
        if _update_px(level, increment) < tol_px:
            return matrix, iteration, True
    return matrix, opts.max_iterations, False


#: The corners of a level's grid, in its normalised coordinates.
_CORNERS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def _update_px(level: _Level, increment: np.ndarray) -> float:
    """How far a Gauss–Newton update (``increment``, in the level's normalised coordinates) moves the level's
    corners: the largest move, in level px (what the solver's tolerance is compared with)."""
    return float(np.linalg.norm(apply_matrix(increment, _CORNERS) - _CORNERS, axis=1).max() * level.half_px)


#: Points (perturbations × pixels) :func:`_score_slope` evaluates in one batch: large enough that a 40×40 map's
#: twelve affine perturbations go in one, small enough that a 128² grid's stay within ~7 MB per array (13 columns).
_SLOPE_BATCH_POINTS = 65_536


def _pixel_scores(
    level: _Level, matrices: np.ndarray, state: _State, opts: _Options
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel scores ``J_i ψ(r_i)`` (m, n, p) at each of ``matrices`` (m, 3, 3) on ``state``'s pixels
    (photometry, robust scale held), and where each sample is valid (m, n)."""
    a = matrices @ level.to_level0
    xn = level.xn[state.ok]
    u, w = _warp(a, xn)
    m, n = u.shape[:2]
    sampled, ok = _sample(level.ref, u.reshape(m * n, 2))
    sampled, ok = sampled.reshape(m, n, 3), ok.reshape(m, n)
    design = _photometric_design(sampled[..., 0], xn, opts.background_order, opts.row_offsets)
    row = level.row[state.ok]
    residual = level.values[state.ok] - design @ state.coef - state.row_offset[row]
    if state.scale:
        weights = _robust_weights(residual, opts.loss, opts.tuning, state.scale)[0]
    else:  # no robust scale at the solution: each perturbation's own
        weights = np.stack([_robust_weights(r, opts.loss, opts.tuning)[0] for r in residual])
    geometric = state.coef[0] * _geometric_jacobian(opts.model, a, u, w, sampled[..., 1:3], xn)
    columns = np.concatenate([geometric, design], axis=-1)
    if opts.row_offsets:  # scores of the row-centred problem, as in _evaluate
        columns = _within_rows(columns, _Rows.of(row), weights)
    return columns * (weights * residual)[..., None], ok


def _score_slope(
    level: _Level, matrix: np.ndarray, state: _State, opts: _Options, step_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """The slope ``B`` of the estimating equations Σ J_i ψ(r_i) = 0, and the pixels valid at every step.

    Geometric columns by central differences (step ``step_px`` level px), so ``B`` includes the term the
    Gauss–Newton Hessian drops: where the reference is noisy, its gradient's noise raises ``JᵀJ`` but not the
    restoring force, and ``JᵀWJ`` alone under-predicts the error (errors in variables). Photometric columns
    are exact (the prediction is linear in them). The 2k perturbed scores are evaluated in batches.
    """
    k = len(MODELS[opts.model])
    h = step_px / level.half_px
    back = np.linalg.inv(level.to_level0)
    moved = np.stack([matrix @ level.to_level0 @ _delta(opts.model, sign * h * e) @ back
                      for e in np.eye(k) for sign in (1, -1)])
    n = int(state.ok.sum())
    per_batch = 2 * max(1, _SLOPE_BATCH_POINTS // max(2 * n, 1))  # whole (+h, -h) pairs
    keep = np.ones(n, bool)
    columns = []
    for first in range(0, 2 * k, per_batch):
        scores, ok = _pixel_scores(level, moved[first:first + per_batch], state, opts)
        keep &= ok.all(axis=0)
        columns += [(scores[i + 1] - scores[i]) / (2 * h) for i in range(0, len(scores), 2)]
    b = np.zeros((state.jacobian.shape[1],) * 2)
    for j, column in enumerate(columns):
        b[:, j] = column[keep].sum(axis=0)
    jac, weights = state.jacobian[keep], state.slope_weights[keep]
    b[:, k:] = (jac * weights[:, None]).T @ jac[:, k:]
    return b, keep


def _covariance(
    state: _State, slope: np.ndarray, keep: np.ndarray, k: int, cluster: np.ndarray | None
) -> np.ndarray:
    """Geometric block of the parameter covariance, a sandwich ``B⁻¹ M B⁻ᵀ``.

    ``B`` is the measured slope of the estimating equations (:func:`_score_slope`). ``M`` is σ²·JᵀWJ (σ²
    from the weighted residuals) without ``cluster``, or, with it, the scores summed block by block, so
    residuals correlated between neighbouring pixels (smoothing, interpolation, footprint mismatch) are not
    counted as independent evidence.
    """
    jac, w, r = state.jacobian[keep], state.weights[keep], state.residual[keep]
    n, p = jac.shape
    try:
        b_inv = np.linalg.inv(slope)
    except np.linalg.LinAlgError as err:
        raise EstimationError("The refinement's Hessian is singular; no covariance.") from err
    if cluster is None:
        meat = float(np.sum(w * r**2)) / max(n - p, 1) * ((jac * w[:, None]).T @ jac)
    else:
        ids, inverse = np.unique(cluster[keep], return_inverse=True)
        summed = np.zeros((len(ids), p))
        np.add.at(summed, inverse, jac * (w * r)[:, None])
        g = len(ids)
        meat = g / max(g - 1, 1) * (n - 1) / max(n - p, 1) * (summed.T @ summed)
    return (b_inv @ meat @ b_inv.T)[:k, :k]


# --------------------------------------------------------------------------------------------- set-up


@dataclass(frozen=True, slots=True, eq=False)
class _Setup:
    """Which image is the grid, the crops, and the initial grid → reference matrix between the crops."""

    grid_name: str
    grid: np.ndarray
    grid_valid: np.ndarray
    ref: np.ndarray
    ref_valid: np.ndarray
    grid_crop: np.ndarray  # grid crop px → grid image px
    ref_crop: np.ndarray  # reference crop px → reference image px
    matrix: np.ndarray  # grid crop px → reference crop px
    footprint: float  # reference px per grid px


def _as_image(image: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2 or min(array.shape) < 2:
        raise EstimationError(
            f"The {name} image must be 2-D with at least 2 pixels per side, not {array.shape}."
        )
    valid = np.isfinite(array)
    return np.where(valid, array, 0.0), valid


def _crop_box(
    matrix: np.ndarray, source_shape: tuple[int, int], target_shape: tuple[int, int], margin: float
) -> tuple[slice, slice, np.ndarray]:
    """Bounding box, in the target image, of the source image mapped by ``matrix``, plus ``margin`` px."""
    rows, cols = source_shape
    corners = apply_matrix(matrix, np.array([[0, 0], [cols - 1, 0], [cols - 1, rows - 1], [0, rows - 1]], float))
    lo = np.floor(corners.min(axis=0) - margin).astype(int)
    hi = np.ceil(corners.max(axis=0) + margin).astype(int) + 1
    lo = np.clip(lo, 0, [target_shape[1], target_shape[0]])
    hi = np.clip(hi, 0, [target_shape[1], target_shape[0]])
    if np.any(hi - lo < 2):
        raise EstimationError("The moving image maps outside the fixed image; nothing to refine.")
    return slice(lo[1], hi[1]), slice(lo[0], hi[0]), _translation(float(lo[0]), float(lo[1]))


def _setup(
    fixed: np.ndarray,
    moving: np.ndarray,
    moving_to_fixed: np.ndarray,
    model: str,
    prior_scale: float | None,
    max_shift_fraction: float,
) -> _Setup:
    fixed_img, fixed_valid = _as_image(fixed, "fixed")
    moving_img, moving_valid = _as_image(moving, "moving")
    matrix = np.asarray(moving_to_fixed, float)
    if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-12:
        raise EstimationError("The initial moving_to_fixed matrix must be a finite, invertible 3×3 matrix.")
    centre = np.array([(moving.shape[1] - 1) / 2, (moving.shape[0] - 1) / 2])
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2] / matrix[2, 2]))))
    matrix = _project_model(matrix, model, scale if prior_scale is None else float(prior_scale), centre)
    if scale >= SWAP_BELOW:  # the moving image is the coarser (or as fine): its pixels are the residuals
        margin = 2 * scale + max_shift_fraction * min(moving.shape) * scale
        rows, cols, ref_crop = _crop_box(matrix, moving.shape, fixed.shape, margin)
        return _Setup(
            "moving",
            moving_img,
            moving_valid,
            fixed_img[rows, cols],
            fixed_valid[rows, cols],
            np.eye(3),
            ref_crop,
            np.linalg.inv(ref_crop) @ matrix,
            scale,
        )
    rows, cols, grid_crop = _crop_box(matrix, moving.shape, fixed.shape, 0.0)
    return _Setup(
        "fixed",
        fixed_img[rows, cols],
        fixed_valid[rows, cols],
        moving_img,
        moving_valid,
        grid_crop,
        np.eye(3),
        np.linalg.inv(matrix) @ grid_crop,
        1 / scale,
    )


def _level_count(shape: tuple[int, int], max_levels: int, min_level_px: int) -> int:
    n = 1
    while n < max_levels and min(shape) / 2**n >= min_level_px:
        n += 1
    return n


def _build_levels(
    setup: _Setup,
    n_levels: int,
    *,
    footprint_scale: float,
    min_footprint_valid: float,
    cluster_px: int,
    checker_px: int,
    min_sigma: float,
) -> list[_Level]:
    """Pyramid of the grid image (coarsest first), each with its footprint-averaged reference.

    Where the footprint is narrower than ``min_sigma`` reference px (same resolution), both images get the
    same extra Gaussian: the reference's noise (and its gradient's) then matters less, which keeps the
    error predictable; smoothing both alike cannot shift the result.
    """
    levels = []
    for index in reversed(range(n_levels)):
        factor = 2**index
        footprint = setup.footprint * factor
        ref, extra = _footprint_reference(
            setup.ref,
            setup.ref_valid,
            footprint * footprint_scale,
            min_footprint_valid=min_footprint_valid,
            min_sigma=min_sigma,
        )
        image, valid = _block_mean_grid(setup.grid, setup.grid_valid, factor)
        if extra > 0:
            image, weight = _normalised_blur(image, valid.astype(float), extra / footprint)
            valid = valid & (weight >= min_footprint_valid)
        rows, cols = np.nonzero(valid)
        xy = np.column_stack([cols, rows]).astype(float)
        norm = _normaliser(image.shape)
        to_level0 = np.array([[factor, 0, (factor - 1) / 2], [0, factor, (factor - 1) / 2], [0, 0, 1.0]])
        to_level0 = to_level0 @ np.linalg.inv(norm)
        top_left = xy * factor
        cells = (top_left // checker_px).astype(int)
        levels.append(
            _Level(
                values=image[rows, cols],
                xn=apply_matrix(norm, xy),
                row=rows,
                n_rows=image.shape[0],
                to_level0=to_level0,
                half_px=1 / norm[0, 0],
                fit_mask=(cells.sum(axis=1) % 2 == 0),
                cluster=(top_left[:, 1] // cluster_px) * 1_000_003 + top_left[:, 0] // cluster_px,
                ref=ref,
            )
        )
    return levels


def _with_mask(levels: list[_Level], half: bool) -> list[_Level]:
    """The levels with ``fit_mask`` all True (``half=False``) or the checkerboard half (as built)."""
    from dataclasses import replace

    return levels if half else [replace(lv, fit_mask=np.ones_like(lv.fit_mask)) for lv in levels]


def _solve(
    levels: list[_Level], matrix: np.ndarray, opts: _Options, max_shift_px: float
) -> tuple[np.ndarray, int, bool]:
    """Coarse to fine; raises as soon as the grid wanders further than ``max_shift_px`` grid px (checked after every
    update, so a refinement that diverged stops there)."""
    total, converged = 0, False
    rows_cols = levels[-1].to_level0 @ np.array([[-1, 1, 1, -1], [-1, -1, 1, 1], [1, 1, 1, 1.0]])
    corners = (rows_cols[:2] / rows_cols[2]).T
    start_corners = apply_matrix(matrix, corners)
    footprint = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2] / matrix[2, 2]))))

    def within(moved: np.ndarray) -> None:
        shift = np.linalg.norm(apply_matrix(moved, corners) - start_corners, axis=1).mean() / footprint
        if not shift <= max_shift_px:
            raise RefinementDiverged(
                f"The refinement diverged: the grid moved {shift:.1f} px (limit {max_shift_px:.1f})."
            )

    for index, level in enumerate(levels):
        tol = opts.tol_px if index == len(levels) - 1 else max(opts.tol_px, COARSE_TOL_PX)
        matrix, iterations, converged = _gauss_newton(level, matrix, opts, tol, started=index > 0, within=within)
        total += iterations
    return matrix, total, converged


# --------------------------------------------------------------------------------------------- scores


def _to_moving_to_fixed(setup: _Setup, matrix: np.ndarray) -> np.ndarray:
    full = setup.ref_crop @ matrix @ np.linalg.inv(setup.grid_crop)
    out = full if setup.grid_name == "moving" else np.linalg.inv(full)
    return out / out[2, 2]


def _grid_jacobian(
    setup: _Setup, level: _Level, matrix: np.ndarray, model: str, moving_shape: tuple[int, int]
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
    """d(fixed position)/d(parameter) of a 5×5 grid over the moving image, (25, 2, k), and the positions."""
    grid = grid_xy(moving_shape)
    back = np.linalg.inv(level.to_level0)

    def positions(p: np.ndarray) -> np.ndarray:
        moved = matrix @ level.to_level0 @ _delta(model, p) @ back
        return apply_matrix(_to_moving_to_fixed(setup, moved), grid)

    step = 1e-6
    k = len(MODELS[model])
    jac = np.stack([(positions(step * e) - positions(-step * e)) / (2 * step) for e in np.eye(k)], axis=-1)
    return jac, positions


def _rms_displacement(jac: np.ndarray, covariance: np.ndarray) -> float:
    """RMS over the grid of the displacement a parameter covariance implies (fixed px)."""
    per_point = np.einsum("nik,kl,nil->n", jac, covariance, jac)
    return float(np.sqrt(max(per_point.mean(), 0.0)))


def _misfit(
    setup: _Setup,
    level: _Level,
    matrix: np.ndarray,
    opts: _Options,
    state: _State,
    cluster: np.ndarray | None,
    moving_shape: tuple[int, int],
    own_grid: tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]],
) -> float:
    """How far (fixed px, RMS over the 5×5 grid) the next richer model would move the result, beyond noise.

    The richer model is refined from the result (at most ``MISFIT_ITERATIONS`` steps, this level only). When
    the model fits, the move is noise whose covariance is the richer model's minus this one's (Hausman);
    what exceeds it is the model's own misfit (a drift the rigid model cannot follow, a wrong prior scale),
    which the parameter covariance cannot see. Both covariances use the Gauss–Newton Hessian and each
    model's residuals at its own solution, so that they cancel alike. ``cluster`` is per level pixel;
    ``own_grid`` is :func:`_grid_jacobian` of the result (the caller has it already).
    """
    richer = RICHER.get(opts.model)
    if richer is None:
        return 0.0
    from dataclasses import replace

    def gn(st: _State) -> np.ndarray:
        return (st.jacobian * st.slope_weights[:, None]).T @ st.jacobian

    rich_opts = replace(opts, model=richer, max_iterations=MISFIT_ITERATIONS)
    try:
        rich_matrix = _gauss_newton(level, matrix, rich_opts, max(opts.tol_px, COARSE_TOL_PX / 5))[0]
        rich = _evaluate(level, rich_matrix, rich_opts, level.fit_mask, state.scale or None)
    except EstimationError:
        return 0.0
    own_cluster, rich_cluster = (None, None) if cluster is None else (cluster[state.ok], cluster[rich.ok])
    cov_rich = _covariance(
        rich, gn(rich), np.ones(len(rich.residual), bool), len(MODELS[richer]), rich_cluster
    )
    cov_own = _covariance(
        state, gn(state), np.ones(len(state.residual), bool), len(MODELS[opts.model]), own_cluster
    )
    jac_rich, rich_positions = _grid_jacobian(setup, level, rich_matrix, richer, moving_shape)
    jac_own, own_positions = own_grid
    moved = rich_positions(np.zeros(len(MODELS[richer]))) - own_positions(np.zeros(len(MODELS[opts.model])))
    observed = float(np.mean(np.sum(moved**2, axis=1)))
    expected = _rms_displacement(jac_rich, cov_rich) ** 2 - _rms_displacement(jac_own, cov_own) ** 2
    return float(np.sqrt(max(observed - max(expected, 0.0), 0.0)))


def _holdout_score(level: _Level, matrix: np.ndarray, opts: _Options) -> tuple[float, int, float]:
    """Correlation on the held-out half of the prediction whose photometry is fitted on the other half, the
    held-out pixels it was measured on and the photometric gain (NaN, 0, NaN when either half is too small)."""
    u, _ = _warp(matrix @ level.to_level0, level.xn)
    sampled, ok = _sample(level.ref, u)
    train, test = ok & level.fit_mask, ok & ~level.fit_mask
    if train.sum() < opts.min_valid_pixels or test.sum() < opts.min_valid_pixels:
        return float("nan"), 0, float("nan")
    order, rows = opts.background_order, opts.row_offsets
    coef, _, _, row_offset = _photometry(
        _photometric_design(sampled[train, 0], level.xn[train], order, rows),
        level.values[train],
        _Rows.of(level.row[train]),
        np.ones(int(train.sum())),
        level,
        opts,
    )
    prediction = _photometric_design(sampled[test, 0], level.xn[test], order, rows) @ coef
    return _pearson(prediction + row_offset[level.row[test]], level.values[test]), int(test.sum()), float(coef[0])


def _without_full_fit(setup: _Setup, model: str, fit: tuple[np.ndarray, int, bool], before: float, after: float,
                      n_valid: int = 0, gain: float = float("nan")) -> Refinement:
    """A refinement that stopped at the hold-out check: ``fit`` (matrix, iterations, converged) — the starting matrix
    when the half fit did not raise the held-out correlation, or the half fit itself (``half_fit_only``, judged on
    ``n_valid`` held-out pixels with photometric ``gain``) — and NaN where only the full fit measures (correlation,
    covariance, predicted error, sigma, misfit)."""
    matrix, iterations, converged = fit
    k = len(MODELS[model])
    result = _to_moving_to_fixed(setup, matrix)
    result.flags.writeable = False
    cov = np.full((k, k), np.nan)
    cov.flags.writeable = False
    nan = float("nan")
    return Refinement(moving_to_fixed=result, model=model, iterations=iterations, converged=converged,
                      correlation=nan, gain=gain, covariance=cov, predicted_error_px=nan, holdout_before=before,
                      holdout_after=after, n_valid=n_valid, grid=setup.grid_name, sigma=nan, misfit_px=nan)


# --------------------------------------------------------------------------------------------- public


def refine_matrix(
    fixed: np.ndarray,
    moving: np.ndarray,
    moving_to_fixed: np.ndarray,
    model: str,
    *,
    prior_scale: float | None = None,
    loss: str = "huber",
    tuning: float | None = None,
    background_order: int = 2,
    row_offsets: bool = True,
    max_iterations: int = 50,
    tol_px: float = 1e-3,
    max_levels: int = 3,
    min_level_px: int = 32,
    footprint_scale: float = 1.0,
    min_footprint_valid: float = 0.9,
    min_valid_pixels: int = 50,
    max_shift_fraction: float = 0.25,
    covariance: str = "clustered",
    cluster_px: int = 8,
    holdout: bool = True,
    holdout_px: int = 4,
    min_smoothing_px: float = 1.0,
    misfit_check: bool = True,
    require_improvement: bool = False,
    min_holdout_after: float = -1.0,
    half_fit_only: bool = False,
) -> Refinement:
    """Refine a global moving → fixed matrix to sub-pixel accuracy by intensity, on the coarser grid.

    Parameters
    ----------
    fixed, moving : array_like of shape (rows, cols)
        The two images; NaN marks missing pixels (they and their footprints are left out).
    moving_to_fixed : array_like of shape (3, 3)
        The starting matrix (a few coarse pixels from the truth at most), moving px → fixed px. It is first
        projected onto ``model`` (keeping where the moving image's centre lands).
    model : {"translation", "rigid", "similarity", "affine", "projective"}
    prior_scale : float, optional
        Fixed px per moving px, held for ``translation`` and ``rigid``. Default: the starting matrix's scale.
    loss : {"huber", "tukey", "l2"}
        Robust loss: Huber (default) is convex, so it cannot trap the solver, yet bounds the pull of
        artefacts (spikes, scars, a tip change); Tukey rejects them entirely but needs a good start.
    tuning : float, optional
        Robust threshold in robust standard deviations; default 1.345 (Huber) or 4.685 (Tukey), the
        usual 95 %-efficiency constants under Gaussian noise.
    background_order : int
        Degree of the polynomial background in the photometric model (grid ≈ gain × reference + background
        [+ row offset]). Default 2: two scans of one area rarely share their tilt or scanner bow, and a
        background left in the residual biases the fit (a bow of a few image standard deviations moved
        same-resolution pairs of the accuracy benchmark 1-2 px off the truth with a plane alone).
    row_offsets : bool
        Also solve for a free offset per row of the grid image (rows are fast-scan lines), eliminated exactly
        by centring every row. Default True: scan-line offsets, and the residue of aligning rows before,
        bias a fit that ignores them (the row alignment of SPM levelling, done on both scans, moved
        benchmark pairs up to 2 px off the truth); the grid image should be passed unlevelled.
    max_iterations : int
        Gauss–Newton iterations per pyramid level (50: it converges in 3–15 from a good start).
    tol_px : float
        Stop when an update moves the grid image's corners by less than this, in grid px of the level (1e-3:
        well below the accuracy the data support).
    max_levels, min_level_px : int
        Coarse-to-fine pyramid of the grid image: at most ``max_levels`` levels (3), each level's smaller side
        at least ``min_level_px`` (32). Widens the capture range of same-resolution pairs to a few pixels;
        a 40×40 map is refined on its own grid only.
    footprint_scale : float
        The footprint a grid pixel averages over, in grid pixels (1: a box of one pixel, as a map whose pixel
        is an area average; larger for a blunt tip). Modelled as a Gaussian of the box's variance, which is
        isotropic (the footprint may be rotated) and, being symmetric, cannot shift the result.
    min_footprint_valid : float
        A reference sample counts only where this fraction (0.9) of its footprint holds valid data.
    min_valid_pixels : int
        Fewer valid grid pixels than this (50) is too little evidence: :class:`EstimationError`.
    max_shift_fraction : float
        The refinement diverged if the grid image moves by more than this fraction (0.25) of its smaller side
        from the start, after any Gauss–Newton update: a local refinement should not travel that far, and one that
        has is stopped there.
    covariance : {"clustered", "iid"}
        Both are sandwiches ``B⁻¹ M B⁻ᵀ`` around the measured slope ``B`` of the estimating equations (the
        Gauss–Newton Hessian ``JᵀWJ`` plus the term it drops, which matters when the reference is noisy).
        ``"iid"``: ``M = σ²·JᵀWJ`` with σ² from the weighted residuals. ``"clustered"`` (default): ``M``
        sums the scores over ``cluster_px`` × ``cluster_px`` blocks, because residuals of neighbouring
        pixels are correlated (the common smoothing, interpolation, footprint mismatch): on same-resolution
        pairs the i.i.d. form covered the true error (within 2×) in 13-33 % of seeds, the clustered one in
        80-100 %; on maps both did (93 %).
    cluster_px : int
        Block size (grid px) of the clustered covariance (8: a few times the residuals' correlation length
        after smoothing; reduced to a sixth of the grid's smaller side so a small map keeps ≥ 36 blocks).
    holdout : bool
        Also fit on one half of a checkerboard of ``holdout_px`` blocks and score the other half before and
        after (doubles the cost). Default True: the caller keeps the refinement only when it helps.
    holdout_px : int
        Checkerboard block size in grid px (4, rounded up to the coarsest pyramid level's block).
    min_smoothing_px : float
        Minimum Gaussian sigma of the sampled reference, in its (block-reduced) pixels; where the footprint
        is narrower (same resolution), both images are smoothed by the same extra amount, which cannot
        shift the result. 1.0: with noise in both images, a sharper reference makes the error less
        predictable (errors in variables): on same-resolution pairs at 3-30 % noise the true error was within
        2× the predicted one in 94 % of seeds at 0.7 and 100 % at 1.0, and 1.0 agreed best with StackReg.
    misfit_check : bool
        Add to ``predicted_error_px`` how far the next richer model (affine; projective for affine) would
        move the result beyond what noise explains. Default True: the parameter covariance only covers noise
        under the model, and a rigid fit of a drifted map was 4× further off than it predicted; one extra
        Gauss–Newton evaluation.
    require_improvement : bool
        With ``holdout``, stop after the hold-out check when the held-out correlation does not rise (raise when
        the fit on the hold-out's other half fails, as the full fit would raise): the result
        then keeps the starting matrix (projected onto ``model``) with ``iterations`` 0, ``improved`` False and
        NaN where nothing was measured (correlation, gain, covariance, predicted error, sigma). Default False.
        For callers that discard a refinement that does not help: the full fit, its covariance and the misfit
        check are most of the cost.
    min_holdout_after : float
        With ``require_improvement``, also stop there when the held-out correlation after the half fit is below
        this (default -1: never), for callers that discard a fit the data explain less well; ``improved`` then
        says whether it rose, and the correlation is NaN as above.
    half_fit_only : bool
        Stop after the hold-out check whatever it says (with or without ``holdout``) and return the fit on the
        hold-out's half: its matrix, ``iterations`` and ``converged``, ``holdout_after``, ``n_valid`` the held-out
        pixels it was judged on and ``gain`` the photometric gain fitted there; NaN where only the full fit
        measures (correlation, covariance, predicted error, sigma, misfit). For comparing several starts by how
        well each explains pixels it was not fitted on (:func:`autoreg.contest.contest`), at about a third of
        the cost. It raises as the full fit would when the half fit fails. Default False.

    Returns
    -------
    Refinement

    Raises
    ------
    RefinementDiverged
        It started, then diverged: a non-finite matrix, a grid moving beyond ``max_shift_fraction``, or a walk
        off the overlap (a subclass of EstimationError).
    EstimationError
        Unknown model, non-invertible start, too few valid pixels at the start, or a singular system (a
        featureless overlap).

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:96, :96]
    >>> fixed = np.sin(x / 5.0) + np.cos(y / 7.0) + np.sin((x + y) / 11.0)
    >>> moving = np.sin((x + 1.3) / 5.0) + np.cos((y - 0.6) / 7.0) + np.sin((x + y + 0.7) / 11.0)
    >>> start = np.array([[1.0, 0, 1.0], [0, 1.0, 0.0], [0, 0, 1.0]])
    >>> result = refine_matrix(fixed, moving, start, "translation", holdout=False)
    >>> np.round(result.moving_to_fixed[:2, 2], 2)
    array([ 1.3, -0.6])
    """
    if model not in MODELS:
        raise EstimationError(f"Unknown model {model!r}; expected one of {', '.join(MODELS)}.")
    if loss not in ("huber", "tukey", "l2") or covariance not in ("clustered", "iid"):
        raise EstimationError(f"Unknown loss {loss!r} or covariance {covariance!r}.")
    opts = _Options(
        model=model,
        loss=loss,
        tuning=tuning or (4.685 if loss == "tukey" else 1.345),
        background_order=background_order,
        row_offsets=row_offsets,
        max_iterations=max_iterations,
        tol_px=tol_px,
        min_valid_pixels=min_valid_pixels,
    )
    moving_shape = np.shape(moving)
    setup = _setup(fixed, moving, moving_to_fixed, model, prior_scale, max_shift_fraction)
    n_levels = _level_count(setup.grid.shape, max_levels, min_level_px)
    checker = -(-max(holdout_px, 1) // 2 ** (n_levels - 1)) * 2 ** (n_levels - 1)
    halves = _build_levels(
        setup,
        n_levels,
        footprint_scale=footprint_scale,
        min_footprint_valid=min_footprint_valid,
        checker_px=checker,
        cluster_px=max(2, min(cluster_px, min(setup.grid.shape) // 6)),
        min_sigma=min_smoothing_px,
    )
    levels = _with_mask(halves, half=False)
    max_shift = max_shift_fraction * min(setup.grid.shape)
    before = after = float("nan")
    if holdout or half_fit_only:
        before = _holdout_score(halves[-1], setup.matrix, opts)[0]
        try:
            half = _solve(halves, setup.matrix, opts, max_shift)
        except EstimationError:
            if require_improvement or half_fit_only:  # the half fit failed: the caller gets why, as from the
                raise  # full fit
            after = float("nan")
        else:
            after, n_held_out, gain = _holdout_score(halves[-1], half[0], opts)
            if half_fit_only:
                return _without_full_fit(setup, model, half, before, after, n_held_out, gain)
        if require_improvement and not (after > before and after >= min_holdout_after):
            return _without_full_fit(setup, model, (setup.matrix, 0, False), before, after)
    matrix, iterations, converged = _solve(levels, setup.matrix, opts, max_shift)
    state = _evaluate(levels[-1], matrix, opts, levels[-1].fit_mask)
    k = len(MODELS[model])
    slope, keep = _score_slope(levels[-1], matrix, state, opts, SLOPE_STEP_PX)
    cov = _covariance(
        state, slope, keep, k, levels[-1].cluster[state.ok] if covariance == "clustered" else None
    )
    cluster = levels[-1].cluster if covariance == "clustered" else None
    own_grid = _grid_jacobian(setup, levels[-1], matrix, model, moving_shape)
    jac = own_grid[0]
    misfit = (_misfit(setup, levels[-1], matrix, opts, state, cluster, moving_shape, own_grid) if misfit_check
              else 0.0)
    result = _to_moving_to_fixed(setup, matrix)
    result.flags.writeable = False
    cov.flags.writeable = False
    return Refinement(
        moving_to_fixed=result,
        model=model,
        iterations=iterations,
        converged=converged,
        correlation=_pearson(state.sampled, state.coef[0] * state.sampled + state.residual, state.weights),
        gain=float(state.coef[0]),
        covariance=cov,
        predicted_error_px=float(np.hypot(_rms_displacement(jac, cov), misfit)),
        misfit_px=misfit,
        holdout_before=before,
        holdout_after=after,
        n_valid=int(state.ok.sum()),
        grid=setup.grid_name,
        sigma=state.scale,
    )
