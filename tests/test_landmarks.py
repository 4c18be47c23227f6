"""Descriptor matching: the ratio test and the mutual nearest neighbours of the sparse strategy."""

import numpy as np

from autoreg.landmarks import _mutual_matches, _ratio_matches


def _descriptors(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """60 moving descriptors; the fixed ones hold each (with noise) next to a near twin (a repeated motif), in a
    shuffled order. Returns moving, fixed and the true fixed index of each moving descriptor."""
    rng = np.random.default_rng(seed)
    moving = rng.normal(0.0, 1.0, (60, 32)).astype(np.float32)
    def offsets(length: float) -> np.ndarray:  # random directions, one length
        step = rng.normal(0.0, 1.0, moving.shape)
        return (length * step / np.linalg.norm(step, axis=1, keepdims=True)).astype(np.float32)

    true = moving + offsets(0.28)
    twin = moving + offsets(0.30)  # 0.28 / 0.30 = 0.93: past the ratio test's 0.9
    fixed = np.concatenate([true, twin])
    order = rng.permutation(len(fixed))
    fixed = fixed[order]
    true_index = np.argsort(order)[:60]  # where each true descriptor went
    return moving, fixed, true_index


def test_mutual_matches_keep_the_true_pairs_the_ratio_test_drops():
    for seed in range(5):
        moving, fixed, true_index = _descriptors(seed)
        query, train = _ratio_matches(moving, fixed, 0.9)
        assert len(query) == 0  # a twin within 0.9 of the best distance: the ratio test drops every pair
        query, train = _mutual_matches(moving, fixed)
        assert len(query) == 60 and np.all(train == true_index[query])


def test_mutual_matches_are_one_to_one_and_each_the_others_nearest():
    rng = np.random.default_rng(3)
    moving = rng.normal(0.0, 1.0, (40, 16)).astype(np.float32)
    fixed = rng.normal(0.0, 1.0, (70, 16)).astype(np.float32)
    query, train = _mutual_matches(moving, fixed)
    assert len(set(query)) == len(query) and len(set(train)) == len(train)
    distance = np.linalg.norm(moving[:, None] - fixed[None], axis=2)
    assert np.all(distance[query].argmin(axis=1) == train)
    assert np.all(distance[:, train].argmin(axis=0) == query)
