"""Seeded benchmark pairs with exact truth, in splits that share no seed and no source image.

Not collected by pytest. ``calibration`` is what thresholds may be tuned on; ``evaluation`` is what we report;
``holdout`` checks, on pairs no threshold was tuned on, changes made while the evaluation split's results were known
(its runs and what was seen of them are in the README).

Splits (see :data:`SPLITS`)
---------------------------
calibration
    scikit-image: camera, coins, brick, cell, retina, astronaut, text, clock. Synthetic scene seeds 10000-20999,
    case seeds 1000000-1010999. No PFM. 28 cases per category by default (308 pairs).
evaluation
    scikit-image: moon, hubble_deep_field, immunohistochemistry, grass, gravel, rocket, page, coffee, chelsea
    (``cat`` is the same photo as ``chelsea`` and is used by neither split). Synthetic scene seeds 50000-60999, case
    seeds 2000000-2010999. The real PFM scan (all four channels) only here. 60 cases per category (660 pairs).
holdout
    scikit-image: stereo_motorcycle (left view), shepp_logan_phantom, microaneurysms. Synthetic scene seeds
    90000-100999, case seeds 3000000-3010999. No PFM (there is one real scan and it belongs to ``evaluation``).
    60 cases per category (660 pairs). Added on 2026-12-01, after the evaluation split's first report.
audit
    Synthetic only (every bundled image that needs no download is in another split; ``cat`` is ``chelsea``), scene
    seeds 130000-140999, case seeds 4000000-4010999. 60 cases per category (660 pairs). Added on 2026-12-02, after
    holdout's wrong ``ok``s had been read case by case: the split nobody has looked at. Run it once a stop's changes
    are final; read its aggregates, and its cases only after the note that reports it.
blind
    Synthetic only, scene seeds 210000-220999, case seeds 6000000-6010999, 60 cases per category (660 pairs). Added
    on 2026-12-02 (second stop that day), after ``audit``'s wrong ``ok``s had been read case by case: the next split
    nobody has looked at, kept the same way (aggregates only until the note that reports it).
sealed
    Synthetic only, scene seeds 250000-260999, case seeds 7000000-7010999, 60 cases per category (660 pairs). Added
    on 2026-12-02, after ``blind``'s cases had been read: the next split nobody has looked at, kept the same way
    (aggregates only until the note that reports it).
vault
    Synthetic only, scene seeds 290000-300999, case seeds 8000000-8010999, 60 cases per category (660 pairs). Added
    on 2026-12-02 (a new session), after ``sealed``'s report had been published: the next split nobody has looked
    at, kept the same way (aggregates only until the note that reports it).
reserve
    Synthetic only, scene seeds 330000-340999, case seeds 9000000-9010999, 60 cases per category (660 pairs). Added
    on 2026-12-02 (a third session that day), after ``vault``'s report had been published: the next split nobody has
    looked at, kept the same way (aggregates only until the note that reports it).
locker
    Synthetic only, scene seeds 370000-380999, case seeds 10000000-10010999, 60 cases per category (660 pairs).
    Added on 2026-12-02 (a fourth session that day), after ``reserve``'s report had been published: the next split
    nobody has looked at, kept the same way (aggregates only until the note that reports it).
cabinet
    Synthetic only, scene seeds 410000-420999, case seeds 11000000-11010999, 60 cases per category (660 pairs).
    Added on 2026-12-02 (a fifth session that day), after ``locker``'s report had been published: the next split
    nobody has looked at, kept the same way (aggregates only until the note that reports it).
shelf
    Synthetic only, scene seeds 490000-500999, case seeds 13000000-13010999, 60 cases per category (660 pairs).
    Added on 2026-12-03, after ``cabinet``'s report had been published (and after a session whose work was lost
    before it landed, which may have drawn the next seeds in line, 450000 and 12000000; these are past them). Its
    one wrong ``ok`` was read case by case the same day (it led to the ``conflicting`` rule).
crate
    Synthetic only, scene seeds 530000-540999, case seeds 14000000-14010999, 60 cases per category (660 pairs).
    Added on 2026-12-03, after ``shelf``'s wrong ``ok`` had been read. Its aggregates were published the same day;
    its one wrong ``ok`` was read case by case on 2026-12-03 (it led to the similarity restart of the refinement).
hamper
    Synthetic only, scene seeds 570000-580999, case seeds 15000000-15010999, 60 cases per category (660 pairs).
    Added on 2026-12-03, after ``crate``'s wrong ``ok`` had been read: the next split nobody has looked at, kept
    the same way (aggregates only until the note that reports it).
lattice
    A tuning split for periodic content: the lattice family only, scene seeds 170000-180999, case seeds
    5000000-5010999, 40 cases per category. Thresholds for ambiguity may be set here; it reports nothing. Its
    ``negative`` category cannot be drawn (an unrelated negative needs a second kind of source).

All splits draw from the four synthetic families of :mod:`_sources` (terraces, islands, lattice, fractal) with
disjoint seeds. Case ``i`` of category ``c`` (index ``k`` in :data:`CATEGORIES`) has case seed ``case_base + 1000 k
+ i`` and synthetic scene seed ``scene_base + 1000 k + i`` (``+ 500`` for the second, unrelated scene of a negative),
so ``i < 500``.

Categories
----------
Positives: ``same_res``, ``cross_res``, ``cross_res_metadata``, ``partial_overlap``, ``cross_modal``,
``spm_degraded``, ``crop``. Near misses: ``near_periodic`` (+), ``near_neighbour`` (-, a neighbouring
non-overlapping area of the same sample), ``near_selfsimilar`` (+), ``near_small_overlap`` (+). Negatives:
``negative`` (unrelated image, pure noise, nearly flat), ``crop_negative``. ``crop`` (added on 2026-12-03) is a crop
of the scan at its pixel size, 2.2-3.7× smaller and without pixel sizes, so that the sizes alone also fit a map 2-4×
coarser over the same field; ``crop_negative`` has the same geometry over a neighbouring area of the same sample or
an unrelated image. They came after every other category, so no earlier case changed; their seeds extend each
split's ranges below by 2000 (case ``i`` of ``crop`` has seeds ``base + 11000 + i``, of ``crop_negative`` ``base +
12000 + i``). ``power_of_two`` (+, added later on 2026-12-03, seeds ``base + 13000 + i``) draws scan sizes that are
powers of two, exactly 2× or 4× apart, without pixel sizes, as SPM scans come: a map 2× (half the cases) or 4× (a
quarter) coarser over 50-100 % of the fixed field, or a crop at the fixed pixel size exactly half its side (a
quarter); from the sizes alone each is both. ``cross_modal`` pairs (same resolution) draw a contrast kind: ``inverted``, ``nonmonotonic`` (|image -
a quantile|), ``gradient`` (Sobel magnitude), ``deflection`` (``-d/dx`` of the moving image along its own x axis,
the fast scan axis, plus 5 % noise: an AFM deflection / STM current-error channel) and, for synthetic families,
``channel`` (their "alt" channel); the PFM pairs of the evaluation split compare height with amplitude, phase or
deflection. The truth of a positive is a callable moving (x, y) -> fixed (x, y) (:class:`Truth`: a matrix plus, for
creep, a smooth non-linear drift); a result is correct when the mean distance over a 5x5 grid spanning the moving
image is <= ``max(2, 0.5 * moving pixel in fixed px)``.

How a pair is drawn: the geometry is chosen in fixed pixels; a scene frame (``scene = s * fixed + t``) is laid over
the source so that the fixed image and the moving footprint fit in it (synthetic scenes are generated to fit with
``s = 1``; bundled images are upsampled, ``s < 1``, when they are too small). The fixed image samples the scene at its
pixel centres; every moving pixel is the *area average* of the scene over its footprint (k x k supersamples through
the truth, after a gaussian prefilter of half the supersample spacing), so a coarse map pixel is a box average.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

try:  # imported as bench._cases (pytest) or as a sibling of the script
    from ._sources import FAMILIES, load_pfm, load_skimage, make_synthetic, pfm_available
except ImportError:
    from _sources import FAMILIES, load_pfm, load_skimage, make_synthetic, pfm_available

__all__ = [
    "CATEGORIES",
    "POSITIVE_CATEGORIES",
    "SPLITS",
    "Case",
    "Split",
    "Truth",
    "case_specs",
    "describe_splits",
    "grid_error",
    "make_case",
]

CATEGORIES = ("same_res", "cross_res", "cross_res_metadata", "partial_overlap", "cross_modal", "spm_degraded",
              "near_periodic", "near_neighbour", "near_selfsimilar", "near_small_overlap", "negative", "crop",
              "crop_negative", "power_of_two")
POSITIVE_CATEGORIES = frozenset(CATEGORIES) - {"near_neighbour", "negative", "crop_negative"}
DEGRADATIONS = ("line_offsets", "tilt_bow", "creep", "tip_blur", "spikes", "noise")
STRENGTHS = ("low", "mid", "high")
NEGATIVE_KINDS = ("unrelated_same_res", "unrelated_cross_res", "noise_same_res", "noise_cross_res", "flat")


@dataclass(frozen=True)
class Split:
    """Which sources and seeds a split uses."""

    name: str
    skimage: tuple[str, ...]
    scene_seed_base: int
    case_seed_base: int
    pfm: bool
    per_category: int
    families: tuple[str, ...] = FAMILIES

    def scene_seeds(self) -> range:
        """Every synthetic scene seed the split may use."""
        return range(self.scene_seed_base, self.scene_seed_base + 1000 * len(CATEGORIES))

    def case_seeds(self) -> range:
        """Every case seed the split may use."""
        return range(self.case_seed_base, self.case_seed_base + 1000 * len(CATEGORIES))


SPLITS = {
    "calibration": Split("calibration", ("camera", "coins", "brick", "cell", "retina", "astronaut", "text", "clock"),
                         scene_seed_base=10_000, case_seed_base=1_000_000, pfm=False, per_category=28),
    "evaluation": Split("evaluation", ("moon", "hubble_deep_field", "immunohistochemistry", "grass", "gravel",
                                       "rocket", "page", "coffee", "chelsea"),
                        scene_seed_base=50_000, case_seed_base=2_000_000, pfm=True, per_category=60),
    "holdout": Split("holdout", ("stereo_motorcycle", "shepp_logan_phantom", "microaneurysms"),
                     scene_seed_base=90_000, case_seed_base=3_000_000, pfm=False, per_category=60),
    "audit": Split("audit", (), scene_seed_base=130_000, case_seed_base=4_000_000, pfm=False, per_category=60),
    "blind": Split("blind", (), scene_seed_base=210_000, case_seed_base=6_000_000, pfm=False, per_category=60),
    "sealed": Split("sealed", (), scene_seed_base=250_000, case_seed_base=7_000_000, pfm=False, per_category=60),
    "vault": Split("vault", (), scene_seed_base=290_000, case_seed_base=8_000_000, pfm=False, per_category=60),
    "reserve": Split("reserve", (), scene_seed_base=330_000, case_seed_base=9_000_000, pfm=False, per_category=60),
    "locker": Split("locker", (), scene_seed_base=370_000, case_seed_base=10_000_000, pfm=False, per_category=60),
    "cabinet": Split("cabinet", (), scene_seed_base=410_000, case_seed_base=11_000_000, pfm=False, per_category=60),
    "shelf": Split("shelf", (), scene_seed_base=490_000, case_seed_base=13_000_000, pfm=False, per_category=60),
    "crate": Split("crate", (), scene_seed_base=530_000, case_seed_base=14_000_000, pfm=False, per_category=60),
    "hamper": Split("hamper", (), scene_seed_base=570_000, case_seed_base=15_000_000, pfm=False, per_category=60),
    "lattice": Split("lattice", (), scene_seed_base=170_000, case_seed_base=5_000_000, pfm=False, per_category=40,
                     families=("lattice",)),
}


def describe_splits() -> str:
    """One line per split: its sources and seed ranges (printed with every report)."""
    lines = []
    for split in SPLITS.values():
        seeds, cases = split.scene_seeds(), split.case_seeds()
        pfm = "PFM scan (4 channels)" if split.pfm else "no PFM"
        if split.pfm and not pfm_available():
            pfm = "NOTE: the PFM scan is missing, its cases use the other sources"
        images = f"skimage {', '.join(split.skimage)}; " if split.skimage else ""
        lines.append(f"{split.name}: {images}synthetic {', '.join(split.families)} with scene "
                     f"seeds {seeds.start}-{seeds.stop - 1}; case seeds {cases.start}-{cases.stop - 1}; {pfm}")
    return "\n".join(lines)


def _check_disjoint() -> None:
    splits = list(SPLITS.values())
    for i, one in enumerate(splits):
        for other in splits[i + 1:]:
            pair = f"{one.name} and {other.name}"
            assert not set(one.skimage) & set(other.skimage), f"a bundled image in {pair}"
            assert not set(one.scene_seeds()) & set(other.scene_seeds()), f"a scene seed in {pair}"
            assert not set(one.case_seeds()) & set(other.case_seeds()), f"a case seed in {pair}"
    assert [s.name for s in splits if s.pfm] == ["evaluation"], "the PFM scan belongs to the evaluation split only"


_check_disjoint()


# --------------------------------------------------------------------------------------------------- truth


@dataclass(frozen=True)
class Truth:
    """Exact moving (x, y) -> fixed (x, y): ``matrix`` plus a creep-like drift that grows with the slow-scan time.

    ``drift(t) = creep_xy * t**2 + settle_xy * (1 - exp(-t / settle_tau))`` fixed px, ``t = y / (moving_rows - 1)``.
    """

    matrix: tuple[tuple[float, ...], ...]
    creep_xy: tuple[float, float] = (0.0, 0.0)
    settle_xy: tuple[float, float] = (0.0, 0.0)
    settle_tau: float = 0.15
    moving_rows: int = 2

    @property
    def is_linear(self) -> bool:
        """True when the truth is the matrix alone."""
        return not any(self.creep_xy) and not any(self.settle_xy)

    def __call__(self, moving_xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(moving_xy, float)
        h = np.concatenate([xy, np.ones(xy.shape[:-1] + (1,))], axis=-1) @ np.asarray(self.matrix).T
        out = h[..., :2] / h[..., 2:]
        if self.is_linear:
            return out
        t = xy[..., 1:2] / max(self.moving_rows - 1, 1)
        return (out + np.asarray(self.creep_xy) * t**2
                + np.asarray(self.settle_xy) * (1 - np.exp(-t / self.settle_tau)))


@dataclass(frozen=True, eq=False)
class Case:
    """One benchmark pair.

    Attributes
    ----------
    case_id : str
        ``split/category/index``.
    fixed, moving : ndarray or autoreg.Image
        What the registration method receives (Images carry pixel sizes in ``cross_res_metadata``).
    truth : Truth or None
        None for negatives.
    moving_pixel_px : float
        Size of one moving pixel in fixed pixels (sets the tolerance).
    params : dict
        The drawn parameters (angle, ratio, overlap, ...), for the report.
    """

    case_id: str
    split: str
    category: str
    kind: str
    positive: bool
    source: str
    fixed: Any
    moving: Any
    truth: Truth | None
    moving_pixel_px: float
    seed: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def tolerance_px(self) -> float:
        """``max(2, half a moving pixel)`` in fixed pixels."""
        return max(2.0, 0.5 * self.moving_pixel_px)

    @property
    def moving_shape(self) -> tuple[int, int]:
        """``(rows, cols)`` of the moving image."""
        data = getattr(self.moving, "data", self.moving)
        return (int(data.shape[0]), int(data.shape[1]))


def grid_error(case: Case, moving_to_fixed: Any) -> float:
    """Mean distance (fixed px) over a 5x5 grid spanning the moving image; inf without an answer or a truth.

    Parameters
    ----------
    case : Case
    moving_to_fixed : callable or None
        Maps an (N, 2) array of moving (x, y) to fixed (x, y).
    """
    if moving_to_fixed is None or case.truth is None:
        return float("inf")
    rows, cols = case.moving_shape
    gy, gx = np.mgrid[0 : rows - 1 : 5j, 0 : cols - 1 : 5j]
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    with np.errstate(all="ignore"):
        mapped = np.asarray(moving_to_fixed(grid), float)
    if mapped.shape != grid.shape or not np.all(np.isfinite(mapped)):
        return float("inf")
    return float(np.mean(np.linalg.norm(mapped - case.truth(grid), axis=1)))


def mirrored_case(case: Case, *, recorded: bool) -> Case:
    """The case with its moving image's rows reversed; when it has pixel sizes, its y size negated if ``recorded``
    (the file says it is mirrored), else kept (a program that reverses the rows and does not say so)."""
    from autoreg.datatypes import Image
    from autoreg.mirror import flip_rows_matrix, flipped

    moving = case.moving
    if isinstance(moving, Image):
        mirrored = flipped(moving)
        if not recorded:
            mirrored = replace(mirrored, pixel_size_xy=moving.pixel_size_xy, origin=moving.origin)
        shape = moving.shape
    else:
        mirrored = np.ascontiguousarray(np.asarray(moving)[::-1])
        shape = mirrored.shape
    flip = flip_rows_matrix(shape)
    truth = None if case.truth is None else (lambda xy, t=case.truth: t(np.asarray(xy, float) @ flip[:2, :2].T
                                                                        + flip[:2, 2]))
    return replace(case, moving=mirrored, truth=truth)


# --------------------------------------------------------------------------------------------------- geometry


def _affine(angle_deg: float, scale: float, moving_shape: tuple[int, int], centre_xy: tuple[float, float], *,
            aniso: tuple[float, float] = (1.0, 1.0), shear: float = 0.0) -> np.ndarray:
    """Moving -> fixed matrix: rotation, scale (with anisotropy and shear), moving centre onto ``centre_xy``."""
    a = np.deg2rad(angle_deg)
    linear = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]) @ np.array(
        [[aniso[0], shear], [0.0, aniso[1]]])
    centre_m = np.array([(moving_shape[1] - 1) / 2, (moving_shape[0] - 1) / 2])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.asarray(centre_xy, float) - linear @ centre_m
    return matrix


def _footprint_xy(matrix: np.ndarray, moving_shape: tuple[int, int], n: int = 24) -> np.ndarray:
    """Fixed positions of an n x n grid covering the moving image's whole pixel area."""
    rows, cols = moving_shape
    gy, gx = np.mgrid[-0.5 : rows - 0.5 : complex(n), -0.5 : cols - 0.5 : complex(n)]
    h = np.column_stack([gx.ravel(), gy.ravel(), np.ones(gx.size)]) @ matrix.T
    return h[:, :2]


def _overlap(matrix: np.ndarray, moving_shape: tuple[int, int], fixed_shape: tuple[int, int]) -> float:
    """Fraction of the moving image's area that lies inside the fixed image."""
    xy = _footprint_xy(matrix, moving_shape)
    inside = ((xy[:, 0] >= -0.5) & (xy[:, 0] <= fixed_shape[1] - 0.5)
              & (xy[:, 1] >= -0.5) & (xy[:, 1] <= fixed_shape[0] - 0.5))
    return float(inside.mean())


def _place_inside(rng: np.random.Generator, linear: dict[str, Any], moving_shape: tuple[int, int],
                  fixed_shape: tuple[int, int], min_overlap: float) -> np.ndarray:
    """A matrix whose moving footprint lies (mostly) inside the fixed image, centre drawn at random."""
    centre = np.array([(fixed_shape[1] - 1) / 2, (fixed_shape[0] - 1) / 2])
    best, best_overlap = None, -1.0
    for _ in range(60):
        jitter = rng.uniform(-0.3, 0.3, 2) * np.array(fixed_shape[::-1])
        matrix = _affine(moving_shape=moving_shape, centre_xy=tuple(centre + jitter), **linear)
        overlap = _overlap(matrix, moving_shape, fixed_shape)
        if overlap >= min_overlap:
            return matrix
        if overlap > best_overlap:
            best, best_overlap = matrix, overlap
    centred = _affine(moving_shape=moving_shape, centre_xy=tuple(centre), **linear)
    return centred if _overlap(centred, moving_shape, fixed_shape) >= best_overlap else best


def _place_at_overlap(rng: np.random.Generator, linear: dict[str, Any], moving_shape: tuple[int, int],
                      fixed_shape: tuple[int, int], target: float, gap: float = 0.0) -> np.ndarray:
    """A matrix whose overlap with the fixed image is ``target`` (0 with ``gap`` px of clearance for neighbours)."""
    centre = np.array([(fixed_shape[1] - 1) / 2, (fixed_shape[0] - 1) / 2])
    direction = rng.normal(size=2)
    direction /= np.linalg.norm(direction)

    def overlap_at(d: float) -> float:
        return _overlap(_affine(moving_shape=moving_shape, centre_xy=tuple(centre + d * direction), **linear),
                        moving_shape, fixed_shape)

    lo, hi = 0.0, 4.0 * max(fixed_shape) + 4.0 * linear["scale"] * max(moving_shape)
    for _ in range(40):  # overlap falls with the distance of the centres
        mid = (lo + hi) / 2
        if overlap_at(mid) > target:
            lo = mid
        else:
            hi = mid
    d = hi + gap if target <= 0 else (lo + hi) / 2
    return _affine(moving_shape=moving_shape, centre_xy=tuple(centre + d * direction), **linear)


# --------------------------------------------------------------------------------------------------- scene frame


@dataclass(frozen=True)
class _Source:
    """Where a pair's scene comes from: ``kind`` in skimage / pfm / a synthetic family."""

    kind: str
    name: str = ""
    seed: int = -1

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}" if self.kind in ("skimage", "pfm") else f"{self.kind}#{self.seed}"


@dataclass(frozen=True)
class _Frame:
    """``scene_xy = s * fixed_xy + t`` and the scene's channels."""

    s: float
    t: tuple[float, float]
    channels: dict[str, np.ndarray]


def _frame(source: _Source, fixed_shape: tuple[int, int], needed_xy: np.ndarray, rng: np.random.Generator,
           margin: float = 16.0) -> _Frame:
    """Lay a scene frame over ``source`` so the fixed image and every ``needed_xy`` (fixed px) fit in it.

    The PFM scan is the fixed image itself (``s = 1``, ``t = 0``): its moving footprint is placed inside it.
    """
    if source.kind == "pfm":
        channels = load_pfm()
        assert fixed_shape == channels["main"].shape, "a PFM pair's fixed image is the whole scan"
        return _Frame(1.0, (0.0, 0.0), channels)
    corners = np.array([[-0.5, -0.5], [fixed_shape[1] - 0.5, fixed_shape[0] - 0.5]])
    pts = np.vstack([corners, needed_xy])
    lo, hi = pts.min(axis=0) - margin, pts.max(axis=0) + margin
    if source.kind not in ("skimage", "pfm"):
        shape = (int(np.ceil(hi[1] - lo[1])) + 2, int(np.ceil(hi[0] - lo[0])) + 2)
        return _Frame(1.0, (float(-lo[0]), float(-lo[1])), make_synthetic(source.kind, source.seed, shape))
    channels = load_skimage(source.name)
    rows, cols = channels["main"].shape
    extent = hi - lo
    s = float(min(1.0, (cols - 1) / extent[0], (rows - 1) / extent[1]))
    t_lo = -s * lo
    t_hi = np.array([cols - 1, rows - 1]) - s * hi
    t = rng.uniform(t_lo, np.maximum(t_hi, t_lo))
    return _Frame(s, (float(t[0]), float(t[1])), channels)


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    if sigma <= 0.3:
        return image
    return cv2.GaussianBlur(image.astype(np.float32), (0, 0), sigma, borderType=cv2.BORDER_REFLECT).astype(float)


def _render(frame: _Frame, channel: str, truth: Truth, shape: tuple[int, int], *,
            pixel_scene: float, tip_sigma_scene: float = 0.0) -> np.ndarray:
    """Area-average the scene over every pixel of a ``shape`` grid placed by ``truth`` (grid -> fixed px)."""
    from scipy import ndimage as ndi

    k = int(np.clip(np.ceil(pixel_scene), 1, 8))
    spacing = pixel_scene / k
    scene = _blur(frame.channels[channel], float(np.hypot(0.5 * spacing if k > 1 else 0.0, tip_sigma_scene)))
    offsets = (np.arange(k) + 0.5) / k - 0.5
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    total = np.zeros(shape)
    order = 3 if pixel_scene < 0.999 else 1  # an upsampled bundled image: cubic, not faceted
    for dy in offsets:
        for dx in offsets:
            fixed_xy = truth(np.stack([x + dx, y + dy], axis=-1))
            scene_xy = frame.s * fixed_xy + np.asarray(frame.t)
            total += ndi.map_coordinates(scene, [scene_xy[..., 1], scene_xy[..., 0]], order=order, mode="reflect")
    return total / k**2


def _render_fixed(frame: _Frame, fixed_shape: tuple[int, int], channel: str = "main") -> np.ndarray:
    return _render(frame, channel, Truth(tuple(map(tuple, np.eye(3)))), fixed_shape, pixel_scene=frame.s)


# --------------------------------------------------------------------------------------------------- degradations


def _line_offsets(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Scan-line offsets: per-row jumps plus a random walk, ``amount`` image standard deviations."""
    rows = image.shape[0]
    jumps = rng.normal(0, 1, rows) * (rng.random(rows) < 0.5)
    walk = np.cumsum(rng.normal(0, 1, rows)) / np.sqrt(rows)
    offsets = amount * np.std(image) * (0.8 * jumps + 0.6 * (walk - walk.mean()))
    return image + offsets[:, None]


def _tilt_bow(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """A plane plus a bow (quadratic along both axes), ``amount`` image standard deviations across the image."""
    rows, cols = image.shape
    y, x = np.mgrid[:rows, :cols].astype(float)
    u, v = 2 * x / max(cols - 1, 1) - 1, 2 * y / max(rows - 1, 1) - 1
    a, b, c, d = rng.normal(0, 1, 4)
    return image + amount * np.std(image) * (a * u + b * v + 0.7 * c * u**2 + 0.5 * d * v**2)


def _spikes(image: np.ndarray, rng: np.random.Generator, fraction: float) -> np.ndarray:
    """Single-pixel spikes (4-10 standard deviations) on ``fraction`` of the pixels, and a few scars."""
    out = image.copy()
    sd = np.std(image)
    mask = rng.random(image.shape) < fraction
    out[mask] += rng.choice([-1, 1], mask.sum()) * rng.uniform(4, 10, mask.sum()) * sd
    for _ in range(int(rng.integers(1, 2 + int(200 * fraction)))):
        row = int(rng.integers(0, image.shape[0]))
        start = int(rng.integers(0, image.shape[1]))
        length = int(rng.integers(3, max(4, image.shape[1] // 3)))
        out[row, start : start + length] = image[row].mean() + rng.choice([-1, 1]) * 3 * sd
    return out


def _noise(image: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    return image + rng.normal(0, amount * (np.std(image) or 1.0), image.shape)


def _spm_scan(image: np.ndarray, rng: np.random.Generator, *, lines: float, tilt: float, noise: float) -> np.ndarray:
    """Light SPM artefacts every scan carries: line offsets, tilt and noise (amounts in standard deviations)."""
    return _noise(_tilt_bow(_line_offsets(image, rng, lines), rng, tilt), rng, noise)


def _sobel_magnitude(image: np.ndarray) -> np.ndarray:
    import cv2

    im = image.astype(np.float32)
    return np.hypot(cv2.Sobel(im, cv2.CV_32F, 1, 0), cv2.Sobel(im, cv2.CV_32F, 0, 1)).astype(float)


def _deflection(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What an AFM deflection (error) channel of the scan shows: ``-d(image)/dx`` along the scan's own fast axis
    (the moving image's x), plus mild noise (5 % of its standard deviation)."""
    derivative = -np.gradient(image.astype(float), axis=1)
    return derivative + rng.normal(0, 0.05 * (np.std(derivative) or 1.0), image.shape)


def _contrast(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """A cross-modal contrast change of a rendered image."""
    if kind == "inverted":
        return -image
    if kind == "nonmonotonic":
        return np.abs(image - np.quantile(image, rng.uniform(0.3, 0.7)))
    if kind == "gradient":
        return _sobel_magnitude(image)
    if kind == "deflection":
        return _deflection(image, rng)
    return image


# --------------------------------------------------------------------------------------------------- case drawing


@dataclass
class _Draw:
    """Everything one case generator needs: its split, category, index and seeded generator."""

    split: Split
    category: str
    index: int
    rng: np.random.Generator
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int:
        return self.split.case_seed_base + 1000 * CATEGORIES.index(self.category) + self.index

    def scene_seed(self, second: bool = False) -> int:
        return self.split.scene_seed_base + 1000 * CATEGORIES.index(self.category) + self.index + 500 * second

    def source(self, *, families: tuple[str, ...] | None = None, skimage: bool = True, second: bool = False) -> _Source:
        """A source of this split (of its families unless told): each synthetic family counts twice against each
        bundled image."""
        families = self.split.families if families is None else families
        pool = [_Source(f, seed=self.scene_seed(second)) for f in families for _ in range(2)]
        if skimage:
            pool += [_Source("skimage", name) for name in self.split.skimage]
        return pool[int(self.rng.integers(len(pool)))]


def _same_res_geometry(d: _Draw, *, pfm: bool = False) -> tuple[tuple[int, int], tuple[int, int], dict[str, Any]]:
    """Fixed shape, moving shape and linear part of a same-resolution pair (any rotation, scale 0.93-1.07).

    The moving image spans 55-75 % of the fixed side, so the image-size ratio stays under 2 (beyond it autoreg
    takes the pair for a coarse map of the same field of view).
    """
    if pfm:
        fixed_shape = (128, 128)
        n = int(d.rng.integers(68, 89))
    else:
        fixed_shape = (int(d.rng.integers(224, 385)), int(d.rng.integers(224, 385)))
        n = int(d.rng.uniform(0.55, 0.75) * min(fixed_shape))
    moving_shape = (int(n * d.rng.uniform(0.9, 1.0)), n)
    linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": float(d.rng.uniform(0.93, 1.07))}
    return fixed_shape, moving_shape, linear


def _cross_res_geometry(d: _Draw, *, ratio: tuple[float, float] = (4.0, 32.0),
                        side: tuple[int, int] = (24, 64)) -> tuple[tuple[int, int], tuple[int, int], dict[str, Any]]:
    """A coarse map (``side`` px, ``ratio`` fixed px per map px, log-uniform) covering 50-90 % of a fixed side."""
    r = float(np.exp(d.rng.uniform(*np.log(ratio))))
    n = int(d.rng.integers(side[0], side[1] + 1))
    n = max(side[0], min(n, int(0.9 * 1024 / r)))
    coverage = d.rng.uniform(0.5, 0.9)
    fixed_side = int(np.clip(n * r / coverage, 192, 1024))
    fixed_shape = (fixed_side, fixed_side)
    linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": r,
              "aniso": tuple(float(v) for v in 1 + d.rng.uniform(-0.02, 0.02, 2)),
              "shear": float(d.rng.uniform(-0.02, 0.02))}
    return fixed_shape, (n, n), linear


def _moving_pixel(matrix: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(matrix[:2, :2]))))


def _to_truth(matrix: np.ndarray, **drift: Any) -> Truth:
    return Truth(tuple(tuple(float(v) for v in row) for row in matrix), **drift)


def _build(d: _Draw, source: _Source, fixed_shape: tuple[int, int], moving_shape: tuple[int, int], truth: Truth, *,
           kind: str, channel: str = "main", tip_sigma_px: float = 0.0,
           margin: float = 16.0) -> tuple[np.ndarray, np.ndarray, _Frame]:
    """Render the clean fixed and moving images of a geometry from ``source``; returns (fixed, moving, frame)."""
    matrix = np.asarray(truth.matrix)
    r = _moving_pixel(matrix)
    needed = truth(_footprint_xy(np.eye(3), moving_shape, n=12))
    frame = _frame(source, fixed_shape, needed, d.rng, margin=margin)
    if source.kind == "pfm":
        fixed = frame.channels["main"].copy()  # the real scan as recorded
    else:
        fixed = _render_fixed(frame, fixed_shape)
    moving = _render(frame, channel, truth, moving_shape, pixel_scene=r * frame.s,
                     tip_sigma_scene=tip_sigma_px * r * frame.s)
    d.params.update({"source_scale": round(frame.s, 4), "ratio": round(r, 3), "fixed_shape": list(fixed_shape),
                     "moving_shape": list(moving_shape), "kind": kind})
    return fixed, moving, frame


def _float32(image: Any) -> Any:
    return image.astype(np.float32) if isinstance(image, np.ndarray) else image


def _finish(d: _Draw, source: _Source, kind: str, fixed: Any, moving: Any, truth: Truth | None, r: float, *,
            positive: bool) -> Case:
    return Case(case_id=f"{d.split.name}/{d.category}/{d.index:03d}", split=d.split.name, category=d.category,
                kind=kind, positive=positive, source=source.label, fixed=_float32(fixed), moving=_float32(moving),
                truth=truth, moving_pixel_px=float(r), seed=d.seed, params=dict(d.params))


def _positive(d: _Draw, source: _Source, fixed_shape: tuple[int, int], moving_shape: tuple[int, int],
              matrix: np.ndarray, kind: str, *, channel: str = "main", artefacts: tuple[float, float, float] = (
                  0.3, 0.5, 0.03), contrast: str = "", truth: Truth | None = None, tip_sigma_px: float = 0.0,
              margin: float = 16.0) -> Case:
    """Render a positive pair with light SPM artefacts (line offsets, tilt, noise in standard deviations)."""
    truth = truth or _to_truth(matrix)
    fixed, moving, _ = _build(d, source, fixed_shape, moving_shape, truth, kind=kind, channel=channel,
                              tip_sigma_px=tip_sigma_px, margin=margin)
    lines, tilt, noise = artefacts
    if source.kind != "pfm":
        fixed = _spm_scan(fixed, d.rng, lines=lines * d.rng.uniform(0, 1), tilt=tilt * d.rng.uniform(0, 1),
                          noise=0.02)
    moving = _contrast(moving, contrast, d.rng)
    moving = _spm_scan(moving, d.rng, lines=lines * d.rng.uniform(0, 1), tilt=tilt * d.rng.uniform(0, 1),
                       noise=noise)
    d.params["overlap"] = round(_overlap(matrix, moving_shape, fixed_shape), 3)
    return _finish(d, source, kind, fixed, moving, truth, _moving_pixel(matrix), positive=True)


def _case_same_res(d: _Draw) -> Case:
    pfm = d.split.pfm and pfm_available() and d.index % 10 == 9
    source = _Source("pfm", "height") if pfm else d.source()
    fixed_shape, moving_shape, linear = _same_res_geometry(d, pfm=pfm)
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 1.0 if pfm else 0.92)
    artefacts = (float(d.rng.uniform(0.2, 1.0)), float(d.rng.uniform(0.5, 3.0)), float(d.rng.uniform(0.02, 0.1)))
    return _positive(d, source, fixed_shape, moving_shape, matrix, "pfm_height" if pfm else source.kind,
                     artefacts=artefacts, margin=0.0 if pfm else 16.0)


def _unrelated_source(d: _Draw, source: _Source) -> _Source:
    """A second source of the split, unrelated to ``source`` (another image, or another synthetic family), recorded
    in the case's parameters."""
    other = d.source(second=True)
    while other.label == source.label or (other.kind == source.kind and other.kind != "skimage"):
        other = d.source(second=True)
    d.params["other_source"] = other.label
    return other


def _crop_geometry(d: _Draw) -> tuple[tuple[int, int], tuple[int, int], dict[str, Any]]:
    """A crop at the fixed image's pixel size (scale 0.97-1.03, any rotation) whose image-size ratio, 2.2-3.7, lies
    between ``same_pixel_size_band`` and ``ambiguous_size_ratio``: from the sizes alone it may as well be a map
    2-4× coarser over the same field of view."""
    fixed_shape = (int(d.rng.integers(256, 385)), int(d.rng.integers(256, 385)))
    size_ratio = float(np.exp(d.rng.uniform(np.log(2.2), np.log(3.7))))
    n = round(float(np.sqrt(fixed_shape[0] * fixed_shape[1])) / size_ratio)
    moving_shape = (int(n * d.rng.uniform(0.9, 1.0)), n)
    linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": float(d.rng.uniform(0.97, 1.03))}
    d.params["size_ratio"] = round(float(np.sqrt(np.prod(np.divide(fixed_shape, moving_shape)))), 3)
    return fixed_shape, moving_shape, linear


def _case_crop(d: _Draw) -> Case:
    """A crop of a scan at its pixel size, 2.2-3.7× smaller, without pixel sizes (rotated, light SPM artefacts)."""
    source = d.source()
    fixed_shape, moving_shape, linear = _crop_geometry(d)
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.92)
    artefacts = (float(d.rng.uniform(0.2, 1.0)), float(d.rng.uniform(0.5, 3.0)), float(d.rng.uniform(0.02, 0.1)))
    return _positive(d, source, fixed_shape, moving_shape, matrix, "crop", artefacts=artefacts)


def _case_power_of_two(d: _Draw) -> Case:
    """Sizes exactly 2× or 4× apart (256² or 512² scans), no pixel sizes: a coarser map of most of the field, or a crop
    exactly half the side at the same pixel size (rotated, light SPM artefacts)."""
    source = d.source()
    kind = ("map_2x", "map_2x", "map_4x", "crop_half")[d.index % 4]
    side = int(d.rng.choice([256, 512]))
    factor = 4 if kind == "map_4x" else 2
    n = side // factor
    if kind == "crop_half":
        linear: dict[str, Any] = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": float(d.rng.uniform(0.97, 1.03))}
    else:  # a map over 50-100 % of the fixed field's side, its pixel coverage / factor of the fixed one's
        coverage = float(d.rng.uniform(0.5, 1.0))
        linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": factor * coverage,
                  "aniso": tuple(float(v) for v in 1 + d.rng.uniform(-0.02, 0.02, 2)),
                  "shear": float(d.rng.uniform(-0.02, 0.02))}
        d.params["coverage"] = round(coverage, 3)
    matrix = _place_inside(d.rng, linear, (n, n), (side, side), 0.92)
    artefacts = (float(d.rng.uniform(0.2, 1.0)), float(d.rng.uniform(0.5, 3.0)), float(d.rng.uniform(0.02, 0.1)))
    return _positive(d, source, (side, side), (n, n), matrix, kind, artefacts=artefacts)


def _case_crop_negative(d: _Draw) -> Case:
    """A negative of the crop's geometry: a neighbouring area of the same sample (even indices, and every index of
    a split with one kind of source) or an unrelated image (odd indices)."""
    source = d.source()
    fixed_shape, moving_shape, linear = _crop_geometry(d)
    unrelated = d.index % 2 == 1 and len(d.split.families) + len(d.split.skimage) >= 2
    if unrelated:
        matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.92)
        fixed, _, _ = _build(d, source, fixed_shape, moving_shape, _to_truth(matrix), kind="crop_unrelated")
        other = _unrelated_source(d, source)
        _, moving, _ = _build(d, other, fixed_shape, moving_shape, _to_truth(matrix), kind="crop_unrelated")
    else:
        gap = float(d.rng.uniform(0.02, 0.25)) * max(moving_shape)
        matrix = _place_at_overlap(d.rng, linear, moving_shape, fixed_shape, 0.0, gap=gap)
        fixed, moving, _ = _build(d, source, fixed_shape, moving_shape, _to_truth(matrix), kind="crop_neighbour")
        d.params["gap_px"] = round(gap, 1)
    fixed = _spm_scan(fixed, d.rng, lines=0.2, tilt=0.5, noise=0.02)
    moving = _spm_scan(moving, d.rng, lines=0.2, tilt=0.5, noise=0.03)
    kind = "crop_unrelated" if unrelated else "crop_neighbour"
    return _finish(d, source, kind, fixed, moving, None, _moving_pixel(matrix), positive=False)


def _case_cross_res(d: _Draw) -> Case:
    source = d.source()
    fixed_shape, moving_shape, linear = _cross_res_geometry(d)
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.95)
    return _positive(d, source, fixed_shape, moving_shape, matrix, f"ratio_{_ratio_bin(linear['scale'])}")


def _ratio_bin(r: float) -> str:
    return "4-8" if r < 8 else "8-16" if r < 16 else "16-32"


def _case_cross_res_metadata(d: _Draw) -> Case:
    from autoreg import Image

    case = _case_cross_res(d)
    fixed_nm = float(np.exp(d.rng.uniform(np.log(0.05), np.log(0.5))))
    nominal = float(d.params["ratio"])  # the commanded pitch; the true map is 1-2 % off (anisotropy and shear)
    fixed = Image(data=case.fixed, pixel_size_xy=(fixed_nm, fixed_nm), units="nm")
    moving = Image(data=case.moving, pixel_size_xy=(fixed_nm * nominal, fixed_nm * nominal), units="nm")
    d.params["fixed_pixel_nm"] = fixed_nm
    return _finish(d, _source_of(case), case.kind, fixed, moving, case.truth, case.moving_pixel_px, positive=True)


def _source_of(case: Case) -> _Source:
    kind, _, rest = case.source.partition(":") if ":" in case.source else case.source.partition("#")
    return _Source(kind, rest) if kind in ("skimage", "pfm") else _Source(kind, seed=int(rest))


def _case_partial(d: _Draw, overlap: tuple[float, float], families: tuple[str, ...] | None = None) -> Case:
    source = d.source(families=families)
    fixed_shape = (int(d.rng.integers(224, 320)), int(d.rng.integers(224, 320)))
    n = int(d.rng.uniform(0.7, 1.0) * min(fixed_shape))
    moving_shape = (int(n * d.rng.uniform(0.85, 1.0)), n)
    linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": float(d.rng.uniform(0.95, 1.05))}
    target = float(d.rng.uniform(*overlap))
    matrix = _place_at_overlap(d.rng, linear, moving_shape, fixed_shape, target)
    return _positive(d, source, fixed_shape, moving_shape, matrix, f"overlap_{overlap[0]:.0%}-{overlap[1]:.0%}")


def _case_cross_modal(d: _Draw) -> Case:
    if d.split.pfm and pfm_available() and d.index % 3 == 0:
        channel = ("amplitude", "phase", "deflection")[(d.index // 3) % 3]
        fixed_shape, moving_shape, linear = _same_res_geometry(d, pfm=True)
        matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 1.0)
        return _positive(d, _Source("pfm", "height"), fixed_shape, moving_shape, matrix, f"pfm_height_vs_{channel}",
                         channel=channel, margin=0.0)
    source = d.source()
    kinds = ("inverted", "nonmonotonic", "gradient", "deflection") + (("channel",) if source.kind != "skimage" else ())
    kind = kinds[int(d.rng.integers(len(kinds)))]
    fixed_shape, moving_shape, linear = _same_res_geometry(d)
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.92)
    return _positive(d, source, fixed_shape, moving_shape, matrix, kind, channel="alt" if kind == "channel" else "main",
                     contrast=kind)


def _creep(d: _Draw, matrix: np.ndarray, moving_shape: tuple[int, int], strength: str) -> Truth:
    """Creep-like drift whose amplitude is 0.5 / 1.5 / 3 % of the footprint (low / mid / high)."""
    footprint = _moving_pixel(matrix) * max(moving_shape)
    amplitude = {"low": 0.005, "mid": 0.015, "high": 0.03}[strength] * footprint
    creep = amplitude * d.rng.choice([-1, 1], 2) * d.rng.uniform(0.5, 1.0, 2)
    settle = 0.5 * amplitude * d.rng.normal(0, 1, 2)
    return _to_truth(matrix, creep_xy=tuple(map(float, creep)), settle_xy=tuple(map(float, settle)),
                     moving_rows=moving_shape[0])


def _case_spm_degraded(d: _Draw) -> Case:
    degradation = DEGRADATIONS[d.index % len(DEGRADATIONS)]
    strength = STRENGTHS[(d.index // len(DEGRADATIONS)) % len(STRENGTHS)]
    level = STRENGTHS.index(strength)
    pfm = d.split.pfm and pfm_available() and d.index % 9 == 4
    source = _Source("pfm", "height") if pfm else d.source()
    cross = not pfm and bool(d.rng.random() < 0.5)
    if cross:
        fixed_shape, moving_shape, linear = _cross_res_geometry(d, ratio=(4.0, 16.0))
    else:
        fixed_shape, moving_shape, linear = _same_res_geometry(d, pfm=pfm)
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 1.0 if pfm else 0.92)
    truth = _creep(d, matrix, moving_shape, strength) if degradation == "creep" else _to_truth(matrix)
    tip = (0.7, 1.5, 3.0)[level] if degradation == "tip_blur" else 0.0
    kind = f"{degradation}:{strength}"
    d.params["degradation"], d.params["strength"] = degradation, strength
    fixed, moving, _ = _build(d, source, fixed_shape, moving_shape, truth, kind=kind, tip_sigma_px=tip,
                              margin=0.0 if pfm else 16.0)
    if not pfm:
        fixed = _spm_scan(fixed, d.rng, lines=0.2, tilt=0.5, noise=0.02)
    moving = _degrade(moving, d.rng, degradation, level)
    d.params["overlap"] = round(_overlap(matrix, moving_shape, fixed_shape), 3)
    return _finish(d, source, kind, fixed, moving, truth, _moving_pixel(matrix), positive=True)


def _degrade(moving: np.ndarray, rng: np.random.Generator, degradation: str, level: int) -> np.ndarray:
    """The named SPM degradation at strength ``level`` (0-2) on top of light noise."""
    if degradation == "line_offsets":
        moving = _line_offsets(moving, rng, (0.5, 1.5, 3.0)[level])
    elif degradation == "tilt_bow":
        moving = _tilt_bow(moving, rng, (2.0, 5.0, 12.0)[level])
    elif degradation == "spikes":
        moving = _spikes(moving, rng, (0.002, 0.01, 0.03)[level])
    noise = (0.1, 0.3, 0.7)[level] if degradation == "noise" else 0.03
    return _noise(moving, rng, noise)


def _case_near_periodic(d: _Draw) -> Case:
    source = _Source("lattice", seed=d.scene_seed())
    if d.rng.random() < 0.7:
        fixed_shape, moving_shape, linear = _same_res_geometry(d)
    else:  # a moderately coarser map that still resolves the lattice (period >= 6 px)
        r = float(d.rng.uniform(1.5, 2.0))
        fixed_shape = (int(d.rng.integers(256, 385)),) * 2
        n = int(d.rng.uniform(0.5, 0.8) * fixed_shape[0] / r)
        moving_shape = (n, n)
        linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": r}
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.92)
    return _positive(d, source, fixed_shape, moving_shape, matrix, "lattice")


def _case_near_selfsimilar(d: _Draw) -> Case:
    source = _Source("fractal", seed=d.scene_seed())
    r = float(np.exp(d.rng.uniform(0, np.log(8))))
    fixed_shape = (int(d.rng.integers(256, 513)),) * 2
    n = int(np.clip(d.rng.uniform(0.45, 0.8) * fixed_shape[0] / r, 32, 192))
    moving_shape = (n, n)
    linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": r}
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.92)
    return _positive(d, source, fixed_shape, moving_shape, matrix, "fractal_ratio_" + ("1-2" if r < 2 else "2-8"))


def _case_near_neighbour(d: _Draw) -> Case:
    """A negative that looks right: the moving scan shows the same sample next to the fixed one."""
    source = d.source()
    cross = bool(d.rng.random() < 0.5)
    fixed_shape, moving_shape, linear = (_cross_res_geometry(d, ratio=(4.0, 16.0), side=(24, 48)) if cross
                                         else _same_res_geometry(d))
    gap = float(d.rng.uniform(0.02, 0.25)) * linear["scale"] * max(moving_shape)
    matrix = _place_at_overlap(d.rng, linear, moving_shape, fixed_shape, 0.0, gap=gap)
    truth = _to_truth(matrix)  # where the scan really is: no overlap, so no correct answer exists
    kind = "neighbour_cross_res" if cross else "neighbour_same_res"
    fixed, moving, _ = _build(d, source, fixed_shape, moving_shape, truth, kind=kind)
    fixed = _spm_scan(fixed, d.rng, lines=0.2, tilt=0.5, noise=0.02)
    moving = _spm_scan(moving, d.rng, lines=0.2, tilt=0.5, noise=0.03)
    d.params["gap_px"] = round(gap, 1)
    return _finish(d, source, kind, fixed, moving, None, _moving_pixel(matrix), positive=False)


def _case_negative(d: _Draw) -> Case:
    kind = NEGATIVE_KINDS[d.index % len(NEGATIVE_KINDS)]
    source = d.source()
    cross = kind.endswith("cross_res") or (kind == "flat" and d.index % 2 == 1)
    fixed_shape, moving_shape, linear = (_cross_res_geometry(d) if cross else _same_res_geometry(d))
    matrix = _place_inside(d.rng, linear, moving_shape, fixed_shape, 0.92)
    fixed, _, _ = _build(d, source, fixed_shape, moving_shape, _to_truth(matrix), kind=kind)
    if kind.startswith("unrelated"):
        if len(d.split.families) + len(d.split.skimage) < 2:
            raise ValueError(f"split {d.split.name} has one kind of source; an unrelated negative needs two")
        other = _unrelated_source(d, source)
        _, moving, _ = _build(d, other, fixed_shape, moving_shape, _to_truth(matrix), kind=kind)
    elif kind.startswith("noise"):
        moving = _blur(d.rng.normal(size=moving_shape), float(d.rng.uniform(0, 1.5)))
    else:
        y, x = np.mgrid[: moving_shape[0], : moving_shape[1]]
        moving = 0.5 + 1e-4 * (x + 0.5 * y) + 1e-4 * d.rng.normal(size=moving_shape)
    fixed = _spm_scan(fixed, d.rng, lines=0.2, tilt=0.5, noise=0.02)
    if kind != "flat":
        moving = _spm_scan(moving, d.rng, lines=0.2, tilt=0.5, noise=0.03)
    return _finish(d, source, kind, fixed, moving, None, _moving_pixel(matrix), positive=False)


_GENERATORS = {
    "same_res": _case_same_res,
    "cross_res": _case_cross_res,
    "cross_res_metadata": _case_cross_res_metadata,
    "partial_overlap": lambda d: _case_partial(d, (0.3, 0.6)),
    "cross_modal": _case_cross_modal,
    "spm_degraded": _case_spm_degraded,
    "near_periodic": _case_near_periodic,
    "near_neighbour": _case_near_neighbour,
    "near_selfsimilar": _case_near_selfsimilar,
    "near_small_overlap": lambda d: _case_partial(d, (0.10, 0.20)),
    "negative": _case_negative,
    "crop": _case_crop,
    "crop_negative": _case_crop_negative,
    "power_of_two": _case_power_of_two,
}


def make_case(split: str, category: str, index: int) -> Case:
    """The ``index``-th seeded case of ``category`` in ``split``.

    Parameters
    ----------
    split : {"calibration", "evaluation", "holdout"}
    category : str
        One of :data:`CATEGORIES`.
    index : int
        0 <= index < 500.

    Returns
    -------
    Case
    """
    if not 0 <= index < 500:
        raise ValueError(f"index {index} outside 0-499")
    spec = SPLITS[split]
    seed = spec.case_seed_base + 1000 * CATEGORIES.index(category) + index
    draw = _Draw(spec, category, index, np.random.default_rng(seed))
    return _GENERATORS[category](draw)


def case_specs(split: str, categories: tuple[str, ...] | list[str] = CATEGORIES,
               per_category: int | None = None) -> list[tuple[str, str, int]]:
    """``(split, category, index)`` of every case of a run, category by category."""
    n = SPLITS[split].per_category if per_category is None else per_category
    return [(split, c, i) for c in categories for i in range(n)]
