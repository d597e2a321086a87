"""Evaluation of trained checkpoints on a labelled dataset: metrics, test-time augmentation, ensembles, plots.

``ferkit.evaluate(model, data, ...)`` (this package, called) is ``evaluate``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from ferkit.callable_package import make_callable
from ferkit.errors import FerkitError
from ferkit.evaluate.data import EvalData, load_eval_data
from ferkit.evaluate.metrics import Calibration, Evaluation, Scores, calibration, compute_metrics
from ferkit.evaluate.plots import plot_confusion, plot_reliability
from ferkit.models.predict import TTA, Member, check_tta, load_members, predict_proba
from ferkit.evaluate.save import save_evaluation

__all__ = [
    "TTA",
    "Calibration",
    "Evaluation",
    "Scores",
    "calibration",
    "compute_metrics",
    "evaluate",
    "overlap_warning",
    "plot_confusion",
    "plot_reliability",
    "predict_proba",
    "save_evaluation",
    "score",
]


def evaluate(checkpoint: str | Path, data: str | Path, split: str | None = None, tta: str | None = None,
             ensemble: Sequence[str | Path] = (), batch_size: int = 256, *, progress: bool = False) -> Evaluation:
    """Score a checkpoint (or run directory), alone or averaged with the ``ensemble`` checkpoints, on ``split``
    (None: ``test``, or the only split of a dataset without split folders; ``Evaluation.split`` says which).

    Classes are matched by name: images of data classes the model cannot predict are left out (and counted in
    ``excluded_classes`` / ``excluded_images``); metrics run over the model's full label list (answers of a class
    the data lacks count as wrong; macro averages cover the classes the data has). The data is loaded
    at the first model's face size. ``tta`` None means the first checkpoint's own protocol (its meta's ``tta``,
    ten-crop for the shipped models) or none. ``progress`` shows bars (rate, ETA) while a dataset is decoded for
    the first time and while the faces are scored. ``Evaluation.warnings`` says when a model trained on the scored
    images or copies of them.
    """
    from ferkit.models.predict import ensemble_orders
    from ferkit.models.checkpoint import resolve_checkpoint
    from ferkit.device import resolve_device

    start = time.perf_counter()
    if tta is not None:
        check_tta(tta)
    if batch_size < 1:
        raise FerkitError(f"batch size must be at least 1, got {batch_size}")
    paths = [resolve_checkpoint(c) for c in (checkpoint, *ensemble)]
    members = load_members(paths, resolve_device("auto"))
    ensemble_orders([meta["labels"] for _, meta in members], [str(p) for p in paths])  # refuse a mixed ensemble early
    ev, _, _ = score(members, paths, data, split, tta, batch_size, progress)
    return replace(ev, seconds=time.perf_counter() - start)


def score(members: Sequence[Member], paths: Sequence[str | Path], data: str | Path, split: str | None,
          tta: str | None, batch_size: int = 256, progress: bool = False) -> tuple[Evaluation, EvalData, np.ndarray]:
    """Loaded ``members`` (read from ``paths``) scored on ``split``: the evaluation, the data it ran on and the
    probabilities (N, C). ``tta`` None means the first member's own protocol; see ``evaluate``."""
    start = time.perf_counter()
    meta = members[0][1]
    labels = list(meta["labels"])
    tta = check_tta(tta or meta.get("tta", "none"))
    d = load_eval_data(data, split, labels, int(meta["input"]["face_size"]), progress)
    t0 = time.perf_counter()
    probs = predict_proba(members, d.faces.images, tta, batch_size, progress)
    predict_seconds = time.perf_counter() - t0
    warnings = [w for (_, m), p in zip(members, paths) if (w := overlap_warning(m, d.location, d.split, p))]
    ev = replace(compute_metrics(d.y, probs, labels), checkpoints=[str(p) for p in paths], data=d.location,
                 split=d.split, tta=tta, excluded_classes=d.excluded_classes, excluded_images=d.excluded_images,
                 warnings=warnings, predict_seconds=predict_seconds, seconds=time.perf_counter() - start)
    return ev, d, probs


def overlap_warning(meta: dict, location: str, split: str, name: str | Path = "the model") -> str | None:
    """Why a model's scores on ``split`` of the dataset at ``location`` are not clean, or None: it trained on that
    split, or on copies of its images (a run with data.keep_leaks, or one made before leaks were left out)."""
    dataset = meta.get("dataset") or {}
    if not dataset.get("location") or Path(dataset["location"]).resolve() != Path(location).resolve():
        return None  # trained on other data: ferkit cannot tell, and the usual case is clean
    if split == "train":
        return f"{name} trained on this {split} split: its scores here measure memory, not generalisation"
    kept = dataset.get("leaks_kept")
    if kept:
        return (f"{name} trained on {kept:,} copies of evaluation images (data.keep_leaks): its {split} scores "
                "are inflated")
    config = (meta.get("config") or {}).get("data") or {}
    if kept is None and not config.get("exclude"):
        return (f"{name} was trained before ferkit left out training copies of evaluation images, without "
                f"data.exclude: its {split} scores may be inflated; train it again")
    return None


make_callable(__name__, evaluate)
