"""Landmarks: ORB keypoints on the working views, cross-checked descriptor matches, in original (x, y)."""

from __future__ import annotations

import numpy as np

from .config import RegistrationConfig
from .datatypes import Matches
from .errors import InsufficientLandmarksError, library_errors
from .geometry import apply_matrix
from .preprocess import WorkingView

__all__ = ["detect", "find_matches", "to_original_xy"]


def to_original_xy(view: WorkingView, view_xy: np.ndarray) -> np.ndarray:
    """Map working-view (x, y) points to the original image's pixel (x, y)."""
    return apply_matrix(view.to_original, view_xy)


def detect(view: WorkingView, config: RegistrationConfig, detector: str = "orb") -> tuple[np.ndarray, np.ndarray | None]:
    """Keypoints (working-view (x, y)) and descriptors on ``view``, inside its valid area.

    ``detector`` is ``"orb"`` (binary descriptors, fast) or ``"sift"`` (float descriptors; finds blobs where ORB's
    corner detector starves on soft images).

    Returns
    -------
    xy : ndarray of shape (N, 2)
    descriptors : ndarray of uint8, shape (N, 32), or None when nothing was found
    """
    import cv2

    patch = int(config.orb_patch_size)
    n_features = int(min(config.n_features * max(1.0, view.image8.size / 256**2), config.max_features))
    if detector == "sift":
        finder = cv2.SIFT_create(nfeatures=n_features, contrastThreshold=config.sift_contrast_threshold)
    else:
        finder = cv2.ORB_create(
            nfeatures=n_features,
            scaleFactor=1.2,
            nlevels=config.orb_levels,
            edgeThreshold=patch,
            patchSize=patch,
            fastThreshold=config.fast_threshold,
        )
    mask = None if view.valid.all() else view.valid.astype(np.uint8) * 255
    with library_errors(f"{detector.upper()} detection"):
        keypoints, descriptors = finder.detectAndCompute(view.image8, mask)
    xy = np.array([kp.pt for kp in keypoints], dtype=float).reshape(-1, 2)
    return xy, descriptors


def _ratio_matches(query: np.ndarray, train: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Lowe's ratio test on brute-force 2-NN matches (Hamming for binary descriptors, L2 for float ones), one match
    per train point (the closest; the first query among equally close ones).

    Returns
    -------
    query_idx, train_idx : ndarray of int
    """
    import cv2

    norm = cv2.NORM_HAMMING if query.dtype == np.uint8 else cv2.NORM_L2
    with library_errors("descriptor matching"):
        if len(train) < 2:
            pairs = list(cv2.BFMatcher(norm).match(query, train))
        else:
            knn = cv2.BFMatcher(norm).knnMatch(query, train, k=2)
            pairs = [p[0] for p in knn if len(p) == 2 and p[0].distance < ratio * p[1].distance]
    query_of = np.array([m.queryIdx for m in pairs], dtype=int)
    train_of = np.array([m.trainIdx for m in pairs], dtype=int)
    distance = np.array([m.distance for m in pairs], dtype=float)
    order = np.lexsort((query_of, distance, train_of))  # by train point, then distance, then query
    train_idx, first = np.unique(train_of[order], return_index=True)
    return query_of[order][first], train_idx


def _mutual_matches(query: np.ndarray, train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours (each is the other's closest descriptor; OpenCV's cross-check), without a ratio
    test: where two images share little area, a true match's second-best neighbour is often as close as its best,
    and the ratio test drops it.

    Returns
    -------
    query_idx, train_idx : ndarray of int
    """
    import cv2

    norm = cv2.NORM_HAMMING if query.dtype == np.uint8 else cv2.NORM_L2
    with library_errors("descriptor matching"):
        pairs = cv2.BFMatcher(norm, crossCheck=True).match(query, train)
    return (np.array([m.queryIdx for m in pairs], dtype=int), np.array([m.trainIdx for m in pairs], dtype=int))


#: Keypoints already detected on a view: ``{(view, detector): (xy, descriptors)}``. The view itself is the key (a
#: WorkingView hashes by identity), so the cache keeps it alive and an id is never reused while it holds it.
KeypointCache = dict[tuple[WorkingView, str], tuple[np.ndarray, "np.ndarray | None"]]


def _detected(view: WorkingView, config: RegistrationConfig, detector: str,
              cache: KeypointCache | None) -> tuple[np.ndarray, np.ndarray | None]:
    """:func:`detect`, once per view and detector when a ``cache`` is given."""
    if cache is None:
        return detect(view, config, detector)
    if (view, detector) not in cache:
        cache[view, detector] = detect(view, config, detector)
    return cache[view, detector]


def find_matches(fixed_view: WorkingView, moving_view: WorkingView, config: RegistrationConfig,
                 detector: str = "orb", mutual: bool = False, keypoints: KeypointCache | None = None) -> Matches:
    """Detect, describe and match keypoints of the two views (ratio test, one match per fixed keypoint; or
    ``mutual`` nearest neighbours). ``keypoints``: a cache of detections, for strategies that match the same
    views' keypoints in two ways.

    Returns
    -------
    Matches
        In each image's original pixel coordinates.

    Raises
    ------
    InsufficientLandmarksError
        When either image yields no keypoints or no match passes the ratio test.
    """

    fixed_xy, fixed_desc = _detected(fixed_view, config, detector, keypoints)
    moving_xy, moving_desc = _detected(moving_view, config, detector, keypoints)
    if fixed_desc is None or moving_desc is None or len(fixed_xy) == 0 or len(moving_xy) == 0:
        raise InsufficientLandmarksError(
            f"No {detector.upper()} keypoints ({len(fixed_xy)} in fixed, {len(moving_xy)} in moving): the image may be flat or "
            "textureless."
        )
    if mutual:
        moving_idx, fixed_idx = _mutual_matches(moving_desc, fixed_desc)
    else:
        moving_idx, fixed_idx = _ratio_matches(moving_desc, fixed_desc, config.match_ratio)
    if moving_idx.size == 0:
        raise InsufficientLandmarksError("No descriptor match passed the " + ("cross-check." if mutual else "ratio test."))
    return Matches(
        fixed_xy=to_original_xy(fixed_view, fixed_xy[fixed_idx]),
        moving_xy=to_original_xy(moving_view, moving_xy[moving_idx]),
        n_keypoints_fixed=len(fixed_xy),
        n_keypoints_moving=len(moving_xy),
    )
