"""The report's pictures as PNG bytes: learning curves, per-class F1, class distribution, attention, face tiles.

Every chart uses one quiet style (`STYLE`) and gives each model its colour from `PALETTE`, the same colour the
HTML uses for that model's name, so a model is recognisable across the whole page.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from ferkit.evaluate.metrics import Evaluation

PALETTE = ("#3b5bdb", "#e8590c", "#0ca678", "#c2255c", "#7048e8", "#1098ad", "#f59f00", "#5c940d")
INK, MUTED, GRID = "#212529", "#6c757d", "#e9ecef"
SPLIT_COLORS = ("#adb5bd", "#495057", "#ced4da", "#868e96")  # dataset splits: greys, so models keep the colour
HIGHLIGHT = "#f59f00"  # the split the report scores on
FACE_PX = 96  # shown side of a face tile (faces are 48 px; upscaled smoothly rather than by the browser)
CAM_ALPHA = 0.45  # heatmap opacity over the face
DPI = 120

STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.edgecolor": "#ced4da",
    "axes.labelcolor": MUTED,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlecolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": GRID,
    "grid.linewidth": 0.8,
    "xtick.color": MUTED,
    "ytick.color": MUTED,
    "legend.frameon": False,
    "legend.fontsize": 8,
}


def model_color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _figure(**kw):
    from matplotlib.figure import Figure  # a bare Figure: Agg canvas, no pyplot state, no global backend

    return Figure(layout="constrained", **kw)


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()


def _styled(draw):
    """Run a drawing function with the report's style in force (rcParams are read when artists are made)."""
    import functools

    import matplotlib

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)

    return wrapper


@_styled
def learning_curves_png(history: Sequence[dict[str, float]], color: str, best_epoch: int | None) -> bytes:
    """Loss and accuracy per epoch, training (dashed) against validation (solid), the best epoch marked."""
    fig = _figure(figsize=(6.4, 2.75))
    axes = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for ax, metric, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        for split, style, alpha in (("train", "--", 0.65), ("val", "-", 1.0)):
            values = [r.get(f"{split}_{metric}", np.nan) for r in history]
            ax.plot(epochs, values, style, color=color, alpha=alpha, lw=1.8,
                    marker="o" if len(epochs) < 12 else None, ms=3.5,
                    label="training" if split == "train" else "validation")
        if best_epoch is not None:
            ax.axvline(best_epoch, color=MUTED, lw=0.8, ls=":")
        ax.set_title(title, loc="left")
        ax.set_xlabel("epoch")
        if metric == "accuracy":
            ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper right", ncols=2)
    if epochs:
        for ax in axes:
            ax.set_xlim(min(epochs) - 0.3, max(epochs) + 0.3)
            ax.xaxis.get_major_locator().set_params(integer=True)
    return _png(fig)


@_styled
def f1_bars_png(labels: Sequence[str], scores: Sequence[dict[str, float]], names: Sequence[str],
                colors: Sequence[str]) -> bytes:
    """Per-class F1 grouped by class, one bar per model, with the macro average as the last group."""
    groups = [*labels, "macro avg"]
    fig = _figure(figsize=(10.5, 3.3))
    ax = fig.subplots()
    x = np.arange(len(groups))
    width = 0.8 / len(names)
    for k, (name, s, color) in enumerate(zip(names, scores, colors)):
        values = [s.get(g, np.nan) for g in groups]
        bars = ax.bar(x + (k - (len(names) - 1) / 2) * width, values, width * 0.92, color=color, label=name)
        if len(names) <= 4:
            ax.bar_label(bars, labels=[f"{v:.2f}" if v == v else "" for v in values], fontsize=7, padding=1.5,
                         color=MUTED)
    ax.axvline(len(labels) - 0.5, color="#ced4da", lw=1)
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1")
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper left", ncols=min(len(names), 4), bbox_to_anchor=(0, 1.12))
    return _png(fig)


@_styled
def confusion_png(ev: Evaluation, color: str) -> bytes:
    """Row-normalised confusion matrix shaded from white to the model's colour, each cell's share written in.

    A card-sized companion of `ferkit.evaluate.plots.confusion_png` (which also writes the counts).
    """
    from matplotlib.colors import LinearSegmentedColormap

    labels = ev.labels
    cm = np.asarray(ev.confusion)
    rows = cm.sum(1, keepdims=True)  # (C, 1) images per true class
    share = np.asarray(ev.confusion_normalized)  # (C, C), rows sum to 1
    C = len(labels)
    fig = _figure(figsize=(4.6, 4.1))
    ax = fig.subplots()
    ax.imshow(share, cmap=LinearSegmentedColormap.from_list("model", ["#ffffff", color]), vmin=0, vmax=1)
    for i in range(C):
        for j in range(C):
            if rows[i, 0] and (cm[i, j] or i == j):  # empty cells stay blank: the errors stand out
                ax.text(j, i, f"{share[i, j]:.0%}", ha="center", va="center", fontsize=7.5,
                        color="white" if share[i, j] > 0.55 else INK, fontweight="bold" if i == j else "normal")
    ax.set_xticks(range(C), labels, rotation=40, ha="right")
    ax.set_yticks(range(C), [f"{c} ({int(rows[i, 0]):,})" for i, c in enumerate(labels)])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (images)")
    ax.grid(False)
    for s in ax.spines.values():
        s.set_visible(False)
    return _png(fig)


@_styled
def class_distribution_png(splits: dict[str, dict[str, int]], highlight: str) -> bytes:
    """Images per class for every split of the dataset, the reported split in the accent colour."""
    classes = list(next(iter(splits.values())))
    fig = _figure(figsize=(10.5, 2.6))
    ax = fig.subplots()
    x = np.arange(len(classes))
    width = 0.8 / len(splits)
    greys = iter(SPLIT_COLORS * 4)
    for k, (split, counts) in enumerate(splits.items()):
        color = HIGHLIGHT if split == highlight else next(greys)
        bars = ax.bar(x + (k - (len(splits) - 1) / 2) * width, [counts[c] for c in classes], width * 0.92,
                      color=color, label=f"{split} ({sum(counts.values()):,})")
        ax.bar_label(bars, fontsize=7, padding=1.5, color=MUTED, fmt="{:,.0f}")
    ax.set_xticks(x, classes)
    ax.set_ylabel("images")
    ax.grid(axis="x", visible=False)
    ax.legend(loc="upper right")
    return _png(fig)


@_styled
def channel_attention_png(attention: Sequence[dict[str, Any]], titles: Sequence[str]) -> bytes:
    """CBAM channel weights per block: one row per face, one column per channel, channels sorted by mean weight."""
    fig = _figure(figsize=(10.5, 0.4 + (0.35 + 0.11 * len(titles)) * len(attention)))
    axes = fig.subplots(len(attention), 1, squeeze=False)[:, 0]
    for ax, a in zip(axes, attention):
        ch = a["channel"]  # (M, C)
        order = np.argsort(-ch.mean(0))
        im = ax.imshow(ch[:, order], aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest")
        ax.set_yticks(range(len(titles)), titles, fontsize=6.5)
        ax.set_xticks([])
        ax.grid(False)
        ax.set_title(f"{a['name']}: {ch.shape[1]} channels", loc="left", fontsize=8, fontweight="normal",
                     color=MUTED)
        for s in ax.spines.values():
            s.set_visible(False)
    fig.colorbar(im, ax=list(axes), fraction=0.02, pad=0.01, label="channel weight")
    return _png(fig)


# ---- face tiles (OpenCV: a few kB each, drawn into the HTML as images) ----------------------------------------


def _encode(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", img)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def _upscale(gray: np.ndarray) -> np.ndarray:
    return cv2.resize(gray, (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC)


def face_png(face: np.ndarray) -> bytes:
    """A uint8 gray face (S, S), or a float one in [0, 1], as a PNG tile."""
    if face.dtype != np.uint8:
        face = (np.clip(face, 0, 1) * 255).round().astype(np.uint8)
    return _encode(_upscale(face))


def heatmap_png(face: np.ndarray, heat: np.ndarray) -> bytes:
    """A face (size, size) in [0, 1] under a heatmap (h, w) in [0, 1] (resized to the face), as a PNG tile."""
    gray = _upscale((np.clip(face, 0, 1) * 255).round().astype(np.uint8))
    heat = cv2.resize(np.clip(heat, 0, 1).astype(np.float32), (FACE_PX, FACE_PX), interpolation=cv2.INTER_CUBIC)
    colored = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)  # (P, P, 3) BGR
    base = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    return _encode(cv2.addWeighted(colored, CAM_ALPHA, base, 1 - CAM_ALPHA, 0))
