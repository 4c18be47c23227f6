"""The report figure (matplotlib, imported lazily): a PNG of a registration for people.

Panels: the fixed and moving images, an overlay, a checkerboard and the warped moving image; then, for results
with correspondences (features or control points), the inlier matches drawn as lines between the fixed and
moving images side by side, with each inlier's residual vector (where the fit maps the moving point, minus the
fixed point, magnified and labelled by how much); for intensity results, which have no matches, the difference
between the fixed image and the warped moving one over the overlap. Images with a physical pixel size get a
scale bar in their units. This module only draws; the JSON contract belongs to :mod:`autoreg.datatypes`.
"""

from __future__ import annotations

import io as stdio
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path

__all__ = ["build_figure", "render_png", "save_report_png", "nice_length"]


def _display(image: np.ndarray) -> np.ndarray:
    finite = np.isfinite(image)
    if not finite.any():
        return np.zeros_like(image, dtype=float)
    lo, hi = np.percentile(image[finite], [1, 99])
    scaled = np.clip((image - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return np.where(finite, scaled, np.nan)


def _standardised(image: np.ndarray, where: np.ndarray) -> np.ndarray:
    values = image[where]
    spread = float(np.std(values)) if values.size else 0.0
    return (image - float(np.mean(values))) / (spread if spread > 0 else 1.0) if values.size else image * 0


def _checkerboard(fixed: np.ndarray, warped: np.ndarray, footprint: np.ndarray, tiles: int = 8) -> np.ndarray:
    rows, cols = fixed.shape
    yy, xx = np.mgrid[:rows, :cols]
    board = ((yy * tiles // rows) + (xx * tiles // cols)) % 2 == 0
    out = _display(fixed).copy()
    warped_d = _display(warped)
    use = board & footprint
    out[use] = warped_d[use]
    return out


def nice_length(span: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``span`` (a scale bar's length).

    Examples
    --------
    >>> nice_length(23.0), nice_length(0.7), nice_length(5.0)
    (20.0, 0.5, 5.0)
    """
    if not span > 0 or not math.isfinite(span):
        return 0.0
    power = 10.0 ** math.floor(math.log10(span))
    return max(m * power for m in (1.0, 2.0, 5.0) if m * power <= span * (1 + 1e-12))


def _scale_bar(ax: Any, shape: tuple[int, int], calibration: Any) -> None:
    """A bar of a round physical length, bottom left, labelled in the image's units; nothing without a size."""
    from matplotlib.patches import Rectangle

    size = getattr(calibration, "pixel_size_xy", None)
    units = getattr(calibration, "units", None)
    if not size or not units or not size[0]:
        return
    rows, cols = shape
    length = nice_length(0.25 * cols * abs(size[0]))
    if length <= 0:
        return
    bar_px = length / abs(size[0])
    x0, y0, height = 0.05 * cols, rows - 0.06 * rows, max(0.012 * rows, 0.5)
    ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), bar_px, height, color="white", ec="black", lw=0.5))
    ax.text(x0 - 0.5 + bar_px / 2, y0 - 0.5 - 0.01 * rows, f"{length:g} {units}", color="white", ha="center",
            va="bottom", fontsize=9, fontweight="bold", gid="scale_bar")


def _matches_panel(ax: Any, result: Any, fixed_d: np.ndarray, moving_d: np.ndarray) -> None:
    """Fixed and moving side by side (the moving one scaled to the fixed height), inlier pairs joined by lines,
    residual vectors drawn at the fixed points."""
    fit = result.fit
    fixed_xy = fit.matches.fixed_xy[fit.inliers]
    moving_xy = fit.matches.moving_xy[fit.inliers]
    rows, cols = fixed_d.shape
    zoom = rows / moving_d.shape[0]
    from scipy import ndimage as ndi

    moving_big = ndi.zoom(np.nan_to_num(moving_d), zoom, order=0)[:rows]
    canvas = np.full((rows, cols + moving_big.shape[1]), np.nan)
    canvas[:, :cols] = fixed_d
    canvas[: moving_big.shape[0], cols:] = moving_big
    ax.imshow(canvas, cmap="gray")
    right = (moving_xy + 0.5) * zoom - 0.5 + np.array([cols, 0.0])
    for (fx, fy), (mx, my) in zip(fixed_xy, right):
        ax.plot([fx, mx], [fy, my], "-", color="yellow", lw=0.5, alpha=0.6, gid="match_line")
    residual = fit.to_fixed(moving_xy) - fixed_xy
    norm = np.linalg.norm(residual, axis=1)
    finite = np.isfinite(norm)
    typical = float(np.median(norm[finite])) if finite.any() else 0.0
    gain = nice_length(0.03 * cols / typical) if typical > 0 else 1.0
    gain = max(gain, 1.0)
    ax.quiver(fixed_xy[finite, 0], fixed_xy[finite, 1], residual[finite, 0] * gain, residual[finite, 1] * gain,
              color="red", angles="xy", scale_units="xy", scale=1, width=0.003, gid="residuals")
    ax.set_title(f"{len(fixed_xy)} inlier matches (of {result.scores.n_matches}); residuals ×{gain:g} (red)")


def _difference_panel(ax: Any, fixed: np.ndarray, result: Any) -> None:
    """Fixed minus warped moving, each standardised over the overlap (intensity results have no matches)."""
    overlap = result.footprint & np.isfinite(fixed) & np.isfinite(result.warped)
    diff = np.where(overlap, _standardised(fixed, overlap) - _standardised(result.warped, overlap), np.nan)
    limit = float(np.nanpercentile(np.abs(diff), 99)) if overlap.any() else 1.0
    ax.imshow(diff, cmap="RdBu_r", vmin=-limit, vmax=limit, gid="difference")
    ax.set_title("difference: fixed − warped moving (standardised)")


def build_figure(result: Any, fixed: np.ndarray | None = None, moving: np.ndarray | None = None) -> Any:
    """The report as a matplotlib ``Figure`` (Agg canvas, no display needed).

    Parameters
    ----------
    result : RegistrationResult
    fixed, moving : ndarray, optional
        The input images. Without them (a notebook's ``_repr_html_``: the result does not keep its inputs) the
        figure shows the warped moving image and the inlier residuals only.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s = result.scores
    if fixed is None or moving is None:
        fig = Figure(figsize=(9, 4.5), dpi=80)
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, 2)
        _compact(axes, result)
    else:
        fig = Figure(figsize=(15, 9.5), dpi=90)
        FigureCanvasAgg(fig)
        axes = fig.subplots(2, 3)
        _full(axes, result, np.asarray(fixed, float), np.asarray(moving, float))
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    reasons = "; ".join(dict.fromkeys(result.verdict.reasons)) or "no reservations"
    mirrored = (f", mirrored (said by the {result.extra.get('mirror_source')}): the map holds the reflection"
                if result.extra.get("mirrored") else "")
    fig.suptitle(f"{result.verdict.level.upper()} — model {result.model}{mirrored}, source {result.source}, Pearson "
                 f"{s.pearson_before:.3f} → {s.pearson:.3f}, inliers {s.n_inliers}, rmse {s.rmse_px:.2f} px\n"
                 f"{reasons}", fontsize=11)
    fig.tight_layout()
    return fig


def _full(axes: Any, result: Any, fixed: np.ndarray, moving: np.ndarray) -> None:
    fixed_d, moving_d = _display(fixed), _display(moving)
    axes[0, 0].imshow(fixed_d, cmap="gray")
    axes[0, 0].set_title(f"fixed {fixed.shape[1]}×{fixed.shape[0]} px")
    _scale_bar(axes[0, 0], fixed.shape, result.fixed_calibration)
    axes[0, 1].imshow(moving_d, cmap="gray")
    axes[0, 1].set_title(f"moving {moving.shape[1]}×{moving.shape[0]} px")
    _scale_bar(axes[0, 1], moving.shape, result.moving_calibration)
    has_warp = result.warped is not None and result.footprint is not None
    if has_warp:
        warped_d = _display(result.warped)
        overlay = np.dstack([np.nan_to_num(fixed_d), np.where(result.footprint, np.nan_to_num(warped_d), 0),
                             np.nan_to_num(fixed_d) * 0.5])
        axes[0, 2].imshow(overlay)
        axes[0, 2].set_title("overlay: fixed red, warped moving green")
        axes[1, 0].imshow(_checkerboard(fixed, result.warped, result.footprint), cmap="gray")
        axes[1, 0].set_title("checkerboard fixed / warped moving")
        axes[1, 1].imshow(warped_d, cmap="gray")
        axes[1, 1].set_title("warped moving (NaN outside footprint)")
        _scale_bar(axes[1, 1], fixed.shape, result.fixed_calibration)
    else:
        for ax in (axes[0, 2], axes[1, 0], axes[1, 1]):
            ax.text(0.5, 0.5, "no transform", ha="center", va="center", transform=ax.transAxes)
    fit = result.fit
    if fit is not None and fit.n_inliers and len(fit.matches):
        _matches_panel(axes[1, 2], result, fixed_d, moving_d)
    elif has_warp:
        _difference_panel(axes[1, 2], fixed, result)
    else:
        axes[1, 2].text(0.5, 0.5, "no transform", ha="center", va="center", transform=axes[1, 2].transAxes)


def _compact(axes: Any, result: Any) -> None:
    (rows, cols) = result.fixed_shape
    if result.warped is not None:
        axes[0].imshow(_display(result.warped), cmap="gray")
        _scale_bar(axes[0], result.warped.shape, result.fixed_calibration)
    else:
        axes[0].text(0.5, 0.5, "no transform", ha="center", va="center", transform=axes[0].transAxes)
    axes[0].set_title(f"warped moving on the fixed grid ({cols}×{rows} px)")
    fit = result.fit
    if fit is not None and fit.n_inliers and len(fit.matches):
        fixed_xy = fit.matches.fixed_xy[fit.inliers]
        residual = fit.to_fixed(fit.matches.moving_xy[fit.inliers]) - fixed_xy
        axes[1].quiver(fixed_xy[:, 0], fixed_xy[:, 1], residual[:, 0], residual[:, 1], color="red", angles="xy", gid="residuals")
        axes[1].set_xlim(-0.5, cols - 0.5)
        axes[1].set_ylim(rows - 0.5, -0.5)
        axes[1].set_aspect("equal")
        axes[1].set_title("inlier residual vectors (fixed px, auto-scaled)")
    else:
        axes[1].text(0.5, 0.5, "no matches (intensity result or failed)", ha="center", va="center",
                     transform=axes[1].transAxes)


def render_png(result: Any, fixed: np.ndarray | None = None, moving: np.ndarray | None = None) -> bytes:
    """The report figure as PNG bytes (see :func:`build_figure`)."""
    buffer = stdio.BytesIO()
    build_figure(result, fixed, moving).savefig(buffer, format="png")
    return buffer.getvalue()


def save_report_png(result: Any, fixed: np.ndarray, moving: np.ndarray, path: str | Path) -> Path:
    """Write the report PNG (see the module notes), atomically (temporary name, then rename)."""
    target = Path(path)
    fig = build_figure(result, fixed, moving)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png")
    return target
