"""All tunables of a registration, in one frozen dataclass."""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["RegistrationConfig"]


@dataclass(frozen=True, slots=True)
class RegistrationConfig:
    """Tunables of :func:`autoreg.register`. Immutable; derive variants with :meth:`with_`.

    Attributes
    ----------
    working_size : int
        Longest side, in pixels, of the working views that features are detected on.
    working_size_max : int
        Longest side of the working views when both images are fine (same-resolution pairs).
    match_blur : float
        Gaussian sigma, per coarser-image pixel, that blurs the finer image to the coarser one's resolution.
    n_features : int
        ORB features requested per 256×256 working pixels (larger views get proportionally more).
    fast_threshold : int
        ORB's FAST threshold; low values find corners in soft, low-contrast scans.
    orb_levels : int
        ORB pyramid levels (scale factor 1.2): the working views are already at one scale, so few are needed.
    orb_patch_size : int
        ORB patch size (also used as the edge threshold), in working pixels.
    match_ratio : float
        Lowe's ratio test: keep a match when its distance is below this fraction of the second best.
    clahe_clip : float
        CLAHE clip limit applied to the 8-bit detector views.
    ransac_threshold_px : float
        Inlier threshold in *working* pixels for the robust fit.
    ransac_max_iters : int
        Upper bound on robust-fit iterations.
    ransac_confidence : float
        Requested confidence of the robust fit.
    polynomial_order : int
        Order of the ``polynomial`` model (2 or 3).
    auto_models : tuple of str
        Candidate models for ``model="auto"``, simplest first.
    auto_se : float
        ``auto`` keeps the simplest model whose held-out error exceeds the best one's by at most this many
        standard errors (paired over the points).
    cv_folds : int
        Folds of the held-out residual used by ``auto``.
    cv_max_points : int
        At most this many inliers (evenly spaced) enter the held-out comparison, which bounds its cost.
    min_inliers : int
        Fewer inliers than this is ``failed``.
    ok_inliers : int
        Fewer inliers than this (but at least ``min_inliers``) is ``low_confidence``.
    min_inlier_ratio : float
        An inlier ratio below this is ``low_confidence``.
    min_model_support : float
        A translation, rigid or similarity fit explaining fewer than this fraction of the matches an affine
        consensus explains is ``low_confidence`` (the model is too simple for the data).
    min_inlier_spread : float
        Feature inliers whose convex hull covers less than this fraction of the overlap are ``low_confidence``.
    max_rmse_wpx : float
        RMS inlier residual, in working-view pixels (the precision landmarks are located to), above which the
        result is ``low_confidence``.
    min_overlap_fraction : float
        An overlap (fraction of the fixed image covered by the warped moving image) below this is ``low_confidence``;
        an empty overlap is ``failed``.
    min_pearson : float
        A Pearson correlation over the overlap below this is ``low_confidence``.
    min_pearson_intensity : float
        The same for intensity-based results, whose optimiser maximises correlation itself.
    min_ecc_correlation : float
        Intensity results whose ECC correlation (high-passed working views) is below this are ``low_confidence``.
    min_pearson_gain : float
        ``pearson - pearson_before`` below this (when the unregistered pair was not already aligned) is
        ``low_confidence``.
    max_scale_ratio : float
        Largest plausible ratio between the estimated scale and the expected one (from image sizes or metadata).
    max_shear : float
        Largest plausible shear (|cos| of the angle between the mapped axes).
    ecc_iterations : int
        Iterations of the ECC refinement in the intensity fallback.
    refine : bool
        Refine global feature fits by ECC on the working views (kept only when both estimates agree).
    refine_iterations : int
        ECC iterations of that refinement.
    refine_max_shift_wpx : float
        Largest disagreement (mean grid displacement, working pixels) for which the refinement is kept.
    refine_max_coarse_wpx : float
        Refine only when the coarser image's pixel spans at most this many working pixels: an image upsampled
        further carries no detail for ECC to add (features alone are more accurate on such pairs).
    max_pixels : int
        Pixel budget for one input image; larger images are refused with a clear error.
    same_pixel_size_band : tuple of float
        Without physical pixel sizes, two images whose size ratio lies in this band are taken to have the same
        pixel size (two crops of one scan); outside it, to cover the same field of view. 2× either way: a
        crop keeps at least half the scan, and a resolution change is rarely less than 2×.
    no_improvement_below : float
        ``no_improvement`` (no Pearson gain over the unregistered guess) applies only when that guess correlates
        below this: a pair already aligned (0.9 and up) cannot gain much, and that is no sign of failure.
    flat_relative_range : float
        An image whose 0.5–99.5 percentile range is below this fraction of its median magnitude is flat: float32
        rounding is ~1e-7 relative, so 1e-5 leaves a wide margin above rounding and far below any real contrast.
    sift_contrast_threshold : float
        SIFT's contrast threshold: a fifth of OpenCV's default (0.04), to find blobs on soft, low-contrast scans.
    ecc_highpass_sigma_wpx : float
        Gaussian sigma (working px) of the high-pass applied before ECC: removes tilt and shading that differ
        between scans, keeps structure up to ~4 sigma (the 256-px working view's larger features).
    intensity_scale_range : tuple of float
        Fourier–Mellin scales outside this range are spurious peaks: the working views are already at one scale.
    intensity_overlap_ratio : float
        Smallest overlap (fraction of the smaller image) that masked phase correlation accepts for a shift.
    auto_tie_px2 : float
        Held-out squared errors (fixed px²) that differ by less than this are a tie in ``auto`` (round-off only).
    cpcorr_half_width : int
        Half width, in coarse pixels, of the patch that refines a control point (11×11 for 5): MATLAB's cpcorr
        uses 11×11 too; smaller patches hold too little structure on a 40×40 map, larger ones leave the local
        linear approximation of the transform and the map itself.
    cpcorr_radius : int
        Search radius, in coarse pixels, of that refinement. Clicks on a coarse map are off by 1–3 pixels; 4
        leaves room for the parabola's neighbours (MATLAB's cpcorr also moves a point at most 4 pixels).
    cpcorr_min_correlation : float
        A refinement whose peak correlation (plane-removed patches) is below this keeps the click: a weaker peak
        on a flat terrace or in noise is as likely a wrong place as the right one. 0.5 is MATLAB cpcorr's
        threshold; on the synthetic STM/STS pair correct peaks lie above 0.9 (5th percentile 0.92 of 121 clicks),
        and against a map of pure noise the best peak stayed below 0.46 (60 clicks, median 0.27).
    cpcorr_min_patch_fine_px : float
        ... and the patch spans at least this many fine pixels: at low resolution ratios 11 coarse pixels hold one
        smooth edge or blob, which fixes no position; 64 px holds 2-D structure on SPM-like terrain.
    cpcorr_min_isotropy : float
        The correlation peak's flattest curvature must be at least this fraction of its steepest, else the click
        is kept: a ridge (a straight step edge) fixes the point across the edge only. On synthetic pairs at
        ratios 1–26 every peak at or above 0.2 was within 0.5 coarse px of the truth; below it, up to 2 px off.
    loo_outlier_factor : float
        A control point whose leave-one-out residual (weighed by sqrt(1 - leverage)) exceeds this multiple of the
        median of the others' is named as an outlier: with good points the LOO residuals are alike, a misclick
        stands far out. With the floor below, 3 named no good point in 200 synthetic sets of ten (click noise an
        eighth of a map pixel) and found a 3-map-pixel misclick in all 200.
    loo_outlier_min_coarse_px : float
        ... and exceeds this many coarse pixels (converted to fixed px): below one coarse pixel a residual is
        within click precision, and exact synthetic points would otherwise be named for round-off.
    """

    working_size: int = 256
    working_size_max: int = 1024
    match_blur: float = 0.4
    n_features: int = 1000
    fast_threshold: int = 5
    orb_levels: int = 8
    orb_patch_size: int = 19
    clahe_clip: float = 2.0
    match_ratio: float = 0.9
    ransac_threshold_px: float = 2.0
    ransac_max_iters: int = 5000
    ransac_confidence: float = 0.999
    polynomial_order: int = 2
    auto_models: tuple[str, ...] = ("translation", "rigid", "similarity", "affine", "projective", "polynomial")
    auto_se: float = 1.0
    cv_folds: int = 5
    cv_max_points: int = 150
    min_inliers: int = 6
    ok_inliers: int = 15
    min_inlier_ratio: float = 0.05
    min_model_support: float = 0.7
    min_inlier_spread: float = 0.05
    max_rmse_wpx: float = 2.5
    min_overlap_fraction: float = 0.2
    min_pearson: float = 0.3
    min_pearson_intensity: float = 0.5
    min_ecc_correlation: float = 0.6
    min_pearson_gain: float = 0.0
    max_scale_ratio: float = 3.0
    max_shear: float = 0.3
    max_pixels: int = 64_000_000
    ecc_iterations: int = 200
    refine: bool = True
    refine_iterations: int = 50
    refine_max_shift_wpx: float = 3.0
    refine_max_coarse_wpx: float = 2.0
    same_pixel_size_band: tuple[float, float] = (0.5, 2.0)
    no_improvement_below: float = 0.9
    flat_relative_range: float = 1e-5
    sift_contrast_threshold: float = 0.01
    ecc_highpass_sigma_wpx: float = 10.0
    intensity_scale_range: tuple[float, float] = (0.5, 2.0)
    intensity_overlap_ratio: float = 0.2
    auto_tie_px2: float = 1e-9
    cpcorr_half_width: int = 5
    cpcorr_radius: int = 4
    cpcorr_min_correlation: float = 0.5
    cpcorr_min_patch_fine_px: float = 64.0
    cpcorr_min_isotropy: float = 0.2
    loo_outlier_factor: float = 3.0
    loo_outlier_min_coarse_px: float = 1.0

    def with_(self, **changes: object) -> RegistrationConfig:
        """Return a copy with some fields changed.

        Examples
        --------
        >>> RegistrationConfig().with_(n_features=500).n_features
        500
        """
        return replace(self, **changes)  # type: ignore[arg-type]
