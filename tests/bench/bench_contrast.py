"""Trust under a non-monotonic contrast: how often ``ok`` is wrong when the moving scan folds the height.

Run: ``.venv/bin/python tests/bench/bench_contrast.py [--seeds N]``. Not collected by pytest.

Each pair is a same-resolution pair of :func:`test_search.make_search_pair` (96 px moving scan on a 192 px
fixed one, any rotation, no noise or line offsets, terrain features of 1.5 px) whose moving image is replaced by
``|height - q|`` for the quantile ``q`` of 0.3 and of 0.5: a channel that follows the topography up to a fold, as
a phase or amplitude channel may. Seeds 1..N (these pairs are in no split of ``bench_accuracy.py``; nothing was
tuned on them). A result is correct when its mean error over a 5×5 grid is ≤ 2 fixed px (the tolerance at the same
resolution). Prints every pair and the counts: ``ok``, wrong ``ok``, solved (correct whatever the verdict).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from test_search import make_search_pair  # noqa: E402

import autoreg  # noqa: E402
from autoreg.geometry import apply_matrix, mean_grid_distance  # noqa: E402

TOLERANCE_PX = 2.0
QUANTILES = (0.3, 0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=12, help="seeds 1..N, two pairs each (default 12)")
    args = parser.parse_args()
    oks = wrong = solved = total = 0
    for seed in range(1, args.seeds + 1):
        pair = make_search_pair(seed, ratio=1.0, moving_px=96, fixed_px=192, noise=0.0, lines=0.0, feature_px=1.5)
        for q in QUANTILES:
            folded = np.abs(pair.moving - np.quantile(pair.moving, q)).astype(np.float32)
            result = autoreg.register(pair.fixed, folded, rng=0)
            truth = pair.moving_to_fixed
            error = (mean_grid_distance(result.fit.to_fixed, lambda g, m=truth: apply_matrix(m, g), folded.shape)
                     if result.fit is not None else float("inf"))
            correct = bool(error <= TOLERANCE_PX)
            total += 1
            solved += correct
            oks += result.verdict.level == "ok"
            wrong += result.verdict.level == "ok" and not correct
            print(f"seed {seed:2d} q {q:.1f}: {result.verdict.level:14s} {result.source:9s} error {error:8.2f} px"
                  f"{'  WRONG OK' if result.verdict.level == 'ok' and not correct else ''}", flush=True)
    print(f"\n{total} pairs: ok {oks}, wrong ok {wrong}, solved {solved}")


if __name__ == "__main__":
    main()
