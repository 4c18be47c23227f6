"""The transform classes' estimators: scikit-image's estimates, without its full-size SVD."""

import numpy as np
import pytest
from skimage import transform as sktf

from autoreg.estimate import fit_transform
from autoreg.models import (
    AffineTransform,
    PolynomialTransform,
    ProjectiveTransform,
    normalised_dlt,
    transform_class,
)
from autoreg.uncertainty import _Projective

HOMOGRAPHY = np.array([[25.3, 1.2, 100.0], [-0.9, 25.9, 50.0], [1e-4, 2e-4, 1.0]])


def _pairs(n, noise, seed):
    rng = np.random.default_rng(seed)
    src = rng.uniform(0, 40, (n, 2))
    h = np.column_stack([src, np.ones(n)]) @ HOMOGRAPHY.T
    return src, h[:, :2] / h[:, 2:] + rng.normal(0, noise, (n, 2))


@pytest.mark.parametrize("ours, library, fewest", [(AffineTransform, sktf.AffineTransform, 3),
                                                  (ProjectiveTransform, sktf.ProjectiveTransform, 4),
                                                  (PolynomialTransform, sktf.PolynomialTransform, 6)])
@pytest.mark.parametrize("extra", [0, 1, 30, 150])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_same_estimate_as_scikit_image(ours, library, fewest, extra, seed):
    src, dst = _pairs(fewest + extra, noise=0.5, seed=seed)
    fitted, reference = ours.from_estimate(src, dst), library.from_estimate(src, dst)
    assert type(fitted) is ours  # not the library's class (its affine from_estimate is bound to its own)
    grid = np.stack(np.meshgrid(np.linspace(0, 40, 5), np.linspace(0, 40, 5)), -1).reshape(-1, 2)
    np.testing.assert_allclose(fitted(grid), reference(grid), atol=1e-6)


def test_the_registry_and_the_fits_use_them():
    src, dst = _pairs(20, noise=0.2, seed=3)
    for model, cls in (("affine", AffineTransform), ("projective", ProjectiveTransform),
                       ("polynomial", PolynomialTransform)):
        assert transform_class(model) is cls
        assert isinstance(fit_transform(model, src, dst), cls)


def test_an_exact_homography_from_four_points():
    src = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 40.0], [0.0, 40.0]])
    h = np.column_stack([src, np.ones(4)]) @ HOMOGRAPHY.T
    dst = h[:, :2] / h[:, 2:]
    matrix, singular = normalised_dlt(src, dst)
    np.testing.assert_allclose(matrix, HOMOGRAPHY, rtol=1e-8, atol=1e-10)
    assert len(singular) == 8  # 8 equations for 9 unknowns
    # the uncertainty's homography fits the same way (a thin SVD alone would miss the null vector here)
    np.testing.assert_allclose(_Projective().fit(src, dst), HOMOGRAPHY.ravel()[:8], rtol=1e-8, atol=1e-10)


def test_degenerate_points_fail_as_a_value():
    same = np.zeros((5, 2))
    failed = AffineTransform.from_estimate(same, same + 1)
    assert not failed and "degenerate" in str(failed)
    assert normalised_dlt(same, same + 1)[0] is None
    collinear = np.column_stack([np.arange(6.0), 2 * np.arange(6.0)])
    assert _Projective().fit(collinear, collinear * 3) is None  # a second null direction


def test_weighted_fits_are_the_librarys():
    src, dst = _pairs(12, noise=0.5, seed=4)
    weights = np.linspace(0.2, 1.0, 12)
    np.testing.assert_allclose(AffineTransform.from_estimate(src, dst, weights).params,
                               sktf.AffineTransform.from_estimate(src, dst, weights).params, atol=1e-9)
