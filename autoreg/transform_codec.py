"""Transforms as JSON-able records, and back: what makes a saved result a complete, reusable transform.

A record holds one direction of a map exactly as estimated, so that decoding it gives the same numbers:

* global models (translation ... projective): ``{"kind": "matrix", "matrix": 3×3}``;
* ``polynomial``: ``{"kind": "polynomial", "params": 2×K}`` (scikit-image's coefficient layout);
* ``piecewise-affine``: ``{"kind": "piecewise-affine", "src_xy": N×2, "dst_xy": N×2}``, the control pairs of
  the mesh; re-estimating from them rebuilds the same Delaunay mesh and the same affine maps.

This module knows scikit-image transforms and nothing of autoreg's data types (so the JSON contract in
:mod:`autoreg.datatypes` can use it without an import circle).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError
from .models import is_global

__all__ = ["encode_map", "decode_map", "encode_transform", "decode_transform"]


def encode_map(model: str, transform: Any, pairs: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """One direction of a transform of ``model`` as a JSON-able dict (see the module notes).

    ``pairs`` (source and destination points, (N, 2) each) stand in for a piecewise-affine transform that does not
    expose its mesh: re-estimating from the pairs it was fitted on rebuilds it.

    Raises
    ------
    ValueError
        A transform whose parameters this codec does not know (a bug of the caller).
    """
    if is_global(model):
        return {"kind": "matrix", "matrix": np.asarray(transform.params, float).tolist()}
    if model == "polynomial":
        return {"kind": "polynomial", "params": np.asarray(transform.params, float).tolist()}
    tesselation = getattr(transform, "_tesselation", None)
    inverse = getattr(transform, "_inverse_tesselation", None)
    if tesselation is not None and inverse is not None:
        src, dst = tesselation.points, inverse.points
    elif pairs is not None and len(pairs[0]) >= 3:
        src, dst = pairs
    else:
        raise ValueError(f"cannot encode a {type(transform).__name__} as a {model} map")
    return {"kind": "piecewise-affine", "src_xy": np.asarray(src, float).tolist(),
            "dst_xy": np.asarray(dst, float).tolist()}


def decode_map(record: dict[str, Any], where: str = "the saved transform") -> Any:
    """A scikit-image transform from :func:`encode_map`'s record.

    Raises
    ------
    InputError
        A record that is malformed (unknown kind, wrong shapes, non-finite numbers).
    """
    from skimage import transform as sktf

    kind = record.get("kind") if isinstance(record, dict) else None
    try:
        if kind == "matrix":
            matrix = np.asarray(record["matrix"], float)
            if matrix.shape != (3, 3) or not np.all(np.isfinite(matrix)):
                raise ValueError("a matrix must be 3×3 and finite")
            return sktf.ProjectiveTransform(matrix=matrix)
        if kind == "polynomial":
            params = np.asarray(record["params"], float)
            if params.ndim != 2 or params.shape[0] != 2 or not np.all(np.isfinite(params)):
                raise ValueError("polynomial coefficients must be a finite 2×K array")
            return sktf.PolynomialTransform(params=params)
        if kind == "piecewise-affine":
            src, dst = np.asarray(record["src_xy"], float), np.asarray(record["dst_xy"], float)
            if src.ndim != 2 or src.shape[1:] != (2,) or src.shape != dst.shape or len(src) < 3:
                raise ValueError("control pairs must be two arrays of shape (N, 2), N >= 3")
            transform = sktf.PiecewiseAffineTransform.from_estimate(src, dst)
            if not transform:
                raise ValueError(str(transform))
            return transform
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(f"{where} has a malformed {kind} map: {err}.") from err
    raise InputError(f"{where} has a map of unknown kind {kind!r}.")


def encode_transform(model: str, moving_to_fixed: Any, fixed_to_moving: Any,
                     pairs: tuple[Any, Any] | None = None) -> dict[str, Any]:
    """Both directions of a fit: ``{"model", "moving_to_fixed", "fixed_to_moving"}``.

    ``pairs`` are the (moving_xy, fixed_xy) points the fit was estimated on (see :func:`encode_map`).

    Examples
    --------
    >>> from skimage.transform import AffineTransform
    >>> tf = AffineTransform(translation=(2, 3))
    >>> [v + 0.0 for v in encode_transform("affine", tf, tf.inverse)["moving_to_fixed"]["matrix"][0]]  # no -0.0
    [1.0, 0.0, 2.0]
    """
    backward_pairs = None if pairs is None else (pairs[1], pairs[0])
    return {"model": model, "moving_to_fixed": encode_map(model, moving_to_fixed, pairs),
            "fixed_to_moving": encode_map(model, fixed_to_moving, backward_pairs)}


def decode_transform(record: dict[str, Any], where: str = "the saved transform") -> tuple[str, Any, Any]:
    """``(model, moving_to_fixed, fixed_to_moving)`` from :func:`encode_transform`'s record.

    Raises
    ------
    InputError
        An unknown model or a malformed map.
    """
    from .models import check_model

    model = record.get("model") if isinstance(record, dict) else None
    try:
        check_model(str(model))
    except ValueError as err:
        raise InputError(f"{where} names an unknown model {model!r}.") from err
    return str(model), decode_map(record.get("moving_to_fixed"), where), decode_map(record.get("fixed_to_moving"),
                                                                                     where)
