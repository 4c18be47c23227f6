"""Source scenes of the accuracy benchmark: scikit-image's bundled images, four synthetic SPM terrain families
and the real PFM scan. Not collected by pytest.

Every source is a dict of co-registered channels on one scene grid (rows = y, columns = x), each scaled to about
unit range: ``"main"`` (what a topography shows) and, where the source has one, ``"alt"`` (a genuinely different
contrast of the same area: a spectroscopic-like map for synthetic terrain, the other channels for the PFM scan).
Synthetic scenes are seeded; the same ``(family, seed, shape, params)`` gives identical arrays.

Families
--------
terraces
    :func:`autoreg.synthetic.make_scene` (terraces with meandering steps and adsorbates), feature size 0.5-2.5.
islands
    Flat substrate with one or two layers of islands (thresholded smooth noise, coverage 15-55 %) and adsorbates.
lattice
    Atomic corrugation: a hexagonal or square lattice (period 6-16 px, any orientation) with sparse vacancies and
    adatoms and a weak long-wavelength background. Periodic: a shift by one period is a plausible wrong answer.
fractal
    Self-similar 1/f terrain (power spectrum ~ f^-(2H+2), Hurst exponent H in 0.3-0.8).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
_PFM_CANDIDATES = [base / "shared" / "data" / "SingFreqPFM_0003.h5" for base in (ROOT.parent, ROOT.parent.parent)]
PFM_PATH = next((p for p in _PFM_CANDIDATES if p.exists()), _PFM_CANDIDATES[0])  # ../shared/data of the checkout
PFM_CHANNELS = ("height", "amplitude", "deflection", "phase")  # Channel_000 .. Channel_003
FAMILIES = ("terraces", "islands", "lattice", "fractal")

__all__ = ["FAMILIES", "PFM_CHANNELS", "PFM_PATH", "load_pfm", "load_skimage", "make_synthetic", "pfm_available"]


def _unit(image: np.ndarray) -> np.ndarray:
    """``image`` as float64 scaled to its 0.5-99.5 percentile range (about [0, 1])."""
    image = np.asarray(image, float)
    lo, hi = np.percentile(image, [0.5, 99.5])
    return (image - lo) / ((hi - lo) or 1.0)


@functools.cache
def load_skimage(name: str) -> dict[str, np.ndarray]:
    """A scikit-image bundled image as a one-channel source (colour → luminance).

    Parameters
    ----------
    name : str
        Attribute of :mod:`skimage.data`.

    Returns
    -------
    dict of str to ndarray
        ``{"main": image}``.
    """
    import skimage.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = getattr(skimage.data, name)()
        if isinstance(image, tuple):  # stereo_motorcycle: (left, right, disparity); the left view
            image = image[0]
        image = np.asarray(image, float)
    if image.ndim == 3:
        image = image[..., :3] @ np.array([0.299, 0.587, 0.114])
    return {"main": _unit(image)}


def pfm_available() -> bool:
    """True when the real PFM scan is present."""
    return PFM_PATH.exists()


@functools.cache
def load_pfm() -> dict[str, np.ndarray]:
    """The four co-registered channels of the real PFM scan (128×128), each unit-scaled.

    Returns
    -------
    dict of str to ndarray
        ``"main"`` is the height; ``"height"``, ``"amplitude"``, ``"deflection"``, ``"phase"`` as stored.
    """
    from autoreg.io import load_image

    out = {}
    for k, label in enumerate(PFM_CHANNELS):
        out[label] = _unit(load_image(f"{PFM_PATH}::/Measurement_000/Channel_00{k}/Raw_Data").data)
    out["main"] = out["height"]
    return out


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise of unit standard deviation (filtered on a coarser grid when sigma is large)."""
    import cv2

    factor = max(1, int(sigma // 4))
    small = (max(2, -(-shape[0] // factor) + 2), max(2, -(-shape[1] // factor) + 2))
    noise = cv2.GaussianBlur(rng.normal(size=small).astype(np.float32), (0, 0), sigma / factor,
                             borderType=cv2.BORDER_REFLECT)
    if factor > 1:
        noise = cv2.resize(noise, (small[1] * factor, small[0] * factor), interpolation=cv2.INTER_CUBIC)
    noise = noise[: shape[0], : shape[1]].astype(float)
    return (noise - noise.mean()) / (noise.std() + 1e-12)


def _blobs(shape: tuple[int, int], rng: np.random.Generator, density: float, sigma: float) -> np.ndarray:
    """Gaussian bumps of peak about 1 at random places, ``density`` per pixel."""
    import cv2

    count = max(1, int(density * shape[0] * shape[1]))
    impulses = np.zeros(shape, np.float32)
    np.add.at(impulses, (rng.integers(0, shape[0], count), rng.integers(0, shape[1], count)),
              rng.uniform(0.6, 1.0, count).astype(np.float32))
    blurred = cv2.GaussianBlur(impulses, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return np.clip(blurred * (2 * np.pi * sigma**2), 0, 1.5).astype(float)


def _terraces(shape: tuple[int, int], seed: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    from autoreg.synthetic import make_scene

    feature = float(np.exp(rng.uniform(np.log(0.5), np.log(2.5))))
    scene = make_scene(shape, seed=seed, feature_px=feature)
    terrace_state = rng.uniform(0, 1, int(scene.level.max()) + 1)  # a spectroscopic contrast per terrace
    return {"main": _unit(scene.height), "alt": _unit(terrace_state[scene.level] + 0.8 * scene.adsorbate)}


def _islands(shape: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    import cv2

    size = rng.uniform(8, 30)
    first = _smooth_noise(shape, rng, size) > np.quantile(rng.normal(size=1000), 1 - rng.uniform(0.15, 0.55))
    second = first & (_smooth_noise(shape, rng, size / 2) > 1.0)
    layers = cv2.GaussianBlur((first.astype(np.float32) + second), (0, 0), 0.8).astype(float)
    adsorbate = _blobs(shape, rng, rng.uniform(2e-4, 2e-3), rng.uniform(1.5, 4))
    return {"main": _unit(layers + 0.4 * adsorbate), "alt": _unit(-0.7 * layers + adsorbate)}


def _lattice(shape: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    period = rng.uniform(6, 16)
    theta = rng.uniform(0, np.pi)
    hexagonal = bool(rng.random() < 0.6)
    angles = theta + (np.array([0, np.pi / 3, 2 * np.pi / 3]) if hexagonal else np.array([0, np.pi / 2]))
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    k = 2 * np.pi / period / (np.sqrt(3) / 2 if hexagonal else 1.0)
    phase = rng.uniform(0, 2 * np.pi, len(angles))
    corrugation = sum(np.cos(k * (x * np.cos(a) + y * np.sin(a)) + p) for a, p in zip(angles, phase))
    corrugation = corrugation / len(angles)
    sigma = 0.35 * period
    density = rng.uniform(1 / 150, 1 / 20) / period**2  # a defect every ~20-150 unit cells
    vacancies = _blobs(shape, rng, density, sigma)
    adatoms = _blobs(shape, rng, density / 2, 0.6 * period)
    background = 0.3 * _smooth_noise(shape, rng, 60)
    main = corrugation - 2.0 * vacancies + 2.5 * adatoms + background
    return {"main": _unit(main), "alt": _unit(0.2 * corrugation + 2.0 * vacancies + adatoms)}


def _fractal(shape: tuple[int, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    hurst = rng.uniform(0.3, 0.8)
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    f = np.hypot(fx, fy)
    f[0, 0] = 1.0
    amplitude = f ** -(hurst + 1.0)
    amplitude[0, 0] = 0.0
    spectrum = amplitude * np.exp(2j * np.pi * rng.random(amplitude.shape)) * rng.rayleigh(size=amplitude.shape)
    height = np.fft.irfft2(spectrum, s=shape)
    gy, gx = np.gradient(height)
    return {"main": _unit(height), "alt": _unit(np.hypot(gx, gy) ** 0.5)}


def make_synthetic(family: str, seed: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """A seeded synthetic scene of ``family``.

    Parameters
    ----------
    family : {"terraces", "islands", "lattice", "fractal"}
    seed : int
        Seeds both the family's parameters and its content.
    shape : tuple of int
        ``(rows, cols)`` of the scene.

    Returns
    -------
    dict of str to ndarray
        ``"main"`` and ``"alt"`` channels, about unit range.
    """
    rng = np.random.default_rng(seed)
    shape = (int(shape[0]), int(shape[1]))
    if family == "terraces":
        return _terraces(shape, seed, rng)
    if family == "islands":
        return _islands(shape, rng)
    if family == "lattice":
        return _lattice(shape, rng)
    if family == "fractal":
        return _fractal(shape, rng)
    raise ValueError(f"unknown family {family!r}")
