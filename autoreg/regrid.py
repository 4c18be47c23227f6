"""Registering a re-gridded copy of the moving image, and bringing the result back to the image as given.

Two kinds of moving image are registered through a copy on another pixel grid: a mirrored scan (:mod:`autoreg.mirror`:
its rows reversed) and a scan whose pixels are not square in fixed pixels (:func:`squared`: a 64×32 STS grid over a
square area, a fast scan with half as many lines as columns). Keypoint descriptors, the rotation search and the
working views all assume that a moving pixel is as wide as it is high in fixed pixels; a 2:1 pixel distorts every
keypoint's neighbourhood by a factor of two, and at 3:1 no keypoint matches. The copy has square pixels (its coarser
axis resampled, nothing averaged away), the strategies register it as they register any map, and :func:`mapped_fit`
composes the found map with the regridding, so that the result maps the moving image as given.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .datatypes import Fit, Image
from .units import Calibration

__all__ = ["mapped_fit", "pixel_aspect", "squared"]


def _compose(transform: Any, matrix: np.ndarray, on_input: bool) -> Any:
    """A global transform of the same class with ``matrix`` applied first (``on_input``) or last."""
    params = np.asarray(transform.params, float)
    return type(transform)(matrix=params @ matrix if on_input else matrix @ params)


def mapped_fit(fit: Fit, given_to_copy: np.ndarray, polynomial_order: int, note: str) -> Fit:
    """``fit``, found on a copy of the moving image, as a map of the moving image as given.

    Parameters
    ----------
    fit : Fit
        Maps the copy's pixels to fixed pixels.
    given_to_copy : ndarray of shape (3, 3)
        Maps pixel (x, y, 1) of the moving image as given to the copy's pixel (an affine matrix).
    polynomial_order : int
        Of a polynomial fit, which is refitted.
    note : str
        Appended to the fit's ``why``.

    Returns
    -------
    Fit
        Global maps composed with ``given_to_copy``; meshes and polynomials refitted from the inliers mapped back
        (the same map); matches and search candidates in the moving image's pixels as given.
    """
    from .estimate import fit_transform
    from .geometry import apply_matrix

    copy_to_given = np.linalg.inv(given_to_copy)
    matches = dataclasses.replace(fit.matches,
                                  moving_xy=apply_matrix(copy_to_given, np.asarray(fit.matches.moving_xy, float)))
    if fit.is_global:
        forward = _compose(fit.moving_to_fixed, given_to_copy, on_input=True)
        backward = _compose(fit.fixed_to_moving, copy_to_given, on_input=False)
    else:  # a mesh or a polynomial of the mapped points is the same map composed with the regridding: refitted
        inl = fit.inliers
        forward = fit_transform(fit.model, matches.moving_xy[inl], matches.fixed_xy[inl],
                                polynomial_order=polynomial_order)
        backward = fit_transform(fit.model, matches.fixed_xy[inl], matches.moving_xy[inl],
                                 polynomial_order=polynomial_order)
    return dataclasses.replace(fit, moving_to_fixed=forward, fixed_to_moving=backward, matches=matches,
                               candidates=tuple(np.asarray(c, float) @ given_to_copy for c in fit.candidates),
                               other_candidates=tuple((pairing, np.asarray(c, float) @ given_to_copy)
                                                      for pairing, c in fit.other_candidates)).with_note(note)


def pixel_aspect(fixed: Calibration, moving: Calibration) -> float | None:
    """How much higher than wide a moving pixel is in fixed pixels: ``(|moving y| / |fixed y|) / (|moving x| /
    |fixed x|)``; None when either image has no pixel size.

    Exact when the two grids are not rotated against each other or the fixed pixels are square (SPM scans are
    square-pixelled far more often than maps); otherwise it is the aspect along the fixed axes.

    Examples
    --------
    >>> pixel_aspect(Calibration((1.0, 1.0)), Calibration((6.0, -18.0)))
    3.0
    >>> pixel_aspect(Calibration((1.0, 1.0)), Calibration()) is None
    True
    """
    if fixed.pixel_size_xy is None or moving.pixel_size_xy is None:
        return None
    fx, fy = np.abs(np.asarray(fixed.pixel_size_xy, float))
    mx, my = np.abs(np.asarray(moving.pixel_size_xy, float))
    return float((my / fy) / (mx / fx))


def squared(image: Image, aspect: float) -> tuple[Image, np.ndarray]:
    """A copy of ``image`` whose pixels are square in fixed pixels, and the matrix from ``image``'s pixels to it.

    The coarser axis is resampled (bicubic; invalid pixels stay invalid) by ``aspect`` (rows) or ``1 / aspect``
    (columns), to the nearest whole number of pixels; nothing is averaged away. The copy carries no cube (it is
    warped from the image as given) and its calibration says the same physical positions.

    Parameters
    ----------
    image : Image
    aspect : float
        :func:`pixel_aspect` of the pair (> 1: a pixel higher than wide).

    Returns
    -------
    copy : Image
    given_to_copy : ndarray of shape (3, 3)
    """
    from .geometry import apply_matrix
    from .preprocess import resize_valid, valid_mask

    data = np.asarray(image.data, np.float32)
    rows, cols = data.shape
    if aspect >= 1:
        size = (cols, max(rows, round(rows * aspect)))
    else:
        size = (max(cols, round(cols / aspect)), rows)
    valid = valid_mask(data)
    resized, resized_valid, copy_to_given = resize_valid(data, valid, size)
    resized = np.where(resized_valid, resized, np.nan).astype(np.float32)
    size_xy, origin = image.pixel_size_xy, image.origin
    if size_xy is not None:
        factors = (size[0] / cols, size[1] / rows)
        if origin is not None:  # the physical position of the copy's pixel (0, 0)
            corner = apply_matrix(copy_to_given, np.zeros((1, 2)))[0]
            origin = (origin[0] + corner[0] * size_xy[0], origin[1] + corner[1] * size_xy[1])
        size_xy = (size_xy[0] / factors[0], size_xy[1] / factors[1])
    copy = dataclasses.replace(image, data=resized, pixel_size_xy=size_xy, origin=origin, cube=None)
    return copy, np.linalg.inv(copy_to_given)
