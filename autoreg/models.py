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
    "AffineTransform",
    "ProjectiveTransform",
    "PolynomialTransform",
    "normalised_dlt",
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


def _hartley_normaliser(xy: np.ndarray) -> np.ndarray | None:
    """The similarity that centres ``xy`` and scales its RMS distance from the centre to √2 (None: one point)."""
    centre = xy.mean(axis=0)
    rms = float(np.sqrt(np.mean((xy - centre) ** 2)))  # per coordinate: the radial RMS over √2
    if not rms > 0:
        return None
    return np.array([[1 / rms, 0, -centre[0] / rms], [0, 1 / rms, -centre[1] / rms], [0, 0, 1.0]])


def normalised_dlt(src_xy: np.ndarray, dst_xy: np.ndarray, free: Any = range(8)) -> tuple[np.ndarray | None,
                                                                                          np.ndarray]:
    """Least-squares homography (entries ``free`` of the flat 3×3 matrix estimated, the rest those of the identity)
    by the normalised direct linear transform (Hartley & Zisserman, *Multiple View Geometry*, 2nd ed., alg. 4.2).

    The estimate of scikit-image's ``ProjectiveTransform.from_estimate`` (``free`` = 0..7) and
    ``AffineTransform.from_estimate`` (``free`` = 0..5), without their full-size SVD: that one computes an
    orthogonal basis of the 2N-dimensional data space it then discards, and took 1.3 ms of a 1.4 ms affine fit
    of 120 points (scikit-image issue #5259 on the same SVD's memory); the thin SVD gives the same null vector.

    Returns
    -------
    matrix : ndarray of shape (3, 3) or None
        None when the points are degenerate (coincident, or the solution at infinity).
    singular_values : ndarray
        Of the normalised system, smallest last (empty when the points are coincident).
    """
    src_norm, dst_norm = _hartley_normaliser(src_xy), _hartley_normaliser(dst_xy)
    if src_norm is None or dst_norm is None:
        return None, np.zeros(0)
    src = src_xy @ src_norm[:2, :2].T + src_norm[:2, 2]
    dst = dst_xy @ dst_norm[:2, :2].T + dst_norm[:2, 2]
    n = len(src)
    system = np.zeros((2 * n, 9))  # rows: x then y equations; columns: the flat matrix's entries
    for axis in range(2):
        rows = slice(axis * n, (axis + 1) * n)
        system[rows, 3 * axis:3 * axis + 2] = src
        system[rows, 3 * axis + 2] = 1
        system[rows, 6:8] = -dst[:, axis:axis + 1] * src
        system[rows, 8] = -dst[:, axis]
    columns = [*free, 8]
    # thin unless there are fewer equations than unknowns (4 points of a homography): the null vector is then
    # one of the rows a thin SVD leaves out
    _, singular, vt = np.linalg.svd(system[:, columns], full_matrices=2 * n < len(columns))
    null = vt[-1]
    if abs(null[-1]) <= 1e-8:  # np.isclose(.., 0), as scikit-image tests it
        return None, singular
    matrix = np.eye(3)
    matrix.flat[list(free)] = null[:-1] / null[-1]
    matrix = np.linalg.solve(dst_norm, matrix @ src_norm)
    return matrix / matrix[2, 2], singular


class _ThinDLT:
    """scikit-image's homography estimate through :func:`normalised_dlt` (weighted fits: the library's own)."""

    @classmethod
    def from_estimate(cls, src: Any, dst: Any, weights: Any = None) -> Any:
        """As scikit-image's: the transform, or a false value saying why it failed. (Its affine class's own
        ``from_estimate`` is bound to that class and would return one of it, not of this subclass.)"""
        return sktf.ProjectiveTransform.from_estimate.__func__(cls, src, dst, weights)

    def _estimate(self, src: np.ndarray, dst: np.ndarray, weights: Any = None) -> str | None:
        if weights is not None:
            return super()._estimate(src, dst, weights)  # type: ignore[misc]
        matrix, _ = normalised_dlt(np.asarray(src, float), np.asarray(dst, float), self._coeff_inds)  # type: ignore[attr-defined]
        if matrix is None:
            self.params = np.full((3, 3), np.nan)
            return "the points are degenerate (coincident, or the solution is at infinity)"
        self.params = matrix
        return None


class AffineTransform(_ThinDLT, sktf.AffineTransform):
    """scikit-image's affine transform, estimated as it does by :func:`normalised_dlt` with a thin SVD.

    Examples
    --------
    >>> import numpy as np
    >>> src = np.array([[0, 0], [10, 0], [0, 10], [7, 3]], float)
    >>> tf = AffineTransform.from_estimate(src, src @ [[2, 0], [1, 2]] + 5)
    >>> np.allclose(tf.params, [[2, 1, 5], [0, 2, 5], [0, 0, 1]])
    True
    """


class ProjectiveTransform(_ThinDLT, sktf.ProjectiveTransform):
    """scikit-image's homography, estimated as it does by :func:`normalised_dlt` with a thin SVD."""


class PolynomialTransform(sktf.PolynomialTransform):
    """scikit-image's polynomial transform, estimated as it does (the least-squares null vector of its system)
    with a thin SVD instead of its full-size one (see :func:`normalised_dlt`).

    Examples
    --------
    >>> import numpy as np
    >>> src = np.random.default_rng(0).uniform(0, 10, (12, 2))
    >>> dst = np.column_stack([src[:, 0] + 0.1 * src[:, 1] ** 2, 2 * src[:, 1]])
    >>> np.allclose(PolynomialTransform.from_estimate(src, dst)(src), dst)
    True
    """

    def _estimate(self, src: np.ndarray, dst: np.ndarray, order: int = 2, weights: Any = None) -> str | None:
        if weights is not None:
            return super()._estimate(src, dst, order, weights)
        src, dst = np.asarray(src, float), np.asarray(dst, float)
        terms = [src[:, 0] ** (j - i) * src[:, 1] ** i for j in range(int(order) + 1) for i in range(j + 1)]
        n, k = len(src), len(terms)
        system = np.zeros((2 * n, 2 * k + 1))  # x equations then y equations; the last column the targets
        system[:n, :k] = system[n:, k:2 * k] = np.column_stack(terms)
        system[:n, -1], system[n:, -1] = dst[:, 0], dst[:, 1]
        _, _, vt = np.linalg.svd(system, full_matrices=2 * n < 2 * k + 1)  # thin, as normalised_dlt
        self.params = (-vt[-1, :-1] / vt[-1, -1]).reshape(2, k)
        return None


#: model name -> (skimage transform class, minimum number of points, number of parameters)
_REGISTRY: dict[str, tuple[type, int, int]] = {
    "translation": (TranslationTransform, 1, 2),
    "rigid": (sktf.EuclideanTransform, 2, 3),
    "similarity": (sktf.SimilarityTransform, 2, 4),
    "affine": (AffineTransform, 3, 6),
    "projective": (ProjectiveTransform, 4, 8),
    "polynomial": (PolynomialTransform, 6, 12),
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
