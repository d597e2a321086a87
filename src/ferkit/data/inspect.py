"""What a dataset holds: format, splits, class counts, image sizes, cleaning findings, and a picture of it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ferkit.data.clean import find_issues, summarize
from ferkit.data.scan import Scan, ordered_splits
from ferkit.fileio import atomic_write


def describe(scan: Scan) -> dict:
    """A JSON-ready summary of a scanned dataset.

    ``splits`` counts images per class as the source labels them (FER+: majority vote); images without a usable
    label (FER+ unknown or not-a-face majority) are counted under ``unlabelled``.
    """
    classes = [str(c) for c in scan.classes]
    splits, unlabelled = {}, {}
    for split in ordered_splits(scan.split.tolist()):
        rows = (scan.split == split) & (scan.problem == "")
        labels = scan.label[rows]
        counts = np.bincount(labels[labels >= 0], minlength=len(classes))
        splits[split] = {c: int(n) for c, n in zip(classes, counts)}
        unlabelled[split] = int((labels < 0).sum())
    ok = scan.problem == ""
    hw = scan.native_hw[ok]
    sizes = Counter(f"{h}x{w}" for h, w in hw.tolist())
    findings = find_issues(scan)
    return {
        "format": scan.format,
        "location": scan.location,
        "classes": classes,
        "splits": splits,
        "split_origin": {str(a): str(b) for a, b in scan.split_origin},
        "unlabelled": unlabelled,
        "num_images": int(sum(sum(c.values()) for c in splits.values())),
        "num_files": len(scan),
        "image_size": {
            "min": [int(v) for v in hw.min(axis=0)] if len(hw) else None,
            "max": [int(v) for v in hw.max(axis=0)] if len(hw) else None,
            "most_common": sizes.most_common(3),
            "channels": {str(k): int(v) for k, v in sorted(Counter(scan.channels[ok].tolist()).items())},
            "stored_at": scan.size,
        },
        "issues": summarize(findings),
        "num_flagged_files": len({(f.split, f.path) for f in findings}),
    }


def plot_dataset(scan: Scan, out: str | Path, per_class: int = 8, seed: int = 0) -> Path:
    """Class-distribution bars per split above a grid of random sample faces per class; written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = describe(scan)
    classes, splits = summary["classes"], summary["splits"]
    rng = np.random.default_rng(seed)
    fig = plt.figure(figsize=(max(8, per_class * 1.1), 4 + 1.1 * len(classes)), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=[3.5, 1.1 * len(classes)])

    ax = top.subplots()
    width = 0.8 / len(splits)
    x = np.arange(len(classes))
    for k, (split, counts) in enumerate(splits.items()):
        bars = ax.bar(x + (k - (len(splits) - 1) / 2) * width, list(counts.values()), width, label=split)
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.set_xticks(x, classes)
    ax.set_ylabel("images")
    ax.set_title(f"{Path(scan.location).name} ({scan.format}): images per class")
    ax.legend()
    ax.spines[["top", "right"]].set_visible(False)

    grid = bottom.subplots(len(classes), per_class, squeeze=False)
    usable = scan.problem == ""
    for r, name in enumerate(classes):
        pool = np.flatnonzero(usable & (scan.label == r))
        picks = rng.choice(pool, size=min(per_class, len(pool)), replace=False) if len(pool) else []
        for c in range(per_class):
            a = grid[r, c]
            a.set_xticks([])
            a.set_yticks([])
            a.spines[:].set_visible(False)
            if c < len(picks):
                a.imshow(scan.image[picks[c]], cmap="gray", vmin=0, vmax=255)
            if c == 0:
                a.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    bottom.suptitle("random samples per class", fontsize=10)

    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(out, buf.getvalue())
