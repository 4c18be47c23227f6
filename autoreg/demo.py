"""``autoreg demo``: the tutorial's model loop, hands-off, scored against the fixture's known ground truth."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .models import MODELS

__all__ = ["fixture_path", "run_demo", "compare_models", "TOPOGRAPHY", "Z_CONTRAST", "CUBE"]

TOPOGRAPHY = "/Measurement_000/Channel_000/STM_Topography"
Z_CONTRAST = "/Measurement_001/Channel_001/STS_Z_Contrast"
CUBE = "/Measurement_001/Channel_000/STS"
CUBE_STEP = 8


def fixture_path(out_dir: Path) -> Path:
    """The bundled ``fixtures/stm_sts.h5`` of a source checkout, or a copy regenerated into ``out_dir``."""
    bundled = Path(__file__).resolve().parents[1] / "fixtures" / "stm_sts.h5"
    if bundled.is_file():
        return bundled
    from .synthetic import write_stm_sts_usid

    generated = out_dir / "stm_sts.h5"
    if not generated.is_file():
        write_stm_sts_usid(generated, seed=0)
    return generated


def _grid_error_px(fit: Any, truth: Any, moving_shape: tuple[int, int]) -> float:
    """Mean error (fixed px) over a 5×5 grid spanning the moving image; grid points a mesh cannot map skipped."""
    from .geometry import mean_grid_distance
    from .synthetic import true_moving_to_fixed

    if fit is None:
        return float("nan")
    return mean_grid_distance(fit.to_fixed, lambda xy: true_moving_to_fixed(xy, truth), moving_shape)


def compare_models(fixed: Any, moving: Any, *, title: str, error_px: Any = None, moving_pixel_px: float = 1.0,
                   points: Any = None, seed: int = 0) -> dict[str, Any]:
    """Register with ``auto`` and every model; print the tutorial-style table on stdout; return the results.

    ``error_px(fit)``, when given, is the error against a known truth (fixed px), shown in fixed and moving px.
    """
    from rich.console import Console
    from rich.table import Table

    from .pipeline import register

    table = Table(title=title)
    columns = ["model", "chosen", "Pearson before", "Pearson after", "inliers", "rmse px", "uncertainty px", "verdict"]
    if error_px is not None:
        columns += ["error fixed px", "error moving px"]
    for column in columns + ["ms"]:
        text = column in ("model", "chosen", "verdict")
        table.add_column(column, justify="left" if text else "right", no_wrap=text, min_width=16 if text else None)
    results = {}
    for model in ("auto", *MODELS):
        started = time.perf_counter()
        result = register(fixed, moving, model=model, points=points, rng=seed, cube_step=None)
        ms = (time.perf_counter() - started) * 1e3
        results[model] = result
        s = result.scores
        row = [model, result.model, f"{s.pearson_before:.3f}", f"{s.pearson:.3f}", str(s.n_inliers),
               f"{s.rmse_px:.2f}", f"{s.uncertainty_px:.2f}", result.verdict.level]
        if error_px is not None:
            error = error_px(result.fit)
            row += [f"{error:.2f}", f"{error / moving_pixel_px:.3f}"]
        table.add_row(*row, f"{ms:.0f}")
    Console(width=max(Console().width, 160)).print(table)  # the table is for people: stdout
    return results


def run_demo(out_dir: Path, *, console: Any) -> str:
    """Run every model on the fixture, print the table, write the report, JSON and warped cube.

    Returns
    -------
    str
        The verdict level of the ``auto`` result.
    """
    from .io import load_cube, load_image, write_json
    from .report import save_report_png
    from .synthetic import load_truth
    from .warp import apply_transform_cube

    out_dir.mkdir(parents=True, exist_ok=True)
    path = fixture_path(out_dir)
    truth = load_truth(path)
    fixed = load_image(f"{path}::{TOPOGRAPHY}")
    moving = load_image(f"{path}::{Z_CONTRAST}")
    pitch = truth.moving_pixel_nm / truth.fixed_pixel_nm
    console.log(f"fixed {fixed.shape} ({fixed.pixel_size_xy[0]:.4g} {fixed.units}/px), moving {moving.shape} "
                f"({moving.pixel_size_xy[0]:.4g} {moving.units}/px) from {path}")
    results = compare_models(fixed, moving, title="autoreg demo: STS Z-contrast (40×40) onto STM topography (1024²), "
                             "no points given", error_px=lambda fit: _grid_error_px(fit, truth, moving.shape),
                             moving_pixel_px=pitch)
    auto = results["auto"]
    payload = auto.to_dict()
    payload["error_vs_truth_fixed_px"] = _grid_error_px(auto.fit, truth, moving.shape)
    write_json(out_dir / "auto.json", payload)
    save_report_png(auto, fixed.data, moving.data, out_dir / "report.png")
    if auto.fit is not None and auto.verdict.level != "failed":
        cube, meta = load_cube(f"{path}::{CUBE}")
        warped, footprint = apply_transform_cube(cube, auto.fit, fixed.shape, step=CUBE_STEP)
        from .io import write_image

        write_image(out_dir / f"sts_cube_on_topography_every_{CUBE_STEP}px.npy", warped)
        console.log(f"warped the {cube.shape} STS cube onto the topography every {CUBE_STEP} px: {warped.shape}, "
                    f"{footprint.mean():.0%} covered")
    console.log(f"auto: {auto.verdict.level} ({auto.model}); wrote {out_dir / 'report.png'} and {out_dir / 'auto.json'}")
    return auto.verdict.level
