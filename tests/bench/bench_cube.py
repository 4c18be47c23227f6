"""Warping the 40x40x256 STS cube onto the 1024² topography grid (1 GiB float32), against the floor.

Run: ``.venv/bin/python tests/bench/bench_cube.py``. Not collected by pytest. Baselines measured in the same run:
the floor (allocating and writing 1 GiB), OpenCV ``remap`` in 4-channel chunks, and scikit-image slice by slice
(on a subset of bands, scaled). Prints medians and ratios to the floor (goal <= 3x).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import autoreg  # noqa: E402
from _timing import timed  # noqa: E402
from autoreg.io import load_cube, load_image  # noqa: E402
from autoreg.warp import apply_transform_cube, grid_to_moving_maps  # noqa: E402

FIXTURE = ROOT / "fixtures" / "stm_sts.h5"


def opencv_chunks(cube, fit, shape):
    import cv2

    map_x, map_y = (m.astype(np.float32) for m in grid_to_moving_maps(fit, shape))  # float64, exact: cv2 wants float32
    out = np.empty(shape + (cube.shape[2],), np.float32)
    for k in range(0, cube.shape[2], 4):
        out[:, :, k:k + 4] = cv2.remap(np.ascontiguousarray(cube[:, :, k:k + 4]), map_x, map_y, cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_CONSTANT, borderValue=(np.nan,) * 4)
    return out


def skimage_slices(cube, fit, shape, bands):
    from skimage.transform import warp

    for k in range(bands):
        warp(cube[:, :, k], fit.fixed_to_moving, output_shape=shape, order=1, cval=np.nan)


def main() -> None:
    fixed = load_image(f"{FIXTURE}::/Measurement_000/Channel_000/STM_Topography")
    moving = load_image(f"{FIXTURE}::/Measurement_001/Channel_001/STS_Z_Contrast")
    cube, _ = load_cube(f"{FIXTURE}::/Measurement_001/Channel_000/STS")
    fit = autoreg.register(fixed, moving, model="affine").fit
    shape = fixed.shape
    floor = timed(lambda: np.full(shape + (cube.shape[2],), 1.0, np.float32))
    ours = timed(lambda: apply_transform_cube(cube, fit, shape))
    chunks = timed(lambda: opencv_chunks(cube, fit, shape))
    sk = timed(lambda: skimage_slices(cube, fit, shape, 16), repeats=1) * cube.shape[2] / 16
    print(f"cube {cube.shape} onto {shape} (1 GiB float32), median of 5:")
    for name, seconds in (("floor: write 1 GiB", floor), ("autoreg sparse operator", ours),
                          ("OpenCV remap, 4-channel chunks", chunks), ("scikit-image slice by slice (est.)", sk)):
        print(f"  {name:36s} {seconds * 1e3:8.0f} ms   {seconds / floor:6.1f}x floor")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (output itself 1024 MiB)")


if __name__ == "__main__":
    main()
