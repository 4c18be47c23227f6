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


def test_a_large_view_asks_at_most_max_features_keypoints_and_still_registers():
    """Brute-force matching costs the product of the keypoint counts: a 1024² view asks ``max_features``, not the
    16 000 its area would; the pair is still registered within a hundredth of a pixel's scale."""
    import autoreg
    from autoreg.config import RegistrationConfig
    from autoreg.datatypes import Image
    from autoreg.geometry import apply_matrix, mean_grid_distance
    from autoreg.landmarks import detect
    from autoreg.preprocess import make_working_view
    from autoreg.synthetic import make_pair

    angle = np.deg2rad(33.0)
    truth = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    centre = np.array([511.5, 511.5])
    truth[:2, 2] = centre + [5.0, -4.0] - truth[:2, :2] @ centre
    pair = make_pair(seed=6, fixed_shape=(1024, 1024), moving_shape=(1024, 1024), matrix=truth)
    config = RegistrationConfig()
    view = make_working_view(Image(pair.fixed), 1.0, coarse_pixel_wpx=1.0, config=config)
    capped, _ = detect(view, config)
    uncapped, _ = detect(view, config.with_(max_features=10**6))
    assert len(capped) <= config.max_features < len(uncapped)
    result = autoreg.register(pair.fixed, pair.moving)
    assert result.verdict.level == "ok", result.verdict.reasons
    assert mean_grid_distance(result.fit.to_fixed, lambda xy: apply_matrix(truth, xy), (1024, 1024)) < 0.1
