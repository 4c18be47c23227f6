"""Control-point pairs of a picking session: the pair record, seeds, and the session file (autosave).

A pair is ``suggested`` (from the automatic attempt) or ``accepted`` (the user's: typed in ``--points``,
placed, moved or accepted).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..datatypes import RegistrationResult, jsonable
from ..errors import InputError

__all__ = ["ACCEPTED", "AUTOSAVE_FORMAT", "AUTOSAVE_VERSION", "SUGGESTED", "Pair", "autosave_path", "pairs_to_json",
           "read_autosave", "seeds_from_points", "seeds_from_result"]

SUGGESTED, ACCEPTED = "suggested", "accepted"
AUTOSAVE_FORMAT = "autoreg-pick-session"
AUTOSAVE_VERSION = 1
MAX_SUGGESTIONS = 40  # the automatic attempt's inliers offered, spread over the image: more is a wall of markers


@dataclass(frozen=True, slots=True)
class Pair:
    """One control-point pair; either side may still be missing while the user places it.

    Attributes
    ----------
    id : int
        Stable identifier (never reused in a session).
    fixed_xy, moving_xy : tuple of float or None
        Pixel (x, y) in each image.
    status : str
        ``suggested`` or ``accepted``.
    correlation : float or None
        cpcorr's peak correlation when the pair was last refined.
    refined : bool
        True when cpcorr moved the coarser image's point.
    note : str
        cpcorr's note (``refined``, ``weak_correlation``...), ``kept`` when the user asked for no refinement,
        ``predicted`` for a partner the model placed, or empty.
    """

    id: int
    fixed_xy: tuple[float, float] | None
    moving_xy: tuple[float, float] | None
    status: str = ACCEPTED
    correlation: float | None = None
    refined: bool = False
    note: str = ""

    @property
    def complete(self) -> bool:
        """Both sides placed."""
        return self.fixed_xy is not None and self.moving_xy is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (autosave and the page)."""
        return jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        """Inverse of :meth:`to_dict`; InputError on malformed entries."""
        try:
            def xy(v: Any) -> tuple[float, float] | None:
                return None if v is None else (float(v[0]), float(v[1]))

            status = str(d.get("status", ACCEPTED))
            if status not in (SUGGESTED, ACCEPTED):
                raise ValueError(f"status {status!r}")
            corr = d.get("correlation")
            return cls(id=int(d["id"]), fixed_xy=xy(d.get("fixed_xy")), moving_xy=xy(d.get("moving_xy")),
                       status=status, correlation=None if corr is None else float(corr),
                       refined=bool(d.get("refined", False)), note=str(d.get("note", "")))
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise InputError(f"Malformed pair in the session file: {err}.") from err


def autosave_path(out: str | Path) -> Path:
    """The session file next to ``out``: ``points.csv`` → ``points.csv.pick.json``."""
    out = Path(out)
    return out.with_name(out.name + ".pick.json")


def read_autosave(path: str | Path, fixed_shape: tuple[int, int], moving_shape: tuple[int, int]) -> dict[str, Any]:
    """Read a session file written by :class:`Session`; InputError when it does not parse or fits other images."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"Cannot read the session file {path}: {err}; delete it to start over.") from err
    if not isinstance(data, dict) or data.get("format") != AUTOSAVE_FORMAT:
        raise InputError(f"{path} is not an autoreg pick session file; delete it or choose another --out.")
    shapes = (list(data.get("fixed_shape", [])), list(data.get("moving_shape", [])))
    if shapes != (list(fixed_shape), list(moving_shape)):
        raise InputError(f"The session file {path} was made for images of {shapes[0]} and {shapes[1]} px, not "
                         f"{list(fixed_shape)} and {list(moving_shape)}; delete it or choose another --out.")
    return data


def _spread(xy: np.ndarray, limit: int) -> np.ndarray:
    """Indices of at most ``limit`` points spread over the plane (farthest-point order from the first)."""
    n = len(xy)
    if n <= limit:
        return np.arange(n)
    chosen = [int(np.argmin(np.hypot(*(xy - xy.mean(axis=0)).T)))]
    distance = np.hypot(*(xy - xy[chosen[0]]).T)
    while len(chosen) < limit:
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, np.hypot(*(xy - xy[nxt]).T))
    return np.array(sorted(chosen))


def seeds_from_result(result: RegistrationResult, *, limit: int = MAX_SUGGESTIONS) -> list[Pair]:
    """The automatic attempt's inlier pairs as suggestions (at most ``limit``, spread out); none when it failed."""
    fit = result.fit
    if fit is None or result.verdict.level == "failed" or fit.n_inliers == 0:
        return []
    fixed_xy = fit.matches.fixed_xy[fit.inliers]
    moving_xy = fit.matches.moving_xy[fit.inliers]
    keep = _spread(fixed_xy, limit)
    return [Pair(id=i + 1, fixed_xy=(float(f[0]), float(f[1])), moving_xy=(float(m[0]), float(m[1])),
                 status=SUGGESTED, note="automatic") for i, (f, m) in enumerate(zip(fixed_xy[keep], moving_xy[keep]))]


def seeds_from_points(fixed_xy: np.ndarray, moving_xy: np.ndarray) -> list[Pair]:
    """The user's own points (``--points``) as accepted pairs, unrefined."""
    return [Pair(id=i + 1, fixed_xy=(float(f[0]), float(f[1])), moving_xy=(float(m[0]), float(m[1])),
                 status=ACCEPTED, note="from file") for i, (f, m) in enumerate(zip(fixed_xy, moving_xy))]


def pairs_to_json(pairs: tuple[Pair, ...]) -> list[dict[str, Any]]:
    """JSON-able list of pairs."""
    return [p.to_dict() for p in pairs]
