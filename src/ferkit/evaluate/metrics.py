"""Classification metrics of predicted probabilities against true labels, as one JSON-ready result.

Metrics run over the model's full label list: a model class the data has no image of keeps its row and column
(support 0, precision, recall and F1 0 by convention) and predicting it is an error, counted against accuracy and
the recall of the true class. The macro and weighted averages run over the classes the data has, so such answers
lower no class's precision there: read the confusion matrix's column of that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

ECE_BINS = 15


@dataclass
class Scores:
    """Precision, recall and F1 of one class (or an average over classes) and the images they cover."""

    precision: float
    recall: float
    f1: float
    support: int

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass
class Calibration:
    """Confidence (top probability) in equal-width bins over [0, 1]: bin b holds (b / bins, (b + 1) / bins]."""

    count: list[int]  # images per bin
    accuracy: list[float | None]  # fraction right per bin, None where the bin is empty
    confidence: list[float | None]  # mean top probability per bin
    ece: float  # expected calibration error: sum over bins of count / n * |accuracy - confidence|

    @property
    def bins(self) -> int:
        return len(self.count)

    def to_dict(self) -> dict[str, Any]:
        return {"bins": self.bins, "count": self.count, "accuracy": self.accuracy, "confidence": self.confidence,
                "ece": self.ece}


@dataclass
class Evaluation:
    """Metrics of one evaluation and what was evaluated.

    ``seconds`` is the wall time of the whole evaluation (loading checkpoints and data included);
    ``predict_seconds`` that of preprocessing and the forward passes, which ``images_per_s`` is measured on.
    """

    labels: list[str]  # the model's label order: rows and columns of the confusion matrix
    n: int
    accuracy: float
    top2_accuracy: float
    macro: Scores
    weighted: Scores
    per_class: dict[str, Scores]
    confusion: list[list[int]]  # rows true, columns predicted
    log_loss: float
    calibration: Calibration
    checkpoints: list[str] = field(default_factory=list)
    data: str = ""
    split: str = ""
    tta: str = "none"
    excluded_classes: list[str] = field(default_factory=list)  # data classes the model cannot predict
    excluded_images: int = 0  # images of those classes left out of the split
    warnings: list[str] = field(default_factory=list)  # why these scores may not be clean (training data overlap)
    seconds: float = 0.0
    predict_seconds: float = 0.0

    @property
    def macro_f1(self) -> float:
        return self.macro.f1

    @property
    def ece(self) -> float:
        return self.calibration.ece

    @property
    def images_per_s(self) -> float:
        return self.n / self.predict_seconds if self.predict_seconds > 0 else 0.0

    @property
    def confusion_normalized(self) -> list[list[float]]:
        """Each row divided by its total (the recall view); rows of classes without images stay 0."""
        cm = np.asarray(self.confusion, np.float64)
        rows = cm.sum(axis=1, keepdims=True)
        return np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0).tolist()

    @property
    def absent_classes(self) -> list[str]:
        """Model classes with no image in the data."""
        return [c for c, s in self.per_class.items() if s.support == 0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "macro_f1": self.macro_f1,
            "top2_accuracy": self.top2_accuracy,
            "log_loss": self.log_loss,
            "ece": self.ece,
            "n": self.n,
            "labels": self.labels,
            "per_class": {c: s.to_dict() for c, s in self.per_class.items()},
            "macro": self.macro.to_dict(),
            "weighted": self.weighted.to_dict(),
            "confusion_matrix": self.confusion,
            "confusion_matrix_normalized": self.confusion_normalized,
            "calibration": self.calibration.to_dict(),
            "absent_classes": self.absent_classes,
            "excluded_classes": self.excluded_classes,
            "excluded_images": self.excluded_images,
            "warnings": self.warnings,
            "checkpoints": self.checkpoints,
            "data": self.data,
            "split": self.split,
            "tta": self.tta,
            "seconds": self.seconds,
            "predict_seconds": self.predict_seconds,
            "images_per_s": self.images_per_s,
        }


def calibration(y_true: np.ndarray, probs: np.ndarray, bins: int = ECE_BINS) -> Calibration:
    """Reliability bins and expected calibration error (Guo et al., 2017) of the top-class probability."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, np.float64)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.digitize(conf, edges[1:-1], right=True)  # bin b: edges[b] < conf <= edges[b + 1]
    count = np.bincount(idx, minlength=bins)
    right = np.bincount(idx, weights=correct, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    ece = float(np.abs(right - conf_sum).sum() / max(1, len(conf)))
    accuracy = [float(v / k) if k else None for v, k in zip(right, count)]
    confidence = [float(v / k) if k else None for v, k in zip(conf_sum, count)]
    return Calibration([int(k) for k in count], accuracy, confidence, ece)


def compute_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                    bins: int = ECE_BINS) -> Evaluation:
    """Metrics of probabilities ``probs`` (N, C) against label indices ``y_true`` (N,) into ``labels`` (C)."""
    from sklearn.metrics import (confusion_matrix, log_loss, precision_recall_fscore_support,
                                 top_k_accuracy_score)

    y_true = np.asarray(y_true, np.int64)
    probs = np.asarray(probs, np.float64)
    C = len(labels)
    if probs.ndim != 2 or probs.shape != (len(y_true), C):
        raise ValueError(f"expected probabilities ({len(y_true)}, {C}), got {probs.shape}")
    if len(y_true) == 0:
        raise ValueError("no images to evaluate")
    if y_true.min() < 0 or y_true.max() >= C:
        raise ValueError(f"labels must be indices in [0, {C}), got {y_true.min()}..{y_true.max()}")
    # float32 softmax averages drift from 1 by ~1e-7; sklearn's log_loss checks that rows sum to 1.
    probs = probs / probs.sum(axis=1, keepdims=True)
    ids = list(range(C))
    pred = probs.argmax(axis=1)
    p, r, f, s = precision_recall_fscore_support(y_true, pred, labels=ids, zero_division=0)
    # Averages run over the classes the data has: an 8-class model scored on 7-class data is not marked down for
    # the class nobody could show it (its answers of that class still count as wrong).
    present = [i for i in ids if s[i] > 0]
    averages = {}
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(y_true, pred, labels=present, average=avg, zero_division=0)
        averages[avg] = Scores(float(ap), float(ar), float(af), len(y_true))
    # top_k_accuracy_score takes binary scores as one column; with two classes or fewer the top 2 always hit.
    top2 = float(top_k_accuracy_score(y_true, probs, k=2, labels=ids)) if C > 2 else 1.0
    return Evaluation(
        labels=list(labels),
        n=len(y_true),
        accuracy=float((pred == y_true).mean()),
        top2_accuracy=top2,
        macro=averages["macro"],
        weighted=averages["weighted"],
        per_class={c: Scores(float(p[i]), float(r[i]), float(f[i]), int(s[i])) for i, c in enumerate(labels)},
        confusion=confusion_matrix(y_true, pred, labels=ids).tolist(),
        log_loss=float(log_loss(y_true, probs, labels=ids)),
        calibration=calibration(y_true, probs, bins),
    )
