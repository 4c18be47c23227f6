"""Accuracy and verdict trust on seeded pairs with exact truth, in tuning and report splits.

Run (from the repository root)::

    .venv/bin/python tests/bench/bench_accuracy.py --split evaluation --no-baselines --out eval.jsonl
    .venv/bin/python tests/bench/bench_accuracy.py --split calibration --out cal.jsonl      # with baselines
    .venv/bin/python tests/bench/bench_accuracy.py --report eval.jsonl                     # report again, no rerun

Not collected by pytest (a small slice of the calibration split runs as ``tests/test_accuracy_slice.py``).
Thresholds may be tuned on ``calibration`` (and on ``lattice``, a tuning split of periodic content) only; ``evaluation`` shares no seed and no source image with it (the
splits, sources and seed ranges are in ``_cases.py`` and printed with every report). ``holdout`` (no seed or image
in common with either) is run once after changes made while the evaluation split's results were known. Holdout's
wrong ``ok``s have since been read case by case, and so have ``audit``'s and ``blind``'s; ``sealed``'s, ``vault``'s,
``reserve``'s, ``locker``'s and ``cabinet``'s aggregates have been published, ``shelf``'s and ``crate``'s wrong
``ok``s read case by case; ``hamper`` (no seed or image in common with any other split, synthetic scenes only) is
the split nobody has looked at: run it after a stop's changes are final and report its aggregates.
The lattice split has no ``negative`` category: run it with ``--categories`` and the others. The evaluation split
draws pairs from the real PFM scan in ``../shared/data`` next to the checkout; where it is missing (a worktree
elsewhere) the run stops unless ``--allow-missing-pfm`` is given, since those pairs would come from other sources.

A positive is correct when the mean distance over a 5x5 grid spanning the moving image, between the method's
moving -> fixed map and the true map, is <= max(2 fixed px, half a moving pixel in fixed px). Negatives (``negative``,
``near_neighbour``) have no correct answer. ``ok`` is a promise of correctness: flag precision is P(correct | ok),
flag recall is P(not ok | wrong or impossible). All rates carry a 95 % Wilson interval.

Baselines (no verdict): OpenCV ORB + RANSAC, scikit-image ORB + ransac, phase correlation. They get the scale prior
autoreg gets (pixel sizes from metadata, else the image-size ratio when it is outside 0.5-2): the moving image is
resized by the expected scale before they see it and the resize is composed back into their matrix.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # one thread per worker process: the workers already run in parallel
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (str(ROOT), str(HERE)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from _cases import (
    CATEGORIES,
    POSITIVE_CATEGORIES,
    SPLITS,
    Case,
    case_specs,
    describe_splits,
    grid_error,
    make_case,
)
from _sources import PFM_PATH, pfm_available

NEGATIVE_CATEGORIES = tuple(c for c in CATEGORIES if c not in POSITIVE_CATEGORIES)
Answer = dict[str, Any]  # {"fn": callable or None, "verdict": str, "reasons": list, "result": dict or None}


# --------------------------------------------------------------------------------------------------- methods


def _data(image: Any) -> np.ndarray:
    return np.asarray(getattr(image, "data", image), float)


def expected_scale(case: Case) -> float:
    """Expected size of a moving pixel in fixed pixels, the prior autoreg uses.

    From the pixel sizes when both inputs carry them (same units), else the image-size ratio when it is outside
    0.5-2 (both scans assumed to cover about the same field of view), else 1.
    """
    fixed_size = getattr(case.fixed, "pixel_size_xy", None)
    moving_size = getattr(case.moving, "pixel_size_xy", None)
    if fixed_size and moving_size and getattr(case.fixed, "units", None) == getattr(case.moving, "units", None):
        return float(np.sqrt(np.prod(np.asarray(moving_size, float) / np.asarray(fixed_size, float))))
    ratio = float(np.sqrt(np.prod(np.asarray(_data(case.fixed).shape, float)
                                  / np.asarray(_data(case.moving).shape, float))))
    return 1.0 if 0.5 <= ratio <= 2.0 else ratio


def _prior_moving(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The moving image resized by the expected scale, and the matrix moving px -> resized px."""
    import cv2

    moving = _data(case.moving).astype(np.float32)
    scale = expected_scale(case)
    if abs(scale - 1.0) < 1e-6:
        return moving, np.eye(3)
    rows, cols = moving.shape
    new = (max(2, round(cols * scale)), max(2, round(rows * scale)))
    sx, sy = new[0] / cols, new[1] / rows
    flags = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    resized = cv2.resize(moving, new, interpolation=flags)
    return resized, np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def _matrix_fn(matrix: np.ndarray | None) -> Callable[[np.ndarray], np.ndarray] | None:
    if matrix is None or not np.all(np.isfinite(matrix)):
        return None
    m = np.asarray(matrix, float)

    def apply(xy: np.ndarray) -> np.ndarray:
        h = np.column_stack([xy, np.ones(len(xy))]) @ m.T
        return h[:, :2] / h[:, 2:]

    return apply


def _baseline(matrix: np.ndarray | None, resize: np.ndarray) -> Answer:
    full = None if matrix is None else np.asarray(matrix, float) @ resize
    return {"fn": _matrix_fn(full), "verdict": "n/a", "reasons": [], "result": None}


#: ``--time-budget``: seconds per pair (``RegistrationConfig.time_budget_s``); None, the default, runs every strategy.
#: Set before the workers fork, so they inherit it.
TIME_BUDGET_S: float | None = None


def run_autoreg(case: Case) -> Answer:
    """autoreg.register with its defaults (model auto, seed 0), under ``TIME_BUDGET_S`` when set."""
    import autoreg

    config = None if TIME_BUDGET_S is None else autoreg.RegistrationConfig(time_budget_s=TIME_BUDGET_S)  # None: runs
    result = autoreg.register(case.fixed, case.moving, model="auto", rng=0, config=config)  # older trees too
    fit_fn = result.fit.moving_to_fixed if result.fit is not None else None
    answer = fit_fn if result.verdict.level != "failed" else None
    return {"fn": answer, "fit_fn": fit_fn, "verdict": result.verdict.level, "reasons": list(result.verdict.reasons),
            "result": result.to_dict()}


def _u8(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [0.5, 99.5])
    return np.clip((image - lo) / ((hi - lo) or 1) * 255, 0, 255).astype(np.uint8)


def run_opencv_orb(case: Case) -> Answer:
    """Plain OpenCV: ORB on the fixed image and the prior-resized moving one, cross-checked matching, RANSAC affine."""
    import cv2

    moving, resize = _prior_moving(case)
    orb = cv2.ORB_create(2000)
    kf, df = orb.detectAndCompute(_u8(_data(case.fixed)), None)
    km, dm = orb.detectAndCompute(_u8(moving), None)
    if df is None or dm is None or len(kf) < 3 or len(km) < 3:
        return _baseline(None, resize)
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(dm, df)
    if len(matches) < 3:
        return _baseline(None, resize)
    src = np.float32([km[m.queryIdx].pt for m in matches])
    dst = np.float32([kf[m.trainIdx].pt for m in matches])
    matrix, _ = cv2.estimateAffine2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
    return _baseline(None if matrix is None else np.vstack([matrix, [0, 0, 1]]), resize)


def run_skimage_orb(case: Case) -> Answer:
    """scikit-image ORB + match_descriptors + ransac (affine) on the prior-resized moving image."""
    from skimage.feature import ORB, match_descriptors
    from skimage.measure import ransac
    from skimage.transform import AffineTransform

    moving, resize = _prior_moving(case)

    def features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        orb = ORB(n_keypoints=800, fast_threshold=0.05)
        orb.detect_and_extract(_u8(image) / 255.0)
        return orb.keypoints[:, ::-1], orb.descriptors

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            kf, df = features(_data(case.fixed))
            km, dm = features(moving)
            pairs = match_descriptors(dm, df, cross_check=True)
            if len(pairs) < 3:
                return _baseline(None, resize)
            model, _ = ransac((km[pairs[:, 0]], kf[pairs[:, 1]]), AffineTransform, min_samples=3,
                              residual_threshold=3.0, max_trials=500, rng=0)
        except (RuntimeError, ValueError, IndexError):  # featureless image or degenerate sample: no answer
            return _baseline(None, resize)
    return _baseline(None if model is None else model.params, resize)


def run_phase_correlation(case: Case) -> Answer:
    """Translation by phase correlation: the prior-resized moving image centred on a canvas of the fixed size."""
    from skimage.registration import phase_cross_correlation

    fixed = _data(case.fixed)
    moving, resize = _prior_moving(case)
    rows, cols = fixed.shape
    crop_y, crop_x = max(0, (moving.shape[0] - rows) // 2), max(0, (moving.shape[1] - cols) // 2)
    moving = moving[crop_y : crop_y + rows, crop_x : crop_x + cols]
    canvas = np.full(fixed.shape, float(np.mean(moving)))
    oy, ox = (rows - moving.shape[0]) // 2, (cols - moving.shape[1]) // 2
    canvas[oy : oy + moving.shape[0], ox : ox + moving.shape[1]] = moving
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shift = phase_cross_correlation(fixed - fixed.mean(), canvas - canvas.mean(), upsample_factor=10)[0]
    dx, dy = float(shift[1]) + ox - crop_x, float(shift[0]) + oy - crop_y
    return _baseline(np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]]), resize)


METHODS: dict[str, Callable[[Case], Answer]] = {"autoreg": run_autoreg, "opencv_orb": run_opencv_orb,
                                                "skimage_orb": run_skimage_orb, "phase_corr": run_phase_correlation}


# --------------------------------------------------------------------------------------------------- running


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def evaluate_case(case: Case, method: str) -> dict[str, Any]:
    """Run one method on one case and return its row (a crash is recorded, not raised)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        answer = METHODS[method](case)
        crashed = None
    except Exception as err:  # noqa: BLE001 - a crash is a result of the benchmark, recorded with its type
        answer = {"fn": None, "verdict": "crash", "reasons": [f"crash: {type(err).__name__}: {err}"], "result": None}
        crashed = f"{type(err).__name__}: {err}"
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    error = grid_error(case, answer["fn"])
    result = answer.get("result") or {}
    predicted = result.get("predicted_error_px", result.get("uncertainty_px"))
    return {
        "case": case.case_id, "split": case.split, "category": case.category, "kind": case.kind,
        "source": case.source, "positive": case.positive, "method": method,
        "tolerance_px": case.tolerance_px, "moving_pixel_px": case.moving_pixel_px,
        "error_px": _finite_or_none(error),
        "fit_error_px": _finite_or_none(grid_error(case, answer.get("fit_fn", answer["fn"]))),
        "correct": bool(case.positive and error <= case.tolerance_px),
        "verdict": answer["verdict"], "reasons": answer["reasons"], "predicted_error_px": predicted,
        "seconds": seconds, "cpu_seconds": cpu_seconds, "crashed": crashed, "params": case.params,
        "result": answer.get("result"),
    }


def _run_spec(job: tuple[tuple[str, str, int], tuple[str, ...]]) -> list[dict[str, Any]]:
    (split, category, index), methods = job
    case = make_case(split, category, index)
    return [evaluate_case(case, m) for m in methods]


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)
    warnings.simplefilter("ignore")  # library chatter; autoreg's own warnings policy applies inside register()
    # one pair first, so that no case's time holds the lazy imports and caches of a fresh process
    run_autoreg(make_case("calibration", "same_res", 0))


def run(specs: list[tuple[str, str, int]], methods: tuple[str, ...], *, workers: int = 2,
        out: Path | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Run ``methods`` on every case of ``specs`` with ``workers`` processes; rows in ``specs`` order.

    Rows are appended to ``out`` (JSON lines) as they arrive, so an interrupted run keeps what it measured.
    """
    jobs = [(spec, methods) for spec in specs]
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    sink = open(out, "w") if out else None  # noqa: SIM115 - closed below, written row by row
    try:
        if workers <= 1:
            _init_worker()
            results: Iterable[list[dict[str, Any]]] = map(_run_spec, jobs)
            pool = None
        else:
            import multiprocessing

            pool = multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker)
            results = pool.imap_unordered(_run_spec, jobs, chunksize=1)
        for n, case_rows in enumerate(results, 1):
            rows.extend(case_rows)
            if sink:
                for row in case_rows:
                    sink.write(json.dumps(row) + "\n")
                sink.flush()
            if progress and (n % 25 == 0 or n == len(jobs)):
                print(f"  {n}/{len(jobs)} cases, {time.perf_counter() - started:.0f} s", file=sys.stderr)
        if pool is not None:
            pool.close()
            pool.join()
    finally:
        if sink:
            sink.close()
    order = {(s[0], s[1], s[2]): i for i, s in enumerate(specs)}
    return sorted(rows, key=lambda r: (order.get(_spec_of(r["case"]), 0), list(METHODS).index(r["method"])))


def _spec_of(case_id: str) -> tuple[str, str, int]:
    split, category, index = case_id.split("/")
    return split, category, int(index)


# --------------------------------------------------------------------------------------------------- report


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion ``k / n`` (NaN, NaN when n is 0).

    Examples
    --------
    >>> [round(v, 3) for v in wilson(0, 10)]
    [0.0, 0.278]
    """
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(k: int, n: int) -> str:
    if n == 0:
        return "n/a"
    lo, hi = wilson(k, n)
    return f"{k}/{n} = {100 * k / n:.1f}% [{100 * lo:.1f}, {100 * hi:.1f}]"


def _median(values: Iterable[float | None]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def _cell(rows: list[dict[str, Any]], positive: bool) -> str:
    n = len(rows)
    if not positive:
        if rows[0]["method"] != "autoreg":
            return "n/a"
        k = sum(r["verdict"] == "failed" for r in rows)
        lo, hi = wilson(k, n)
        n_ok = sum(r["verdict"] == "ok" for r in rows)
        return f"fail {100 * k / n:3.0f}% [{100 * lo:3.0f},{100 * hi:3.0f}] ok {n_ok}"
    k = sum(r["correct"] for r in rows)
    lo, hi = wilson(k, n)
    err = _median(r["error_px"] for r in rows if r["correct"])
    ms = 1e3 * _median(r["seconds"] for r in rows)
    return f"{100 * k / n:3.0f}% [{100 * lo:3.0f},{100 * hi:3.0f}] {err:5.2f}px {ms:5.0f}ms"


def _category_table(rows: list[dict[str, Any]], methods: list[str]) -> list[str]:
    categories = [c for c in CATEGORIES if any(r["category"] == c for r in rows)]
    width = 38
    lines = [("per category: success [95% Wilson] median error of correct results, median time; "
             "negatives: autoreg 'failed' rate and ok count"),
             f"{'category':20s} {'n':>4s} " + " ".join(f"{m:>{width}s}" for m in methods)]
    for category in categories:
        sel = [r for r in rows if r["category"] == category]
        n = len({r["case"] for r in sel})
        cells = [_cell([r for r in sel if r["method"] == m], category in POSITIVE_CATEGORIES) for m in methods]
        lines.append(f"{category:20s} {n:4d} " + " ".join(f"{c:>{width}s}" for c in cells))
    return lines


def _verdict_table(ours: list[dict[str, Any]]) -> list[str]:
    lines = ["autoreg verdicts per category: ok (wrong ok), low_confidence, failed, crash; correct not ok"]
    for category in [c for c in CATEGORIES if any(r["category"] == c for r in ours)]:
        sel = [r for r in ours if r["category"] == category]
        count = {v: sum(r["verdict"] == v for r in sel) for v in ("ok", "low_confidence", "failed", "crash")}
        wrong_ok = sum(r["verdict"] == "ok" and not r["correct"] for r in sel)
        lost = sum(r["correct"] and r["verdict"] != "ok" for r in sel)
        lines.append(f"  {category:20s} ok {count['ok']:3d} ({wrong_ok:2d} wrong)  low {count['low_confidence']:3d}  "
                     f"failed {count['failed']:3d}  crash {count['crash']:2d}  correct-not-ok {lost:3d}")
    return lines


def _kind_table(ours: list[dict[str, Any]]) -> list[str]:
    lines = ["autoreg by kind: success (positives) or failed (negatives); wrong ok"]
    keys = sorted({(r["category"], r["kind"]) for r in ours}, key=lambda k: (CATEGORIES.index(k[0]), k[1]))
    for category, kind in keys:
        sel = [r for r in ours if r["category"] == category and r["kind"] == kind]
        wrong_ok = sum(r["verdict"] == "ok" and not r["correct"] for r in sel)
        if category in POSITIVE_CATEGORIES:
            k = sum(r["correct"] for r in sel)
        else:
            k = sum(r["verdict"] == "failed" for r in sel)
        lines.append(f"  {category + '/' + kind:42s} {k:3d}/{len(sel):3d}  wrong ok {wrong_ok}")
    return lines


def _trust_lines(ours: list[dict[str, Any]]) -> list[str]:
    positives = [r for r in ours if r["positive"]]
    negatives = [r for r in ours if not r["positive"]]
    ok = [r for r in ours if r["verdict"] == "ok"]
    wrong = [r for r in ours if not r["correct"]]
    correct = [r for r in ours if r["correct"]]
    lost = [r for r in correct if r["verdict"] != "ok"]
    accurate_failed = [r for r in positives if r["verdict"] == "failed" and r["fit_error_px"] is not None
                       and r["fit_error_px"] <= r["tolerance_px"]]
    crashes = [r for r in ours if r["crashed"]]
    lines = [
        f"autoreg success on positives: {_rate(len(correct), len(positives))}",
        f"flag precision (ok => correct): {_rate(sum(r['correct'] for r in ok), len(ok))}",
        f"flag recall (wrong or impossible => not ok): {_rate(sum(r['verdict'] != 'ok' for r in wrong), len(wrong))}",
        (f"negatives failed: {_rate(sum(r['verdict'] == 'failed' for r in negatives), len(negatives))}; "
        f"negatives ok: {sum(r['verdict'] == 'ok' for r in negatives)}"),
        (f"correct results not ok: {len(lost)} of {len(correct)} correct "
        f"({sum(r['verdict'] == 'low_confidence' for r in lost)} low_confidence, "
        f"{sum(r['verdict'] == 'failed' for r in lost)} failed); "
        f"positives 'failed' although the fit was accurate: {len(accurate_failed)}"),
        _calibration_line(ours),
        f"crashes: {len(crashes)}" + (f" ({', '.join(r['case'] for r in crashes[:10])})" if crashes else ""),
    ]
    return lines


def _calibration_line(ours: list[dict[str, Any]]) -> str:
    """Among non-failed positives within 10x the tolerance: fraction whose true error <= 2 x predicted error."""
    near = [r for r in ours if r["positive"] and r["verdict"] not in ("failed", "crash")
            and r["error_px"] is not None and r["error_px"] <= 10 * r["tolerance_px"]]
    usable = [r for r in near if r["predicted_error_px"] is not None and math.isfinite(r["predicted_error_px"])]
    covered = sum(r["error_px"] <= 2 * r["predicted_error_px"] for r in usable)
    key = "predicted_error_px" if any("predicted_error_px" in (r["result"] or {}) for r in usable) else "uncertainty_px"
    ratio = _median(r["error_px"] / r["predicted_error_px"] for r in usable if r["predicted_error_px"] > 0)
    return (f"uncertainty calibration ({key}): error <= 2 x predicted in {_rate(covered, len(usable))} of "
            f"non-failed positives within 10x tolerance ({len(near) - len(usable)} without a prediction); "
            f"median error / predicted {ratio:.2f}")


def _false_ok_lines(ours: list[dict[str, Any]], limit: int = 40) -> list[str]:
    false_ok = sorted((r for r in ours if r["verdict"] == "ok" and not r["correct"]),
                      key=lambda r: -(r["error_px"] or math.inf) / r["tolerance_px"])
    if not false_ok:
        return ["ok but wrong: none"]
    ratios = [math.inf if r["error_px"] is None else r["error_px"] / r["tolerance_px"] for r in false_ok]
    lines = [(f"ok but wrong: {len(false_ok)} ({sum(x <= 3 for x in ratios)} within 3x the tolerance, "
             f"{sum(3 < x <= 10 for x in ratios)} at 3-10x, {sum(x > 10 for x in ratios)} gross or negatives); "
             "error / tolerance, source, kind:")]
    for r in false_ok[:limit]:
        tol = r["tolerance_px"]
        err = "no truth" if r["error_px"] is None else f"{r['error_px'] / tol:.1f}x of {tol:.1f}px"
        lines.append(f"  {r['case']:40s} {err:20s} {r['source']:28s} {r['kind']}")
    if len(false_ok) > limit:
        lines.append(f"  ... and {len(false_ok) - limit} more")
    return lines


def report(rows: list[dict[str, Any]]) -> str:
    """The benchmark report of a set of rows (as run, or read back from ``--out``)."""
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    splits = sorted({r["split"] for r in rows})
    n_cases = len({r["case"] for r in rows})
    lines = [f"split {', '.join(splits)}: {n_cases} cases, methods {', '.join(methods)}", describe_splits(), ""]
    lines += _category_table(rows, methods)
    ours = [r for r in rows if r["method"] == "autoreg"]
    if ours:
        lines += ["", *_trust_lines(ours), "", *_verdict_table(ours), "", *_kind_table(ours), "",
                  *_false_ok_lines(ours)]
        lines.append(f"autoreg time: median {1e3 * _median(r['seconds'] for r in ours):.0f} ms, "
                     f"max {max(r['seconds'] for r in ours):.2f} s, total {sum(r['seconds'] for r in ours):.0f} s")
        lines += _cpu_time_lines(ours)
        lines += _strategy_time_lines(ours)
    return "\n".join(lines)


def _cpu_time_lines(rows: list[dict[str, Any]]) -> list[str]:
    """CPU time per pair, and how many pairs took more than a second by CPU and by wall time. The pipeline runs on one
    thread, so its CPU time is what a pair costs on an idle core; the wall time also holds what the other workers
    and the rest of the machine took from it (rows from releases without ``cpu_seconds`` give nothing)."""
    timed = [r for r in rows if isinstance(r.get("cpu_seconds"), (int, float))]
    if not timed:
        return []
    over_wall = sum(r["seconds"] > 1.0 for r in timed)
    over_cpu = sum(r["cpu_seconds"] > 1.0 for r in timed)
    line = (f"autoreg CPU time: median {1e3 * _median(r['cpu_seconds'] for r in timed):.0f} ms, max "
            f"{max(r['cpu_seconds'] for r in timed):.2f} s; pairs over 1 s: {over_cpu} of {len(timed)} by CPU time, "
            f"{over_wall} by wall time")
    return [line]


def _strategy_time_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Where autoreg's time went: per strategy, the pairs that tried it, its total and its median seconds (rows
    from releases whose attempts carry no ``seconds`` give nothing)."""
    spent: dict[str, list[float]] = {}
    for row in rows:
        for attempt in (row.get("result") or {}).get("attempts", []):
            seconds = attempt.get("seconds")
            if isinstance(seconds, (int, float)) and math.isfinite(seconds):
                spent.setdefault(attempt["strategy"], []).append(float(seconds))
    total = sum(sum(v) for v in spent.values())
    if not total:
        return []
    lines = ["autoreg time by strategy: pairs that tried it, share of all strategy time, median per pair"]
    for name, values in sorted(spent.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"  {name:24s} {len(values):4d} pairs  {100 * sum(values) / total:5.1f} %  "
                     f"{1e3 * _median(values):6.0f} ms")
    return lines


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows saved with ``--out``."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="calibration")
    parser.add_argument("--per-category", type=int, default=None,
                        help="cases per category (default: calibration 28, evaluation 60)")
    parser.add_argument("--categories", nargs="*", default=list(CATEGORIES), choices=CATEGORIES, metavar="CATEGORY")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write one JSON row per case and method")
    parser.add_argument("--report", type=Path, help="only print the report of rows saved with --out")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                        help="autoreg's time budget per pair (default: none; results then depend on the machine)")
    parser.add_argument("--allow-missing-pfm", action="store_true",
                        help="run a split that draws pairs from the real PFM scan even when the scan is missing")
    args = parser.parse_args(argv)
    if not args.report and SPLITS[args.split].pfm and not pfm_available() and not args.allow_missing_pfm:
        # its PFM pairs would silently come from other sources, and its figures compare with no earlier run's
        parser.error(f"the real PFM scan the {args.split} split draws pairs from is missing ({PFM_PATH}; a checkout "
                     "or worktree sees ../shared/data only next to it); pass --allow-missing-pfm to run anyway")
    global TIME_BUDGET_S
    TIME_BUDGET_S = args.time_budget
    if args.report:
        print(report(read_rows(args.report)))
        return
    specs = case_specs(args.split, args.categories, args.per_category)
    methods = ("autoreg",) if args.no_baselines else tuple(METHODS)
    budget = f", a time budget of {args.time_budget:g} s per pair" if args.time_budget else ""
    print(f"running {len(specs)} cases of split {args.split} with {', '.join(methods)} on {args.workers} workers"
          f"{budget}", file=sys.stderr)
    started = time.perf_counter()
    rows = run(specs, methods, workers=args.workers, out=args.out)
    wall = time.perf_counter() - started
    print(report(rows))
    print(f"wall time {wall:.0f} s for {len(specs)} cases ({args.workers} workers{budget})")


if __name__ == "__main__":
    main()
