"""Time two code trees of autoreg on the same benchmark pairs, interleaved pair by pair, in one run.

Run: ``.venv/bin/python tests/bench/bench_compare.py BASE_ROOT NEW_ROOT [--split S] [--categories C ...]
[--per-category N]``, where each root is a checkout of this repository (e.g. ``git worktree add /tmp/base HEAD~1``).
Not collected by pytest.

On a shared machine the time of one pair drifts by a fifth or more between runs an hour apart, so a change's cost is
only seen against a baseline measured alongside it. Two worker processes are started, each importing one tree's
``autoreg`` (the tree's root first on its path, checked); every pair is registered by both, one after the other and
never at once, the order alternating from pair to pair, so that the machine's drift hits both alike. The pairs are
drawn by the checkout this script is in (its ``tests/bench/_cases.py`` and ``autoreg``) and handed to both. Prints,
per category, the time in each tree (in-process ``register``, loading and case generation excluded), the ratio and
the pairs over 1 s, and the pairs whose verdict differs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "tests" / "bench"), str(ROOT)]  # the pairs are drawn with this checkout's code

from _cases import CATEGORIES, SPLITS, make_case

_register: Any = None


def _init(root: str) -> None:
    """Worker start: put ``root``'s autoreg first on the path, one thread, and warm its imports with one pair."""
    global _register
    sys.path[:0] = [root]
    import cv2

    cv2.setNumThreads(1)
    import autoreg

    if not Path(autoreg.__file__).resolve().is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"{root} did not provide autoreg (imported from {autoreg.__file__}).")
    _register = autoreg.register
    case = make_case("calibration", "same_res", 0)
    _register(case.fixed, case.moving, rng=0)


def _time_pair(fixed: Any, moving: Any) -> tuple[float, str]:
    started = time.perf_counter()
    result = _register(fixed, moving, rng=0)
    return time.perf_counter() - started, result.verdict.level


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path, help="checkout whose autoreg is the baseline")
    parser.add_argument("new", type=Path, help="checkout whose autoreg is compared with it")
    parser.add_argument("--split", default="calibration", choices=sorted(SPLITS))
    parser.add_argument("--categories", nargs="*", default=["crop", "same_res", "cross_modal"], choices=CATEGORIES,
                        metavar="CATEGORY")
    parser.add_argument("--per-category", type=int, default=None, help="default: the split's own count")
    args = parser.parse_args(argv)
    for root in (args.base, args.new):
        if not (root / "autoreg" / "__init__.py").is_file():
            parser.error(f"{root} is not a checkout of autoreg (no autoreg/__init__.py).")
    per_category = args.per_category or SPLITS[args.split].per_category
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per tree: nothing imported is shared
    with context.Pool(1, _init, (str(args.base),)) as base, context.Pool(1, _init, (str(args.new),)) as new:
        rows = []
        for category in args.categories:
            for index in range(per_category):
                case = make_case(args.split, category, index)
                pools = (base, new) if index % 2 == 0 else (new, base)
                timed = {id(pool): pool.apply(_time_pair, (case.fixed, case.moving)) for pool in pools}
                rows.append((category, case.case_id, timed[id(base)], timed[id(new)]))
                print(f"  {case.case_id}: {timed[id(base)][0]:.2f} s {timed[id(base)][1]} -> "
                      f"{timed[id(new)][0]:.2f} s {timed[id(new)][1]}", file=sys.stderr)
    print(f"{len(rows)} pairs of split {args.split}, interleaved; base {args.base}, new {args.new}")
    print(f"{'category':20s} {'base s':>8s} {'new s':>8s} {'new/base':>9s} {'>1 s base':>10s} {'>1 s new':>9s}")
    for category in [*args.categories, "all"]:
        sel = [r for r in rows if category in ("all", r[0])]
        if not sel:
            continue
        b, n = sum(r[2][0] for r in sel), sum(r[3][0] for r in sel)
        print(f"{category:20s} {b:8.1f} {n:8.1f} {n / b:9.3f} {sum(r[2][0] > 1 for r in sel):10d} "
              f"{sum(r[3][0] > 1 for r in sel):9d}")
    print(f"median per pair: base {statistics.median(r[2][0] for r in rows):.2f} s, "
          f"new {statistics.median(r[3][0] for r in rows):.2f} s")
    differ = [r for r in rows if r[2][1] != r[3][1]]
    print(f"verdicts that differ: {len(differ)}" + "".join(f"\n  {r[1]}: {r[2][1]} -> {r[3][1]}" for r in differ))


if __name__ == "__main__":
    main()
