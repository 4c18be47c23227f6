"""Maps whose pixels are not square: the accuracy benchmark's metadata maps drawn with 1:1 to 4:1 pixels.

Run: ``.venv/bin/python tests/bench/bench_aspect.py [--split evaluation] [--per-aspect 40] [--workers 2]
[--ways ...] [--mirrored-untold]``. Not collected by pytest.

Each pair is drawn as case ``i`` of ``cross_res_metadata`` in the chosen split (same source, seeds and SPM
artefacts: its 4-32× map of 24-64 px, any rotation, 50-90 % of the fixed side), except that a moving pixel is
``aspect`` times as high as wide in fixed pixels (its area, so the tolerance, unchanged) and the map has
``n / sqrt(aspect)`` rows and ``n sqrt(aspect)`` columns, so that it still covers a square field; both images carry
their pixel sizes, as USID files do. A 64×32 STS grid over a square area is such a map. Every pair is registered
two ways in one run: as autoreg does (``square copy``: through a copy with square pixels, :mod:`autoreg.regrid`) and
with that switched off (``as it is``: ``max_pixel_skew`` infinite, what autoreg did before). A pair is solved when
the mean error over a 5×5 grid on the moving image is within the benchmark's tolerance, max(2 fixed px, half the
geometric mean of the moving pixel's sides). Prints solved, ``ok``, wrong ``ok`` and CPU time per aspect and way.

With ``--mirrored-untold`` every map is stored with its rows reversed and handed over as an exported image would
be: plain arrays, the pixel sizes given by the user (``pixel_size=``, positive, as ``--pixel-size`` takes them) and
nobody saying whether it is mirrored, so that the mirror check may run (on the square copy too since stop 37); the
table then also counts the results the check ran on and doubted (``mirror_doubt``).

Nothing was tuned on these pairs (``max_pixel_skew`` is 2 % by reasoning); the default split is the report split.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench import _cases
from bench._runs import registered, run_all

ASPECTS = (1.0, 1.5, 2.0, 3.0, 4.0)
WAYS = ("as it is", "square copy")


def aspect_case(split: str, index: int, aspect: float) -> _cases.Case:
    """Case ``index`` of ``cross_res_metadata`` in ``split``, redrawn with moving pixels ``aspect``:1 (high:wide)."""
    from autoreg import Image

    spec = _cases.SPLITS[split]
    category = "cross_res_metadata"
    seed = spec.case_seed_base + 1000 * _cases.CATEGORIES.index(category) + index
    d = _cases._Draw(spec, category, index, np.random.default_rng(seed))
    source = d.source()
    fixed_shape, (n, _), linear = _cases._cross_res_geometry(d)
    rows, cols = max(8, round(n / np.sqrt(aspect))), max(8, round(n * np.sqrt(aspect)))
    linear = {**linear, "aniso": (1.0 / np.sqrt(aspect), np.sqrt(aspect)), "shear": 0.0}
    matrix = _cases._place_inside(d.rng, linear, (rows, cols), fixed_shape, 0.95)
    case = _cases._positive(d, source, fixed_shape, (rows, cols), matrix, f"aspect_{aspect:g}")
    fixed_nm = float(np.exp(d.rng.uniform(np.log(0.05), np.log(0.5))))
    r = float(linear["scale"])
    fixed = Image(data=case.fixed, pixel_size_xy=(fixed_nm, fixed_nm), units="nm")
    moving = Image(data=case.moving, pixel_size_xy=(fixed_nm * r / np.sqrt(aspect), fixed_nm * r * np.sqrt(aspect)),
                   units="nm")
    return _cases._finish(d, source, case.kind, fixed, moving, case.truth, case.moving_pixel_px, positive=True)


def untold_mirror(case: _cases.Case) -> tuple[_cases.Case, tuple[tuple[float, float], tuple[float, float]]]:
    """``case`` with its moving rows reversed, both images plain arrays, and the pixel sizes a user would give."""
    mirrored = _cases.mirrored_case(case, recorded=False)
    sizes = (tuple(map(abs, case.fixed.pixel_size_xy)), tuple(map(abs, case.moving.pixel_size_xy)))
    return replace(mirrored, fixed=np.asarray(case.fixed.data), moving=np.asarray(mirrored.moving.data)), sizes


def _run(spec: tuple[str, int, float, str, bool]) -> dict:
    from autoreg.config import RegistrationConfig

    split, index, aspect, way, mirrored_untold = spec
    config = RegistrationConfig(max_pixel_skew=np.inf if way == "as it is" else RegistrationConfig().max_pixel_skew)
    case, said = aspect_case(split, index, aspect), {}
    if mirrored_untold:
        case, sizes = untold_mirror(case)
        said = {"pixel_size": sizes}
    return {"aspect": aspect, "way": way, "index": index, **registered(case, config, **said)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="evaluation", choices=sorted(_cases.SPLITS))
    parser.add_argument("--per-aspect", type=int, default=40)
    parser.add_argument("--aspects", type=float, nargs="+", default=list(ASPECTS))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    parser.add_argument("--mirrored-untold", action="store_true",
                        help="maps stored mirrored, pixel sizes given by the user, nobody saying it is mirrored")
    args = parser.parse_args()
    ways = [way for way in WAYS if way in args.ways]
    specs = [(args.split, i, a, way, args.mirrored_untold) for a in args.aspects for i in range(args.per_aspect)
             for way in ways]
    rows = run_all(_run, specs, args.workers)
    table: dict[tuple[float, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in rows:
        cell = table[(row["aspect"], row["way"])]
        cell["n"] += 1
        cell["solved"] += row["solved"]
        cell["ok"] += row["verdict"] == "ok"
        cell["wrong"] += row["wrong_ok"]
        cell["cpu"] += row["cpu"]
        cell["checked"] += row["mirror_checked"]
        cell["doubt"] += row["mirror_doubt"]
    told = "mirrored, nobody saying so, pixel sizes given by the user" if args.mirrored_untold else "as drawn"
    print(f"split {args.split}, {args.per_aspect} metadata maps per aspect (moving pixel high:wide), {told}; "
          "solved / ok / wrong ok / CPU s per pair" + (" / mirror checks run, doubted" if args.mirrored_untold else ""))
    print(f"{'aspect':>8}" + "".join(f"{way:>44}" for way in ways))
    for aspect in args.aspects:
        cells = [table[(aspect, way)] for way in ways]
        print(f"{aspect:>8g}" + "".join(
            (f"{int(c['solved']):>12d}/{int(c['n'])} ok {int(c['ok']):>3d} wrong {int(c['wrong'])} "
             f"{c['cpu'] / c['n']:5.2f} s" + (f" {int(c['checked'])}, {int(c['doubt'])}" if args.mirrored_untold
                                             else "")).rjust(44)
            for c in cells))


if __name__ == "__main__":
    main()
