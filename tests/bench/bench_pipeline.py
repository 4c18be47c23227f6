"""Speed of hands-off registration on the bundled fixture, against the tutorial's manual workflow.

Run: ``.venv/bin/python tests/bench/bench_pipeline.py [--repeats N]``. Not collected by pytest.

Measured in one run, interleaved, on the same data (loading excluded):

* ``tutorial``: pycroscopy's manual 4-model loop — upscale the 40×40 map to 1024² with a spline, normalise,
  and for similarity, affine, piecewise-affine and projective: ``estimate_transform`` from 4 hand-picked
  points, ``skimage.transform.warp`` onto 1024², Pearson over the whole image (points taken from the ground
  truth here, so the baseline is as good as a careful human);
* ``autoreg affine`` / ``autoreg auto``: ``autoreg.register`` hands-off (levelled views, features, robust fit, model
  choice, sub-pixel refinement by intensity, warp, scores, verdict);
* ``floor``: the least a hands-off feature registration does, in OpenCV alone, with autoreg's detector settings: the
  fixed image area-averaged to the working size, the map resized to the same pixel size (from the file's pixel
  sizes), both made 8-bit as autoreg makes its detector views (``autoreg.preprocess.to_uint8``), ORB on both, ratio-tested matches, a RANSAC affine fit, the map warped onto the fixed grid and Pearson's r
  over its footprint. No levelling, no sub-pixel refinement, no model choice, no scores or verdict: what autoreg
  costs beyond this row is what those cost;
* ``cli``: the whole ``autoreg register FIXED.tif MOVING.tif --json`` process (Python start-up included).

Prints medians, the ratio of the tutorial's time to each row's (higher is better; goal >= 10x), the ratio of each
row's time to the floor's, and the error of autoreg's and the floor's fits against the fixture's truth.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import autoreg
from autoreg._threads import ONE_THREAD
from autoreg.fixture import load_truth, truth_error_px
from autoreg.geometry import apply_matrix, mean_grid_distance
from autoreg.synthetic import true_moving_to_fixed

FIXTURE = ROOT / "fixtures" / "stm_sts.h5"


def tutorial_workflow(fixed: np.ndarray, moving: np.ndarray, src: np.ndarray, dst: np.ndarray) -> list[float]:
    """The tutorial's loop, minus plotting (its direction convention kept as it was)."""
    from scipy import interpolate, stats
    from skimage import transform

    def normalize(image):
        return (image - image.min()) / (image.max() - image.min())

    fixed = normalize(fixed)
    z_shape, topo_shape = moving.shape, fixed.shape
    upscaler = interpolate.RectBivariateSpline(np.arange(z_shape[0]), np.arange(z_shape[1]), moving)
    upscaled = normalize(upscaler(np.arange(0, z_shape[0], z_shape[0] / topo_shape[0]),
                                  np.arange(0, z_shape[1], z_shape[1] / topo_shape[1])))
    scores = []
    for name in ("similarity", "affine", "piecewise-affine", "projective"):
        tform = transform.estimate_transform(name, src, dst)
        corrected = transform.warp(upscaled, inverse_map=tform.inverse, output_shape=upscaled.shape)
        scores.append(stats.pearsonr(fixed.ravel(), corrected.ravel())[0])
    return scores


def opencv_floor(fixed: np.ndarray, moving: np.ndarray,
                 moving_px_per_fixed_px: float) -> tuple[np.ndarray, float] | None:
    """Moving -> fixed pixel matrix (3x3) by OpenCV's features alone (see the module docstring), and Pearson's r over
    the warped map's footprint; None without a fit."""
    import cv2

    from autoreg.config import RegistrationConfig
    from autoreg.preprocess import resize_matrix, robust_unit_range, to_uint8

    cfg = RegistrationConfig()
    to_view = cfg.working_size / max(fixed.shape)  # fixed view px per fixed px
    moving_to_view = moving_px_per_fixed_px * to_view  # the map at the fixed view's pixel size
    fixed_view = cv2.resize(fixed.astype(np.float32), None, fx=to_view, fy=to_view, interpolation=cv2.INTER_AREA)
    moving_view = cv2.resize(moving.astype(np.float32), None, fx=moving_to_view, fy=moving_to_view,
                             interpolation=cv2.INTER_CUBIC)

    def eight_bit(view: np.ndarray) -> np.ndarray:  # autoreg's 8-bit detector view, without its levelling
        return to_uint8(robust_unit_range(view, np.ones(view.shape, bool)), clahe_clip=cfg.clahe_clip)

    orb = cv2.ORB_create(cfg.n_features, fastThreshold=cfg.fast_threshold, nlevels=cfg.orb_levels,
                         patchSize=cfg.orb_patch_size, edgeThreshold=cfg.orb_patch_size)
    fixed_kp, fixed_desc = orb.detectAndCompute(eight_bit(fixed_view), None)
    moving_kp, moving_desc = orb.detectAndCompute(eight_bit(moving_view), None)
    if fixed_desc is None or moving_desc is None:
        return None
    pairs = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(moving_desc, fixed_desc, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < cfg.match_ratio * p[1].distance]
    if len(good) < 3:
        return None
    moving_xy = np.float32([moving_kp[m.queryIdx].pt for m in good])
    fixed_xy = np.float32([fixed_kp[m.trainIdx].pt for m in good])
    view_affine, _ = cv2.estimateAffine2D(moving_xy, fixed_xy, ransacReprojThreshold=cfg.ransac_threshold_px)
    if view_affine is None:
        return None
    moving_to_fixed = (np.linalg.inv(resize_matrix(to_view, to_view)) @ np.vstack([view_affine, [0, 0, 1]])
                       @ resize_matrix(moving_to_view, moving_to_view))
    warped = cv2.warpAffine(moving.astype(np.float32), moving_to_fixed[:2], fixed.shape[::-1], flags=cv2.INTER_LINEAR)
    footprint = cv2.warpAffine(np.ones(moving.shape, np.float32), moving_to_fixed[:2], fixed.shape[::-1]) > 0.999
    return moving_to_fixed, float(np.corrcoef(warped[footprint], fixed[footprint])[0, 1])


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    fixed_img = autoreg.load_image(f"{FIXTURE}::/Measurement_000/Channel_000/STM_Topography")
    moving_img = autoreg.load_image(f"{FIXTURE}::/Measurement_001/Channel_001/STS_Z_Contrast")
    truth = load_truth(FIXTURE)
    # four "hand-picked" points, as the tutorial does, in the upscaled (1024²) moving frame -> fixed
    picked = np.array([[8.0, 8.0], [31.0, 9.0], [30.0, 31.0], [9.0, 30.0]])
    up = 1024 / 40
    src = true_moving_to_fixed(picked, truth)[:, ::1]
    dst = picked * up
    fixed, moving = np.asarray(fixed_img.data, float), np.asarray(moving_img.data, float)

    moving_px_per_fixed_px = truth.moving_pixel_nm / truth.fixed_pixel_nm  # what the file's positions say

    def floor() -> tuple[np.ndarray, float] | None:
        with ONE_THREAD:  # as autoreg.register runs (autoreg/_threads.py)
            return opencv_floor(fixed, moving, moving_px_per_fixed_px)

    tutorial_workflow(fixed, moving, src, dst)
    floor()
    autoreg.register(fixed_img, moving_img, model="affine")  # warm imports and caches
    rows = {"tutorial (manual, 4 models)": [], "floor (OpenCV alone)": [], "autoreg affine": [], "autoreg auto": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits all alike
        rows["tutorial (manual, 4 models)"].append(median_ms(lambda: tutorial_workflow(fixed, moving, src, dst), 1))
        rows["floor (OpenCV alone)"].append(median_ms(floor, 1))
        rows["autoreg affine"].append(median_ms(lambda: autoreg.register(fixed_img, moving_img, model="affine"), 1))
        rows["autoreg auto"].append(median_ms(lambda: autoreg.register(fixed_img, moving_img), 1))
    base = statistics.median(rows["tutorial (manual, 4 models)"])
    floor_ms = statistics.median(rows["floor (OpenCV alone)"])
    print(f"in-process, median of {args.repeats} interleaved runs (loading excluded):")
    for name, values in rows.items():
        ms = statistics.median(values)
        print(f"  {name:30s} {ms:8.1f} ms   tutorial/this = {base / ms:5.1f}x   this/floor = {ms / floor_ms:4.1f}x")

    truth_xy = functools.partial(true_moving_to_fixed, truth=truth)
    floor_fit = floor()
    floor_error, floor_r = ((np.nan, np.nan) if floor_fit is None else
                            (mean_grid_distance(lambda xy: apply_matrix(floor_fit[0], xy), truth_xy, moving.shape),
                             floor_fit[1]))
    auto = autoreg.register(fixed_img, moving_img)
    print(f"error against the truth (mean over a 5x5 grid on the map, fixed px): floor {floor_error:.2f} "
          f"(r {floor_r:.3f}), autoreg auto {truth_error_px(auto.fit, truth, moving.shape):.2f} "
          f"({auto.verdict.level}, r {auto.scores.pearson:.3f})")

    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        f, m = Path(tmp) / "fixed.tif", Path(tmp) / "moving.tif"
        tifffile.imwrite(f, fixed_img.data)
        tifffile.imwrite(m, moving_img.data)
        exe = [sys.executable, "-m", "autoreg", "register", str(f), str(m), "--model", "affine", "--json"]
        python_only = [sys.executable, "-c", "pass"]
        cli, bare = [], []
        for _ in range(max(3, args.repeats // 3)):
            bare.append(median_ms(lambda: subprocess.run(python_only, check=True), 1))
            cli.append(median_ms(lambda: subprocess.run(exe, check=True, capture_output=True), 1))
        print(f"whole process `autoreg register fixed.tif moving.tif --json` (median of {len(cli)}): "
              f"{statistics.median(cli):.0f} ms; bare python start-up {statistics.median(bare):.0f} ms")


if __name__ == "__main__":
    main()
