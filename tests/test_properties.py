"""Property tests (hypothesis): estimation, inversion, scoring and the verdict's monotonicity."""

import dataclasses

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import ConvexHull

from autoreg.geometry import apply_matrix
from autoreg.confidence import judge
from autoreg.datatypes import Scores
from autoreg.estimate import fit_pair
from autoreg.models import GLOBAL_MODELS, MODELS, min_points
from autoreg.score import masked_pearson

FAST = settings(max_examples=40, deadline=None)
LEVEL = {"ok": 0, "low_confidence": 1, "failed": 2}


def _matrix_for(model, angle, scale, tx, ty, shear, persp):
    c, s = np.cos(angle), np.sin(angle)
    if model == "translation":
        return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])
    if model == "rigid":
        return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1.0]])
    if model == "similarity":
        return np.array([[scale * c, -scale * s, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])
    affine = np.array([[scale * c, -scale * s + shear, tx], [scale * s, scale * c, ty], [0, 0, 1.0]])
    if model == "affine":
        return affine
    affine[2, :2] = persp
    return affine


params = st.tuples(
    st.floats(-np.pi, np.pi), st.floats(0.3, 3.0), st.floats(-200, 200), st.floats(-200, 200),
    st.floats(-0.3, 0.3), st.tuples(st.floats(-1e-3, 1e-3), st.floats(-1e-3, 1e-3)),
)


@FAST
@given(model=st.sampled_from(GLOBAL_MODELS), p=params, seed=st.integers(0, 2**16))
def test_exact_points_recover_the_matrix(model, p, seed):
    matrix = _matrix_for(model, *p)
    rng = np.random.default_rng(seed)
    moving_xy = rng.uniform(0, 200, (max(min_points(model), 4) + 3, 2))
    fixed_xy = apply_matrix(matrix, moving_xy)
    forward, backward = fit_pair(model, moving_xy, fixed_xy)
    np.testing.assert_allclose(forward.params / forward.params[2, 2], matrix, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(backward(forward(moving_xy)), moving_xy, atol=1e-6)


@FAST
@given(model=st.sampled_from([m for m in MODELS if m not in GLOBAL_MODELS]), p=params, seed=st.integers(0, 2**16))
def test_exact_points_recover_non_global_models_at_the_points(model, p, seed):
    matrix = _matrix_for("affine", *p)
    rng = np.random.default_rng(seed)
    moving_xy = rng.uniform(0, 200, (12, 2))
    fixed_xy = (np.column_stack([moving_xy, np.ones(12)]) @ matrix.T)[:, :2]
    forward, backward = fit_pair(model, moving_xy, fixed_xy)
    # vertices on the convex hull may fall a rounding error outside a piecewise-affine mesh: test interior ones
    interior = np.ones(12, bool)
    interior[ConvexHull(moving_xy).vertices] = False
    interior[ConvexHull(fixed_xy).vertices] = False
    np.testing.assert_allclose(forward(moving_xy[interior]), fixed_xy[interior], atol=1e-5)
    np.testing.assert_allclose(backward(fixed_xy[interior]), moving_xy[interior], atol=1e-5)


@FAST
@given(a=st.floats(0.01, 100), b=st.floats(-1e3, 1e3), seed=st.integers(0, 2**16))
def test_pearson_is_invariant_to_a_positive_affine_intensity_change(a, b, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(20, 20))
    y = x + rng.normal(scale=0.5, size=(20, 20))
    mask = rng.random((20, 20)) > 0.3
    assert abs(masked_pearson(x, a * y + b, mask) - masked_pearson(x, y, mask)) < 1e-9


score_fields = st.fixed_dictionaries({
    "n_matches": st.integers(0, 500), "n_inliers": st.integers(0, 500), "inlier_ratio": st.floats(0, 1),
    "rmse_px": st.floats(0, 20), "pearson": st.floats(-1, 1), "pearson_before": st.floats(-1, 1),
    "overlap_fraction": st.floats(0, 1), "scale": st.floats(0.01, 50), "expected_scale": st.floats(0.1, 30),
    "shear": st.floats(0, 1),
})


@settings(max_examples=200, deadline=None)
@given(fields=score_fields, worse=st.sampled_from(["n_inliers", "inlier_ratio", "rmse_px", "pearson", "overlap_fraction",
                                                  "shear"]), amount=st.floats(0, 1))
def test_worsening_a_score_never_improves_the_verdict(fields, worse, amount):
    base = Scores(**fields)
    if worse == "n_inliers":
        changed = dataclasses.replace(base, n_inliers=int(base.n_inliers * (1 - amount)))
    elif worse in ("rmse_px", "shear"):
        changed = dataclasses.replace(base, **{worse: getattr(base, worse) + amount * 10})
    else:
        changed = dataclasses.replace(base, **{worse: getattr(base, worse) - amount})
    assert LEVEL[judge(changed).level] >= LEVEL[judge(base).level]
