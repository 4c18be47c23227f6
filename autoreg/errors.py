"""Exceptions raised by autoreg stages.

Stages raise; :func:`autoreg.pipeline.register` decides. Only :class:`InputError`
escapes the pipeline (the CLI maps it to exit code 2); every other
:class:`AutoregError` becomes a ``failed`` verdict with a reason.
"""

from __future__ import annotations

__all__ = [
    "AutoregError",
    "InputError",
    "InsufficientLandmarksError",
    "EstimationError",
]


class AutoregError(Exception):
    """Base class of every error autoreg raises on purpose."""


class InputError(AutoregError, ValueError):
    """The user's input cannot be used (bad file, bad dataset path, bad points...).

    The message is one full sentence that names the problem and what to do.
    """


class InsufficientLandmarksError(AutoregError):
    """Too few usable landmarks (keypoints, matches or inliers) to estimate a transform."""


class EstimationError(AutoregError):
    """A transform could not be estimated, or the estimate is degenerate or non-finite."""
