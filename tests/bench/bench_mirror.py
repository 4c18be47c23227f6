"""Mirrored scans: the accuracy benchmark's pairs with the moving image stored mirrored, with and without telling.

Run: ``.venv/bin/python tests/bench/bench_mirror.py [--split calibration] [--categories ...] [--ways ...]
[--workers N]``. Not collected by pytest.

Every pair of the chosen categories is registered three ways (or those ``--ways`` names), in one run: as drawn (``as
drawn``); with its moving image's rows reversed and nobody saying so (``mirrored, not told``: ``mirrored=None``, and
pixel sizes, where the pair has them, left as they were, so that the metadata says "not mirrored" and no mirror check
runs on those; on the others the mirror check of :func:`autoreg.pipeline._mirror_checked` may run); and the same with
``mirrored=True`` (``mirrored, told``; for pairs whose moving image carries pixel sizes, the y size negated instead,
so that the metadata says it). Until 2026-12-04 (stop 37) ``not told`` passed ``mirrored=False``, the user's word,
which skips the mirror check: its figures before then are those of pairs registered without the check. A pair is
solved when the mean error over a 5×5 grid on the moving image is within the tolerance (as in ``bench_accuracy.py``,
against the truth composed with the reflection); negatives count as right when ``failed``. Prints solved, ``ok``,
wrong ``ok`` and time per category and way, how many results the mirror check ran on and how many it doubted
(``mirror_doubt``), and which ``ok``s were wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench._cases import CATEGORIES, make_case, mirrored_case
from bench._runs import registered

WAYS = ("as drawn", "mirrored, not told", "mirrored, told")
DEFAULT_CATEGORIES = ("same_res", "cross_res", "cross_res_metadata", "partial_overlap", "spm_degraded", "crop",
                      "negative")


def _run(spec: tuple[str, str, int, str]) -> dict:
    split, category, index, way = spec
    case = make_case(split, category, index)
    told = None
    if way != "as drawn":
        case = mirrored_case(case, recorded=way == "mirrored, told")
        metadata = getattr(case.moving, "pixel_size_xy", None) is not None
        told = True if way == "mirrored, told" and not metadata else None  # not told: nobody says (mirrored=None)
    row = registered(case, None, mirrored=told)
    correct = row["solved"] if case.positive else row["verdict"] == "failed"
    return {**row, "case": case.case_id, "category": category, "way": way, "correct": correct}


def main() -> None:
    from multiprocessing import Pool

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="calibration")
    parser.add_argument("--categories", nargs="*", default=list(DEFAULT_CATEGORIES), choices=CATEGORIES)
    parser.add_argument("--per-category", type=int, default=28)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ways", nargs="*", default=list(WAYS), choices=WAYS,
                        help="which ways to register each pair (default: all three)")
    args = parser.parse_args()
    ways = [way for way in WAYS if way in args.ways]
    specs = [(args.split, c, i, way) for c in args.categories for i in range(args.per_category) for way in ways]
    tally: dict[tuple[str, str], Counter] = defaultdict(Counter)
    wrong: list[str] = []
    with Pool(args.workers) as pool:
        for row in pool.imap_unordered(_run, specs, chunksize=3):
            counter = tally[row["category"], row["way"]]
            counter["n"] += 1
            counter["right"] += row["correct"]
            counter["ok"] += row["verdict"] == "ok"
            counter["wrong_ok"] += row["verdict"] == "ok" and not row["correct"]
            counter["seconds"] += row["cpu"]
            counter["mirror_doubt"] += row["mirror_doubt"]
            counter["mirror_checked"] += row["mirror_checked"]
            if row["verdict"] == "ok" and not row["correct"]:
                wrong.append(f"{row['case']} ({row['way']})")
    print(f"split {args.split}, {args.per_category} pairs per category; right = solved (positives) or failed "
          "(negatives); CPU s per pair")
    print(f"{'category':20s}" + "".join(f"{way:>34s}" for way in ways))
    totals = {way: Counter() for way in ways}
    for category in args.categories:
        cells = []
        for way in ways:
            c = tally[category, way]
            totals[way].update(c)
            cells.append(f"{c['right']:3d}/{c['n']:<3d} ok {c['ok']:3d} wrong {c['wrong_ok']} {c['seconds'] / max(c['n'], 1):5.2f} s")
        print(f"{category:20s}" + "".join(f"{cell:>34s}" for cell in cells))
    print(f"{'all':20s}" + "".join(
        f"{totals[w]['right']:3d}/{totals[w]['n']:<3d} ok {totals[w]['ok']:3d} wrong {totals[w]['wrong_ok']} "
        f"{totals[w]['seconds'] / max(totals[w]['n'], 1):5.2f} s".rjust(34) for w in ways))
    print("mirror check run / mirror_doubt (low_confidence because the mirror fits as well): "
          + ", ".join(f"{w} {totals[w]['mirror_checked']} / {totals[w]['mirror_doubt']}" for w in ways))
    print("wrong ok: " + (", ".join(sorted(wrong)) or "none"))


if __name__ == "__main__":
    main()
