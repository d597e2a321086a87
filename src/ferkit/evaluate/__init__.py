"""Evaluation of trained checkpoints on a labelled dataset: metrics, test-time augmentation, ensembles, plots."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from ferkit.errors import FerkitError
from ferkit.evaluate.metrics import Calibration, Evaluation, Scores, calibration, compute_metrics
from ferkit.evaluate.plots import plot_confusion, plot_reliability
from ferkit.evaluate.predict import TTA, check_tta, load_members, predict_proba
from ferkit.evaluate.save import save_evaluation

__all__ = [
    "TTA",
    "Calibration",
    "Evaluation",
    "Scores",
    "calibration",
    "compute_metrics",
    "evaluate",
    "plot_confusion",
    "plot_reliability",
    "predict_proba",
    "save_evaluation",
]


def evaluate(checkpoint: str | Path, data: str | Path, split: str = "test", tta: str | None = None,
             ensemble: Sequence[str | Path] = (), batch_size: int = 256, *, progress: bool = False) -> Evaluation:
    """Score a checkpoint (or run directory), alone or averaged with the ``ensemble`` checkpoints, on ``split``.

    Classes are matched by name: images of data classes the model cannot predict are left out (and counted in
    ``excluded_classes`` / ``excluded_images``); metrics run over the model's full label list. The data is loaded
    at the first model's face size. ``tta`` None means the first checkpoint's own protocol (its meta's ``tta``,
    ten-crop for the shipped default model) or none. ``progress`` shows a bar while a dataset is decoded for the first time.
    """
    from ferkit.evaluate.data import load_eval_data
    from ferkit.evaluate.labels import ensemble_orders
    from ferkit.train.checkpoint import resolve_checkpoint
    from ferkit.train.trainer import resolve_device

    start = time.perf_counter()
    if tta is not None:
        check_tta(tta)
    if batch_size < 1:
        raise FerkitError(f"batch size must be at least 1, got {batch_size}")
    paths = [resolve_checkpoint(c) for c in (checkpoint, *ensemble)]
    members = load_members(paths, resolve_device("auto"))
    metas = [meta for _, meta in members]
    ensemble_orders([m["labels"] for m in metas], [str(p) for p in paths])  # refuse a mixed ensemble early
    labels = list(metas[0]["labels"])
    tta = check_tta(tta or metas[0].get("tta", "none"))
    d = load_eval_data(data, split, labels, int(metas[0]["input"]["face_size"]), progress)
    t0 = time.perf_counter()
    probs = predict_proba(members, d.faces.images, tta, batch_size)
    predict_seconds = time.perf_counter() - t0
    ev = compute_metrics(d.y, probs, labels)
    return replace(ev, checkpoints=[str(p) for p in paths], data=d.location, split=split, tta=tta,
                   excluded_classes=d.excluded_classes, excluded_images=d.excluded_images,
                   predict_seconds=predict_seconds, seconds=time.perf_counter() - start)
