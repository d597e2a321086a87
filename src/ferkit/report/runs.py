"""What a report compares: run directories and checkpoints, with the training history beside each."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferkit.errors import FerkitError
from ferkit.models.checkpoint import BEST, CONFIG_FILE, LAST
from ferkit.models.weights import WEIGHTS

METRICS_FILE = "metrics.csv"
METRICS_SUFFIX = "_metrics.csv"  # <checkpoint stem>_metrics.csv beside a checkpoint file holds its training curves


@dataclass
class RunSource:
    """One thing to compare: its display name, its checkpoint and (when known) its per-epoch training metrics."""

    name: str
    checkpoint: Path
    metrics_file: Path | None
    history: list[dict[str, float]] = field(default_factory=list)  # metrics.csv rows, one per epoch


def resolve_run(spec: str | Path) -> RunSource:
    """A shipped model's name, a run directory (``config.yaml`` and ``best.safetensors``) or a checkpoint.

    A checkpoint file's history is ``<stem>_metrics.csv`` beside it, or its run directory's ``metrics.csv`` when the
    file is a run's ``best`` / ``last`` checkpoint.
    """
    if str(spec) in WEIGHTS:
        shipped = WEIGHTS[str(spec)]
        return _with_history(RunSource(shipped.name, shipped.path, shipped.metrics_file))
    path = Path(spec).expanduser()
    if path.is_dir():
        ckpt = path / f"{BEST}.safetensors"
        if not ckpt.is_file():
            has = "no best checkpoint yet" if (path / CONFIG_FILE).is_file() else "no best.safetensors"
            raise FerkitError(f"{path}: not a run directory ({has}); give a training run's folder, "
                              "a .safetensors checkpoint or 'default'")
        return _with_history(RunSource(path.resolve().name, ckpt, path / METRICS_FILE))
    if path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise FerkitError(f"{spec}: no such run or checkpoint; give a run directory, a .safetensors checkpoint "
                          "or a shipped model's name")
    if path.suffix != ".safetensors":
        raise FerkitError(f"{path}: not a checkpoint (expected a .safetensors file or a run directory)")
    beside = path.with_name(f"{path.stem}{METRICS_SUFFIX}")
    in_run = path.stem in (BEST, LAST) and (path.parent / CONFIG_FILE).is_file()
    if in_run and not beside.is_file():
        beside = path.parent / METRICS_FILE
    name = path.resolve().parent.name if in_run else path.stem
    if in_run and path.stem == LAST:
        name = f"{name} ({LAST})"
    return _with_history(RunSource(name, path, beside))


def _with_history(run: RunSource) -> RunSource:
    if run.metrics_file is None or not run.metrics_file.is_file():
        run.metrics_file = None
        return run
    try:
        with run.metrics_file.open(newline="") as f:
            run.history = [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]
    except (OSError, ValueError) as e:
        raise FerkitError(f"{run.metrics_file}: not a readable metrics table ({e}); remove it or train again") from None
    return run


def resolve_runs(specs: list[str | Path]) -> list[RunSource]:
    """Every run resolved before any work starts; repeated names get their path added to tell them apart."""
    if not specs:
        raise FerkitError("give at least one run directory, checkpoint or shipped model's name to report on")
    runs = [resolve_run(s) for s in specs]
    names = [r.name for r in runs]
    for run, spec in zip(runs, specs):
        if names.count(run.name) > 1:
            run.name = str(spec)
    return runs


def best_row(run: RunSource, meta: dict[str, Any]) -> dict[str, float]:
    """The metrics of the epoch the checkpoint was saved at: its history row, else the checkpoint's own copy."""
    saved = meta.get("metrics") or {}
    epoch, stage = saved.get("epoch"), saved.get("stage")
    row = next((r for r in run.history if epoch is not None and r.get("epoch") == float(epoch)
                and (stage is None or r.get("stage", stage) == float(stage))), None)
    return {**saved, **(row or {})}
