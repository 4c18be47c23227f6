"""Cost and accuracy of ``autoreg.refine.refine_matrix``, against OpenCV's ECC and ImageJ's StackReg/TurboReg.

Run: ``.venv/bin/python tests/bench/bench_refine.py [--repeats N]``. Not collected by pytest. Needs
``pystackreg`` (``pip install pystackreg``; not a dependency of autoreg) for part 2.

1. **Cost** (median wall and CPU time of ``--repeats``; baselines measured in the same run, interleaved; CPU
   time is the figure to trust on a shared machine):
   * a 40×40 map on a 1024² topography (the bundled demo pair, ``make_stm_sts_pair``), affine, started
     0.5 map px off — against one ``cv2.findTransformECC`` of the map with the topography reduced to the map's
     pixel size (what a user of ECC would do);
   * a 256² same-resolution rigid pair started 2-3 px and 1-2° off — against one ``cv2.findTransformECC``
     (MOTION_EUCLIDEAN, single level, the same start) on the same pair.
2. **Agreement with StackReg on real data**: the PFM scan ``shared/data/SingFreqPFM_0003.h5`` (4 channels,
   128²). Each pair is a 96² crop of channel ``a`` (fixed) and a 96² crop of channel ``b`` resampled (cubic)
   through a known rigid transform (shift ±3 px, rotation ±3°) plus 5 % noise, so the truth is exact;
   ``a == b`` for every channel, and channel 0 against 3 (the only related pair: inverted contrast,
   r = -0.48). ECC and ``refine_matrix`` start from the identity; StackReg (RIGID_BODY) finds its own.
   Reports the mean 5×5-grid distance |refine − StackReg|, |ECC − StackReg| and each method's error against
   the truth (px). Goal: refine agrees with StackReg at least as closely as ECC does.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _sources import PFM_PATH as PFM  # ../shared/data of the checkout, wherever the checkout sits
from _timing import timed

from autoreg.refine import refine_matrix


def apply(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    h = np.column_stack([xy, np.ones(len(xy))]) @ np.asarray(matrix, float).T
    return h[:, :2] / h[:, 2:]


def grid_distance(a: np.ndarray, b: np.ndarray, shape_rc: tuple[int, int]) -> float:
    gy, gx = np.mgrid[0 : shape_rc[0] - 1 : 5j, 0 : shape_rc[1] - 1 : 5j]
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    return float(np.mean(np.linalg.norm(apply(a, grid) - apply(b, grid), axis=1)))


def rigid(angle_deg: float, shift: np.ndarray, centre: np.ndarray) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    out = np.eye(3)
    out[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    out[:2, 2] = centre + shift - out[:2, :2] @ centre
    return out


def ecc(
    fixed: np.ndarray, moving: np.ndarray, start: np.ndarray, motion: str = "MOTION_EUCLIDEAN"
) -> np.ndarray:
    """One ``cv2.findTransformECC`` (moving → fixed in, moving → fixed out)."""
    import cv2

    warp = np.linalg.inv(start)[:2].astype(np.float32)  # ECC's warp maps template (fixed) px to input px
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 200, 1e-6)

    def norm(a: np.ndarray) -> np.ndarray:
        return ((a - a.mean()) / a.std()).astype(np.float32)

    _, warp = cv2.findTransformECC(norm(fixed), norm(moving), warp, getattr(cv2, motion), criteria, None, 1)
    return np.linalg.inv(np.vstack([warp, [0, 0, 1]]).astype(float))


# ------------------------------------------------------------------------------------------------ 1. cost


def bench_cost(repeats: int) -> None:
    import cv2
    from scipy import ndimage as ndi

    from autoreg.synthetic import make_scene, make_stm_sts_pair, true_moving_to_fixed

    pair = make_stm_sts_pair(seed=0)
    fixed, moving, truth = pair.fixed, pair.moving, pair.moving_to_fixed
    start = rigid(0.3, np.array([8.0, -9.0]), np.array([511.5, 511.5])) @ truth  # ~0.5 map px off
    scale = float(np.sqrt(abs(np.linalg.det(truth[:2, :2]))))
    size = round(1024 / scale)
    factor = 1024 / size  # fixed px per reduced px (INTER_AREA to `size`)
    reduced_to_map = np.diag([1 / factor, 1 / factor, 1.0]) @ np.array(
        [[1, 0, -(factor - 1) / 2], [0, 1, -(factor - 1) / 2], [0, 0, 1.0]]
    )

    def ecc_map():
        small = cv2.resize(fixed, (size, size), interpolation=cv2.INTER_AREA)
        try:
            return np.linalg.inv(reduced_to_map) @ ecc(small, moving, reduced_to_map @ start, "MOTION_AFFINE")
        except cv2.error:
            return np.full((3, 3), np.nan)

    timings = measure(
        {
            "map refine": lambda: refine_matrix(fixed, moving, start, "affine"),
            "map refine (no hold-out)": lambda: refine_matrix(fixed, moving, start, "affine", holdout=False),
            "map ECC": ecc_map,
        },
        repeats,
    )
    result = refine_matrix(fixed, moving, start, "affine")
    gy, gx = np.mgrid[0:39:5j, 0:39:5j]
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    true_xy = true_moving_to_fixed(grid, pair.truth)  # the affine part plus the creep

    def map_error(matrix: np.ndarray) -> float:
        return float(np.mean(np.linalg.norm(apply(matrix, grid) - true_xy, axis=1))) / scale

    print(
        f"40×40 map on 1024² (affine fit; the truth adds a creep), map px from the true positions: "
        f"start {map_error(start):.3f}, refine {map_error(result.moving_to_fixed):.3f} "
        f"(predicted {result.predicted_error_px / scale:.3f}), ECC on the reduced topography "
        f"{map_error(ecc_map()):.3f}; hold-out r {result.holdout_before:.3f} → {result.holdout_after:.3f}"
    )
    report(timings, "map ECC")

    rng = np.random.default_rng(0)
    scene = ndi.gaussian_filter(make_scene((256, 256), seed=3, feature_px=1.5).height, 1.0)
    c = np.full(2, 127.5)
    truth = rigid(5.0, np.array([3.0, -2.0]), c)
    y, x = np.mgrid[:256, :256].astype(float)
    xy = apply(truth, np.column_stack([x.ravel(), y.ravel()]))
    moving = ndi.map_coordinates(scene, [xy[:, 1], xy[:, 0]], order=3, mode="nearest").reshape(256, 256)
    fixed = scene + rng.normal(0, 0.02 * scene.std(), scene.shape)
    moving = moving + rng.normal(0, 0.02 * scene.std(), scene.shape)
    start = rigid(1.5, np.array([2.0, 1.5]), c) @ truth
    timings = measure(
        {
            "256² refine": lambda: refine_matrix(fixed, moving, start, "rigid"),
            "256² refine (no hold-out)": lambda: refine_matrix(fixed, moving, start, "rigid", holdout=False),
            "256² ECC": lambda: ecc(fixed, moving, start),
        },
        repeats,
    )
    ours = refine_matrix(fixed, moving, start, "rigid").moving_to_fixed
    error = {
        name: grid_distance(m, truth, (256, 256))
        for name, m in (("start", start), ("refine", ours), ("ECC", ecc(fixed, moving, start)))
    }
    print(
        f"256² same resolution (rigid), error in px: start {error['start']:.2f}, "
        f"refine {error['refine']:.4f}, ECC {error['ECC']:.4f}"
    )
    report(timings, "256² ECC")


def measure(calls: dict, repeats: int) -> dict[str, list[float]]:
    """Wall (``name``) and CPU (``name cpu``) seconds of every call, interleaved, ``repeats`` times."""
    timings: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, fn in calls.items():
            timings.setdefault(name, []).append(timed(fn, 1))
            timings.setdefault(name + " cpu", []).append(cpu_timed(fn))
    return timings


def cpu_timed(fn) -> float:
    """CPU seconds of one call (robust to other processes sharing the cores, unlike wall time)."""
    started = time.process_time()
    fn()
    return time.process_time() - started


def report(timings: dict[str, list[float]], baseline: str) -> None:
    """Median wall and CPU times and their ratio to the baseline's."""
    base = statistics.median(timings[baseline])
    base_cpu = statistics.median(timings[baseline + " cpu"])
    for name, values in timings.items():
        if name.endswith(" cpu"):
            continue
        median, cpu = statistics.median(values), statistics.median(timings[name + " cpu"])
        print(
            f"  {name:28s} wall {1000 * median:8.1f} ms ({median / base:5.1f}×)   "
            f"CPU {1000 * cpu:8.1f} ms ({cpu / base_cpu:5.1f}× {baseline})"
        )


# ------------------------------------------------------------------------------------------------ 2. StackReg


def pfm_channels() -> list[np.ndarray]:
    from autoreg.io import load_image

    return [
        np.asarray(load_image(f"{PFM}::/Measurement_000/Channel_00{k}/Raw_Data").data, float)
        for k in range(4)
    ]


def crop_pair(fixed_src: np.ndarray, moving_src: np.ndarray, truth: np.ndarray, size: int = 96):
    """Fixed: the central crop of ``fixed_src``; moving: ``moving_src`` sampled where ``truth`` maps it."""
    from scipy import ndimage as ndi

    offset = (fixed_src.shape[0] - size) / 2
    y, x = np.mgrid[:size, :size].astype(float)
    xy = apply(truth, np.column_stack([x.ravel(), y.ravel()])) + offset
    moving = ndi.map_coordinates(moving_src, [xy[:, 1], xy[:, 0]], order=3, mode="nearest").reshape(
        size, size
    )
    fixed = fixed_src[int(offset) : int(offset) + size, int(offset) : int(offset) + size]
    return fixed, moving


def bench_stackreg(n_pairs: int) -> None:
    if n_pairs <= 0:  # part 1 only
        return
    from pystackreg import StackReg

    channels = [(c - c.mean()) / c.std() for c in pfm_channels()]
    rng = np.random.default_rng(2024)
    # channels 0 and 3 are the only related pair (r = -0.48: inverted contrast); the others are uncorrelated
    combos = [(a, a) for a in range(4)] + [(0, 3)]
    rows = []
    for index in range(n_pairs):
        a, b = combos[index % len(combos)]
        truth = rigid(rng.uniform(-3, 3), rng.uniform(-3, 3, 2), np.full(2, 47.5))
        fixed, moving = crop_pair(channels[a], channels[b], truth)
        moving = moving + rng.normal(0, 0.05, moving.shape)  # a second scan's own noise (5 % of the sd)
        reg = StackReg(StackReg.RIGID_BODY)
        stackreg = np.linalg.inv(reg.register(fixed, moving))  # its matrix maps fixed px to moving px
        try:
            by_ecc = ecc(fixed, moving, np.eye(3))
        except Exception:  # noqa: BLE001 - a baseline failure is a data point, not a crash
            by_ecc = np.full((3, 3), np.nan)
        try:
            ours = refine_matrix(fixed, moving, np.eye(3), "rigid", holdout=False).moving_to_fixed
        except Exception:  # noqa: BLE001
            ours = np.full((3, 3), np.nan)
        shape = moving.shape
        rows.append(
            (
                a,
                b,
                grid_distance(ours, stackreg, shape),
                grid_distance(by_ecc, stackreg, shape),
                grid_distance(ours, truth, shape),
                grid_distance(by_ecc, truth, shape),
                grid_distance(stackreg, truth, shape),
            )
        )
    table = np.array(rows, float)
    print(
        f"\nStackReg agreement on the real PFM scan: {len(rows)} pairs of 96² crops (same channel and "
        "cross-channel), known rigid truth (±3 px, ±3°), mean 5×5-grid distance in px"
    )
    print("   a b  |ref-SR|  |ECC-SR|  ref err   ECC err   SR err")
    for r in rows:
        print(f"   {r[0]} {r[1]}  {r[2]:8.4f}  {r[3]:8.4f}  {r[4]:8.4f}  {r[5]:8.4f}  {r[6]:8.4f}")
    for label, subset in (
        ("same channel", table[:, 0] == table[:, 1]),
        ("channel 0 ↔ 3", table[:, 0] != table[:, 1]),
    ):
        print(f" {label} ({int(subset.sum())} pairs):")
        for name, col in (
            ("|refine − StackReg|", 2),
            ("|ECC − StackReg|", 3),
            ("refine error", 4),
            ("ECC error", 5),
            ("StackReg error", 6),
        ):
            values = table[subset, col]
            failed = int(np.isnan(values).sum())
            if failed == len(values):
                print(f"  {name:22s} all {failed} failed")
                continue
            print(
                f"  {name:22s} median {np.nanmedian(values):.4f}  mean {np.nanmean(values):.4f}  "
                f"max {np.nanmax(values):.4f}  (failures {failed})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pairs", type=int, default=30)
    args = parser.parse_args()
    bench_cost(args.repeats)
    bench_stackreg(args.pairs)


if __name__ == "__main__":
    main()
