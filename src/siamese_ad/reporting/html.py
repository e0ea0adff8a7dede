"""Self-contained static HTML reports: inline CSS, no scripts, only relative links to PNGs.

`write_eval_report` describes one evaluated checkpoint (metrics, thresholds, ROC and PRO curves,
score histogram, heat-map gallery with the worst errors first); `write_benchmark_report` the
results table of a benchmark with curves and histograms per cell and links to each cell's report.
Numbers in tables are printed with `fmt`, so a reader can match them to the JSON files.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

REPORT = "report.html"
FIGURES = "report_files"
GALLERY_LIMIT = 24
CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f0f0f0; } td.text { text-align: left; }
tr.mean td { font-weight: bold; background: #fafafa; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
.gallery figure { display: block; }
.fp { color: #b00; } .fn { color: #a60; } .ok { color: #060; }
"""


def fmt(value: Any) -> str:
    """How a table prints a value: floats with 4 decimals, None as n/a, others as text."""
    if value is None:
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return "n/a" if np.isnan(value) else f"{float(value):.4f}"
    return str(value)


def url(path: str) -> str:
    """A relative POSIX path as a link: `#`, `?`, `%`, spaces and other URL-special characters
    of its names percent-encoded, so a browser opens the file of that exact name."""
    return quote(path)


def relative(path: Path, start: Path) -> str:
    """A link (`url`) from folder `start` to `path`."""
    return url(Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix())


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    links: Sequence[str | None] | None = None,
    css_class: str = "results",
) -> str:
    """An HTML table, one row per dict; columns are (key, heading) pairs.

    Args:
        links: per row, a relative link (`url`) placed on the first cell, or None.
    """
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title in columns)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for j, (key, _) in enumerate(columns):
            value = row.get(key)
            text = html.escape(fmt(value))
            link = links[i] if links is not None and j == 0 else None
            if link:
                text = f'<a href="{html.escape(link)}">{text}</a>'
            kind = "text" if isinstance(value, str) else "num"
            cells.append(f'<td class="{kind}" data-key="{html.escape(key)}">{text}</td>')
        mean = ' class="mean"' if row.get("category") == "mean" else ""
        body.append(f"<tr{mean}>{''.join(cells)}</tr>")
    return (
        f'<table class="{css_class}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def figure(src: str, caption: str, css_class: str = "") -> str:
    cls = f' class="{css_class}"' if css_class else ""
    return (
        f'<figure{cls}><img src="{html.escape(src)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def page(title: str, sections: Sequence[str]) -> str:
    """A complete HTML document with the inline style sheet."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>\n"
    )


@dataclass
class GalleryItem:
    """One image of the gallery: its index, kind (fp, fn, ok) and distance to the threshold."""

    index: int
    kind: str
    margin: float


def gallery_order(
    labels: np.ndarray, scores: np.ndarray, threshold: float | None, limit: int = GALLERY_LIMIT
) -> list[GalleryItem]:
    """Errors first, the furthest on the wrong side of the threshold first, then the correct
    images closest to it; without a threshold, the images by descending score.

    Args:
        labels: (N,) 0/1; scores: (N,) image scores; anomalous means score > threshold.
    """
    labels, scores = np.asarray(labels).astype(bool), np.asarray(scores, dtype=np.float64)
    if threshold is None:
        order = np.argsort(-scores, kind="stable")[:limit]
        return [GalleryItem(int(i), "ok", float("nan")) for i in order]
    predicted = scores > threshold
    distance = np.abs(scores - threshold)
    errors = np.flatnonzero(predicted != labels)
    correct = np.flatnonzero(predicted == labels)
    errors = errors[np.argsort(-distance[errors], kind="stable")]
    correct = correct[np.argsort(distance[correct], kind="stable")]
    items = [
        GalleryItem(int(i), "fp" if predicted[i] else "fn", float(distance[i])) for i in errors
    ]
    items += [GalleryItem(int(i), "ok", float(distance[i])) for i in correct]
    return items[:limit]
