"""The bundled demo fixture ``fixtures/stm_sts.h5``: where it is, its datasets, its ground truth.

This is fixture code: it regenerates the file with :mod:`autoreg.synthetic` when a source checkout's copy is not
at hand, and it measures a fit against the truth stored in the file. Registration itself never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .synthetic import StmStsTruth, true_moving_to_fixed, write_stm_sts_usid

__all__ = ["TOPOGRAPHY", "Z_CONTRAST", "CUBE", "fixture_path", "load_truth", "truth_error_px"]

TOPOGRAPHY = "/Measurement_000/Channel_000/STM_Topography"
Z_CONTRAST = "/Measurement_001/Channel_001/STS_Z_Contrast"
CUBE = "/Measurement_001/Channel_000/STS"
_BUNDLED = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"


def fixture_path(out_dir: Path) -> Path:
    """The bundled ``fixtures/stm_sts.h5`` of a source checkout, or a copy generated into ``out_dir``."""
    if _BUNDLED.is_file():
        return _BUNDLED
    generated = out_dir / "stm_sts.h5"
    if not generated.is_file():
        write_stm_sts_usid(generated, seed=0)
    return generated


def load_truth(path: str | Path) -> StmStsTruth:
    """Read the ground truth stored in a fixture written by :func:`autoreg.synthetic.write_stm_sts_usid`."""
    from .usid import open_hdf5

    with open_hdf5(Path(path)) as f:
        d = json.loads(f.attrs["autoreg_truth"])
    return StmStsTruth(moving_to_fixed=tuple(tuple(r) for r in d["moving_to_fixed"]), creep_xy=tuple(d["creep_xy"]),
                       moving_rows=d["moving_rows"], seed=d["seed"], fixed_pixel_nm=d["fixed_pixel_nm"],
                       moving_pixel_nm=d["moving_pixel_nm"], moving_origin_nm=tuple(d["moving_origin_nm"]),
                       version=d["version"])


def truth_error_px(fit: Any, truth: StmStsTruth, moving_shape: tuple[int, int]) -> float:
    """Mean error (fixed px) of ``fit`` over a 5×5 grid spanning the moving image, against the truth; NaN without
    a fit. Grid points a mesh cannot map are skipped."""
    from .geometry import mean_grid_distance

    if fit is None:
        return float("nan")
    return mean_grid_distance(fit.to_fixed, lambda xy: true_moving_to_fixed(xy, truth), moving_shape)
