"""Shared by the picker's tests: a small synthetic pair with exact truth, and session builders."""

from __future__ import annotations

import functools

import numpy as np

from autoreg.datatypes import Image
from autoreg.synthetic import make_pair


@functools.cache
def small_pair():
    """A 512² fixed scan and a 32² map of it (16× coarser), with the exact moving → fixed matrix."""
    return make_pair(seed=3, fixed_shape=(512, 512), moving_shape=(32, 32))


def images() -> tuple[Image, Image]:
    pair = small_pair()
    return Image(pair.fixed, name="fixed"), Image(pair.moving, name="moving")


def to_fixed(moving_xy) -> np.ndarray:
    m = small_pair().moving_to_fixed
    xy = np.asarray(moving_xy, float).reshape(-1, 2)
    return xy @ m[:2, :2].T + m[:2, 2]


def to_moving(fixed_xy) -> np.ndarray:
    m = np.linalg.inv(small_pair().moving_to_fixed)
    xy = np.asarray(fixed_xy, float).reshape(-1, 2)
    return xy @ m[:2, :2].T + m[:2, 2]


def good_points(n: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact pairs spread over the map (moving px 4..27)."""
    rng = np.random.default_rng(seed)
    moving = rng.uniform(4, 27, (n, 2))
    return to_fixed(moving), moving
