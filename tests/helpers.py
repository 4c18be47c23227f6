"""Small shared helpers for tests: analytic images and ground-truth fits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from autoreg.datatypes import Fit, Matches
from autoreg.estimate import fit_pair
from autoreg.geometry import apply_matrix

#: The real USID PFM scan beside the checkout (``../shared/data``); tests that read it skip when it is absent.
REAL_PFM_SCAN = Path(__file__).resolve().parents[2] / "shared" / "data" / "SingFreqPFM_0003.h5"


def smooth_field(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """An analytic, smooth, non-symmetric test image f(x, y)."""
    return np.sin(x / 9.0) + np.cos(y / 13.0) + 0.3 * np.sin((x + 2 * y) / 17.0) + x / 200.0


def sample_moving(matrix: np.ndarray, moving_shape: tuple[int, int]) -> np.ndarray:
    """Moving image whose pixel (x, y) shows the fixed scene at ``matrix @ (x, y, 1)``."""
    rows, cols = moving_shape
    y, x = np.mgrid[:rows, :cols].astype(float)
    h = np.stack([x, y, np.ones_like(x)], axis=-1) @ np.asarray(matrix, float).T
    return smooth_field(h[..., 0] / h[..., 2], h[..., 1] / h[..., 2])


def fit_from_matrix(matrix: np.ndarray, model: str = "projective") -> Fit:
    """A Fit that holds exactly ``matrix`` (moving → fixed)."""
    rng = np.random.default_rng(0)
    moving_xy = rng.uniform(0, 100, (12, 2))
    fixed_xy = apply_matrix(matrix, moving_xy)
    forward, backward = fit_pair(model, moving_xy, fixed_xy)
    return Fit(model=model, moving_to_fixed=forward, fixed_to_moving=backward, inliers=np.ones(12, bool),
               source="points", matches=Matches(fixed_xy=fixed_xy, moving_xy=moving_xy))


def exact_fit(matrix: np.ndarray, model: str = "projective") -> Fit:
    """A Fit whose transform is exactly ``matrix`` (moving → fixed) and its inverse, with no fitting round-off."""
    from skimage.transform import ProjectiveTransform

    matrix = np.asarray(matrix, float)
    return Fit(model=model, moving_to_fixed=ProjectiveTransform(matrix=matrix),
               fixed_to_moving=ProjectiveTransform(matrix=np.linalg.inv(matrix)), inliers=np.zeros(0, bool),
               source="points", matches=Matches(np.zeros((0, 2)), np.zeros((0, 2))))


def rigid_matrix(angle_deg: float, tx: float, ty: float, scale: float = 1.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty], [0, 0, 1.0]])


def centred(matrix: np.ndarray, fixed_shape: tuple[int, int], moving_shape: tuple[int, int],
            offset_xy: tuple[float, float] = (3.0, -2.0)) -> np.ndarray:
    """``matrix`` with its translation set so that the moving image's centre lands ``offset_xy`` from the fixed
    image's."""
    out = np.array(matrix, float)
    centre_moving = np.array([(moving_shape[1] - 1) / 2, (moving_shape[0] - 1) / 2])
    centre_fixed = np.array([(fixed_shape[1] - 1) / 2, (fixed_shape[0] - 1) / 2]) + np.asarray(offset_xy, float)
    out[:2, 2] = centre_fixed - out[:2, :2] @ centre_moving
    return out



#: Starts ``python -m autoreg`` with Ctrl-C handled as in a terminal. A shell starts a background job with SIGINT
#: ignored and children inherit that (Python installs its handler only over the default disposition), so a test
#: suite run in the background would otherwise start CLIs that Ctrl-C cannot stop.
_AUTOREG_AS_IN_A_TERMINAL = (
    "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "sys.argv = ['autoreg', *sys.argv[1:]]; runpy.run_module('autoreg', run_name='__main__', alter_sys=True)"
)


def autoreg_command(*args: str) -> list[str]:
    """The command line of ``python -m autoreg *args`` that Ctrl-C stops even when the tests run in the background."""
    import sys

    return [sys.executable, "-c", _AUTOREG_AS_IN_A_TERMINAL, *args]
