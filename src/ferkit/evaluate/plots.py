"""Pictures of an evaluation: the confusion matrix and the reliability diagram, as PNG bytes or files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from ferkit.evaluate.metrics import Calibration, Evaluation
from ferkit.fileio import atomic_write


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _figure(**kw):
    # A bare Figure renders with the Agg canvas and touches no pyplot state or global backend.
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kw)


def confusion_png(ev: Evaluation) -> bytes:
    """Row-normalised confusion matrix (colour = share of the true class) with counts and shares written in."""
    return matrix_png(ev.confusion, ev.labels, ev.labels, "predicted", "true (images)",
                      f"accuracy {ev.accuracy:.1%}, macro F1 {ev.macro_f1:.3f}, n {ev.n:,}", "share of the true class")


def matrix_png(counts, rows: list[str], cols: list[str], xlabel: str, ylabel: str, title: str,
               colour: str = "share of the row") -> bytes:
    """A count matrix, coloured by each row's shares, with counts and shares written in; the cells whose row and
    column name the same class are bold and always written. Other empty cells stay blank: the errors stand out."""
    cm = np.asarray(counts)
    totals = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, totals, out=np.zeros(cm.shape), where=totals > 0)
    side = max(5.0, 0.85 * max(cm.shape) + 2.2)
    fig = _figure(figsize=(side + 1.0, side))
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=colour)
    same = np.array([[r == c for c in cols] for r in rows]) & (totals > 0)
    for i, j in zip(*np.nonzero((cm > 0) | same)):
        ax.text(j, i, f"{cm[i, j]}\n{share[i, j]:.0%}", ha="center", va="center", fontsize=8,
                color="white" if share[i, j] > 0.55 else "black",
                fontweight="bold" if rows[i] == cols[j] else "normal")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right")
    ax.set_yticks(range(len(rows)), [f"{c} ({n})" for c, n in zip(rows, cm.sum(axis=1))])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    return _png(fig)


def reliability_png(source: Evaluation | Calibration) -> bytes:
    """Accuracy against confidence per bin (bars) over the diagonal of perfect calibration, with the image counts."""
    cal = source.calibration if isinstance(source, Evaluation) else source
    edges = np.linspace(0, 1, cal.bins + 1)
    width = 1 / cal.bins
    acc = np.array([np.nan if a is None else a for a in cal.accuracy])
    conf = np.array([np.nan if c is None else c for c in cal.confidence])
    fig = _figure(figsize=(5.5, 6.5))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.bar(edges[:-1], np.nan_to_num(acc), width=width, align="edge", color="#4c72b0", edgecolor="white",
            label="accuracy")
    gap_lo, gap_hi = np.fmin(acc, conf), np.fmax(acc, conf)
    top.bar(edges[:-1], np.nan_to_num(gap_hi - gap_lo), bottom=np.nan_to_num(gap_lo), width=width, align="edge",
            facecolor="none", edgecolor="#c44e52", linewidth=0.8, hatch="///", label="gap to mean confidence")
    top.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.legend(loc="upper left", fontsize=8)
    top.set_title(f"reliability: ECE {cal.ece:.3f} ({cal.bins} bins)", fontsize=10)
    bottom.bar(edges[:-1], cal.count, width=width, align="edge", color="gray", edgecolor="white")
    bottom.set_xlabel("confidence (top probability)")
    bottom.set_ylabel("images")
    for a in (top, bottom):
        a.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def plot_confusion(ev: Evaluation, path: str | Path) -> Path:
    """Write the confusion matrix as PNG, atomically."""
    return atomic_write(path, confusion_png(ev))


def plot_reliability(source: Evaluation | Calibration, path: str | Path) -> Path:
    """Write the reliability diagram as PNG, atomically; ``source`` may be ``metrics.calibration(y, probs)``."""
    return atomic_write(path, reliability_png(source))
