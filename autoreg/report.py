"""Reporting: the contract's JSON-able dict, and a PNG figure (matplotlib, imported lazily)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from ._version import __version__
from .datatypes import RegistrationResult

__all__ = ["result_to_dict", "jsonable", "save_report_png", "CONTRACT_KEYS"]

CONTRACT_KEYS = ("model", "matrix", "verdict", "reasons", "source", "n_matches", "n_inliers", "rmse_px", "pearson",
                 "pearson_before", "overlap_fraction")


def jsonable(value: Any) -> Any:
    """Convert numpy values and containers to JSON-able Python; NaN and infinities become None.

    Examples
    --------
    >>> jsonable({"a": np.float32(1.5), "b": [np.nan, 2]})
    {'a': 1.5, 'b': [None, 2]}
    """
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value


def result_to_dict(result: RegistrationResult) -> dict[str, Any]:
    """The JSON object of the CLI contract (``--json``), plus more keys.

    ``matrix`` maps MOVING pixel (x, y) to FIXED pixel (x, y); None when failed or the model is not global.
    """
    s = result.scores
    out: dict[str, Any] = {
        "model": result.model,
        "matrix": result.matrix,
        "verdict": result.verdict.level,
        "reasons": list(result.verdict.reasons),
        "source": result.source,
        "n_matches": s.n_matches,
        "n_inliers": s.n_inliers,
        "rmse_px": s.rmse_px,
        "pearson": s.pearson,
        "pearson_before": s.pearson_before,
        "overlap_fraction": s.overlap_fraction,
        "inlier_ratio": s.inlier_ratio,
        "inlier_spread": s.inlier_spread,
        "scale": s.scale,
        "expected_scale": s.expected_scale,
        "shear": s.shear,
        "ecc_correlation": s.ecc_correlation,
        "uncertainty_px": s.uncertainty_px,
        "why_model": result.fit.why if result.fit is not None else None,
        "attempts": [
            {"strategy": a.strategy, "verdict": a.verdict, "reasons": list(a.reasons), "n_inliers": a.n_inliers,
             "rmse_px": a.rmse_px, "pearson": a.pearson}
            for a in result.attempts
        ],
        "fixed_shape": list(result.fixed_shape),
        "moving_shape": list(result.moving_shape),
        "autoreg_version": __version__,
    }
    for key, value in result.extra.items():
        out.setdefault(key, value)
    return jsonable(out)


def _display(image: np.ndarray) -> np.ndarray:
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros_like(image, dtype=float)
    lo, hi = np.percentile(image[finite], [1, 99])
    scaled = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.where(finite, scaled, np.nan)


def _checkerboard(fixed: np.ndarray, warped: np.ndarray, footprint: np.ndarray, tiles: int = 8) -> np.ndarray:
    rows, cols = fixed.shape
    yy, xx = np.mgrid[:rows, :cols]
    board = ((yy * tiles // rows) + (xx * tiles // cols)) % 2 == 0
    out = _display(fixed).copy()
    warped_d = _display(warped)
    use = board & footprint
    out[use] = warped_d[use]
    return out


def save_report_png(result: RegistrationResult, fixed: np.ndarray, moving: np.ndarray, path: str | Path) -> Path:
    """Write a PNG: fixed, moving, overlay, checkerboard, and the inlier matches, with the verdict as title.

    Written atomically (temporary name, then rename).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .io import atomic_path

    fig = Figure(figsize=(15, 9.5), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    fixed_d = _display(np.asarray(fixed, float))
    axes[0, 0].imshow(fixed_d, cmap="gray")
    axes[0, 0].set_title(f"fixed {fixed.shape[1]}×{fixed.shape[0]}")
    axes[0, 1].imshow(_display(np.asarray(moving, float)), cmap="gray")
    axes[0, 1].set_title(f"moving {moving.shape[1]}×{moving.shape[0]}")
    s = result.scores
    if result.warped is not None and result.footprint is not None:
        warped_d = _display(result.warped)
        overlay = np.dstack([np.nan_to_num(fixed_d), np.where(result.footprint, np.nan_to_num(warped_d), 0),
                             np.nan_to_num(fixed_d) * 0.5])
        axes[0, 2].imshow(overlay)
        axes[0, 2].set_title("overlay: fixed red, warped moving green")
        axes[1, 0].imshow(_checkerboard(np.asarray(fixed, float), result.warped, result.footprint), cmap="gray")
        axes[1, 0].set_title("checkerboard fixed / warped moving")
        axes[1, 1].imshow(warped_d, cmap="gray")
        axes[1, 1].set_title("warped moving (NaN outside footprint)")
    else:
        for ax in (axes[0, 2], axes[1, 0], axes[1, 1]):
            ax.text(0.5, 0.5, "no transform", ha="center", va="center", transform=ax.transAxes)
    ax = axes[1, 2]
    ax.imshow(fixed_d, cmap="gray")
    fit = result.fit
    if fit is not None and fit.n_inliers:
        fixed_xy = fit.matches.fixed_xy[fit.inliers]
        mapped = np.asarray(fit.moving_to_fixed(fit.matches.moving_xy[fit.inliers]))
        ax.plot(fixed_xy[:, 0], fixed_xy[:, 1], "o", ms=4, mfc="none", mec="yellow", label="fixed inliers")
        ax.plot(mapped[:, 0], mapped[:, 1], "+", ms=6, color="cyan", label="moving inliers, mapped")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"inlier matches ({s.n_inliers} of {s.n_matches})")
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    reasons = "; ".join(result.verdict.reasons) or "no reservations"
    fig.suptitle(f"{result.verdict.level.upper()} — model {result.model}, source {result.source}, Pearson "
                 f"{s.pearson_before:.3f} → {s.pearson:.3f}, inliers {s.n_inliers}, rmse {s.rmse_px:.2f} px\n"
                 f"{reasons}", fontsize=11)
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
