"""Accuracy and verdict trust over seeded pairs with exact ground truth, against baselines in the same run.

Run: ``.venv/bin/python tests/bench/bench_accuracy.py [--per-category 20] [--categories ...]``. Not collected by pytest
(a small slice runs as ``tests/test_accuracy_slice.py``).

Sources: images scikit-image ships (camera, coins, moon, brick, cell, hubble_deep_field, retina, immunohistochemistry,
astronaut, grass, gravel, rocket), the fixture terrain, and the real PFM channels in ``../shared/data`` when present.
Categories: same resolution easy; large rotation (to ±180°) with noise; cross-resolution (moving 4–25x coarser);
partial overlap (< 60 %); cross-modal (inverted, non-monotonic, gradient magnitude, SPM line offsets and tilt);
negatives (unrelated image, noise, nearly constant). A case is correct when the mean error over a 5x5 grid spanning
the moving image is <= max(2 px, half a moving pixel in fixed px); negatives have no correct answer.
Reports per category: success rate, median error, median time; flag precision (ok => correct) and flag recall
(wrong or impossible => not ok). Baselines: plain OpenCV ORB + RANSAC, scikit-image ORB + ransac, phase correlation.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CATEGORIES = ("same_res", "rotation_noise", "cross_res", "partial_overlap", "cross_modal", "negative")
SKIMAGE_SOURCES = ("camera", "coins", "moon", "brick", "cell", "hubble_deep_field", "retina", "immunohistochemistry",
                   "astronaut", "grass", "gravel", "rocket")


@dataclass(frozen=True)
class Case:
    """One pair with its truth; ``matrix`` is None for negatives."""

    category: str
    name: str
    fixed: np.ndarray
    moving: np.ndarray
    matrix: np.ndarray | None
    moving_pixel_px: float


def _gray(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, float)
    if image.ndim == 3:
        image = image[..., :3] @ [0.299, 0.587, 0.114]
    return (image - image.min()) / (np.ptp(image) or 1.0)


def sources() -> dict[str, np.ndarray]:
    """Source images: scikit-image's, the fixture terrain, and the real PFM channels when present."""
    import skimage.data

    from autoreg.synthetic import make_scene

    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SKIMAGE_SOURCES:
            try:
                out[name] = _gray(getattr(skimage.data, name)())
            except Exception:  # noqa: BLE001 - a source scikit-image cannot provide here is skipped
                continue
    out["terrain"] = _gray(make_scene((768, 768), seed=3).height)
    pfm = ROOT.parent / "shared" / "data" / "SingFreqPFM_0003.h5"
    if pfm.exists():
        import cv2

        from autoreg.io import load_image

        for k, label in ((0, "pfm_height"), (1, "pfm_amplitude")):
            image = load_image(f"{pfm}::/Measurement_000/Channel_00{k}/Raw_Data").data
            out[label] = _gray(cv2.resize(np.asarray(image, np.float32), (512, 512), interpolation=cv2.INTER_CUBIC))
    return out


def _sample(source: np.ndarray, matrix: np.ndarray, shape: tuple[int, int], blur: float = 0.0) -> np.ndarray:
    """Image whose pixel (x, y) shows ``source`` at ``matrix @ (x, y, 1)``."""
    import cv2

    src = source.astype(np.float32)
    if blur > 0.3:
        src = cv2.GaussianBlur(src, (0, 0), blur)
    return cv2.warpPerspective(src, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REFLECT)


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty],
                     [0, 0, 1.0]])


def _centred(matrix: np.ndarray, moving_shape: tuple[int, int], fixed_centre: tuple[float, float]) -> np.ndarray:
    """Shift ``matrix`` so the moving image's centre lands on ``fixed_centre``."""
    centre = np.array([(moving_shape[1] - 1) / 2, (moving_shape[0] - 1) / 2, 1.0])
    mapped = matrix @ centre
    out = matrix.copy()
    out[:2, 2] += np.asarray(fixed_centre) - mapped[:2] / mapped[2]
    return out


def make_case(category: str, index: int, pool: dict[str, np.ndarray]) -> Case:
    """The ``index``-th seeded case of ``category``."""
    rng = np.random.default_rng(1000 * CATEGORIES.index(category) + index)
    names = sorted(pool)
    name = names[index % len(names)]
    source = pool[name]
    size = 256
    h, w = source.shape
    fy, fx = int(rng.integers(0, max(1, h - size))), int(rng.integers(0, max(1, w - size)))
    crop = np.array([[1, 0, fx], [0, 1, fy], [0, 0, 1.0]])  # fixed pixel -> source pixel
    fixed = _sample(source, crop, (size, size))
    centre = ((size - 1) / 2 + rng.uniform(-15, 15), (size - 1) / 2 + rng.uniform(-15, 15))
    moving_pixel = 1.0
    if category == "same_res":
        shape = (size, size)
        matrix = _centred(_similarity(rng.uniform(-15, 15), rng.uniform(0.95, 1.05), 0, 0), shape, centre)
        noise = 0.01
    elif category == "rotation_noise":
        shape = (size, size)
        matrix = _centred(_similarity(rng.uniform(-180, 180), rng.uniform(0.9, 1.1), 0, 0), shape, centre)
        noise = rng.uniform(0.03, 0.08)
    elif category == "cross_res":
        moving_pixel = float(rng.choice([4, 6, 8, 12, 16, 25]))
        fixed_size = 512 if moving_pixel > 8 else size
        if fixed_size != size:
            fixed = _sample(source, crop, (fixed_size, fixed_size)) if h >= 512 and w >= 512 else \
                _sample(source, crop @ np.diag([size / fixed_size, size / fixed_size, 1]), (fixed_size, fixed_size))
        n = max(16, int(round(0.85 * fixed_size / moving_pixel)))
        shape = (n, n)
        c = ((fixed_size - 1) / 2 + rng.uniform(-10, 10), (fixed_size - 1) / 2 + rng.uniform(-10, 10))
        matrix = _centred(_similarity(rng.uniform(-10, 10), moving_pixel, 0, 0), shape, c)
        noise = 0.01
    elif category == "partial_overlap":
        shape = (size, size)
        offset = rng.uniform(0.45, 0.6) * size
        direction = rng.choice([-1, 1], 2)
        matrix = _centred(_similarity(rng.uniform(-10, 10), 1.0, 0, 0), shape,
                          ((size - 1) / 2 + direction[0] * offset, (size - 1) / 2 + direction[1] * offset * 0.3))
        noise = 0.01
    elif category == "cross_modal":
        shape = (size, size)
        matrix = _centred(_similarity(rng.uniform(-20, 20), rng.uniform(0.95, 1.05), 0, 0), shape, centre)
        noise = 0.01
    else:
        shape = (size, size)
        matrix = None
        noise = 0.01
    if matrix is not None:
        moving = _sample(source, crop @ matrix, shape, blur=0.4 * moving_pixel if moving_pixel > 1 else 0.0)
        if category == "cross_modal":
            kind = index % 4
            if kind == 0:
                moving = 1.0 - moving
            elif kind == 1:
                moving = np.abs(moving - np.median(moving))
            elif kind == 2:
                import cv2

                gx = cv2.Sobel(moving.astype(np.float32), cv2.CV_32F, 1, 0)
                gy = cv2.Sobel(moving.astype(np.float32), cv2.CV_32F, 0, 1)
                moving = np.hypot(gx, gy)
            else:
                yy, xx = np.mgrid[: shape[0], : shape[1]]
                moving = moving + 0.002 * xx + rng.normal(0, 0.08, (shape[0], 1))
    else:
        kind = index % 3
        if kind == 0:
            other = pool[names[(index + 1) % len(names)]]
            moving = _sample(other, np.array([[1, 0, 3], [0, 1, 5], [0, 0, 1.0]]), (size, size))
        elif kind == 1:
            moving = rng.normal(size=(size, size))
        else:
            moving = 0.5 + 1e-3 * rng.normal(size=(size, size))
    moving = moving + rng.normal(0, noise * (np.std(moving) or 1.0), moving.shape)
    return Case(category, f"{category}/{index:02d}/{name}", fixed.astype(np.float32), moving.astype(np.float32),
                matrix, moving_pixel)


def grid_error(case: Case, moving_to_fixed: Callable[[np.ndarray], np.ndarray] | None) -> float:
    """Mean error (fixed px) over a 5x5 grid spanning the moving image; inf without a transform."""
    if moving_to_fixed is None or case.matrix is None:
        return float("inf")
    rows, cols = case.moving.shape
    gy, gx = np.mgrid[0 : rows - 1 : 5j, 0 : cols - 1 : 5j]
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    h = np.column_stack([grid, np.ones(len(grid))]) @ case.matrix.T
    mapped = np.asarray(moving_to_fixed(grid), float)
    if not np.all(np.isfinite(mapped)):
        return float("inf")
    return float(np.mean(np.linalg.norm(mapped - h[:, :2] / h[:, 2:], axis=1)))


def tolerance(case: Case) -> float:
    return max(2.0, 0.5 * case.moving_pixel_px)


def _matrix_fn(matrix: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray] | None:
    if matrix is None or not np.all(np.isfinite(matrix)):
        return None
    m = np.asarray(matrix, float)

    def apply(xy: np.ndarray) -> np.ndarray:
        h = np.column_stack([xy, np.ones(len(xy))]) @ m.T
        return h[:, :2] / h[:, 2:]

    return apply


SCORES: dict[str, tuple] = {}  # case name -> (scores, source, exact) of autoreg's result, for --calibrate


def run_autoreg(case: Case) -> tuple[Callable | None, str]:
    import autoreg

    result = autoreg.register(case.fixed, case.moving, model="auto")
    fn = result.fit.moving_to_fixed if result.fit is not None and result.verdict.level != "failed" else None
    if result.fit is not None:
        exact = any(r.startswith("unverifiable_points") for r in result.verdict.reasons)
        SCORES[case.name] = (result.scores, result.fit.source, exact)
    return fn, result.verdict.level


def calibrate(rows: list[dict]) -> None:
    """Re-judge autoreg's final results under other thresholds: precision, recall and ok rate of each setting.

    Approximate: an earlier ``ok`` would have stopped the fallback chain, which re-judging offline ignores.
    """
    import itertools

    from autoreg.config import RegistrationConfig
    from autoreg.confidence import judge

    grid = {"ok_inliers": [8, 12, 15, 25], "min_pearson": [0.2, 0.3, 0.5], "max_rmse_wpx": [1.5, 2.5, 4.0],
            "min_ecc_correlation": [0.4, 0.6, 0.8], "min_model_support": [0.5, 0.7, 0.9]}
    print("calibration (thresholds -> flag precision, flag recall, ok rate among correct):")
    results = []
    for values in itertools.product(*grid.values()):
        config = RegistrationConfig(**dict(zip(grid, values)))
        ok_correct = ok_wrong = wrong_flagged = wrong = correct = 0
        for row in rows:
            stored = SCORES.get(row["case"])
            level = "failed" if stored is None else judge(stored[0], config, source=stored[1],
                                                          exact_points=stored[2]).level
            correct += row["correct"]
            ok_correct += level == "ok" and row["correct"]
            ok_wrong += level == "ok" and not row["correct"]
            wrong += not row["correct"]
            wrong_flagged += level != "ok" and not row["correct"]
        precision = ok_correct / max(ok_correct + ok_wrong, 1)
        results.append((precision, wrong_flagged / max(wrong, 1), ok_correct / max(correct, 1), values))
    safe = [r for r in results if r[0] == 1.0 and r[1] == 1.0]
    for precision, recall, rate, values in sorted(safe, key=lambda r: -r[2])[:5]:
        print(f"  {dict(zip(grid, values))}: precision {precision:.3f}, recall {recall:.3f}, ok rate {rate:.3f}")
    current = RegistrationConfig()
    mine = next(r for r in results if r[3] == tuple(getattr(current, k) for k in grid))
    print(f"  current defaults: precision {mine[0]:.3f}, recall {mine[1]:.3f}, ok rate {mine[2]:.3f}; "
          f"{len(safe)} of {len(results)} settings keep precision and recall at 1.0")


def _u8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / ((hi - lo) or 1) * 255, 0, 255).astype(np.uint8)


def run_opencv_orb(case: Case) -> tuple[Callable | None, str]:
    """Plain OpenCV: ORB on both images as they are, cross-checked BF matching, RANSAC partial affine."""
    import cv2

    orb = cv2.ORB_create(2000)
    kf, df = orb.detectAndCompute(_u8(case.fixed), None)
    km, dm = orb.detectAndCompute(_u8(case.moving), None)
    if df is None or dm is None or len(kf) < 3 or len(km) < 3:
        return None, "n/a"
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dm, df)
    if len(matches) < 3:
        return None, "n/a"
    src = np.float32([km[m.queryIdx].pt for m in matches])
    dst = np.float32([kf[m.trainIdx].pt for m in matches])
    matrix, _ = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    return (None, "n/a") if matrix is None else (_matrix_fn(np.vstack([matrix, [0, 0, 1]])), "n/a")


def run_skimage_orb(case: Case) -> tuple[Callable | None, str]:
    """scikit-image ORB + match_descriptors + ransac (affine)."""
    from skimage.feature import ORB, match_descriptors
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    def features(image):
        orb = ORB(n_keypoints=800, fast_threshold=0.05)
        orb.detect_and_extract(image)
        return orb.keypoints[:, ::-1], orb.descriptors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            kf, df = features(case.fixed)
            km, dm = features(case.moving)
            pairs = match_descriptors(dm, df, cross_check=True)
            if len(pairs) < 3:
                return None, "n/a"
            model, _ = ransac((km[pairs[:, 0]], kf[pairs[:, 1]]), AffineTransform, min_samples=3,
                              residual_threshold=3.0, max_trials=500, rng=0)
        except Exception:  # noqa: BLE001 - a baseline that gives up has no answer
            return None, "n/a"
    return (None, "n/a") if model is None else (_matrix_fn(model.params), "n/a")


def run_phase_correlation(case: Case) -> tuple[Callable | None, str]:
    """Translation by phase correlation of the moving image resized to the fixed one's size."""
    import cv2
    from skimage.registration import phase_cross_correlation

    moving = cv2.resize(case.moving, (case.fixed.shape[1], case.fixed.shape[0]), interpolation=cv2.INTER_LINEAR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shift = phase_cross_correlation(case.fixed, moving, upsample_factor=10)[0]
    sx, sy = case.fixed.shape[1] / case.moving.shape[1], case.fixed.shape[0] / case.moving.shape[0]
    matrix = np.array([[sx, 0, shift[1] + 0.5 * sx - 0.5], [0, sy, shift[0] + 0.5 * sy - 0.5], [0, 0, 1.0]])
    return _matrix_fn(matrix), "n/a"


METHODS = {"autoreg": run_autoreg, "opencv_orb": run_opencv_orb, "skimage_orb": run_skimage_orb,
           "phase_corr": run_phase_correlation}


def evaluate(cases: list[Case], methods: dict[str, Callable]) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {m: [] for m in methods}
    for case in cases:
        for name, method in methods.items():
            started = time.perf_counter()
            try:
                fn, verdict = method(case)
                crashed = False
            except Exception as err:  # noqa: BLE001 - a crash is recorded, not hidden
                fn, verdict, crashed = None, f"crash: {type(err).__name__}", True
            seconds = time.perf_counter() - started
            error = grid_error(case, fn)
            correct = case.matrix is not None and error <= tolerance(case)
            rows[name].append({"case": case.name, "category": case.category, "error": error, "correct": correct,
                               "verdict": verdict, "seconds": seconds, "crashed": crashed})
    return rows


def report(rows: dict[str, list[dict]]) -> None:
    categories = [c for c in CATEGORIES if any(r["category"] == c for r in rows["autoreg"])]
    print(f"{'category':16s} " + " ".join(f"{m:>22s}" for m in rows))
    for category in categories:
        cells = []
        for method, method_rows in rows.items():
            sel = [r for r in method_rows if r["category"] == category]
            if category == "negative":
                cells.append(f"{'n/a':>22s}")
                continue
            rate = 100 * np.mean([r["correct"] for r in sel])
            errors = [r["error"] for r in sel if np.isfinite(r["error"])]
            median = statistics.median(errors) if errors else float("inf")
            cells.append(f"{rate:5.0f}% {median:7.2f}px {1e3 * statistics.median(r['seconds'] for r in sel):5.0f}ms")
        print(f"{category:16s} " + " ".join(f"{c:>22s}" for c in cells))
    ours = rows["autoreg"]
    positives = [r for r in ours if r["category"] != "negative"]
    ok = [r for r in ours if r["verdict"] == "ok"]
    wrong = [r for r in ours if not r["correct"]]
    print(f"autoreg overall success {100 * np.mean([r['correct'] for r in positives]):.0f}% of {len(positives)} "
          f"positive cases; crashes {sum(r['crashed'] for r in ours)}")
    print(f"flag precision (ok => correct): {sum(r['correct'] for r in ok)}/{len(ok)} = "
          f"{100 * np.mean([r['correct'] for r in ok]) if ok else float('nan'):.1f}%")
    print(f"flag recall (wrong or impossible => not ok): {sum(r['verdict'] != 'ok' for r in wrong)}/{len(wrong)} = "
          f"{100 * np.mean([r['verdict'] != 'ok' for r in wrong]) if wrong else float('nan'):.1f}%")
    negatives_ok = [r["case"] for r in ours if r["category"] == "negative" and r["verdict"] == "ok"]
    print(f"negatives judged ok: {negatives_ok or 'none'}")
    false_ok = [f"{r['case']} ({r['error']:.1f}px)" for r in ok if not r["correct"]]
    if false_ok:
        print("ok but wrong:", ", ".join(false_ok))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-category", type=int, default=20)
    parser.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--calibrate", action="store_true", help="re-judge autoreg's results over a threshold grid")
    args = parser.parse_args()
    pool = sources()
    cases = [make_case(c, i, pool) for c in args.categories for i in range(args.per_category)]
    methods = {"autoreg": run_autoreg} if args.no_baselines else METHODS
    print(f"{len(cases)} cases from {len(pool)} sources: {', '.join(sorted(pool))}")
    rows = evaluate(cases, methods)
    report(rows)
    if args.calibrate:
        calibrate(rows["autoreg"])


if __name__ == "__main__":
    main()
