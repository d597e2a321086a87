"""Training speed: ferkit's trainer against a naive fp32 eager PyTorch loop, same model, data, batch, optimizer."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ferkit.config import load_config
from ferkit.errors import FerkitError
from ferkit.train.trainer import Trainer


@dataclass
class BenchRow:
    variant: str
    settings: str
    images_per_s: float  # median over the rounds
    data_share: float  # fraction of the step time spent preparing batches (median over the rounds)
    ratio: float = 1.0  # images/s relative to the naive loop: the median of the per-round ratios


Measure = Callable[[int], tuple[float, float]]  # batches -> (images/s, data share)


def naive_loop(trainer: Trainer) -> Measure:
    """What a notebook does: float tensors through a DataLoader (batches moved to the GPU if there is one), fp32,
    eager, NCHW, plain cross entropy."""
    from ferkit.models import create_model

    cfg = trainer.cfg
    device = trainer.device
    model = create_model(cfg.model.name, num_classes=len(trainer.classes), **trainer.model_kwargs).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                          nesterov=cfg.optim.nesterov)
    train = trainer.data.train
    x = torch.from_numpy(train.images).unsqueeze(1).float() / 255  # (N, 1, 48, 48)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, torch.from_numpy(train.labels)),
                                         batch_size=trainer.batch_size, shuffle=True, drop_last=True)
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, as long as the bench asks

    def measure(n: int) -> tuple[float, float]:
        data_time, seen, start = 0.0, 0, time.perf_counter()
        for _ in range(n):
            t0 = time.perf_counter()
            xb, yb = next(batches)
            xb, yb = xb.to(device), yb.to(device)
            data_time += time.perf_counter() - t0
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(xb)
        loss.item()  # wait for the GPU's queued work
        elapsed = time.perf_counter() - start
        return seen / elapsed, data_time / elapsed

    return measure


def ferkit_trainer(trainer: Trainer) -> Measure:
    trainer.start_stage(0)

    def measure(n: int) -> tuple[float, float]:
        stats = trainer.train_epoch(max_batches=n)
        return stats["images_per_s"], stats["data_share"]

    return measure


def trainer_settings(trainer: Trainer) -> str:
    c = trainer.cfg.train
    return ", ".join([str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32",
                      "compiled" if trainer.compiles else "eager", "channels_last" if c.channels_last else "NCHW",
                      f"augment {trainer.cfg.augment.preset}"])


def bench_train(data: str | Path, model: str = "fernet", batch_size: int = 128, batches: int = 20,
                warmup: int = 3, precision: str = "auto", compile: bool | str = "auto",
                rounds: int = 3) -> list[BenchRow]:
    """Images/s of the naive loop and of ferkit's trainer (without and with the default augmentation).

    After ``warmup`` batches each (torch.compile included), the variants take turns for ``rounds`` rounds of
    ``batches`` batches, so a machine that speeds up or slows down during the run affects them alike.
    ``precision`` and ``compile`` are the trainer's settings (auto: what ``ferkit train`` picks on this machine).
    """
    if min(batch_size, batches, rounds) < 1 or warmup < 0:
        raise FerkitError("batch size, batches and rounds must be at least 1, warm-up batches at least 0")
    base = [f"data.path={data}", "data.val_split=test", f"model.name={model}", f"train.batch_size={batch_size}",
            "optim.name=sgd", "optim.lr=0.01", "optim.nesterov=true", f"train.precision={precision}",
            f"train.compile={str(compile).lower()}", "train.channels_last=true"]
    with tempfile.TemporaryDirectory() as run_dir:  # trainers built here never write a run
        plain = Trainer(load_config(None, base), run_dir)
        augmented = Trainer(load_config(None, [*base, "augment.preset=fer_strong"]), run_dir)
        variants = [("naive PyTorch loop", "fp32, eager, NCHW", naive_loop(plain)),
                    ("ferkit trainer", trainer_settings(plain), ferkit_trainer(plain)),
                    ("ferkit trainer + augmentation", trainer_settings(augmented), ferkit_trainer(augmented))]
        for _, _, measure in variants:
            if warmup:
                measure(warmup)
        results = [[measure(batches) for _, _, measure in variants] for _ in range(rounds)]
    rows = []
    for k, (name, settings, _) in enumerate(variants):
        rows.append(BenchRow(name, settings, statistics.median(r[k][0] for r in results),
                             statistics.median(r[k][1] for r in results),
                             statistics.median(r[k][0] / r[0][0] for r in results)))
    return rows
