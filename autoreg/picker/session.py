"""A picking session: the pairs, undo/redo, autosave and resume, and the live analysis.

All the maths the page shows is computed here, in Python: the partner a click predicts, the cpcorr refinement
of each placed point, every pair's leave-one-out residual, the outliers named, and the verdict, ``uncertainty_px``
and model, which come from :func:`autoreg.register` with ``automatic=False`` (the same rules as ``register
--points``). The page only draws and sends edits.

A pair is ``suggested`` (from the automatic attempt) or ``accepted`` (the user's: typed in ``--points``,
placed, moved or accepted). The verdict judges the accepted complete pairs, which are exactly what saving
writes; suggestions are shown with their residual against that fit, held out by construction.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RegistrationConfig
from ..datatypes import Image, RegistrationResult, jsonable
from ..errors import AutoregError, InputError

__all__ = [
    "ACCEPTED",
    "SUGGESTED",
    "Pair",
    "Session",
    "autosave_path",
    "read_autosave",
    "seeds_from_points",
    "seeds_from_result",
]

SUGGESTED, ACCEPTED = "suggested", "accepted"
SIDES = ("fixed", "moving")
AUTOSAVE_FORMAT = "autoreg-pick-session"
AUTOSAVE_VERSION = 1
HISTORY_LIMIT = 100  # undo steps kept (and autosaved)
PREDICTION_MODELS = ("affine", "similarity", "translation")  # most general first, for a click's partner
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


def _jsonable_pairs(pairs: tuple[Pair, ...]) -> list[dict[str, Any]]:
    return [p.to_dict() for p in pairs]


class Session:
    """State of one picking session, with undo/redo and autosave on every change.

    Parameters
    ----------
    fixed, moving : Image
    model : str
        ``auto`` or a model name: the model the verdict judges (as ``register --model``).
    config : RegistrationConfig, optional
    seeds : sequence of Pair
        Initial pairs (suggestions from the automatic attempt, or accepted points from ``--points``).
    autosave : path, optional
        Session file written (atomically) after every change; None for none.
    automatic : RegistrationResult, optional
        The automatic attempt, shown for reference and used to predict partners until the pairs can.
    resume : dict, optional
        A session file's content (:func:`read_autosave`) to resume from, instead of ``seeds``.
    """

    def __init__(self, fixed: Image, moving: Image, *, model: str = "auto", config: RegistrationConfig | None = None,
                 seeds: tuple[Pair, ...] | list[Pair] = (), autosave: str | Path | None = None,
                 automatic: RegistrationResult | None = None, resume: dict[str, Any] | None = None) -> None:
        from ..preprocess import expected_scale

        self.fixed, self.moving = fixed, moving
        self.model = model
        self.config = config or RegistrationConfig()
        self.autosave = None if autosave is None else Path(autosave)
        self.automatic = automatic
        self.expected_scale, _ = expected_scale(fixed, moving, self.config)
        self.revision = 0
        self._undo: list[tuple[Pair, ...]] = []
        self._redo: list[tuple[Pair, ...]] = []
        self._analysis: tuple[int, dict[str, Any], RegistrationResult | None] | None = None
        if resume is not None:
            self.pairs = tuple(Pair.from_dict(p) for p in resume.get("pairs", []))
            self._undo = [tuple(Pair.from_dict(p) for p in step) for step in resume.get("undo", [])]
            self._redo = [tuple(Pair.from_dict(p) for p in step) for step in resume.get("redo", [])]
            self.model = str(resume.get("model", model)) if model == "auto" else model
        else:
            self.pairs = tuple(seeds)
        ids = [p.id for step in (self.pairs, *self._undo, *self._redo) for p in step]
        self.next_id = max(ids, default=0) + 1
        self._write_autosave()

    # ------------------------------------------------------------------------------------------- editing

    def _change(self, pairs: tuple[Pair, ...]) -> None:
        self._undo.append(self.pairs)
        del self._undo[:-HISTORY_LIMIT]
        self._redo.clear()
        self.pairs = pairs
        self._changed()

    def _changed(self) -> None:
        self.revision += 1
        self._analysis = None
        self._write_autosave()

    def _get(self, pair_id: int) -> Pair:
        for pair in self.pairs:
            if pair.id == pair_id:
                return pair
        raise InputError(f"No pair {pair_id}.")

    def _replace(self, new: Pair) -> tuple[Pair, ...]:
        return tuple(new if p.id == new.id else p for p in self.pairs)

    def _check_xy(self, side: str, xy: Any) -> tuple[float, float]:
        if side not in SIDES:
            raise InputError(f"side must be fixed or moving, not {side!r}.")
        try:
            x, y = (float(v) for v in xy)
        except (TypeError, ValueError) as err:
            raise InputError(f"A point is two numbers (x, y), not {xy!r}.") from err
        rows, cols = (self.fixed if side == "fixed" else self.moving).shape
        if not (math.isfinite(x) and math.isfinite(y) and -0.5 <= x <= cols - 0.5 and -0.5 <= y <= rows - 0.5):
            raise InputError(f"({x:g}, {y:g}) lies outside the {side} image ({cols} x {rows} px).")
        return (x, y)

    def add(self, *, fixed_xy: Any = None, moving_xy: Any = None, refine: bool = True) -> Pair:
        """Place a new pair; with one side only, the model predicts the other when it can (else it waits).

        Returns the pair as stored (predicted and refined).
        """
        if fixed_xy is None and moving_xy is None:
            raise InputError("Give a fixed or a moving point.")
        fixed_xy = None if fixed_xy is None else self._check_xy("fixed", fixed_xy)
        moving_xy = None if moving_xy is None else self._check_xy("moving", moving_xy)
        pair = self._settle(Pair(id=self.next_id, fixed_xy=fixed_xy, moving_xy=moving_xy), refine=refine)
        self.next_id += 1
        self._change((*self.pairs, pair))
        return pair

    def move(self, pair_id: int, side: str, xy: Any, *, refine: bool = True) -> Pair:
        """Move (or place the missing) ``side`` of a pair; the pair becomes accepted and is refined again."""
        xy = self._check_xy(side, xy)
        old = self._get(pair_id)
        pair = dataclasses.replace(old, status=ACCEPTED, correlation=None, refined=False, note="",
                                   **{f"{side}_xy": xy})
        pair = self._settle(pair, refine=refine, moved_side=side)
        self._change(self._replace(pair))
        return pair

    def delete(self, pair_id: int) -> None:
        """Remove a pair."""
        self._get(pair_id)
        self._change(tuple(p for p in self.pairs if p.id != pair_id))

    def accept(self, pair_id: int) -> None:
        """Accept a suggested pair (it then counts for the verdict and is saved)."""
        pair = self._get(pair_id)
        if pair.status != ACCEPTED:
            self._change(self._replace(dataclasses.replace(pair, status=ACCEPTED)))

    def accept_all(self) -> None:
        """Accept every complete suggested pair."""
        if any(p.status == SUGGESTED and p.complete for p in self.pairs):
            self._change(tuple(dataclasses.replace(p, status=ACCEPTED) if p.complete else p for p in self.pairs))

    def undo(self) -> bool:
        """Go back one change; False when there is none."""
        if not self._undo:
            return False
        self._redo.append(self.pairs)
        self.pairs = self._undo.pop()
        self._changed()
        return True

    def redo(self) -> bool:
        """Redo the last undone change; False when there is none."""
        if not self._redo:
            return False
        self._undo.append(self.pairs)
        self.pairs = self._redo.pop()
        self._changed()
        return True

    # ---------------------------------------------------------------------------------- model and refinement

    def _fit(self, pairs: list[Pair], model: str | None = None) -> tuple[str, Any, Any] | None:
        """(model, moving→fixed, fixed→moving) fitted on complete ``pairs``; None when they cannot fit one."""
        from ..estimate import fit_pair
        from ..models import min_points

        complete = [p for p in pairs if p.complete]
        if not complete:
            return None
        fixed_xy = np.array([p.fixed_xy for p in complete])
        moving_xy = np.array([p.moving_xy for p in complete])
        order = self.config.polynomial_order
        choices = [model] if model else []
        if self.model != "auto":
            choices.append(self.model)
        choices += list(PREDICTION_MODELS)
        for name in choices:
            if len(complete) < min_points(name, polynomial_order=order):
                continue
            try:
                forward, backward = fit_pair(name, moving_xy, fixed_xy, polynomial_order=order,
                                             prior_scale=self.expected_scale)
            except AutoregError:
                continue
            return name, forward, backward
        return None

    def current_fit(self, *, exclude: int | None = None) -> tuple[str, Any, Any] | None:
        """The transform that predicts partners: the accepted pairs' fit, else all complete pairs', else the
        automatic attempt's (None when there is none)."""
        others = [p for p in self.pairs if p.id != exclude and p.complete]
        accepted = [p for p in others if p.status == ACCEPTED]
        fit = self._fit(accepted) or self._fit(others)
        if fit is None and self.automatic is not None and self.automatic.fit is not None \
                and self.automatic.verdict.level != "failed":
            auto = self.automatic.fit
            fit = (auto.model, auto.to_fixed, auto.to_moving)
        return fit

    def _settle(self, pair: Pair, *, refine: bool, moved_side: str | None = None) -> Pair:
        """Predict a missing side, then refine the coarser image's point by cpcorr."""
        from ..cpcorr import refine_point

        fit = self.current_fit(exclude=pair.id)
        note = pair.note
        if not pair.complete and fit is not None:
            _, forward, backward = fit
            if pair.fixed_xy is None:
                predicted = np.asarray(forward(np.array([pair.moving_xy], float)), float)[0]
                side = "fixed"
            else:
                predicted = np.asarray(backward(np.array([pair.fixed_xy], float)), float)[0]
                side = "moving"
            rows, cols = (self.fixed if side == "fixed" else self.moving).shape
            x, y = float(np.clip(predicted[0], -0.5, cols - 0.5)), float(np.clip(predicted[1], -0.5, rows - 0.5))
            if np.all(np.isfinite(predicted)):
                pair = dataclasses.replace(pair, **{f"{side}_xy": (x, y)})
                note = "predicted"
        if not pair.complete:
            return pair
        if not refine:
            return dataclasses.replace(pair, correlation=None, refined=False, note="kept")
        if fit is None or (fit[0] == "translation" and self.model != "translation"):
            # cpcorr needs the local rotation and scale: two pairs (a similarity) give them, one does not
            return dataclasses.replace(pair, correlation=None, refined=False, note="unrefined: place two pairs first")
        transform = fit[1]
        result = refine_point(np.asarray(self.fixed.data), np.asarray(self.moving.data), pair.fixed_xy,
                              pair.moving_xy, transform, config=self.config, polarity=self._polarity())
        corr = None if not math.isfinite(result.correlation) else round(result.correlation, 4)
        return dataclasses.replace(pair, fixed_xy=result.fixed_xy, moving_xy=result.moving_xy, correlation=corr,
                                   refined=result.moved,
                                   note=f"predicted; {result.note}" if note == "predicted" else result.note)

    def _polarity(self) -> int:
        """-1 when the registered pair correlates negatively (inverted contrast), else 1: for cpcorr."""
        judged = self._analysis[2] if self._analysis is not None else None
        for result in (judged, self.automatic):
            if result is not None and result.fit is not None and math.isfinite(result.scores.pearson):
                return -1 if result.scores.pearson < 0 else 1
        return 1

    # --------------------------------------------------------------------------------------------- analysis

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """The accepted complete pairs: ``(fixed_xy, moving_xy)``, each of shape (N, 2). What saving writes."""
        chosen = [p for p in self.pairs if p.status == ACCEPTED and p.complete]
        return (np.array([p.fixed_xy for p in chosen], float).reshape(-1, 2),
                np.array([p.moving_xy for p in chosen], float).reshape(-1, 2))

    def _coarse_px(self) -> float:
        """One coarse pixel in fixed px."""
        return max(1.0, self.expected_scale)

    def _judge(self) -> tuple[dict[str, Any], RegistrationResult | None]:
        """Verdict of the accepted pairs by the pipeline's own rules (``register(..., automatic=False)``)."""
        from ..pipeline import register

        fixed_xy, moving_xy = self.points()
        if len(fixed_xy) == 0:
            return {"verdict": None, "message": "No accepted pairs yet: accept suggestions (a) or click to add."}, None
        try:
            result = register(self.fixed, self.moving, points=(fixed_xy, moving_xy), model=self.model,
                              config=self.config, automatic=False, cube_step=None)
        except InputError as err:
            return {"verdict": None, "message": str(err)}, None
        d = result.to_dict()
        return {"verdict": d["verdict"], "reasons": d["reasons"], "model": d["model"], "matrix": d["matrix"],
                "uncertainty_px": d["uncertainty_px"], "rmse_px": d["rmse_px"], "pearson": d["pearson"],
                "why_model": d["why_model"], "message": ""}, result

    def _residuals(self, judged_model: str | None) -> tuple[dict[int, float], set[int]]:
        """LOO residual (fixed px) of every complete pair, and the ids named as outliers."""
        from ..control_points import loo_residuals, name_outliers

        cfg = self.config
        floor = cfg.loo_outlier_min_coarse_px * self._coarse_px()
        complete = [p for p in self.pairs if p.complete]
        accepted = [p for p in complete if p.status == ACCEPTED]
        fit = self._fit(accepted, judged_model)
        group = accepted if fit is not None else complete  # before any fit: the suggestions among themselves
        fit = fit or self._fit(complete)
        if fit is None:
            return {}, set()
        model = fit[0]
        fixed_xy = np.array([p.fixed_xy for p in group]).reshape(-1, 2)
        moving_xy = np.array([p.moving_xy for p in group]).reshape(-1, 2)
        kw = {"polynomial_order": cfg.polynomial_order, "prior_scale": self.expected_scale}
        loo = loo_residuals(fixed_xy, moving_xy, model, **kw)
        named = {group[i].id for i in name_outliers(fixed_xy, moving_xy, model, factor=cfg.loo_outlier_factor,
                                                     floor_px=floor, **kw)}
        residuals = {p.id: float(r) for p, r in zip(group, loo)}
        typical = float(np.nanmedian(loo)) if np.isfinite(loo).any() else math.nan
        for p in complete:
            if p.id in residuals:
                continue
            predicted = np.asarray(fit[1](np.array([p.moving_xy], float)), float)[0]
            r = float(np.hypot(*(predicted - np.asarray(p.fixed_xy))))
            residuals[p.id] = r
            if r > max(floor, cfg.loo_outlier_factor * (typical if math.isfinite(typical) else 0.0)):
                named.add(p.id)
        return residuals, named

    def analysis(self) -> tuple[dict[str, Any], RegistrationResult | None]:
        """The verdict, residuals and outliers of the current pairs (cached until the next change)."""
        if self._analysis is not None and self._analysis[0] == self.revision:
            return self._analysis[1], self._analysis[2]
        verdict, result = self._judge()
        model = result.fit.model if result is not None and result.fit is not None else None
        residuals, named = self._residuals(model)
        out = {"judged": verdict, "residuals": residuals, "outliers": sorted(named)}
        self._analysis = (self.revision, out, result)
        return out, result

    def overlay_result(self) -> RegistrationResult | None:
        """The result whose warped image the overlay shows: the accepted pairs', else the automatic attempt's."""
        _, result = self.analysis()
        if result is not None and result.warped is not None:
            return result
        auto = self.automatic
        return auto if auto is not None and auto.warped is not None else None

    def _sync_matrix(self) -> list[list[float]]:
        """An affine moving→fixed matrix that keeps the two views in step (a display aid only)."""
        fit = self._fit([p for p in self.pairs if p.complete], "affine")
        if fit is None or fit[0] not in ("affine", "similarity", "translation"):
            if self.automatic is not None and self.automatic.matrix is not None:
                return np.asarray(self.automatic.matrix, float).tolist()
            rows_f, cols_f = self.fixed.shape
            rows_m, cols_m = self.moving.shape
            return [[cols_f / cols_m, 0.0, (cols_f / cols_m - 1) / 2], [0.0, rows_f / rows_m, (rows_f / rows_m - 1) / 2],
                    [0.0, 0.0, 1.0]]
        return np.asarray(fit[1].params, float).tolist()

    def state(self) -> dict[str, Any]:
        """Everything the page draws, JSON-able."""
        from ..models import min_points

        analysis, _ = self.analysis()
        outliers = set(analysis["outliers"])
        pairs = []
        for p in self.pairs:
            d = p.to_dict()
            d["loo_px"] = analysis["residuals"].get(p.id)
            d["outlier"] = p.id in outliers
            pairs.append(d)
        auto = self.automatic
        need = None if self.model == "auto" else min_points(self.model, polynomial_order=self.config.polynomial_order)
        return jsonable({
            "revision": self.revision,
            "pairs": pairs,
            "judged": analysis["judged"],
            "n_accepted": len(self.points()[0]),
            "model_requested": self.model,
            "min_points": need,
            "can_undo": bool(self._undo),
            "can_redo": bool(self._redo),
            "fixed_shape": list(self.fixed.shape),
            "moving_shape": list(self.moving.shape),
            "fixed_name": self.fixed.name,
            "moving_name": self.moving.name,
            "expected_scale": self.expected_scale,
            "coarse_px": self._coarse_px(),
            "sync_matrix": self._sync_matrix(),
            "automatic": None if auto is None else {"verdict": auto.verdict.level, "reasons": list(auto.verdict.reasons),
                                                    "model": auto.model, "n_inliers": auto.scores.n_inliers},
            "has_overlay": self.overlay_result() is not None,
        })

    # ------------------------------------------------------------------------------------------- persistence

    def _write_autosave(self) -> None:
        if self.autosave is None:
            return
        from .._atomic import write_text

        payload = {"format": AUTOSAVE_FORMAT, "version": AUTOSAVE_VERSION, "fixed": self.fixed.name,
                   "moving": self.moving.name, "fixed_shape": list(self.fixed.shape),
                   "moving_shape": list(self.moving.shape), "model": self.model,
                   "pairs": _jsonable_pairs(self.pairs), "undo": [_jsonable_pairs(s) for s in self._undo],
                   "redo": [_jsonable_pairs(s) for s in self._redo]}
        write_text(self.autosave, json.dumps(payload) + "\n")

    def save(self, path: str | Path) -> int:
        """Write the accepted complete pairs as the CSV ``register --points`` reads, atomically; return how many.

        Raises
        ------
        InputError
            No accepted complete pair to save.
        """
        from ..io import POINTS_HEADER, write_coordinate_table

        fixed_xy, moving_xy = self.points()
        if len(fixed_xy) == 0:
            raise InputError("Nothing to save: accept suggestions or add pairs first.")
        write_coordinate_table(path, POINTS_HEADER, np.hstack([fixed_xy, moving_xy]))
        return len(fixed_xy)
