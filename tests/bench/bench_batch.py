"""Batch throughput on 1 and 2 local workers, against N x the single-pair time measured in the same run.

Run: ``.venv/bin/python tests/bench/bench_batch.py [--pairs 40]``. Not collected by pytest.
Prints pairs per second, the speed-up of 2 workers over 1, the overhead against N x single-pair time, and the
peak resident memory of the worker processes.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from autoreg.batch import plan, run_batch  # noqa: E402
from autoreg.pipeline import register  # noqa: E402
from autoreg.synthetic import make_pair  # noqa: E402


def _noop(_: int) -> int:
    return 0


def _pool_startup() -> float:
    """Seconds to start the batch's process pool (forkserver preloading the pipeline) and run a no-op."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["autoreg.pipeline", "autoreg.io", "cv2", "skimage.transform"])
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        list(pool.map(_noop, range(2)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--size", type=int, default=384)
    args = parser.parse_args()
    import tifffile

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scans = []
        for i in range(args.pairs):
            a = np.deg2rad(i % 7)
            matrix = np.array([[np.cos(a), -np.sin(a), i % 5], [np.sin(a), np.cos(a), -(i % 3)], [0, 0, 1.0]])
            shape = (args.size, args.size)
            pair = make_pair(seed=100 + i % 4, fixed_shape=shape, moving_shape=shape, matrix=matrix)
            tifffile.imwrite(folder / f"fixed_{i}.tif", pair.fixed)
            tifffile.imwrite(folder / f"moving_{i}.tif", pair.moving)
            scans.append((str(folder / f"moving_{i}.tif"), str(folder / f"fixed_{i}.tif")))
        register(scans[0][1], scans[0][0], model="rigid")  # warm imports
        single = []
        for moving, fixed in scans[:10]:
            started = time.perf_counter()
            register(fixed, moving, model="rigid", cube_step=None)
            single.append(time.perf_counter() - started)
        per_pair = statistics.median(single)
        results = {}
        for workers in (1, 2):  # both as process pools, so both pay the same start-up
            out = folder / f"out_{workers}"
            items = []
            for k, (moving, fixed) in enumerate(scans):
                item = plan([moving], reference=fixed, against="reference", out_dir=out)[0]
                items.append(type(item)(index=k, moving=item.moving, fixed=item.fixed,
                                        output=str(out / f"{k:04d}.json")))
            started = time.perf_counter()
            rows = run_batch(items, out_dir=out, workers=workers, options={"model": "rigid"}, pool=True)
            elapsed = time.perf_counter() - started
            results[workers] = (elapsed, [r["matrix"] for r in rows], max(r["peak_rss_mib"] for r in rows))
            print(f"{workers} worker(s): {args.pairs} pairs in {elapsed:.2f} s = {args.pairs / elapsed:.1f} pairs/s "
                  f"({sum(r['verdict'] == 'ok' for r in rows)} ok)")
        startup = _pool_startup()
        speedup = results[1][0] / results[2][0]
        steady = results[1][0] / max(results[2][0] - startup, 1e-9)
        print(f"speed-up with 2 workers: {speedup:.2f}x including a worker start-up of {startup:.2f} s; "
              f"{steady:.2f}x once started (goal >= 1.8x on 2 cores)")
        print(f"single pair (median of 10, in process): {per_pair * 1e3:.0f} ms; N x single = "
              f"{args.pairs * per_pair:.2f} s; 1-worker batch / (N x single) = "
              f"{results[1][0] / (args.pairs * per_pair):.2f}")
        print(f"same matrices on 1 and 2 workers: {results[1][1] == results[2][1]}")
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS per worker process: {results[1][2]:.0f} MiB (1 worker), {results[2][2]:.0f} MiB (2 workers); "
              f"this process {own:.0f} MiB")


if __name__ == "__main__":
    main()
