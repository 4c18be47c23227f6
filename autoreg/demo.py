"""``autoreg demo``: the tutorial's model loop, hands-off, scored against the fixture's known ground truth.

The functions here compute and write; they return the table for the command line to print.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .vocabulary import MODELS

__all__ = ["ModelTable", "DemoOutcome", "compare_models", "run_demo", "CUBE_STEP"]

CUBE_STEP = 8  # fixed pixels between warped cube samples: 128² spectra cover the 1024² topography


@dataclass(frozen=True, slots=True)
class ModelTable:
    """The tutorial-style table: one row of strings per model."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    """What ``autoreg demo`` did: the ``auto`` verdict, the table, what it wrote and what to tell the user."""

    level: str
    table: ModelTable
    written: tuple[Path, ...]


def compare_models(fixed: Any, moving: Any, *, title: str, error_px: Callable[[Any], float] | None = None,
                   moving_pixel_px: float = 1.0, points: Any = None, seed: int = 0, scale: float | None = None,
                   pixel_size: tuple[Any, Any] | None = None,
                   mirrored: bool | None = None) -> tuple[dict[str, Any], ModelTable]:
    """Register with ``auto`` and every model; return the results and the tutorial-style table.

    ``error_px(fit)``, when given, is the error against a known truth (fixed px), shown in fixed and moving px.
    ``scale``, ``pixel_size`` and ``mirrored`` are what the user knows about the pair, as :func:`autoreg.register`
    takes them.
    """
    from .pipeline import register

    columns = ["model", "chosen", "Pearson before", "Pearson after", "inliers", "rmse px", "uncertainty px", "verdict"]
    if error_px is not None:
        columns += ["error fixed px", "error moving px"]
    columns.append("ms")
    results, rows = {}, []
    for model in ("auto", *MODELS):
        started = time.perf_counter()
        result = register(fixed, moving, model=model, points=points, rng=seed, cube_step=None, scale=scale,
                          pixel_size=pixel_size, mirrored=mirrored)
        ms = (time.perf_counter() - started) * 1e3
        results[model] = result
        s = result.scores
        row = [model, result.model, f"{s.pearson_before:.3f}", f"{s.pearson:.3f}", str(s.n_inliers),
               f"{s.rmse_px:.2f}", f"{s.uncertainty_px:.2f}", result.verdict.level]
        if error_px is not None:
            error = error_px(result.fit)
            row += [f"{error:.2f}", f"{error / moving_pixel_px:.3f}"]
        rows.append(tuple(row + [f"{ms:.0f}"]))
    return results, ModelTable(title=title, columns=tuple(columns), rows=tuple(rows))


def run_demo(out_dir: Path, *, log: Callable[[str], None] = lambda _msg: None) -> DemoOutcome:
    """Run every model on the fixture; write the report, the ``auto`` JSON and the warped cube into ``out_dir``.

    Parameters
    ----------
    out_dir : Path
        Created if missing.
    log : callable
        Called with a line for each step (the command line sends it to stderr).
    """
    from .fixture import CUBE, TOPOGRAPHY, Z_CONTRAST, fixture_path, load_truth, truth_error_px
    from .io import load_cube, load_image, write_image, write_json
    from .report import save_report_png
    from .warp import apply_transform_cube

    out_dir.mkdir(parents=True, exist_ok=True)
    path = fixture_path(out_dir)
    truth = load_truth(path)
    fixed = load_image(f"{path}::{TOPOGRAPHY}")
    moving = load_image(f"{path}::{Z_CONTRAST}")
    pitch = truth.moving_pixel_nm / truth.fixed_pixel_nm
    log(f"fixed {fixed.shape[1]}×{fixed.shape[0]} px ({fixed.pixel_size_xy[0]:.4g} {fixed.units}/px), moving "
        f"{moving.shape[1]}×{moving.shape[0]} px ({moving.pixel_size_xy[0]:.4g} {moving.units}/px) from {path}")
    results, table = compare_models(
        fixed, moving, title="autoreg demo: STS Z-contrast (40×40) onto STM topography (1024×1024), no points given",
        error_px=lambda fit: truth_error_px(fit, truth, moving.shape), moving_pixel_px=pitch)
    auto = results["auto"]
    payload = auto.to_dict()
    payload["error_vs_truth_fixed_px"] = truth_error_px(auto.fit, truth, moving.shape)
    written = [write_json(out_dir / "auto.json", payload),
               save_report_png(auto, fixed.data, moving.data, out_dir / "report.png")]
    if auto.fit is not None and auto.verdict.level != "failed":
        cube, _ = load_cube(f"{path}::{CUBE}")
        warped, footprint = apply_transform_cube(cube, auto.fit, fixed.shape, step=CUBE_STEP)
        written.append(write_image(out_dir / f"sts_cube_on_topography_every_{CUBE_STEP}px.npy", warped))
        log(f"warped the {cube.shape[1]}×{cube.shape[0]}×{cube.shape[2]} STS cube onto the topography every "
            f"{CUBE_STEP} px: {warped.shape[1]}×{warped.shape[0]}×{warped.shape[2]}, {footprint.mean():.0%} covered")
    log(f"auto: {auto.verdict.level} ({auto.model}); wrote {', '.join(str(p) for p in written)}")
    return DemoOutcome(level=auto.verdict.level, table=table, written=tuple(written))
