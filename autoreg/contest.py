"""A second test of a search whose correlation peak does not stand out: refine its best separated poses and see
whether one of them explains the images clearly better than every other.

The search's sweep compares poses on coarse samples (a 48 px map, a rotation step of a rim pixel), where a true
pose and a wrong one can correlate alike: smooth content correlates broadly, and a gradient magnitude is much the
same everywhere. Refined towards its own optimum and judged on pixels the refinement did not fit, a true pose
explains the map far better than a wrong one can. :func:`contest` refines the search's
``contest_poses`` best separated poses and the best pose of each other pairing the sweep ran (a similarity each,
from its sweep sample, fitted on half the pixels), and measures each optimum by its correlation on the other half,
as a Fisher z scaled by the square root of the pixels it covers (the search ranks its poses the same way); the
evidence is how far the best stands above the best optimum elsewhere (``contest_gap``).

The other pairings' poses are there because the winning pairing is only the one whose peak has the largest z-score,
which says little where no peak stands out: on the calibration split, a clock photo against its inverted copy was
won by the derivative pairing, its best poses 30-240 px off, while the gradient magnitudes' best pose was 4 px from
the truth.

Each pose gets at most ``refine_max_iterations`` Gauss–Newton updates per pyramid level, as every refinement does,
and the poses the sweep left far off mostly stop there still creeping: the contest compares its solves as they stand,
not optima. Decided again with every solve run on to convergence (``tests/bench/bench_convergence.py --contests``,
300 updates), the tuning splits' contests keep every decision they made (calibration 10, lattice 16; gaps moved by
-0.003 to +0.28) and make 3 more on each split, all right; a wrong pose's score hardly moves, while a true one left far
off climbs. A cap of 8 decides 4 of calibration's 10 no more; 40 costs a second contest's time for the same 3.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np

from .datatypes import Fit
from .errors import EstimationError
from .evidence import tolerance_px
from .geometry import apply_matrix, mean_grid_distance
from .search import fixed_term, refined_on
from .strategies import Context, fit_through, refine_inputs

__all__ = ["contest", "contest_score"]

#: |r| is clipped below 1 before the Fisher z (a perfect match ranks as 0.9999, as in the search).
_MAX_R = 0.9999

#: The model each pose is refined as: the search's own (a similarity), so that no pose wins on extra freedom.
_CONTEST_MODEL = "similarity"


class _Optimum(NamedTuple):
    """One contested pose refined: the half fit, its moving → fixed matrix in original pixels, the pairing the pose
    was found on and the fixed term it was refined on (:func:`autoreg.search.refined_on`)."""

    refined: Any
    matrix: np.ndarray
    pairing: str
    compared: str


def contest_score(holdout_r: float, n_valid: int, n_most: int) -> float:
    """A refined pose's standing: the Fisher z of its held-out |r|, times the square root of the share of pixels
    it covers (``n_valid`` of the most any pose covered, ``n_most``); 0 when undefined.

    Examples
    --------
    >>> round(contest_score(0.99, 100, 100), 3)
    2.647
    >>> round(contest_score(0.99, 25, 100), 3)
    1.323
    """
    if not (math.isfinite(holdout_r) and n_most > 0):
        return 0.0
    return math.atanh(min(abs(holdout_r), _MAX_R)) * math.sqrt(n_valid / n_most)


def _refined_poses(ctx: Context, poses: list[tuple[str, str, np.ndarray]], max_iterations: int) -> list[_Optimum]:
    """Each ``(pairing, compared, moving_to_fixed)`` pose refined as a similarity on half the pixels (at most
    ``max_iterations`` Gauss–Newton updates per pyramid level), on a coarser grid than the refinement's; poses
    without an optimum nearby (the refinement diverged or failed) are left out."""
    from .refine import refine_matrix

    cfg = ctx.config
    # a coarser grid than the refinement's: poses two tolerances apart differ there as clearly, at a third the cost
    fixed_small, moving_small = refine_inputs(dataclasses.replace(
        ctx, config=cfg.with_(refine_max_side=min(cfg.refine_max_side, cfg.contest_max_side))))
    optima: list[_Optimum] = []
    for pairing, compared, matrix in poses:
        if ctx.deadline is not None:
            ctx.deadline.check("the search's contest")
        start = fixed_small.from_original @ np.asarray(matrix, float) @ moving_small.to_original
        # a derivative's direction is the moving x axis at the start (as in refine_fit)
        term = fixed_term(fixed_small.data, compared, start[:2, 0])
        try:
            refined = refine_matrix(term, moving_small.data, start, _CONTEST_MODEL, max_iterations=max_iterations,
                                    half_fit_only=True)
        except EstimationError:  # RefinementDiverged included: no optimum near this pose
            continue
        optima.append(_Optimum(refined, fixed_small.to_original @ refined.moving_to_fixed @ moving_small.from_original,
                               pairing, compared))
    return optima


class _Standing(NamedTuple):
    """The contest's outcome: the index of the best-scoring optimum and how far it stands above the best optimum
    more than ``shift_exclusion_tolerances`` tolerances from it (Fisher z; NaN when there is none)."""

    winner: int
    gap: float


def _apart(ctx: Context, matrix: np.ndarray, other: np.ndarray) -> bool:
    """Two optima (similarity matrices) are separate when a 5×5 grid spanning the moving image lands more than
    ``shift_exclusion_tolerances`` tolerances apart under them, on average."""
    separation = ctx.config.shift_exclusion_tolerances * tolerance_px(ctx.config, ctx.expected_scale)
    return mean_grid_distance(lambda g: apply_matrix(matrix, g), lambda g: apply_matrix(other, g),
                              ctx.moving.shape) > separation


def _standing(ctx: Context, optima: list[_Optimum]) -> _Standing:
    """Rank ``optima`` by :func:`contest_score` and measure the best's lead over the best optimum elsewhere."""
    n_most = max(o.refined.n_valid for o in optima)
    scores = [contest_score(o.refined.holdout_after, o.refined.n_valid, n_most) for o in optima]
    order = np.argsort(scores)[::-1]
    best_matrix = optima[order[0]].matrix
    elsewhere = [scores[i] for i in order[1:] if _apart(ctx, best_matrix, optima[i].matrix)]
    return _Standing(int(order[0]), scores[order[0]] - max(elsewhere) if elsewhere else math.nan)


def _not_evidence(winner: _Optimum, min_correlation: float) -> str:
    """Why the contest's best optimum is no evidence of a match whatever its lead ("" when it is): its solve did not
    converge, or a linear contrast does not explain the map there (held-out |r| below ``min_correlation``)."""
    if not winner.refined.converged:
        return "it did not converge"
    if abs(winner.refined.holdout_after) < min_correlation:
        return f"a linear contrast explains it with |r| {abs(winner.refined.holdout_after):.3f} only"
    return ""


def contest(ctx: Context, fit: Fit) -> Fit:
    """Refine the search's separated poses (``fit.candidates``) and each other pairing's best pose
    (``fit.other_candidates``), and keep the one that stands out, if one does.

    A pose of a pairing that compares like with like (``intensity``, ``gradient``) is refined on the intensities, one
    of a cross-modal pairing on its own fixed term (:func:`autoreg.search.fixed_term`); the winner keeps its pairing
    (``channel``, ``matched_channel``). Where another pairing's best pose does not win, it is one more optimum
    elsewhere for the winner to stand above: the test is no easier for it.

    Parameters
    ----------
    ctx : Context
        The strategy's inputs and settings (its scale hypothesis sets the tolerance that separates poses).
    fit : Fit
        A search fit whose sweep peak did not stand out, with its ``candidates``.

    Returns
    -------
    Fit
        With ``contest_gap`` set: NaN when fewer than two separated optima were found, or the best one did not
        converge or is not explained by a linear contrast (the note says which). When the gap passes
        ``min_contest_gap``, the fit is moved to the winning optimum (a similarity); otherwise it keeps its pose.
    """
    cfg = ctx.config
    # the winning pairing's best separated poses, then each other pairing's best, each refined on its own term
    winners = [(fit.channel, fit.matched_channel, matrix) for matrix in fit.candidates[: cfg.contest_poses]]
    poses = winners + [(pairing, refined_on(pairing), matrix) for pairing, matrix in fit.other_candidates]
    if len(poses) < 2:
        return fit.with_note("no contest (fewer than two separated poses)")
    optima = _refined_poses(ctx, poses, cfg.refine_max_iterations)
    if not optima:
        return dataclasses.replace(fit, contest_gap=math.nan).with_note("contest: no pose refined")
    standing = _standing(ctx, optima)
    winner = optima[standing.winner]
    best, best_matrix, gap = winner.refined, winner.matrix, standing.gap
    n_others = len(poses) - len(winners)
    said = (f"contest of {len(winners)} separated poses" + (f" and {n_others} other pairings' best" if n_others else "")
            + f" ({len(optima)} refined as {_CONTEST_MODEL})")
    if not math.isfinite(gap):
        return dataclasses.replace(fit, contest_gap=math.nan).with_note(f"{said}: no optimum elsewhere to compare")
    said += (f": the best, held-out |r| {abs(best.holdout_after):.3f}, stands {gap:.3f} (Fisher z) above the best "
             f"optimum elsewhere")
    why = _not_evidence(winner, cfg.min_refined_correlation)
    if why:  # not evidence: the gap stays in the note, the fit records none
        return dataclasses.replace(fit, contest_gap=math.nan).with_note(f"{said} ({why})")
    if not gap > cfg.min_contest_gap:
        return dataclasses.replace(fit, contest_gap=gap).with_note(f"{said} (needs > {cfg.min_contest_gap:g})")
    forward, backward = fit_through(_CONTEST_MODEL, best_matrix, ctx.moving.shape, ctx.expected_scale)
    moved = mean_grid_distance(fit.to_fixed, forward, ctx.moving.shape)
    inverted = bool(best.gain < 0) if winner.compared == "intensity" else False  # a slope has no polarity
    taken = dataclasses.replace(fit, model=_CONTEST_MODEL, moving_to_fixed=forward, fixed_to_moving=backward,
                                contest_gap=gap, inverted=inverted, channel=winner.pairing,
                                matched_channel=winner.compared)
    found_on = "" if winner.pairing == fit.channel else f", the {winner.pairing} pairing's best pose"
    return taken.with_note(f"{said}; taken ({moved:.3g} px from the sweep's best{found_on})")
