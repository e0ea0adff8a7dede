"""Report figures as PNG files: ROC and PRO curves, score histograms with the threshold line.

Figures are drawn with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch) and written atomically (temporary file, then rename).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from siamese_ad.io import atomic_write

FIGSIZE = (4.8, 3.6)
DPI = 100
CURVE_POINTS = 512  # curves are resampled to this many points, so pixel ROCs stay small
HIST_BINS = 30


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Renders `fig` to a PNG at `path`, atomically; returns the path."""
    FigureCanvasAgg(fig)
    atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=DPI))
    return Path(path)


def resample_curve(x: np.ndarray, y: np.ndarray, points: int = CURVE_POINTS) -> tuple:
    """A (K,) curve with x non-decreasing -> (points,) x and y, linearly interpolated."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) <= points:
        return x, y
    grid = np.linspace(x[0], x[-1], points)
    return grid, np.interp(grid, x, y)


def _axes(title: str, xlabel: str, ylabel: str) -> tuple[Figure, object]:
    fig = Figure(figsize=FIGSIZE)
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.14, top=0.9)  # cheaper than a layout engine
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def plot_curves(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    title: str,
    xlabel: str = "false positive rate",
    ylabel: str = "true positive rate",
    diagonal: bool = True,
) -> Path:
    """One line per named curve {label: (x (K,), y (K,))}; writes a PNG and returns its path."""
    fig, ax = _axes(title, xlabel, ylabel)
    for label, (x, y) in curves.items():
        ax.plot(*resample_curve(x, y), label=label, linewidth=1.2)
    if diagonal:
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_ylim(0, 1.01)
    if curves:
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def plot_histogram(
    normal: np.ndarray,
    anomalous: np.ndarray,
    threshold: float | None,
    path: str | Path,
    title: str,
) -> Path:
    """Overlaid histograms of normal (N0,) and anomalous (N1,) image scores, threshold dashed."""
    fig, ax = _axes(title, "image score", "images")
    values = np.concatenate([np.ravel(normal), np.ravel(anomalous)])
    edges = np.histogram_bin_edges(values if values.size else [0.0, 1.0], bins=HIST_BINS)
    ax.hist(normal, bins=edges, alpha=0.6, color="tab:blue", label=f"normal ({len(normal)})")
    ax.hist(
        anomalous, bins=edges, alpha=0.6, color="tab:red", label=f"anomalous ({len(anomalous)})"
    )
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.legend(fontsize=7)
    return save_figure(fig, path)
