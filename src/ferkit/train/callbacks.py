"""Keras-style callbacks: each sees the metrics of every finished epoch and keeps state that survives a resume."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferkit.errors import FerkitError, UnknownNameError
from ferkit.fileio import atomic_write

if TYPE_CHECKING:
    from ferkit.train.trainer import Trainer

MONITORS = {"val_accuracy": "max", "val_macro_f1": "max", "val_loss": "min"}


def monitor_mode(monitor: str) -> str:
    if monitor not in MONITORS:
        raise UnknownNameError(f"unknown monitor {monitor!r}; choose one of: {', '.join(MONITORS)}")
    return MONITORS[monitor]


def improved(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


class Callback:
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None: ...

    def on_stage_start(self, trainer: Trainer, stage: int) -> None: ...

    def on_train_end(self, trainer: Trainer) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class ModelCheckpoint(Callback):
    """``best.safetensors`` whenever the monitored metric improves, ``last.safetensors`` after every epoch."""

    def __init__(self, run_dir: Path, monitor: str):
        self.run_dir, self.monitor, self.mode = run_dir, monitor, monitor_mode(monitor)
        self.best: float | None = None
        self.best_epoch: int | None = None

    def on_epoch_end(self, trainer, metrics):
        value = metrics[self.monitor]
        if improved(value, self.best, self.mode):
            self.best, self.best_epoch = value, metrics["epoch"]
            trainer.save_model(self.run_dir / "best", metrics)
        trainer.save_model(self.run_dir / "last", metrics)

    def state_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class EarlyStopping(Callback):
    """Stop a stage when the monitored metric has not improved by ``min_delta`` for ``patience`` epochs."""

    def __init__(self, monitor: str, patience: int, min_delta: float = 0.0):
        self.monitor, self.mode, self.patience, self.min_delta = monitor, monitor_mode(monitor), patience, min_delta
        self.best: float | None = None
        self.wait = 0

    def on_stage_start(self, trainer, stage):
        self.best, self.wait = None, 0

    def on_epoch_end(self, trainer, metrics):
        value = metrics[self.monitor]
        margin = self.min_delta if self.mode == "max" else -self.min_delta
        if self.best is None or improved(value - margin, self.best, self.mode):
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                trainer.stop_stage = True
                trainer.log.info("early stopping after epoch %d: %s did not improve for %d epochs",
                                 metrics["epoch"], self.monitor, self.patience)

    def state_dict(self):
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state):
        self.best, self.wait = state["best"], state["wait"]


class CSVLogger(Callback):
    """``metrics.csv``: one row per epoch, rewritten whole each time so it is never half a row. Its columns are every
    key any row has (a run resumed by a later ferkit may log more figures than its first epochs did)."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []

    def on_epoch_end(self, trainer, metrics):
        self.rows.append(dict(metrics))
        buf = io.StringIO()
        columns = list(dict.fromkeys(k for row in self.rows for k in row))
        w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        w.writerows(self.rows)
        atomic_write(self.path, buf.getvalue())

    def state_dict(self):
        return {"rows": self.rows}

    def load_state_dict(self, state):
        self.rows = state["rows"]


class TensorBoard(Callback):
    def __init__(self, log_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise FerkitError("train.tensorboard needs the tensorboard package: "
                              "pip install 'ferkit[tensorboard]'") from None
        self.writer = SummaryWriter(str(log_dir))

    def on_epoch_end(self, trainer, metrics):
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and k != "epoch":
                self.writer.add_scalar(k, v, metrics["epoch"])
        self.writer.flush()

    def on_train_end(self, trainer):
        self.writer.close()
