"""Exceptions raised by autoreg stages.

Stages raise; :func:`autoreg.pipeline.register` decides. Only :class:`InputError`
escapes the pipeline (the CLI maps it to exit code 2); every other
:class:`AutoregError` becomes a ``failed`` verdict with a reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

__all__ = [
    "library_errors",
    "AutoregError",
    "InputError",
    "InsufficientLandmarksError",
    "EstimationError",
    "TimeBudgetExceeded",
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


class TimeBudgetExceeded(AutoregError):
    """The time budget ran out while a strategy was running: that strategy found nothing.

    Deliberately not an :class:`EstimationError`: code that falls back to another way when an estimate fails must not
    take a spent budget for a failed estimate; only the pipeline's strategy loop catches it.
    """


@contextlib.contextmanager
def library_errors(what: str) -> Iterator[None]:
    """Turn a library's failure on these data into :class:`EstimationError`, at the call site.

    OpenCV raises ``cv2.error`` and numpy ``LinAlgError`` when the data defeat them (a singular system, a
    degenerate point set, an optimiser that does not converge): that is a result — this strategy failed — not a
    bug. Anything else propagates, so a bug of autoreg's own is never mistaken for a failed strategy.

    Parameters
    ----------
    what : str
        What was being done, for the message (``"ECC refinement"``).
    """
    import cv2
    import numpy as np

    try:
        yield
    except (cv2.error, np.linalg.LinAlgError) as err:
        detail = " ".join(str(getattr(err, "err", None) or err).split())[:200]
        raise EstimationError(f"{what} failed: {detail}") from err
