"""Transform models: names, classes, minimum point counts, and which ones are a single matrix."""

from __future__ import annotations

from typing import Any

import numpy as np
from skimage import transform as sktf

from .vocabulary import GLOBAL_MODELS, MODELS

__all__ = [
    "MODELS",
    "GLOBAL_MODELS",
    "TranslationTransform",
    "is_global",
    "min_points",
    "n_params",
    "transform_class",
    "check_model",
    "estimate_kwargs",
]


class TranslationTransform(sktf.EuclideanTransform):
    """A pure shift, estimated as the mean displacement (least squares).

    Examples
    --------
    >>> import numpy as np
    >>> tf = TranslationTransform.from_estimate(np.zeros((3, 2)), np.ones((3, 2)))
    >>> tf(np.array([[2.0, 3.0]]))
    array([[3., 4.]])
    """

    def _estimate(self, src: np.ndarray, dst: np.ndarray) -> str | None:
        if len(src) < 1:
            return "Translation needs at least one point."
        shift = np.mean(np.asarray(dst, float) - np.asarray(src, float), axis=0)
        matrix = np.eye(3)
        matrix[:2, 2] = shift
        self.params = matrix
        return None


#: model name -> (skimage transform class, minimum number of points, number of parameters)
_REGISTRY: dict[str, tuple[type, int, int]] = {
    "translation": (TranslationTransform, 1, 2),
    "rigid": (sktf.EuclideanTransform, 2, 3),
    "similarity": (sktf.SimilarityTransform, 2, 4),
    "affine": (sktf.AffineTransform, 3, 6),
    "projective": (sktf.ProjectiveTransform, 4, 8),
    "polynomial": (sktf.PolynomialTransform, 6, 12),
    "piecewise-affine": (sktf.PiecewiseAffineTransform, 3, 6),
}
assert tuple(_REGISTRY) == MODELS, "every model name has one transform class"


def check_model(model: str) -> str:
    """Return ``model`` if it is known, else raise ``ValueError`` listing the known ones."""
    if model not in _REGISTRY:
        raise ValueError(f"unknown model {model!r}; choose one of: {', '.join(MODELS)}")
    return model


def is_global(model: str) -> bool:
    """True when ``model`` is one 3×3 matrix (translation ... projective)."""
    return check_model(model) in GLOBAL_MODELS


def transform_class(model: str) -> type:
    """The scikit-image transform class of ``model``."""
    return _REGISTRY[check_model(model)][0]


def _poly_terms(order: int) -> int:
    return (order + 1) * (order + 2) // 2


def min_points(model: str, *, polynomial_order: int = 2) -> int:
    """Fewest correspondences that determine ``model``.

    Examples
    --------
    >>> min_points("affine"), min_points("polynomial", polynomial_order=3)
    (3, 10)
    """
    if check_model(model) == "polynomial":
        return _poly_terms(polynomial_order)
    return _REGISTRY[model][1]


def n_params(model: str, *, polynomial_order: int = 2) -> int:
    """Number of free parameters of ``model`` (for piecewise-affine, per triangle)."""
    if check_model(model) == "polynomial":
        return 2 * _poly_terms(polynomial_order)
    return _REGISTRY[model][2]


def estimate_kwargs(model: str, *, polynomial_order: int = 2) -> dict[str, Any]:
    """Extra keyword arguments of ``from_estimate`` for ``model``."""
    return {"order": polynomial_order} if model == "polynomial" else {}
