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
from pathlib import Path
from typing import Any

import numpy as np

from ..config import RegistrationConfig
from ..datatypes import Image, RegistrationResult, jsonable
from ..errors import AutoregError, InputError
from .pairs import ACCEPTED, AUTOSAVE_FORMAT, AUTOSAVE_VERSION, SUGGESTED, Pair, pairs_to_json

__all__ = ["Session"]

SIDES = ("fixed", "moving")
HISTORY_LIMIT = 100  # undo steps kept (and autosaved)
PREDICTION_MODELS = ("affine", "similarity", "translation")  # most general first, for a click's partner


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

    @staticmethod
    def _predict(fit: tuple[str, Any, Any], side: str, pair: Pair) -> np.ndarray:
        """The missing ``side`` of ``pair`` through ``fit``; NaN where the fit maps nothing."""
        from ..geometry import map_points

        name, forward, backward = fit
        if side == "fixed":
            return map_points(forward, np.array([pair.moving_xy], float), name)[0]
        return map_points(backward, np.array([pair.fixed_xy], float), name)[0]

    def _settle(self, pair: Pair, *, refine: bool, moved_side: str | None = None) -> Pair:
        """Predict a missing side, then refine the coarser image's point by cpcorr."""
        from ..cpcorr import refine_point

        fit = self.current_fit(exclude=pair.id)
        note = pair.note
        if not pair.complete and fit is not None:
            side = "fixed" if pair.fixed_xy is None else "moving"
            predicted = self._predict(fit, side, pair)
            if not np.all(np.isfinite(predicted)) and fit[0] != "affine":  # outside a mesh: a global guess
                others = [p for p in self.pairs if p.id != pair.id and p.complete]
                affine = self._fit(others, "affine")
                predicted = self._predict(affine, side, pair) if affine is not None else predicted
            if np.all(np.isfinite(predicted)):
                rows, cols = (self.fixed if side == "fixed" else self.moving).shape
                xy = (float(np.clip(predicted[0], -0.5, cols - 0.5)), float(np.clip(predicted[1], -0.5, rows - 0.5)))
                pair = dataclasses.replace(pair, **{f"{side}_xy": xy})
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
        """-1 when the registered pair's contrast is inverted (:func:`autoreg.score.contrast_polarity`), else 1: for
        cpcorr."""
        from ..score import contrast_polarity

        judged = self._analysis[2] if self._analysis is not None else None
        for result in (judged, self.automatic):
            polarity = contrast_polarity(result.scores) if result is not None and result.fit is not None else None
            if polarity is not None:
                return polarity
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
        from ..geometry import map_points

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
            predicted = map_points(fit[1], np.array([p.moving_xy], float), model)[0]
            r = float(np.hypot(*(predicted - np.asarray(p.fixed_xy))))
            residuals[p.id] = r
            if math.isfinite(r) and r > max(floor, cfg.loo_outlier_factor * (typical if math.isfinite(typical) else 0.0)):
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
                   "pairs": pairs_to_json(self.pairs), "undo": [pairs_to_json(s) for s in self._undo],
                   "redo": [pairs_to_json(s) for s in self._redo]}
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
