"""Cost and significance of :func:`autoreg.search.search_similarity`.

Run: ``.venv/bin/python tests/bench/bench_search.py [--repeats N] [--significance N] [--workers K]``.
Not collected by pytest. Everything runs on one core (BLAS, OpenCV and scipy.fft limited to one thread).

Timing (medians of ``--repeats`` calls, next to the baselines, on the same data, generation excluded):

* ``search``: the 40×40 map against a 1024² scan at a known scale of 25.6 (the seed's case; budget 150 ms), a
  64 px map at ratio 16, a 32 px map at ratio 4 on 512², and a same-resolution 256² pair rotated by 30°;
* the same search with the ``intensity`` and ``gradient`` channels only (no cross-modal pairings), and the
  cost ratio of all channels to those two (the cross-modal pairings run in a second pass only when the first
  has no significant peak, as on these true pairs); and with both passes forced (``first_pass_gap=None``: the
  cost of a pair whose first pass does not stand out, e.g. an unrelated or a cross-modal one);
* ``matchTemplate``: the baseline, one ``cv2.matchTemplate`` (TM_CCOEFF_NORMED) translation sweep of the
  unrotated map over the fixed scan area-reduced to the map's pixel size and zero-padded so partial overlaps
  are scored (one angle, no masks, one channel); the ratio says how many such sweeps one search costs;
* ``matchTemplate × angles``: that baseline repeated over the search's angles (rotating the map with
  ``cv2.warpAffine``): the naive way to sweep rotation;
* the search with its pruning sweep (``prune_px``, the configuration's ``search_prune_px``) against every sample
  (maps of 32 px or more at the default 24 px), with its error and peak gap.

Wall time and process CPU time are both printed: on a shared machine wall time includes waiting for a core.

Significance (``--significance N``): N true pairs and N unrelated (null) pairs drawn from a mix of maps 24–64
px, ratios 4–32, any rotation, half of them inverted, a quarter hanging 30 % over the edge; seeds 10 000+
(the tests use seeds below 100); ``--prune-px P`` runs them with the pruning sweep (maps of 1.3 × P px or more).
Prints quantiles of z-score, best/second ratio and gap, and the false-positive and true-positive rates of candidate
thresholds (with 95 % Clopper–Pearson intervals).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from autoreg.search import search_similarity  # noqa: E402
from test_search import error_px, make_search_pair  # noqa: E402


def one_core() -> None:
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    threadpool_limits(1)


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and median CPU time (seconds) of ``repeats`` calls."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def template_sweep(fixed: np.ndarray, moving: np.ndarray, scale: float, n_angles: int = 1) -> float:
    """The baseline: area-reduce the fixed scan, pad it, and run matchTemplate for ``n_angles`` rotations."""
    import cv2

    rows, cols = moving.shape
    size = (round(fixed.shape[1] / scale), round(fixed.shape[0] / scale))
    reduced = cv2.resize(fixed.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    padded = cv2.copyMakeBorder(reduced, rows - 1, rows - 1, cols - 1, cols - 1, cv2.BORDER_CONSTANT, value=0)
    best = -1.0
    for k in range(n_angles):
        rot = cv2.getRotationMatrix2D(((cols - 1) / 2, (rows - 1) / 2), 360.0 * k / n_angles, 1.0)
        template = moving.astype(np.float32)
        if k:
            template = cv2.warpAffine(template, rot, (cols, rows))
        best = max(best, float(cv2.matchTemplate(padded, template, cv2.TM_CCOEFF_NORMED).max()))
    return best


TIMING_CASES = {
    "map 40 / 1024², ratio 25.6 (budget 150 ms)": dict(seed=11, ratio=25.6, moving_px=40, fixed_px=1024),
    "map 64 / 1024², ratio 16": dict(seed=12, ratio=16.0, moving_px=64, fixed_px=1024),
    "map 32 / 512², ratio 4": dict(seed=13, ratio=4.0, moving_px=32, fixed_px=512),
    "same resolution 256² / 256², 30° (rotated)": dict(seed=14, ratio=1.0, moving_px=256, fixed_px=256,
                                                      feature_px=0.5, angle_deg=30.0),
}


SAME_KIND = ("intensity", "gradient")  # the channels for two images of one kind (no cross-modal pairings)


def run_timing(repeats: int, prune_px: int) -> None:
    print(f"{'case':45s} {'search wall/cpu ms':>20s} {'1 matchTemplate ms':>19s} {'ratio':>6s} "
          f"{'mT×angles ms':>13s} {'error mpx':>9s}")
    for name, kwargs in TIMING_CASES.items():
        pair = make_search_pair(**kwargs)
        result = search_similarity(pair.fixed, pair.moving, scale=pair.ratio)  # warm-up (imports, caches)
        search = timed(lambda: search_similarity(pair.fixed, pair.moving, scale=pair.ratio), repeats)
        same_kind = timed(lambda: search_similarity(pair.fixed, pair.moving, scale=pair.ratio,
                                                    channels=SAME_KIND), repeats)
        both = timed(lambda: search_similarity(pair.fixed, pair.moving, scale=pair.ratio, first_pass_gap=None),
                     repeats)
        base = timed(lambda: template_sweep(pair.fixed, pair.moving, pair.ratio), repeats)
        sweep = timed(lambda: template_sweep(pair.fixed, pair.moving, pair.ratio, result.n_angles),
                      max(1, repeats // 3))
        error = error_px(result, pair) / pair.ratio
        print(f"{name:45s} {search[0] * 1e3:9.1f} / {search[1] * 1e3:7.1f} {base[0] * 1e3:19.2f} "
              f"{search[0] / base[0]:6.0f} {sweep[0] * 1e3:13.1f} {error:9.3f}")
        print(f"{'':45s} (cpu ratio {search[1] / max(base[1], 1e-9):.0f}x; {result.n_angles} angles, "
              f"working pixel {result.working_pixel:.2f} fixed px)")
        print(f"{'':45s} (intensity and gradient channels only: {same_kind[0] * 1e3:.1f} / "
              f"{same_kind[1] * 1e3:.1f} ms; all channels cost {search[0] / same_kind[0]:.2f}x wall, "
              f"{search[1] / max(same_kind[1], 1e-9):.2f}x cpu)")
        print(f"{'':45s} (both passes forced: {both[0] * 1e3:.1f} / {both[1] * 1e3:.1f} ms; "
              f"{both[1] / max(same_kind[1], 1e-9):.2f}x cpu of intensity and gradient only)")
        pruned_result = search_similarity(pair.fixed, pair.moving, scale=pair.ratio, prune_px=prune_px)
        pruned = timed(lambda pair=pair: search_similarity(pair.fixed, pair.moving, scale=pair.ratio,
                                                            prune_px=prune_px), repeats)
        print(f"{'':45s} (pruning sweep at {prune_px} px: {pruned[0] * 1e3:.1f} / {pruned[1] * 1e3:.1f} ms, "
              f"{search[1] / max(pruned[1], 1e-9):.2f}x less cpu; error {error_px(pruned_result, pair) / pair.ratio:.3f}"
              f" moving px, peak gap {pruned_result.peak_gap:.3f} against {result.peak_gap:.3f})")


def sample_config(rng: np.random.Generator) -> dict:
    """A pair configuration: ratio 4–32 (log-uniform), map 24–64 px, field within a 512² scan."""
    while True:
        ratio = float(math.exp(rng.uniform(math.log(4), math.log(32))))
        moving_px = int(rng.integers(24, 65))
        if ratio * moving_px <= 560:
            break
    return dict(ratio=ratio, moving_px=moving_px, fixed_px=512, inverted=bool(rng.random() < 0.5),
                overhang=0.3 if rng.random() < 0.25 else 0.0)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy import stats

    alpha = 1 - level
    lo = stats.beta.ppf(alpha / 2, k, n - k + 1) if k > 0 else 0.0
    hi = stats.beta.ppf(1 - alpha / 2, k + 1, n - k) if k < n else 1.0
    return float(lo), float(hi)


def run_significance(n: int, save: str | None = None, prune_px: int | None = None) -> None:
    rows = {"true": [], "null": []}
    started = time.perf_counter()
    for i in range(n):
        seed = 10_000 + i
        config = sample_config(np.random.default_rng(seed))
        for kind, related in (("true", True), ("null", False)):
            pair = make_search_pair(seed, related=related, **config)
            r = search_similarity(pair.fixed, pair.moving, scale=pair.ratio, prune_px=prune_px)
            error = error_px(r, pair) / pair.ratio if related else math.nan
            rows[kind].append((r.z_score, r.peak_ratio, r.peak_gap, r.score, error, r.channel == "gradient",
                               r.gap_z_score))
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{n} pairs ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    true, null = np.array(rows["true"], float), np.array(rows["null"], float)
    solved = true[:, 4] <= 0.5
    print(f"\ntrue pairs solved (mean 5×5-grid error <= half a moving pixel): {solved.sum()}/{n}; "
          f"error quantiles 50/90/99/max {np.quantile(true[:, 4], [0.5, 0.9, 0.99, 1.0]).round(3)} moving px; "
          f"gradient channel won "
          f"{true[:, 5].mean():.0%} (true), {null[:, 5].mean():.0%} (null)")
    qs = (0.0, 0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99, 1.0)
    print(f"\n{'figure':10s} {'set':5s} " + " ".join(f"q{q:<5g}" for q in qs))
    for col, name in ((0, "z_score"), (1, "ratio"), (2, "gap"), (6, "gap_z"), (3, "score")):
        for kind, data in (("null", null), ("true", true[solved])):
            print(f"{name:10s} {kind:5s} " + " ".join(f"{np.quantile(data[:, col], q):6.2f}" for q in qs))
    print("\nthresholds: false-positive rate on null pairs [95 % CI]; ok rate on solved true pairs; "
          "unsolved true pairs that pass")
    grid = {0: (5.0, 6.0, 6.5, 7.0, 7.5, 8.0), 1: (1.1, 1.15, 1.2, 1.25, 1.3, 1.4),
            2: (0.05, 0.08, 0.1, 0.12, 0.15), 6: (0.5, 0.75, 1.0, 1.5, 2.0)}
    names = {0: "z_score", 1: "ratio", 2: "gap", 6: "gap_z"}
    for col, values in grid.items():
        for value in values:
            fp = int((null[:, col] > value).sum())
            lo, hi = clopper_pearson(fp, n)
            tp = (true[solved, col] > value).mean()
            wrong = int(((true[:, col] > value) & ~solved).sum())
            print(f"  {names[col]:8s} > {value:5.2f}: FPR {fp}/{n} = {fp / n:.3f} [{lo:.3f}, {hi:.3f}]; "
                  f"TPR {tp:.3f}; unsolved passing {wrong}")
    for gap, ratio in ((0.08, 1.15), (0.1, 1.2), (0.12, 1.25)):
        passes_null = (null[:, 2] > gap) & (null[:, 1] > ratio)
        passes_true = (true[:, 2] > gap) & (true[:, 1] > ratio)
        fp = int(passes_null.sum())
        lo, hi = clopper_pearson(fp, n)
        print(f"  gap > {gap:.2f} and ratio > {ratio:.2f}: FPR {fp}/{n} = {fp / n:.3f} [{lo:.3f}, {hi:.3f}]; "
              f"TPR {passes_true[solved].mean():.3f}; unsolved passing {int((passes_true & ~solved).sum())}")
    if save:
        np.savez(save, true=true, null=null, columns=np.array(["z", "ratio", "gap", "score", "error_mpx",
                                                                "gradient", "gap_z"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--significance", type=int, default=0, help="pairs of each kind (0: timing only)")
    parser.add_argument("--no-timing", action="store_true")
    parser.add_argument("--save", help="write the per-pair figures of --significance to this .npz")
    parser.add_argument("--prune-px", type=int, default=0,
                        help="--significance with the pruning sweep at this size (0: every sample); timing always "
                             "compares the configuration's search_prune_px with every sample")
    args = parser.parse_args()
    one_core()
    if not args.no_timing:
        from autoreg.config import RegistrationConfig

        run_timing(args.repeats, RegistrationConfig().search_prune_px)
    if args.significance:
        run_significance(args.significance, args.save, args.prune_px or None)


if __name__ == "__main__":
    main()
