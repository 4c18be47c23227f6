"""How the refinement's Gauss–Newton solver converges on the accuracy benchmark's pairs, and why it is slow to.

Run (from the repository root)::

    .venv/bin/python tests/bench/bench_convergence.py [--split calibration] [--per-category 4] [--line-search 40]

Not collected by pytest. Every registration of the chosen pairs runs as ``autoreg.register`` does (each strategy,
each trust step); the solver's finest pyramid level is watched from outside (the private ``refine._solve`` and
``refine._gauss_newton`` are wrapped for the run; nothing of autoreg changes). Use a tuning split (``calibration``,
``lattice``): this is a diagnosis of where the refinement's time goes, and a change it motivates is tuned there.

Reported, over every finest-level solve (each ``refine_matrix`` call solves one or two: the hold-out half, then the
whole grid):

* **capped**: solves that stopped at the iteration cap (``refine_max_iterations``) instead of converging (an update
  moving the grid by less than ``tol_px``), and the share of all finest-level iterations spent in them;
* **contraction**: per solve, the median ratio of consecutive updates' sizes while they are between 1 px and
  ``tol_px`` (a Gauss–Newton solve that converges quadratically has ratios near 0; a ratio ``q`` means each step
  covers ``1 − q`` of the remaining distance, so the steps are ``1 / (1 − q)`` times too short);
* **best step**: at the end of the first ``--line-search`` capped solves, the multiple of the next Gauss–Newton step
  (0.5-3) that lowers the solver's own objective (the weighted squared residuals, robust weights and scale held)
  most. 1 means the step is the right length.

With ``--contests`` (instead of the above), every search contest of the run (:func:`autoreg.contest.contest`, whose
half fits are most of the capped solves) is decided twice: as it ran, and with each of its poses refined with at most
``--contest-iterations`` updates per level instead (300: solved on to convergence; fewer: what a lower cap would
decide). Each winner is checked against the pair's truth. Reported: the contests decided (a gap above
``min_contest_gap`` from a converged, explained best) each way and how many of them on a wrong pose, the largest lead
of a wrong winner that was evidence, the contests whose decision or winner changes, and how the gaps move.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import statistics
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _cases import CATEGORIES, SPLITS, case_specs, grid_error, make_case

from autoreg import contest, refine
from autoreg.confidence import contest_stands_out
from autoreg.geometry import apply_matrix
from autoreg.pipeline import register

#: Multiples of the Gauss–Newton step tried by the line search.
STEP_MULTIPLES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
#: Updates larger than this (level px) are the far phase, where the quadratic model does not hold yet.
LINEAR_PHASE_PX = 1.0


@dataclass
class Solve:
    """One finest-level solve: the size of each update (level px), whether it converged, who asked for it, and the
    line search's best step multiple at its end (NaN when not searched)."""

    model: str
    moves: list[float]
    converged: bool
    caller: str  # the first autoreg function outside autoreg.refine on the stack: who asked for the refinement
    best_step: float = float("nan")


@dataclass
class Watch:
    """What the wrapped solver records over a run."""

    solves: list[Solve] = field(default_factory=list)
    finest: list[Any] = field(default_factory=list)  # the finest level of each _solve in progress (a stack)
    line_searches_left: int = 0


def _update_px(level: Any, before: np.ndarray, after: np.ndarray) -> float:
    """How far the update from ``before`` to ``after`` moved the level's corners (level px), measured as the solver
    measures it (:func:`autoreg.refine._update_px`)."""
    increment = np.linalg.inv(before @ level.to_level0) @ after @ level.to_level0
    return refine._update_px(level, increment / increment[2, 2])


def _caller() -> str:
    """``module.function`` of the innermost autoreg frame outside :mod:`autoreg.refine` on the stack."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("autoreg.") and module != "autoreg.refine":
            return f"{module.removeprefix('autoreg.')}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


def _best_step(level: Any, matrix: np.ndarray, opts: Any) -> float:
    """The multiple of the Gauss–Newton step at ``matrix`` that lowers ``Σ w r²`` most (weights, scale held)."""
    state = refine._evaluate(level, matrix, opts, level.fit_mask)
    k = len(refine.MODELS[opts.model])
    delta = refine._step(state)[:k]
    back = np.linalg.inv(level.to_level0)
    values = []
    for multiple in STEP_MULTIPLES:
        moved = matrix @ level.to_level0 @ refine._delta(opts.model, multiple * delta) @ back
        try:
            trial = refine._evaluate(level, moved, opts, level.fit_mask, state.scale or None)
        except refine.EstimationError:
            values.append(np.inf)
            continue
        weights = refine._robust_weights(trial.residual, opts.loss, opts.tuning, state.scale or None)[0]
        values.append(float(np.sum(weights * trial.residual**2) / np.sum(weights)))
    return STEP_MULTIPLES[int(np.argmin(values))]


@contextlib.contextmanager
def watching(watch: Watch) -> Iterator[Watch]:
    """Inside, the solver's two private loops are wrapped so that ``watch`` sees every finest-level solve; they are
    restored on leaving."""
    solve, gauss_newton = refine._solve, refine._gauss_newton

    def watched_solve(levels: list[Any], *args: Any, **kwargs: Any) -> Any:
        watch.finest.append(levels[-1])
        try:
            return solve(levels, *args, **kwargs)
        finally:
            watch.finest.pop()

    def watched_gauss_newton(level: Any, matrix: np.ndarray, opts: Any, tol_px: float, started: bool = False,
                             within: Any = None) -> Any:
        if not watch.finest or level is not watch.finest[-1]:
            return gauss_newton(level, matrix, opts, tol_px, started, within)
        seen = [np.asarray(matrix, float)]

        def record(moved: np.ndarray) -> None:
            seen.append(np.asarray(moved, float))
            if within is not None:
                within(moved)

        result = gauss_newton(level, matrix, opts, tol_px, started, record)
        moves = [_update_px(level, a, b) for a, b in itertools.pairwise(seen)]
        entry = Solve(opts.model, moves, bool(result[2]), _caller())
        if not entry.converged and watch.line_searches_left > 0:
            watch.line_searches_left -= 1
            entry.best_step = _best_step(level, result[0], opts)
        watch.solves.append(entry)
        return result

    refine._solve, refine._gauss_newton = watched_solve, watched_gauss_newton
    try:
        yield watch
    finally:
        refine._solve, refine._gauss_newton = solve, gauss_newton


@dataclass
class Contest:
    """One search contest decided twice: on its solves as run (``as_run``) and with another iteration cap
    (``other``); each a :class:`Decision`."""

    case: str
    as_run: Decision
    other: Decision
    n_poses: int
    capped: int  # the contest's solves that stopped at the cap as it ran
    moved: bool  # the two winners are separate optima (contest._apart)


@dataclass
class Decision:
    """A contest's outcome by its own rules: the winner's lead (``gap``, NaN without an optimum elsewhere), whether
    the winner is evidence at all (converged, explained by a linear contrast), whether the contest is decided (both,
    and the gap above ``min_contest_gap``), and whether the winner is right (within the pair's tolerance of the
    truth; None for a pair without one)."""

    gap: float
    evidence: bool
    decided: bool
    right: bool | None


def _decided(ctx: Any, optima: list[Any], case: Any) -> tuple[int, Decision]:
    """The contest's winner (an index into ``optima``) and its :class:`Decision`, by the contest's own rules."""
    standing = contest._standing(ctx, optima)
    winner = optima[standing.winner]
    evidence = not contest._not_evidence(winner, ctx.config.min_refined_correlation)
    right = None
    if case is not None and case.truth is not None:
        right = grid_error(case, lambda g: apply_matrix(winner.matrix, g)) <= case.tolerance_px
    decided = evidence and contest_stands_out(standing.gap, ctx.config)
    return standing.winner, Decision(standing.gap, evidence, bool(decided), right)


@contextlib.contextmanager
def watching_contests(record: list[Contest], iterations: int, case: list[Any]) -> Iterator[list[Contest]]:
    """Inside, every contest's poses are also refined with ``iterations`` updates per level at most and the contest
    decided on both (appended to ``record``; ``case[0]`` is the pair's name and ``case[1]`` the benchmark case, or
    None); the contest goes on with the solves as run. Restored on leaving."""
    refined_poses = contest._refined_poses

    def watched(ctx: Any, poses: list[Any], max_iterations: int) -> list[Any]:
        optima = refined_poses(ctx, poses, max_iterations)
        solved = refined_poses(ctx, poses, iterations)
        if optima and solved:
            (first, as_run), (second, other) = _decided(ctx, optima, case[1]), _decided(ctx, solved, case[1])
            record.append(Contest(case[0], as_run, other, len(poses), sum(not o.refined.converged for o in optima),
                                  contest._apart(ctx, optima[first].matrix, solved[second].matrix)))
        return optima

    contest._refined_poses = watched
    try:
        yield record
    finally:
        contest._refined_poses = refined_poses


def report_contests(record: list[Contest], iterations: int) -> None:
    """Print how deciding each contest with at most ``iterations`` updates per level changes it."""
    def said(d: Decision) -> str:
        gap = f"{d.gap:.3f}" if math.isfinite(d.gap) else "none"
        right = {True: "right", False: "WRONG", None: "no truth"}[d.right]
        return f"gap {gap}, {'decided' if d.decided else 'evidence' if d.evidence else 'no evidence'}, winner {right}"

    print(f"contests: {len(record)} ({sum(c.n_poses for c in record)} poses, {sum(c.capped for c in record)} solves "
          f"capped as run)")
    for name, pick in (("as run", lambda c: c.as_run), (f"with {iterations} iterations", lambda c: c.other)):
        decisions = [pick(c) for c in record]
        wrong = [d.gap for d in decisions if d.evidence and d.right is not True and math.isfinite(d.gap)]
        right = [d.gap for d in decisions if d.decided and d.right is True]
        print(f"  {name:22s} decided {sum(d.decided for d in decisions):3d} (winner right {len(right)}, smallest gap "
              + (f"{min(right):.3f}" if right else "none") + ", wrong or no truth "
              f"{sum(d.decided and d.right is not True for d in decisions)}); largest gap of an evidence-bearing "
              f"winner that is wrong or has no truth: " + (f"{max(wrong):.3f}" if wrong else "none"))
    flipped = [c for c in record if c.as_run.decided != c.other.decided]
    moved = [c for c in record if c.moved]
    print(f"decisions that change: {len(flipped)}; winners that move to another optimum: {len(moved)} (of them decided "
          f"as run: {sum(c.as_run.decided for c in moved)})")
    doubtful = [c for c in record if any(d.decided and d.right is not True for d in (c.as_run, c.other))]
    print(f"contests decided on a winner that is wrong or has no truth (either way): {len(doubtful)}")
    listed = []
    for c in doubtful + flipped + [c for c in moved if c.as_run.decided or c.other.decided]:
        if any(c is seen for seen in listed):
            continue
        listed.append(c)
        print(f"  {c.case:40s} as run: {said(c.as_run)}; with {iterations}: {said(c.other)}")
    change = [c.other.gap - c.as_run.gap for c in record if c.as_run.decided and math.isfinite(c.other.gap)]
    print(f"gap change of the contests decided as run ({iterations} iterations - as run): {quartiles(change)}"
          + (f", range {min(change):+.3f} to {max(change):+.3f}" if change else ""))


def contraction(moves: list[float], tol_px: float) -> float:
    """Median ratio of consecutive update sizes in the linear phase (NaN with fewer than three such ratios)."""
    ratios = [b / a for a, b in itertools.pairwise(moves) if tol_px < b and a < LINEAR_PHASE_PX and a > 0]
    return statistics.median(ratios) if len(ratios) >= 3 else float("nan")


def quartiles(values: list[float]) -> str:
    values = [v for v in values if np.isfinite(v)]
    if len(values) < 2:
        return f"n={len(values)}"
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return f"median {q2:.2f} (quartiles {q1:.2f}-{q3:.2f}, n={len(values)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="calibration", choices=sorted(SPLITS))
    parser.add_argument("--per-category", type=int, default=4)
    parser.add_argument("--categories", nargs="+", default=None, choices=CATEGORIES)
    parser.add_argument("--line-search", type=int, default=40, help="capped solves searched along their next step")
    parser.add_argument("--contests", action="store_true", help="decide each search contest on converged solves too")
    parser.add_argument("--contest-iterations", type=int, default=300, help="updates per level, second decision")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # one BLAS and one OpenCV thread: register sets them itself
    categories = args.categories or [c for c in CATEGORIES if not (args.split == "lattice" and c == "negative")]
    watch = Watch(line_searches_left=args.line_search)
    tol_px = 1e-3  # refine_matrix's default, which every caller keeps
    started = time.process_time()
    specs = case_specs(args.split, categories, args.per_category)
    if args.contests:
        record: list[Contest] = []
        current: list[Any] = ["", None]
        with watching_contests(record, args.contest_iterations, current):
            for split, category, index in specs:
                case = make_case(split, category, index)
                current[:] = [f"{split}/{category}/{index:03d}", case]
                register(case.fixed, case.moving, rng=0, cube_step=None)
        print(f"split {args.split} (tuning material: {args.split in ('calibration', 'lattice')}), {len(specs)} pairs "
              f"({args.per_category} per category), {time.process_time() - started:.1f} s CPU")
        report_contests(record, args.contest_iterations)
        return
    with watching(watch):
        for split, category, index in specs:
            case = make_case(split, category, index)
            register(case.fixed, case.moving, rng=0, cube_step=None)
    cpu = time.process_time() - started
    solves = watch.solves
    capped = [s for s in solves if not s.converged]
    iterations = sum(len(s.moves) for s in solves)
    in_capped = sum(len(s.moves) for s in capped)
    q = [contraction(s.moves, tol_px) for s in solves]
    print(f"split {args.split} (tuning material: {args.split in ('calibration', 'lattice')}), {len(specs)} pairs "
          f"({args.per_category} per category), {cpu:.1f} s CPU with the line searches")
    print(f"finest-level solves: {len(solves)}; converged {len(solves) - len(capped)}, capped {len(capped)} "
          f"({len(capped) / max(len(solves), 1):.0%})")
    print(f"finest-level iterations: {iterations}; in capped solves {in_capped} ({in_capped / max(iterations, 1):.0%});"
          f" per solve {quartiles([float(len(s.moves)) for s in solves])}")
    print(f"contraction per iteration (update k+1 / update k, linear phase): {quartiles(q)}")
    implied = [1 / (1 - v) for v in q if np.isfinite(v) and v < 1]
    print(f"  -> the steps are this many times too short: {quartiles(implied)}")
    print(f"best multiple of the next step at a capped solve's end (of {', '.join(map(str, STEP_MULTIPLES))}): "
          f"{quartiles([s.best_step for s in capped])}")
    for name, key in (("model", lambda s: s.model), ("caller", lambda s: s.caller)):
        groups: dict[str, list[Solve]] = {}
        for s in solves:
            groups.setdefault(key(s), []).append(s)
        print(f"by {name}:")
        for value, group in sorted(groups.items(), key=lambda item: -sum(len(s.moves) for s in item[1])):
            n_capped = sum(not s.converged for s in group)
            print(f"  {value:36s} solves {len(group):4d}, capped {n_capped:4d}, iterations "
                  f"{sum(len(s.moves) for s in group):5d}; contraction "
                  f"{quartiles([contraction(s.moves, tol_px) for s in group])}")


if __name__ == "__main__":
    main()
