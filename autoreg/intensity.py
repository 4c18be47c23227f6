"""Intensity-based registration: the fallback when features fail.

A coarse initialiser (Fourier–Mellin: log-polar phase correlation of the amplitude spectra for rotation and
scale, then masked phase correlation for the shift) followed by ECC refinement (``cv2.findTransformECC``),
all on the working views. Good for soft, low-texture or cross-modal pairs where ORB starves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .config import RegistrationConfig
from .datatypes import Fit, Matches
from .errors import EstimationError, library_errors
from .geometry import apply_matrix, grid_xy, mean_grid_distance
from .preprocess import WorkingView

__all__ = ["fourier_mellin", "refine_ecc", "intensity_fit", "refine_fit", "ECC_MOTION"]

#: ECC motion model for each global model; other models are refined as affine.
ECC_MOTION = {"translation": "MOTION_TRANSLATION", "rigid": "MOTION_EUCLIDEAN", "similarity": "MOTION_AFFINE",
              "affine": "MOTION_AFFINE", "projective": "MOTION_HOMOGRAPHY"}


def _canvas(view: WorkingView, size: int) -> tuple[np.ndarray, np.ndarray]:
    image = np.zeros((size, size), np.float32)
    mask = np.zeros((size, size), bool)
    h, w = view.unit.shape
    fill = float(view.unit[view.valid].mean()) if view.valid.any() else 0.0
    image[:] = fill
    image[:h, :w] = np.where(view.valid, view.unit, fill)
    mask[:h, :w] = view.valid
    return image, mask


def _log_polar_spectrum(image: np.ndarray, radius: int) -> np.ndarray:
    from skimage.filters import difference_of_gaussians, window
    from skimage.transform import warp_polar

    band = difference_of_gaussians(image, 1.0, 8.0) * window("hann", image.shape)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(band)))
    return warp_polar(spectrum, radius=radius, output_shape=(360, radius), scaling="log", order=1)


def _similarity_about(center: float, angle_deg: float, scale: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    rot = np.array([[scale * np.cos(a), -scale * np.sin(a), 0.0], [scale * np.sin(a), scale * np.cos(a), 0.0],
                    [0.0, 0.0, 1.0]])
    shift = np.array([[1.0, 0.0, center], [0.0, 1.0, center], [0.0, 0.0, 1.0]])
    return shift @ rot @ np.linalg.inv(shift)


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    from .score import masked_pearson

    value = masked_pearson(a, b, mask)
    return value if np.isfinite(value) else -1.0


def fourier_mellin(fixed_view: WorkingView, moving_view: WorkingView,
                   config: RegistrationConfig) -> tuple[np.ndarray, float, bool]:
    """Coarse similarity (moving view → fixed view) by Fourier–Mellin phase correlation.

    Both rotation candidates (θ, θ + 180°) and both contrast polarities (the moving view as is and
    inverted, for cross-modal pairs) are tried; the one with the best correlation over the overlap wins.

    Returns
    -------
    matrix : ndarray of shape (3, 3)
        Maps moving-view (x, y) to fixed-view (x, y).
    ncc : float
        Correlation of the two views over their overlap under ``matrix`` (-1 when undefined).
    inverted : bool
        True when the moving view matches with inverted contrast.
    """
    import cv2
    from skimage.registration import phase_cross_correlation

    size = int(max(*fixed_view.unit.shape, *moving_view.unit.shape))
    fixed, fixed_mask = _canvas(fixed_view, size)
    moving_plain, moving_mask = _canvas(moving_view, size)
    radius = size // 2
    fixed_polar = _log_polar_spectrum(fixed, radius)[:180]
    moving_polar = _log_polar_spectrum(moving_plain, radius)[:180]
    if not (fixed_polar.any() and moving_polar.any()):  # scikit-image would only warn, and return a shift of 0
        raise EstimationError("Fourier-Mellin: an image has no structure in the band it correlates.")
    shifts, _, _ = phase_cross_correlation(fixed_polar, moving_polar, upsample_factor=10, normalization=None)
    angle = float(shifts[0])
    scale = float(np.exp(shifts[1] * np.log(radius) / radius))
    low, high = config.intensity_scale_range
    if not low < scale < high:  # the views are already at one scale: an extreme value is a spurious peak
        scale = 1.0
    best = (np.eye(3), -2.0, False)
    centre = (size - 1) / 2.0
    for candidate, inverted in ((a, inv) for a in (angle, angle + 180.0) for inv in (False, True)):
        moving = np.where(moving_mask, 1.0 - moving_plain, 0.0).astype(np.float32) if inverted else moving_plain
        rotation = _similarity_about(centre, candidate, 1.0 / scale)
        rotated = cv2.warpAffine(moving, rotation[:2], (size, size), flags=cv2.INTER_LINEAR)
        rotated_mask = cv2.warpAffine(moving_mask.astype(np.uint8), rotation[:2], (size, size),
                                      flags=cv2.INTER_NEAREST).astype(bool)
        if rotated_mask.sum() < 16:
            continue
        shift_rc = phase_cross_correlation(fixed, rotated, reference_mask=fixed_mask, moving_mask=rotated_mask,
                                           overlap_ratio=config.intensity_overlap_ratio)[0]
        translation = np.array([[1.0, 0.0, -shift_rc[1]], [0.0, 1.0, -shift_rc[0]], [0.0, 0.0, 1.0]])
        matrix = translation @ rotation
        warped = cv2.warpAffine(moving, matrix[:2], (size, size), flags=cv2.INTER_LINEAR)
        warped_mask = cv2.warpAffine(moving_mask.astype(np.uint8), matrix[:2], (size, size),
                                     flags=cv2.INTER_NEAREST).astype(bool)
        score = _ncc(fixed, warped, warped_mask & fixed_mask)
        if score > best[1]:
            best = (matrix, score, inverted)
    return best


def _high_pass(image: np.ndarray, sigma: float) -> np.ndarray:
    """Remove slow intensity trends (tilt, shading) that bias ECC; keep the structure."""
    import cv2

    if sigma <= 0:
        return image
    return (image - cv2.GaussianBlur(image, (0, 0), sigma)).astype(np.float32)


def refine_ecc(fixed_view: WorkingView, moving_view: WorkingView, moving_to_fixed: np.ndarray, model: str,
               *, iterations: int, highpass_sigma: float, inverted: bool = False) -> tuple[np.ndarray, float]:
    """Refine a moving-view → fixed-view matrix by maximising the ECC criterion.

    Both views are high-passed first (ECC is invariant to gain and offset, not to a residual tilt, which
    differs between two scans). ``inverted`` refines against the moving view with inverted contrast.

    Raises
    ------
    EstimationError
        ECC did not converge or returned a non-finite matrix.
    """
    import cv2

    motion = getattr(cv2, ECC_MOTION.get(model, "MOTION_AFFINE"))
    fixed_to_moving = np.linalg.inv(moving_to_fixed)
    warp = (fixed_to_moving / fixed_to_moving[2, 2]).astype(np.float32)
    if motion != cv2.MOTION_HOMOGRAPHY:
        warp = warp[:2].copy()
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, 1e-6)
    mask = moving_view.valid.astype(np.uint8)
    moving = (1.0 - moving_view.unit).astype(np.float32) if inverted else moving_view.unit
    with library_errors("ECC refinement (the images may be uncorrelated)"):
        rho, warp = cv2.findTransformECC(_high_pass(fixed_view.unit, highpass_sigma),
                                         _high_pass(moving, highpass_sigma), warp, motion, criteria, mask, 3)
    full = np.vstack([warp, [0.0, 0.0, 1.0]]) if warp.shape[0] == 2 else warp.astype(float)
    if not np.all(np.isfinite(full)) or abs(np.linalg.det(full)) < 1e-12:
        raise EstimationError("ECC refinement returned a degenerate matrix.")
    return np.linalg.inv(full.astype(float)), float(rho)


def intensity_fit(fixed_view: WorkingView, moving_view: WorkingView, model: str, config: RegistrationConfig, *,
                  prior_scale: float = 1.0) -> Fit:
    """Intensity-based fit of a global model, in original pixel coordinates.

    Non-global or ``auto`` requests are fitted as ``affine`` (the fit's ``why`` says so).

    Raises
    ------
    EstimationError
    """
    from .estimate import fit_pair

    fitted = model if model in ECC_MOTION else "affine"
    coarse, _, inverted = fourier_mellin(fixed_view, moving_view, config)
    refined, rho = refine_ecc(fixed_view, moving_view, coarse, fitted, iterations=config.ecc_iterations,
                              highpass_sigma=config.ecc_highpass_sigma_wpx, inverted=inverted)
    working = refined
    # Express in original pixels through correspondences on a grid over the moving image.
    view_xy = grid_xy(moving_view.unit.shape, 7)
    moving_xy = apply_matrix(moving_view.to_original, view_xy)
    fixed_xy = apply_matrix(fixed_view.to_original @ working, view_xy)
    forward, backward = fit_pair(fitted, moving_xy, fixed_xy, prior_scale=prior_scale)
    why = f"intensity (Fourier-Mellin + ECC, correlation {rho:.3f}{', inverted contrast' if inverted else ''})"
    if fitted != model:
        why += f"; {model} requested, intensity registration fits global models only: affine"
    return Fit(model=fitted, moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.zeros(0, bool),
               source="intensity", matches=Matches(np.zeros((0, 2)), np.zeros((0, 2))), why=why, correlation=rho)


def _view_matrix(fixed_view: WorkingView, moving_view: WorkingView, moving_to_fixed: np.ndarray) -> np.ndarray:
    """An original-pixel moving → fixed matrix expressed between the working views."""
    return np.linalg.inv(fixed_view.to_original) @ moving_to_fixed @ moving_view.to_original


def refine_fit(fit: Fit, fixed_view: WorkingView, moving_view: WorkingView, config: RegistrationConfig, *,
               prior_scale: float = 1.0) -> tuple[Fit, float]:
    """Refine a global feature fit by ECC on the working views, if the refinement agrees with it.

    Returns
    -------
    fit : Fit
        The refined fit (same matches and inliers), or ``fit`` itself when ECC fails or moves the
        moving image's grid by more than ``config.refine_max_shift_wpx`` working pixels.
    shift_wpx : float
        Mean displacement between the two estimates on a grid over the moving image, in working pixels
        (NaN when ECC failed): agreement of two independent estimates.
    """
    from .estimate import fit_pair

    if fit.model not in ECC_MOTION:
        return fit, float("nan")
    initial = _view_matrix(fixed_view, moving_view, np.asarray(fit.moving_to_fixed.params, float))
    try:
        refined, rho = refine_ecc(fixed_view, moving_view, initial, fit.model, iterations=config.refine_iterations,
                                  highpass_sigma=config.ecc_highpass_sigma_wpx)
    except EstimationError:
        return fit, float("nan")
    shift = mean_grid_distance(lambda xy: apply_matrix(initial, xy), lambda xy: apply_matrix(refined, xy),
                               moving_view.unit.shape)
    if not shift <= config.refine_max_shift_wpx:
        return fit, shift
    matrix = fixed_view.to_original @ refined @ np.linalg.inv(moving_view.to_original)
    moving_xy = apply_matrix(moving_view.to_original, grid_xy(moving_view.unit.shape))
    forward, backward = fit_pair(fit.model, moving_xy, apply_matrix(matrix, moving_xy), prior_scale=prior_scale)
    why = (fit.why + "; " if fit.why else "") + f"refined by ECC (correlation {rho:.3f}, moved {shift:.2f} working px)"
    return dataclasses.replace(fit, moving_to_fixed=forward, fixed_to_moving=backward, why=why), shift
