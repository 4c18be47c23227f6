"""autoreg: hands-off registration of scientific images, with a verdict you can trust.

The public names are imported lazily (PEP 562), so ``import autoreg`` and ``autoreg --help`` stay fast.

>>> import autoreg
>>> result = autoreg.register(fixed, moving)          # doctest: +SKIP
>>> result.verdict.level, result.matrix               # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import AutoregError, EstimationError, InputError, InsufficientLandmarksError

_LAZY = {
    "register": "pipeline",
    "RegistrationConfig": "config",
    "RegistrationResult": "datatypes",
    "Image": "datatypes",
    "Matches": "datatypes",
    "Fit": "datatypes",
    "Scores": "datatypes",
    "Verdict": "datatypes",
    "MODELS": "vocabulary",
    "load_image": "io",
    "pick": "picker",
}

__all__ = [
    "__version__",
    "AutoregError",
    "InputError",
    "InsufficientLandmarksError",
    "EstimationError",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'autoreg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
