"""Comparing runs: each model evaluated once on one split, its cost measured, its history read, its faces explained.

`compare_runs` returns a `Report`: the figures people compare (`RunResult`, JSON-ready) and, per run, the arrays
the pictures are drawn from (`RunView`: probabilities, sample picks, Grad-CAM and CBAM maps), so that drawing never
runs a model again.
"""

from __future__ import annotations

import copy
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ferkit.evaluate import Evaluation, score
from ferkit.evaluate.gradcam import GradCam, grad_cam
from ferkit.models.predict import check_tta, load_members, model_view
from ferkit.report.cost import LATENCY_REPEATS, ModelCost, measure_costs
from ferkit.report.runs import RunSource, best_row, resolve_runs

BATCH_SIZE = 256
SAMPLES = 6  # correct and as many wrong predictions shown per model
SHOWCASE_PER_CLASS = 1  # faces per true class explained by Grad-CAM and attention maps, the same for every model
SEED = 0  # sample and showcase picks


@dataclass
class RunResult:
    """One model's figures: what it is, what it costs, how it trained and how it scores on the report's split."""

    name: str
    checkpoint: str
    architecture: str  # registered name with its options, e.g. "fernet (width 16)"
    cost: ModelCost
    evaluation: Evaluation
    best_epoch: int | None  # the epoch the checkpoint was saved at
    epochs: int | None  # epochs in the training history
    train_time_s: float | None  # sum of the history's epoch times
    train_accuracy: float | None  # at the best epoch, on augmented training batches
    train_loss: float | None
    val_accuracy: float | None  # at the best epoch, on the run's validation split
    val_loss: float | None
    val_split: str | None  # the split the run validated (and picked its best epoch) on
    val_data: str | None  # the dataset it was trained and validated on
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def test_accuracy(self) -> float:
        return self.evaluation.accuracy

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "checkpoint": self.checkpoint, "architecture": self.architecture,
            "cost": self.cost.to_dict(), "best_epoch": self.best_epoch, "epochs": self.epochs,
            "train_time_s": self.train_time_s, "train_accuracy": self.train_accuracy, "train_loss": self.train_loss,
            "val_accuracy": self.val_accuracy, "val_loss": self.val_loss, "val_split": self.val_split,
            "val_data": self.val_data,
            "test": self.evaluation.to_dict(),
        }


@dataclass
class RunView:
    """The arrays a run's pictures are drawn from (not part of ``to_dict``)."""

    faces: np.ndarray  # (N, S, S) uint8: the split's faces at the model's face size
    y: np.ndarray  # (N,) int64 true class, index into the model's labels
    probs: np.ndarray  # (N, C) float32 probabilities with the report's TTA
    paths: np.ndarray  # (N,) str: the faces' paths inside the dataset
    samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (K,) picks: correct, then wrong
    showcase: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # (M,) the shared showcase faces
    inputs: np.ndarray | None = None  # (M, size, size) float in [0, 1]: what the model sees of them
    cam: GradCam | None = None
    attention: list[dict[str, Any]] = field(default_factory=list)  # CBAM: name, channel (M, C), spatial (M, h, w)


@dataclass
class Report:
    """A comparison of runs on one split of one dataset."""

    runs: list[RunResult]
    views: list[RunView]
    data: str
    split: str
    tta: str | None  # None: each model's own test-time augmentation
    dataset: dict[str, Any]  # `ferkit.data.inspect.describe` of the data
    created: str
    environment: dict[str, Any]  # where cost was measured: CPU, threads, torch

    def to_dict(self) -> dict[str, Any]:
        return {"data": self.data, "split": self.split, "tta": self.tta, "created": self.created,
                "environment": self.environment, "dataset": self.dataset,
                "runs": [r.to_dict() for r in self.runs]}


def architecture_name(meta: dict[str, Any]) -> str:
    kwargs = {k: v for k, v in meta.get("kwargs", {}).items() if k != "input_size"}
    options = ", ".join(f"{k} {v}" for k, v in kwargs.items())
    return f"{meta['architecture']} ({options})" if options else str(meta["architecture"])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pick_samples(y: np.ndarray, probs: np.ndarray, k: int = SAMPLES, seed: int = SEED) -> np.ndarray:
    """Up to ``k`` random right and ``k`` random wrong predictions: their indices, the right ones first."""
    rng = np.random.default_rng(seed)
    right = probs.argmax(1) == y
    picks = [rng.choice(np.flatnonzero(m), size=min(k, int(m.sum())), replace=False) for m in (right, ~right)]
    return np.concatenate(picks).astype(np.int64)


def pick_showcase(views: Sequence[RunView], labels: Sequence[str], seed: int = SEED) -> list[str]:
    """Paths of faces every run has, ``SHOWCASE_PER_CLASS`` random ones per true class of the first run."""
    common = set(views[0].paths.tolist())
    for v in views[1:]:
        common &= set(v.paths.tolist())
    rng = np.random.default_rng(seed)
    first = views[0]
    out = []
    for c in range(len(labels)):
        pool = [i for i in np.flatnonzero(first.y == c) if first.paths[i] in common]
        out += [str(first.paths[i]) for i in rng.choice(pool, size=min(SHOWCASE_PER_CLASS, len(pool)), replace=False)]
    return out


def evaluate_run(run: RunSource, model: torch.nn.Module, meta: dict[str, Any], data: str | Path, split: str | None,
                 tta: str | None, device: torch.device, progress: bool) -> tuple[Evaluation, RunView]:
    """The model scored once on ``split``; its probabilities are kept for every picture of the report."""
    on_device = model if device.type == "cpu" else copy.deepcopy(model).to(device)
    ev, d, probs = score([(on_device, meta)], [run.checkpoint], data, split, tta, BATCH_SIZE, progress)
    view = RunView(d.faces.images, d.y, probs, d.faces.paths, samples=pick_samples(d.y, probs))
    return ev, view


def explain(model: torch.nn.Module, meta: dict[str, Any], view: RunView, paths: Sequence[str]) -> None:
    """Grad-CAM (and CBAM attention maps for CBAM models) of the showcase faces, stored in ``view``."""
    from ferkit.models.cbam import CBAM, attention_maps

    where = {p: i for i, p in enumerate(view.paths.tolist())}
    view.showcase = np.array([where[p] for p in paths], np.int64)
    if not len(paths):
        return
    x = model_view(view.faces[view.showcase], meta)  # (M, 1, size, size)
    view.inputs = x[:, 0].numpy()
    view.cam = grad_cam(model, x)
    if any(isinstance(m, CBAM) for m in model.modules()):
        view.attention = [{"name": a["name"], "channel": a["channel"].numpy(), "spatial": a["spatial"][:, 0].numpy()}
                          for a in attention_maps(model, x)]


def run_result(source: RunSource, meta: dict[str, Any], ev: Evaluation, cost: ModelCost) -> RunResult:
    """A run's figures: its evaluation and cost, and its training history at the checkpoint's epoch."""
    row = best_row(source, meta)
    times = [r["epoch_time_s"] for r in source.history if "epoch_time_s" in r]
    dataset = meta.get("dataset") or {}
    return RunResult(
        name=source.name, checkpoint=str(source.checkpoint), architecture=architecture_name(meta), cost=cost,
        evaluation=ev, best_epoch=int(row["epoch"]) if "epoch" in row else None,
        epochs=len(source.history) or None, train_time_s=sum(times) if times else None,
        train_accuracy=row.get("train_accuracy"), train_loss=row.get("train_loss"),
        val_accuracy=row.get("val_accuracy"), val_loss=row.get("val_loss"),
        val_split=dataset.get("val_split"), val_data=dataset.get("location"), history=source.history)


def compare_runs(specs: Sequence[str | Path], data: str | Path, split: str | None = None,
                 tta: str | None = None, *, latency_repeats: int = LATENCY_REPEATS, progress: bool = False) -> Report:
    """Evaluate, measure and explain every run (a run directory, a checkpoint or ``default``) on ``split`` (None:
    ``test``, or the only split of a dataset without split folders, as ``ferkit evaluate`` does).

    ``tta`` None means each model's own test-time augmentation. Every run is resolved and loaded before anything
    is evaluated, so a wrong name fails at once.
    """
    from ferkit.data import scan_dataset
    from ferkit.data.inspect import describe
    from ferkit.device import resolve_device

    if tta is not None:
        check_tta(tta)
    sources = resolve_runs(list(specs))
    members = load_members([s.checkpoint for s in sources], "cpu")
    device = resolve_device("auto")
    evaluations, views = [], []
    bar = tqdm(total=2 * len(sources) + 2, desc="report", unit="step", disable=not progress)
    try:
        for source, (model, meta) in zip(sources, members):
            bar.set_postfix_str(f"{source.name}: evaluating")
            ev, view = evaluate_run(source, model, meta, data, split, tta, device, progress)
            evaluations.append(ev)
            views.append(view)
            bar.update()
        bar.set_postfix_str("FLOPs and CPU latency")
        costs = measure_costs([m for m, _ in members], [s.checkpoint for s in sources],
                              [model_view(v.faces[:1], meta) for v, (_, meta) in zip(views, members)],
                              latency_repeats)
        bar.update()
        showcase = pick_showcase(views, evaluations[0].labels)
        for source, (model, meta), view in zip(sources, members, views):
            bar.set_postfix_str(f"{source.name}: Grad-CAM")
            explain(model, meta, view, showcase)
            bar.update()
        bar.set_postfix_str("class distribution")
        scan = scan_dataset(data, size=int(members[0][1]["input"]["face_size"]))
        bar.update()
    finally:
        bar.close()
    results = [run_result(source, meta, ev, cost) for source, (_, meta), ev, cost in
               zip(sources, members, evaluations, costs)]
    environment = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                   "predict_device": str(device)}
    return Report(results, views, evaluations[0].data, evaluations[0].split, tta, describe(scan),
                  datetime.now().astimezone().isoformat(timespec="seconds"), environment)
