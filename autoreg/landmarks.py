"""Landmarks: ORB keypoints on the working views, cross-checked descriptor matches, in original (x, y)."""

from __future__ import annotations

import numpy as np

from .config import RegistrationConfig
from .datatypes import Matches
from .errors import InsufficientLandmarksError
from .preprocess import WorkingView

__all__ = ["detect", "find_matches", "to_original_xy"]


def to_original_xy(view: WorkingView, view_xy: np.ndarray) -> np.ndarray:
    """Map working-view (x, y) points to the original image's pixel (x, y)."""
    homogeneous = np.column_stack([view_xy, np.ones(len(view_xy))])
    return (homogeneous @ view.to_original.T)[:, :2]


def detect(view: WorkingView, config: RegistrationConfig) -> tuple[np.ndarray, np.ndarray | None]:
    """ORB keypoints (working-view (x, y)) and descriptors on ``view``, inside its valid area.

    Returns
    -------
    xy : ndarray of shape (N, 2)
    descriptors : ndarray of uint8, shape (N, 32), or None when nothing was found
    """
    import cv2

    patch = int(config.orb_patch_size)
    orb = cv2.ORB_create(
        nfeatures=config.n_features,
        scaleFactor=1.2,
        nlevels=8,
        edgeThreshold=patch,
        patchSize=patch,
        fastThreshold=config.fast_threshold,
    )
    mask = None if view.valid.all() else view.valid.astype(np.uint8) * 255
    keypoints, descriptors = orb.detectAndCompute(view.image8, mask)
    xy = np.array([kp.pt for kp in keypoints], dtype=float).reshape(-1, 2)
    return xy, descriptors


def find_matches(fixed_view: WorkingView, moving_view: WorkingView, config: RegistrationConfig) -> Matches:
    """Detect, describe and cross-check-match keypoints of the two views.

    Returns
    -------
    Matches
        In each image's original pixel coordinates.

    Raises
    ------
    InsufficientLandmarksError
        When either image yields no keypoints or no match survives the cross check.
    """
    import cv2

    fixed_xy, fixed_desc = detect(fixed_view, config)
    moving_xy, moving_desc = detect(moving_view, config)
    if fixed_desc is None or moving_desc is None or len(fixed_xy) == 0 or len(moving_xy) == 0:
        raise InsufficientLandmarksError(
            f"No ORB keypoints ({len(fixed_xy)} in fixed, {len(moving_xy)} in moving): the image may be flat or "
            "textureless."
        )
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
    pairs = matcher.match(moving_desc, fixed_desc)
    if not pairs:
        raise InsufficientLandmarksError("No descriptor match survived the cross check.")
    moving_idx = np.array([p.queryIdx for p in pairs])
    fixed_idx = np.array([p.trainIdx for p in pairs])
    return Matches(
        fixed_xy=to_original_xy(fixed_view, fixed_xy[fixed_idx]),
        moving_xy=to_original_xy(moving_view, moving_xy[moving_idx]),
        n_keypoints_fixed=len(fixed_xy),
        n_keypoints_moving=len(moving_xy),
    )
