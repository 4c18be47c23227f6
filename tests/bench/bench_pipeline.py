"""Speed of hands-off registration on the bundled fixture, against the tutorial's manual workflow.

Run: ``.venv/bin/python tests/bench/bench_pipeline.py [--repeats N]``. Not collected by pytest.

Measured in one run, interleaved, on the same data (loading excluded):

* ``tutorial``: pycroscopy's manual 4-model loop — upscale the 40×40 map to 1024² with a spline, normalise,
  and for similarity, affine, piecewise-affine and projective: ``estimate_transform`` from 4 hand-picked
  points, ``skimage.transform.warp`` onto 1024², Pearson over the whole image (points taken from the ground
  truth here, so the baseline is as good as a careful human);
* ``autoreg affine`` / ``autoreg auto``: ``autoreg.register`` hands-off (features, robust fit, ECC refinement,
  warp, scores, verdict);
* ``cli``: the whole ``autoreg register FIXED.tif MOVING.tif --json`` process (Python start-up included).

Prints medians and the ratio of the tutorial's time to autoreg's (higher is better; goal >= 10x).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import autoreg  # noqa: E402
from autoreg.fixture import load_truth  # noqa: E402
from autoreg.synthetic import true_moving_to_fixed  # noqa: E402

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

    tutorial_workflow(fixed, moving, src, dst)
    autoreg.register(fixed_img, moving_img, model="affine")  # warm imports and caches
    rows = {"tutorial (manual, 4 models)": [], "autoreg affine": [], "autoreg auto": []}
    for _ in range(args.repeats):  # interleaved, so machine noise hits all alike
        rows["tutorial (manual, 4 models)"].append(median_ms(lambda: tutorial_workflow(fixed, moving, src, dst), 1))
        rows["autoreg affine"].append(median_ms(lambda: autoreg.register(fixed_img, moving_img, model="affine"), 1))
        rows["autoreg auto"].append(median_ms(lambda: autoreg.register(fixed_img, moving_img), 1))
    base = statistics.median(rows["tutorial (manual, 4 models)"])
    print(f"in-process, median of {args.repeats} interleaved runs (loading excluded):")
    for name, values in rows.items():
        ms = statistics.median(values)
        print(f"  {name:30s} {ms:8.1f} ms   tutorial/this = {base / ms:5.1f}x")

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
