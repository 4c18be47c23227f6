"""The report figure: a PNG of the fixed and moving images, overlay, checkerboard and matches (matplotlib, lazily).

This module only draws; the JSON contract belongs to :mod:`autoreg.datatypes`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path
from .datatypes import RegistrationResult

__all__ = ["save_report_png"]

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
