"""Large same-resolution pairs (512² to 1024²): time and outcome, with the keypoint cap and without it.

Run: ``.venv/bin/python tests/bench/bench_large.py [--split evaluation] [--per-size 12] [--workers 2]``. Not
collected by pytest.

The accuracy benchmark's pairs are at most ~320 px on a side; drift series and repeated scans of one area come at
512² and 1024². Each pair here is drawn from the split's sources with its seeds (category ``same_res``'s, index
``i``): two scans of ``n``² px at the same pixel size (scale 0.98-1.02), any rotation, the moving scan over 100 %,
60 % or 30 % of its area (a third each), with the benchmark's light SPM artefacts. Every pair is registered two
ways in one run, interleaved: as autoreg does (``capped``: at most ``max_features`` keypoints per view) and with the
cap lifted (``uncapped``: the keypoint density of a 256² view at any size, what autoreg did before). Prints, per size
and way: solved, ``ok``, wrong ``ok``, and the median and largest CPU time per pair (one worker's process time).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench import _cases
from bench._runs import registered, run_all

SIZES = (512, 768, 1024)
WAYS = ("uncapped", "capped")
OVERLAPS = (1.0, 0.6, 0.3)


def large_case(split: str, index: int, size: int) -> _cases.Case:
    """Case ``index`` of ``same_res`` in ``split``, redrawn as two ``size``² scans (overlap by index: 100/60/30 %)."""
    spec = _cases.SPLITS[split]
    category = "same_res"
    seed = spec.case_seed_base + 1000 * _cases.CATEGORIES.index(category) + index + 100 * size
    d = _cases._Draw(spec, category, index, np.random.default_rng(seed))
    source = d.source()
    shape = (size, size)
    linear = {"angle_deg": float(d.rng.uniform(-180, 180)), "scale": float(d.rng.uniform(0.98, 1.02))}
    overlap = OVERLAPS[index % len(OVERLAPS)]
    if overlap >= 1.0:
        matrix = _cases._place_inside(d.rng, linear, shape, shape, 0.8)
    else:
        matrix = _cases._place_at_overlap(d.rng, linear, shape, shape, overlap)
    return _cases._positive(d, source, shape, shape, matrix, f"large_{size}_overlap_{overlap:g}", margin=0.0)


def _run(spec: tuple[str, int, int, str]) -> dict:
    from autoreg.config import RegistrationConfig

    split, index, size, way = spec
    config = RegistrationConfig() if way == "capped" else RegistrationConfig(max_features=10**9)
    return {"size": size, "way": way, "index": index, **registered(large_case(split, index, size), config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="evaluation", choices=sorted(_cases.SPLITS))
    parser.add_argument("--per-size", type=int, default=12)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    specs = [(args.split, i, n, way) for n in args.sizes for i in range(args.per_size) for way in WAYS]
    rows = run_all(_run, specs, args.workers)
    table: dict[tuple[int, str], list[dict]] = defaultdict(list)
    for row in rows:
        table[(row["size"], row["way"])].append(row)
    print(f"split {args.split}, {args.per_size} same-resolution pairs per size (100/60/30 % overlap); "
          "solved / ok / wrong ok / CPU s per pair: median, largest")
    print(f"{'size':>6}" + "".join(f"{way:>40}" for way in WAYS))
    for size in args.sizes:
        cells = []
        for way in WAYS:
            got = table[(size, way)]
            cpu = [r["cpu"] for r in got]
            cells.append(f"{sum(r['solved'] for r in got):>10d}/{len(got)} ok {sum(r['verdict'] == 'ok' for r in got):>3d} "
                         f"wrong {sum(r['wrong_ok'] for r in got)} {statistics.median(cpu):5.2f} {max(cpu):5.2f} s")
        print(f"{size:>6d}" + "".join(cells))
    changed = [(a, b) for a in rows for b in rows if a["way"] == "uncapped" and b["way"] == "capped"
               and (a["size"], a["index"]) == (b["size"], b["index"]) and a["verdict"] != b["verdict"]]
    for a, b in changed:
        print(f"  {a['size']}² pair {a['index']}: {a['verdict']} -> {b['verdict']} (error {a['error']} -> {b['error']})")


if __name__ == "__main__":
    main()
