"""``autoreg pick``: control points in the browser, seeded by the automatic attempt, checked live.

``autoreg.pick(fixed, moving)`` (this package's :func:`pick`) serves a local page and returns the points; the
command line's ``autoreg pick`` is :mod:`autoreg.picker.command`. Nothing heavy is imported here.
"""

from __future__ import annotations

from .api import pick

__all__ = ["pick"]
