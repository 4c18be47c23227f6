"""Deterministic synthetic scans with exact ground truth, and the bundled fixtures.

Everything here is seeded: the same seed gives identical arrays. The scene is an STM-like terrain —
terraces with meandering step edges (0.2 nm steps), adsorbate blobs of several sizes, a plane tilt, scan-line
offsets and noise. A moving scan samples the *clean* scene at the true positions of its pixels, so the
ground truth is exact: ``fixed_xy = moving_to_fixed @ (x, y, 1)`` plus, for the STM/STS pair, a slow
non-linear creep.

USID layout of ``fixtures/stm_sts.h5`` (the tutorial's tree)::

    /Measurement_000/Channel_000/STM_Topography   (1048576, 1)  nm      + Position_*/Spectroscopic_* ancillaries
    /Measurement_001/Channel_000/STS              (1600, 256)   a. u.   + Spectroscopic_* (Bias, V)
    /Measurement_001/Channel_001/STS_Z_Contrast   (1600, 1)     a. u.   + Spectroscopic_*
    /Measurement_001/Position_Indices, Position_Values            (shared by both STS channels)

Row/column convention. Positions are stored with X varying fastest: flat position ``i`` is image row
``y = i // n_x`` and column ``x = i % n_x``, so the flat data reshaped to ``(n_y, n_x[, n_spectral])`` is the
image with rows = Y and columns = X. ``Position_Indices``/``Position_Values`` have the columns ``(X, Y)``
(labels ``[b"X", b"Y"]``, fastest first), as pycroscopy 0.60 wrote them (e.g. the real PFM scan in
``shared/data``). pyUSID's ``USIDataset(dset).get_n_dim_form()`` orders axes as the labels, i.e. ``(X, Y, spectral)``: swap the
first two axes (``np.moveaxis(n_dim, 0, 1)``) to get the image. (pyUSID 0.0.12's own ``write_ind_val_dsets``
stores the columns slowest first, ``(Y, X)``, which reads back as ``(Y, X, spectral)``; both are valid USID.)
Ancillaries are uint32 indices and float32 values with ``labels`` and ``units`` attributes; a single-valued
channel has one spectroscopic step labelled ``arb``. Everything is written with plain h5py, because
pyUSID 0.0.12's ``write_main_dataset`` calls ``np.product``, which numpy 2 removed.

Ground truth: root attributes ``moving_to_fixed_matrix`` (3×3, moving px → fixed px), ``creep_xy``,
``generator_seed``, ``generator_version`` and ``autoreg_truth`` (JSON of :class:`StmStsTruth`, read by
:func:`load_truth`). STS ``Position_Values`` are the *nominal* (commanded) frame in nm, in the topography's
frame (fixed pixel ``(x, y)`` is at ``(x, y) * fixed_pixel_nm``); the true, drifted placement differs from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .geometry import apply_matrix
from .usid import write_main, write_positions

__all__ = [
    "GENERATOR_VERSION",
    "STS_BIAS_V",
    "Scene",
    "SyntheticPair",
    "StmStsTruth",
    "make_scene",
    "make_pair",
    "make_stm_sts_pair",
    "true_moving_to_fixed",
    "expected_spectra",
    "write_stm_sts_usid",
    "write_same_resolution_pair",
]

GENERATOR_VERSION = "2"  # 2: the STS terrace state moves with every terrace (1 clipped it above terrace 4)
STEP_NM = 0.2
STS_BIAS_V = np.linspace(-1.0, 1.0, 256)
STS_BIAS_V.flags.writeable = False
TERRACE_STATE_V = (-0.75, 0.25)  # bias of the surface state on the lowest and on the highest terrace
TERRACE_STATE_WIDTH_V = 0.08
RESONANCE_V, RESONANCE_WIDTH_V = 0.55, 0.1  # the adsorbate resonance


@dataclass(frozen=True, slots=True, eq=False)
class Scene:
    """A clean synthetic terrain and its parts, on a pixel grid.

    Attributes
    ----------
    height : ndarray (H, W)
        Clean height (nm): terraces + adsorbates, no tilt, offsets or noise.
    level : ndarray of int (H, W)
        Terrace index (0 = lowest).
    adsorbate : ndarray (H, W)
        Adsorbate coverage, 0 (bare) to about 1 (on a blob).
    """

    height: np.ndarray
    level: np.ndarray
    adsorbate: np.ndarray


@dataclass(frozen=True, slots=True, eq=False)
class SyntheticPair:
    """A fixed and a moving image with the exact moving → fixed pixel transform.

    Attributes
    ----------
    fixed, moving : ndarray of float32, shape (rows, cols)
        The two scans (rows = y, columns = x).
    moving_to_fixed : ndarray of shape (3, 3)
        Moving pixel ``(x, y, 1)`` → fixed pixel (exact for :func:`make_pair`; the affine part for the STM/STS
        pair, whose exact mapping is :func:`true_moving_to_fixed` with ``truth``).
    cube : ndarray of float32, shape (rows, cols, n_bias), optional
        The STS spectra on the moving grid (STM/STS pair only).
    bias : ndarray of shape (n_bias,), optional
        The cube's bias steps (V).
    truth : StmStsTruth, optional
        The STM/STS pair's full ground truth (affine + creep).
    scene : Scene
        The clean terrain on the fixed grid (fixed pixel coordinates).
    """

    fixed: np.ndarray
    moving: np.ndarray
    moving_to_fixed: np.ndarray
    cube: np.ndarray | None = None
    bias: np.ndarray | None = None
    truth: Any = None
    scene: Scene | None = None


@dataclass(frozen=True, slots=True)
class StmStsTruth:
    """Ground truth of the STM/STS pair: ``fixed = matrix @ moving + creep(moving)``.

    ``creep`` adds ``creep_xy * (y / (n_rows - 1)) ** 2`` fixed pixels: a drift that grows with scan time.
    """

    moving_to_fixed: tuple[tuple[float, ...], ...]
    creep_xy: tuple[float, float]
    moving_rows: int
    seed: int
    fixed_pixel_nm: float
    moving_pixel_nm: float
    moving_origin_nm: tuple[float, float]
    version: str = GENERATOR_VERSION

    @property
    def matrix(self) -> np.ndarray:
        """The affine part, 3×3."""
        return np.array(self.moving_to_fixed, float)


def _blobs(shape: tuple[int, int], rng: np.random.Generator, count: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """Sum of gaussian bumps of peak ≈ 1, by filtering impulses (fast for any count)."""
    from scipy import ndimage as ndi

    out = np.zeros(shape)
    per = max(1, count // len(sigmas))
    for sigma in sigmas:
        impulses = np.zeros(shape)
        rows = rng.integers(0, shape[0], per)
        cols = rng.integers(0, shape[1], per)
        np.add.at(impulses, (rows, cols), rng.uniform(0.6, 1.0, per))
        out += ndi.gaussian_filter(impulses, sigma, mode="wrap") * (2 * np.pi * sigma**2)
    return np.clip(out, 0, 1.5)


def make_scene(shape_rc: tuple[int, int], *, seed: int, feature_px: float = 1.0, n_blobs: int | None = None) -> Scene:
    """A clean STM-like terrain.

    Parameters
    ----------
    shape_rc : tuple of int
        ``(rows, cols)``.
    seed : int
    feature_px : float
        Size scale of the content in pixels (1 = blobs of 4-12 px sigma, terraces meandering over ~60 px).
    n_blobs : int, optional
        Number of adsorbates; default about one per 7000 px².
    """
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    rows, cols = shape_rc
    y, x = np.mgrid[:rows, :cols].astype(float)
    meander = ndi.gaussian_filter(rng.normal(size=shape_rc), 40 * feature_px, mode="wrap")
    meander /= meander.std() + 1e-12
    slope = rng.uniform(0.5, 1.0) * (x * np.cos(0.6) + y * np.sin(0.6)) / (220 * feature_px)
    raw_level = np.floor(1.2 * meander + slope)
    level = (raw_level - raw_level.min()).astype(int)
    count = n_blobs if n_blobs is not None else max(10, rows * cols // 7000)
    adsorbate = _blobs(shape_rc, rng, count, tuple(s * feature_px for s in (4.0, 7.0, 12.0)))
    height = STEP_NM * level + 0.35 * adsorbate
    return Scene(height=height, level=level, adsorbate=adsorbate)


def _sample(image: np.ndarray, xy: np.ndarray, *, order: int = 1) -> np.ndarray:
    from scipy import ndimage as ndi

    return ndi.map_coordinates(image, [xy[..., 1], xy[..., 0]], order=order, mode="nearest")


def _pixel_grid(shape_rc: tuple[int, int]) -> np.ndarray:
    y, x = np.mgrid[: shape_rc[0], : shape_rc[1]].astype(float)
    return np.stack([x, y], axis=-1)


def _scan_artifacts(image: np.ndarray, rng: np.random.Generator, *, tilt: float, line_sd: float,
                    noise_sd: float) -> np.ndarray:
    rows, cols = image.shape
    y, x = np.mgrid[:rows, :cols].astype(float)
    return (image + tilt * (0.8 * x + 0.3 * y) + rng.normal(0, line_sd, (rows, 1))
            + rng.normal(0, noise_sd, image.shape))


def _contrast(values: np.ndarray) -> np.ndarray:
    """A monotonic, non-linear change of contrast (offset, gain and a tanh knee)."""
    z = (values - values.mean()) / (values.std() + 1e-12)
    return 3.0 + 1.5 * (0.6 * z + 0.4 * np.tanh(1.5 * z))


def make_pair(
    *,
    seed: int,
    fixed_shape: tuple[int, int] = (256, 256),
    moving_shape: tuple[int, int] = (256, 256),
    matrix: np.ndarray | None = None,
    noise: float = 0.01,
    contrast: str = "same",
) -> SyntheticPair:
    """A fixed scan and a moving scan of one synthetic scene with an exact moving → fixed matrix.

    Parameters
    ----------
    seed : int
    fixed_shape, moving_shape : tuple of int
        ``(rows, cols)`` of the two scans.
    matrix : ndarray of shape (3, 3), optional
        Moving pixel (x, y) → fixed pixel (x, y). Default: a 10° rotation about the centre and a small shift,
        with the scale that makes both scans cover the same field of view.
    noise : float
        Noise standard deviation (nm) of each scan.
    contrast : {"same", "nonlinear", "inverted"}
        Contrast of the moving scan relative to the fixed one.

    Returns
    -------
    SyntheticPair
    """
    rng = np.random.default_rng(seed + 7919)
    scale = float(np.sqrt(np.prod(np.asarray(fixed_shape, float) / np.asarray(moving_shape, float))))
    if matrix is None:
        a = np.deg2rad(10.0)
        matrix = np.array([[scale * np.cos(a), -scale * np.sin(a), 0.0], [scale * np.sin(a), scale * np.cos(a), 0.0],
                           [0.0, 0.0, 1.0]])
        centre_m = np.array([(moving_shape[1] - 1) / 2, (moving_shape[0] - 1) / 2, 1.0])
        centre_f = np.array([(fixed_shape[1] - 1) / 2 + 4.0, (fixed_shape[0] - 1) / 2 - 3.0])
        matrix[:2, 2] = centre_f - (matrix @ centre_m)[:2]
    matrix = np.asarray(matrix, float)
    feature = max(fixed_shape) / 1024 * 2.0 + 0.5
    scene = make_scene(fixed_shape, seed=seed, feature_px=feature)
    fixed = _scan_artifacts(scene.height, rng, tilt=2e-4, line_sd=0.01, noise_sd=noise)
    moving_scale = float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))
    source = scene.height
    if moving_scale > 1.5:  # a coarser moving scan averages over its pixel
        from scipy import ndimage as ndi

        source = ndi.gaussian_filter(scene.height, 0.4 * moving_scale, mode="nearest")
    moving = _sample(source, apply_matrix(matrix, _pixel_grid(moving_shape)), order=3)
    if contrast == "nonlinear":
        moving = _contrast(moving)
    elif contrast == "inverted":
        moving = -moving
    elif contrast != "same":
        raise ValueError(f"unknown contrast {contrast!r}")
    moving = _scan_artifacts(moving, rng, tilt=-1e-4, line_sd=0.005, noise_sd=noise)
    return SyntheticPair(fixed=fixed.astype(np.float32), moving=moving.astype(np.float32), moving_to_fixed=matrix,
                         scene=scene)


def _stm_sts_truth(seed: int) -> StmStsTruth:
    rng = np.random.default_rng(seed + 104729)
    n_fixed, n_moving = 1024, 40
    fixed_pixel_nm = 100.0 / n_fixed
    moving_pixel_nm = 2.0  # nominal: 80 nm frame of 40 points
    pitch = moving_pixel_nm / fixed_pixel_nm
    angle = np.deg2rad(rng.uniform(2.0, 5.0) * rng.choice([-1, 1]))
    sx, sy = 1 + rng.uniform(-0.03, 0.03), 1 + rng.uniform(-0.03, 0.03)
    shear = rng.uniform(-0.02, 0.02)
    linear = pitch * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) @ np.array(
        [[sx, shear], [0.0, sy]])
    centre_m = np.array([(n_moving - 1) / 2, (n_moving - 1) / 2])
    centre_f = np.array([(n_fixed - 1) / 2, (n_fixed - 1) / 2]) + rng.uniform(-30, 30, 2)
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre_f - linear @ centre_m
    creep = tuple(float(v) for v in rng.uniform(2.0, 4.0, 2) * rng.choice([-1, 1], 2))
    origin_nm = (10.0, 10.0)
    return StmStsTruth(moving_to_fixed=tuple(tuple(float(v) for v in row) for row in matrix), creep_xy=creep,
                       moving_rows=n_moving, seed=seed, fixed_pixel_nm=fixed_pixel_nm,
                       moving_pixel_nm=moving_pixel_nm, moving_origin_nm=origin_nm)


def true_moving_to_fixed(moving_xy: np.ndarray, truth: StmStsTruth) -> np.ndarray:
    """Exact fixed-pixel position of moving-pixel points (affine + creep).

    Parameters
    ----------
    moving_xy : array_like of shape (N, 2)
    truth : StmStsTruth

    Returns
    -------
    ndarray of shape (N, 2)
    """
    moving_xy = np.asarray(moving_xy, float)
    t = moving_xy[..., 1:2] / (truth.moving_rows - 1)
    return apply_matrix(truth.matrix, moving_xy) + np.asarray(truth.creep_xy) * t**2


def _tip_blur(truth: StmStsTruth) -> float:
    return 0.4 * truth.moving_pixel_nm / truth.fixed_pixel_nm


def _block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over ``factor`` × ``factor`` blocks (edge-padded to a multiple of ``factor``)."""
    rows, cols = (-(-n // factor) * factor for n in image.shape)
    padded = np.pad(image, ((0, rows - image.shape[0]), (0, cols - image.shape[1])), mode="edge")
    return padded.reshape(rows // factor, factor, cols // factor, factor).mean(axis=(1, 3))


def _spectral_fields(scene: Scene, truth: StmStsTruth) -> tuple[np.ndarray, int]:
    """Tip-footprint averages of each terrace's indicator and of the adsorbate coverage.

    Returns the fields, shape ``(n_levels + 1, h, w)`` (terraces 0, 1, ..., then the adsorbate), on a grid
    ``factor`` times coarser than the fixed image: block means then a gaussian of the footprint's sigma, which
    is ~16× cheaper than blurring every indicator at full resolution and indistinguishable at the STS pitch.
    """
    from scipy import ndimage as ndi

    sigma = _tip_blur(truth)
    factor = max(1, int(sigma // 2))
    n_levels = int(scene.level.max()) + 1
    layers = [(scene.level == k).astype(float) for k in range(n_levels)] + [scene.adsorbate]
    fields = np.stack([ndi.gaussian_filter(_block_mean(layer, factor), sigma / factor, mode="nearest")
                       for layer in layers])
    return fields, factor


def _sample_fields(fields: np.ndarray, factor: int, fixed_xy: np.ndarray) -> np.ndarray:
    """Bilinear samples of every field at fixed-pixel positions (..., 2) → (..., n_fields)."""
    coarse_xy = (np.asarray(fixed_xy, float) - (factor - 1) / 2) / factor
    return np.stack([_sample(field, coarse_xy) for field in fields], axis=-1)


def _spectra(fields_at: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """dI/dV-like spectra: a surface state whose bias rises with the terrace, and an adsorbate resonance.

    Terrace ``k`` of ``n`` has its state at ``TERRACE_STATE_V[0] + k / (n - 1) * span``; a tip footprint
    that straddles a step edge sees the weighted mix of both terraces' spectra (they mix linearly, like LDOS).
    """
    weights, adsorbate = fields_at[..., :-1], fields_at[..., -1]
    energy = np.linspace(*TERRACE_STATE_V, weights.shape[-1])
    peaks = np.exp(-0.5 * ((bias[None, :] - energy[:, None]) / TERRACE_STATE_WIDTH_V) ** 2)
    resonance = np.exp(-0.5 * ((bias - RESONANCE_V) / RESONANCE_WIDTH_V) ** 2)
    return 0.2 + 0.3 * bias**2 + weights @ peaks + 2.0 * adsorbate[..., None] * resonance


def expected_spectra(fixed_xy: np.ndarray, scene: Scene, truth: StmStsTruth,
                     bias: np.ndarray | None = None) -> np.ndarray:
    """Noise-free spectra expected at fixed-pixel positions.

    Parameters
    ----------
    fixed_xy : array_like of shape (N, 2)
        Positions in fixed pixels (x, y).
    scene : Scene
        The pair's clean terrain (``SyntheticPair.scene``).
    truth : StmStsTruth
        The pair's ground truth (sets the tip footprint).
    bias : array_like of shape (n_bias,), optional
        Bias steps (V); default the pair's 256 steps from -1 to 1 V.

    Returns
    -------
    ndarray of shape (N, n_bias)
        What the STS cube, warped correctly onto the fixed grid, should hold at ``fixed_xy`` (up to noise and
        the interpolation between STS positions).
    """
    bias = STS_BIAS_V if bias is None else np.asarray(bias, float)
    fields, factor = _spectral_fields(scene, truth)
    return _spectra(_sample_fields(fields, factor, np.asarray(fixed_xy, float)), bias)


def make_stm_sts_pair(*, seed: int = 0) -> SyntheticPair:
    """The demo pair: a 1024² STM topography (nm) and a drifted 40×40 STS map with a 40×40×256 cube.

    Returns
    -------
    SyntheticPair
        ``moving_to_fixed`` is the affine part; ``truth`` (:class:`StmStsTruth`) adds the creep.
    """
    from scipy import ndimage as ndi

    truth = _stm_sts_truth(seed)
    rng = np.random.default_rng(seed + 15485863)
    scene = make_scene((1024, 1024), seed=seed, feature_px=1.0)
    fixed = _scan_artifacts(scene.height, rng, tilt=4e-4, line_sd=0.02, noise_sd=0.01)
    positions = true_moving_to_fixed(_pixel_grid((truth.moving_rows, truth.moving_rows)), truth)
    blurred = ndi.gaussian_filter(scene.height, _tip_blur(truth), mode="nearest")
    z = _contrast(_sample(blurred, positions))
    moving = _scan_artifacts(z, rng, tilt=0.004, line_sd=0.03, noise_sd=0.03)
    bias = STS_BIAS_V.copy()
    fields, factor = _spectral_fields(scene, truth)
    cube = _spectra(_sample_fields(fields, factor, positions), bias)
    cube = cube + rng.normal(0, 0.02, cube.shape)
    return SyntheticPair(fixed=fixed.astype(np.float32), moving=moving.astype(np.float32),
                         moving_to_fixed=truth.matrix, cube=cube.astype(np.float32), bias=bias, truth=truth,
                         scene=scene)


def write_stm_sts_usid(path: str | Path, *, seed: int = 0) -> StmStsTruth:
    """Write the STM/STS demo pair as a USID file laid out like the tutorial's; returns the truth."""
    import h5py

    from ._atomic import atomic_path

    pair = make_stm_sts_pair(seed=seed)
    truth: StmStsTruth = pair.truth
    with atomic_path(Path(path)) as tmp, h5py.File(tmp, "w") as f:
        topo = f.create_group("Measurement_000/Channel_000")
        write_main(topo, "STM_Topography", pair.fixed, quantity="Height", units="nm",
                        pixel_size=truth.fixed_pixel_nm)
        sts = f.create_group("Measurement_001")
        channel0 = sts.create_group("Channel_000")
        channel1 = sts.create_group("Channel_001")
        n = truth.moving_rows
        position = write_positions(sts, (n, n), pixel_size=truth.moving_pixel_nm, origin=truth.moving_origin_nm,
                                   units="nm")
        write_main(channel0, "STS", pair.cube, quantity="dI/dV", units="a. u.", position=position,
                        spectral=("Bias", "V", pair.bias))
        write_main(channel1, "STS_Z_Contrast", pair.moving, quantity="Intensity", units="a. u.",
                        position=position)
        f.attrs["autoreg_truth"] = json.dumps(_truth_dict(truth))
        f.attrs["moving_to_fixed_matrix"] = truth.matrix
        f.attrs["creep_xy"] = np.asarray(truth.creep_xy)
        f.attrs["generator_seed"] = seed
        f.attrs["generator_version"] = GENERATOR_VERSION
    return truth


def _truth_dict(truth: StmStsTruth) -> dict[str, Any]:
    return {"moving_to_fixed": [list(r) for r in truth.moving_to_fixed], "creep_xy": list(truth.creep_xy),
            "moving_rows": truth.moving_rows, "seed": truth.seed, "fixed_pixel_nm": truth.fixed_pixel_nm,
            "moving_pixel_nm": truth.moving_pixel_nm, "moving_origin_nm": list(truth.moving_origin_nm),
            "version": truth.version}


def write_same_resolution_pair(directory: str | Path, *, seed: int = 1, angle_deg: float = 20.0,
                               shift_xy: tuple[float, float] = (18.0, -12.0)) -> np.ndarray:
    """Write ``same_res_fixed.tif``, ``same_res_moving.tif`` and ``same_res_truth.json``; return the matrix."""
    import tifffile

    from ._atomic import atomic_path

    size = 384
    a = np.deg2rad(angle_deg)
    centre = (size - 1) / 2
    matrix = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    matrix[:2, 2] = np.array([centre, centre]) + np.asarray(shift_xy) - matrix[:2, :2] @ [centre, centre]
    pair = make_pair(seed=seed, fixed_shape=(size, size), moving_shape=(size, size), matrix=matrix)
    directory = Path(directory)
    for name, image in (("same_res_fixed.tif", pair.fixed), ("same_res_moving.tif", pair.moving)):
        with atomic_path(directory / name) as tmp:
            tifffile.imwrite(tmp, image.astype(np.float32))
    with atomic_path(directory / "same_res_truth.json") as tmp:
        tmp.write_text(json.dumps({"moving_to_fixed_matrix": matrix.tolist(), "seed": seed,
                                   "version": GENERATOR_VERSION}, indent=2) + "\n")
    return matrix
