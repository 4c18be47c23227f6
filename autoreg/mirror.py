"""Mirrored scans: a moving image whose pixel grid is the fixed one's mirror image.

SPM programs store a scan with its y axis up or down, and scan a frame top-down or bottom-up; a spectroscopy map and
a topography of one area can reach autoreg mirrored relative to each other. No rotation undoes a mirror, keypoint
descriptors are not mirror-invariant and the search sweeps rotations only, so such a pair fails (``failed``, or a
wrong pose as ``low_confidence``) unless autoreg knows. It knows when both images carry signed pixel sizes (USID
position values that decrease along an axis give a negative size: the pixel → physical maps then differ in the sign
of their determinant), or when the user says so (``register(..., mirrored=True)``, ``--mirrored``).

A mirrored pair is registered as its moving image with the rows reversed (:func:`flipped`: any mirror is that
reflection followed by a rotation, which the strategies find), and the result is brought back to the moving image
as given (:func:`unflipped`): every moving → fixed map is composed with the reflection, so the matrix's determinant
is negative, and the warped image and cube are those of the data as given.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .datatypes import Image, RegistrationResult
from .units import Calibration

__all__ = ["flip_rows_matrix", "flipped", "mirrored_by_metadata", "unflipped"]


def flip_rows_matrix(shape: tuple[int, int]) -> np.ndarray:
    """The reflection that reverses the rows of an image of ``shape`` (rows, cols), in pixel (x, y): ``(x, rows - 1
    - y)``. It is its own inverse.

    Examples
    --------
    >>> flip_rows_matrix((40, 30)) @ [5.0, 0.0, 1.0]
    array([ 5., 39.,  1.])
    """
    return np.array([[1.0, 0.0, 0.0], [0.0, -1.0, shape[0] - 1.0], [0.0, 0.0, 1.0]])


def flipped(image: Image) -> Image:
    """``image`` with its rows (and its cube's) reversed; pixel (x, y) of the result is pixel (x, rows - 1 - y) of
    ``image``, and the calibration says the same physical positions (the y pixel size negated, the origin at the
    last row)."""
    rows = image.shape[0]
    size, origin = image.pixel_size_xy, image.origin
    if size is not None:
        if origin is not None:
            origin = (origin[0], origin[1] + (rows - 1) * size[1])
        size = (size[0], -size[1])
    return dataclasses.replace(image, data=np.asarray(image.data)[::-1], pixel_size_xy=size, origin=origin,
                               cube=None if image.cube is None else np.asarray(image.cube)[::-1])


def mirrored_by_metadata(fixed: Calibration, moving: Calibration) -> bool | None:
    """Whether the moving pixel grid is the fixed one's mirror image, from the signs of the pixel sizes; None when
    either image has none.

    Examples
    --------
    >>> mirrored_by_metadata(Calibration((1.0, 1.0)), Calibration((2.0, -2.0)))
    True
    >>> mirrored_by_metadata(Calibration((1.0, 1.0)), Calibration((-2.0, -2.0)))  # a half turn, not a mirror
    False
    >>> mirrored_by_metadata(Calibration((1.0, 1.0)), Calibration()) is None
    True
    """
    if fixed.pixel_size_xy is None or moving.pixel_size_xy is None:
        return None
    return bool(np.prod(np.sign(fixed.pixel_size_xy)) != np.prod(np.sign(moving.pixel_size_xy)))


def unflipped(result: RegistrationResult, moving: Image, source: str, polynomial_order: int) -> RegistrationResult:
    """``result`` of registering :func:`flipped` ``(moving)``, as a result for ``moving``: its maps composed with the
    reflection, its calibration ``moving``'s, ``mirrored`` and ``mirror_source`` among the JSON keys. The warped
    image and cube are the same data on the fixed grid and are kept."""
    from .regrid import mapped_fit

    flip = flip_rows_matrix(moving.shape)
    fit = None if result.fit is None else mapped_fit(
        result.fit, flip, polynomial_order, "registered as the mirror image of the moving scan (its rows reversed)")
    extra = {**result.extra, "mirrored": True, "mirror_source": source}
    return dataclasses.replace(result, fit=fit, moving_calibration=moving.calibration, extra=extra)
