"""Accuracy under the framings and image faults real photos bring: models side by side on the same faces.

Every face of a split is perturbed the same way for every model (a tighter, looser or shifted crop of the face, a
turned face, blur, low contrast, JPEG at quality 20, histogram equalization), then each model scores it with its own
preprocessing. The dataset's faces are all there is of each photo, so a looser crop fills its margin with the
face's border pixels repeated (as the detectors' bench frames its faces). With ``fer_python`` the `fer` package
scores the same faces too, each given to it as the face box of its own image.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.config import INPUT_SIZE
from ferkit.errors import FerkitError, UnknownNameError
from ferkit.fileio import atomic_write


def _warp(faces: np.ndarray, scale: float = 1.0, shift: float = 0.0, angle: float = 0.0) -> np.ndarray:
    """The square window ``scale`` x the face side, its centre moved by ``shift`` sides right and down, turned by
    ``angle`` degrees, resampled to the face's size: (N, S, S) uint8 -> (N, S, S) uint8."""
    S = faces.shape[1]
    centre = (S / 2 - 0.5 + shift * S, S / 2 - 0.5 + shift * S)  # in pixel-centre coordinates
    m = cv2.getRotationMatrix2D(centre, angle, 1.0 / scale)  # input -> output of a window about ``centre``
    m[:, 2] += (S / 2 - 0.5) - np.array(centre)  # and that window's centre onto the output's centre
    return np.stack([cv2.warpAffine(f, m, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                     for f in faces])


def _blur(faces: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    return np.stack([cv2.GaussianBlur(f, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE) for f in faces])


def _contrast(faces: np.ndarray, factor: float = 0.5) -> np.ndarray:
    x = faces.astype(np.float32)
    mean = x.mean(axis=(1, 2), keepdims=True)
    return np.clip(mean + (x - mean) * factor, 0, 255).round().astype(np.uint8)


def _jpeg(faces: np.ndarray, quality: int = 20) -> np.ndarray:
    return np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, quality])[1],
                                  cv2.IMREAD_GRAYSCALE) for f in faces])


# name -> (what it is, uint8 faces (N, S, S) -> perturbed faces (N, S, S)); "clean" first, framings next.
PERTURBATIONS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "clean": ("the dataset's faces as they are", lambda f: f),
    "tighter crop": ("window 0.8x the face side, same centre", lambda f: _warp(f, scale=0.8)),
    "looser crop": ("window 1.25x the face side, same centre", lambda f: _warp(f, scale=1.25)),
    "shifted crop": ("window moved 0.1 face sides right and down", lambda f: _warp(f, shift=0.1)),
    "rotation 15": ("face turned 15 degrees", lambda f: _warp(f, angle=15.0)),
    "blur": ("Gaussian blur, sigma 1.2 px at 48 px", _blur),
    "low contrast": ("contrast halved about each face's mean", _contrast),
    "jpeg q20": ("JPEG re-compression at quality 20", _jpeg),
    "equalized": ("histogram equalization, as the Kaggle FER-2013 JPEGs are stored",
                  lambda f: np.stack([cv2.equalizeHist(x) for x in f])),
}
FRAMINGS = ("tighter crop", "looser crop", "shifted crop")


@dataclass
class ModelRobustness:
    model: str
    images: int  # faces scored (of classes the model predicts)
    tta: str
    accuracy: dict[str, float]  # perturbation -> accuracy

    def drop(self, perturbation: str) -> float:
        """Accuracy lost against clean faces, in points (positive = worse)."""
        return 100 * (self.accuracy["clean"] - self.accuracy[perturbation])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "drop_points": {p: round(self.drop(p), 2) for p in self.accuracy}}


def check_perturbations(names: Sequence[str] | None) -> list[str]:
    if not names:
        return list(PERTURBATIONS)
    unknown = [n for n in names if n not in PERTURBATIONS]
    if unknown:
        raise UnknownNameError(f"unknown perturbation {unknown[0]!r}; choose from: {', '.join(PERTURBATIONS)}")
    return ["clean", *(n for n in names if n != "clean")]


def bench_robustness(models: Sequence[str | Path], data: str | Path, split: str = "test", tta: str | None = "none",
                     perturbations: Sequence[str] | None = None, limit: int | None = None, seed: int = 0,
                     on_step: Callable[[str, str], None] | None = None,
                     fer_python: str | None = None) -> list[ModelRobustness]:
    """Each model's accuracy on ``split`` of ``data``, clean and under each perturbation.

    ``tta`` None means each model's own protocol; ``limit`` scores a random subset of that many faces (the same
    faces for every model that answers the same classes, and for every perturbation); ``on_step(model,
    perturbation)`` is called after each scoring.
    ``fer_python``: a Python that has the fer package, scored last as the model "fer" (see ``ferkit.bench.fer``).
    """
    from ferkit.bench.fer import LABELS as FER_LABELS, fer_interpreter
    from ferkit.evaluate.data import load_eval_data
    from ferkit.evaluate.metrics import compute_metrics
    from ferkit.models.predict import check_tta, load_members, predict_proba
    from ferkit.models.checkpoint import resolve_checkpoint

    if not models:
        raise FerkitError("give at least one model to compare")
    if limit is not None and limit < 1:
        raise FerkitError(f"--limit must be at least 1, got {limit}")
    if tta is not None:
        check_tta(tta)
    names = check_perturbations(perturbations)
    fer = fer_interpreter(fer_python) if fer_python is not None else None
    loaded = [(str(m), load_members([resolve_checkpoint(m)])) for m in models]  # every model found before work starts

    def split_faces(labels: Sequence[str], face_size: int) -> tuple[np.ndarray, np.ndarray]:
        d = load_eval_data(data, split, labels, face_size, progress=True)
        pick = np.arange(len(d.y))
        if limit is not None and limit < len(pick):
            pick = np.sort(np.random.default_rng(seed).permutation(len(pick))[:limit])
        return d.faces.images[pick], d.y[pick]

    out = []
    for name, members in loaded:
        meta = members[0][1]
        labels = list(meta["labels"])
        faces, y = split_faces(labels, int(meta["input"]["face_size"]))
        protocol = check_tta(tta or meta.get("tta", "none"))
        accuracy = {}
        for p in names:
            probs = predict_proba(members, PERTURBATIONS[p][1](faces), protocol)
            accuracy[p] = compute_metrics(y, probs, labels).accuracy
            if on_step is not None:
                on_step(name, p)
        out.append(ModelRobustness(name, len(y), protocol, accuracy))
    if fer is not None:
        out.append(_fer_robustness(fer, *split_faces(FER_LABELS, INPUT_SIZE), FER_LABELS, names, on_step))
    return out


def _fer_robustness(python: str, faces: np.ndarray, y: np.ndarray, labels: Sequence[str], names: Sequence[str],
                    on_step: Callable[[str, str], None] | None) -> ModelRobustness:
    """The fer package's accuracy on ``faces`` (``labels``: fer's classes): every perturbation's faces go to fer in
    one run."""
    from ferkit.bench.fer import fer_scores
    from ferkit.evaluate.metrics import compute_metrics

    scores = fer_scores(python, np.concatenate([PERTURBATIONS[p][1](faces) for p in names]))
    accuracy = {}
    for i, p in enumerate(names):
        accuracy[p] = compute_metrics(y, scores[i * len(y):(i + 1) * len(y)], labels).accuracy
        if on_step is not None:
            on_step("fer", p)
    return ModelRobustness("fer", len(y), "none", accuracy)


def plot_robustness(rows: Sequence[ModelRobustness], path: str | Path, title: str = "") -> Path:
    """Grouped bars: accuracy per perturbation, one colour per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0].accuracy)
    width = 0.8 / len(rows)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.2 * len(names)), 4.2), dpi=120)
    for i, r in enumerate(rows):
        xs = np.arange(len(names)) + (i - (len(rows) - 1) / 2) * width
        bars = ax.bar(xs, [100 * r.accuracy[n] for n in names], width, label=r.model)
        ax.bar_label(bars, fmt="%.1f", fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return atomic_write(path, buf.getvalue())
