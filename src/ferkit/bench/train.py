"""Training speed: ferkit's trainer against a naive fp32 eager PyTorch loop, same model, data, batch, optimizer."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ferkit.config import load_config
from ferkit.train.trainer import Trainer


@dataclass
class BenchRow:
    variant: str
    settings: str
    images_per_s: float
    data_share: float  # fraction of the step time spent preparing batches
    ratio: float = 1.0  # images/s relative to the naive loop


def naive_loop(trainer: Trainer, batches: int, warmup: int) -> BenchRow:
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
    data_time, seen, start = 0.0, 0, 0.0
    it = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch, as long as the bench asks
    for step in range(warmup + batches):
        if step == warmup:
            data_time, seen, start = 0.0, 0, time.perf_counter()
        t0 = time.perf_counter()
        xb, yb = next(it)
        xb, yb = xb.to(device), yb.to(device)
        data_time += time.perf_counter() - t0
        loss = torch.nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(xb)
    loss.item()  # wait for the GPU's queued work
    elapsed = time.perf_counter() - start
    return BenchRow("naive PyTorch loop", "fp32, eager, NCHW", seen / elapsed, data_time / elapsed)


def ferkit_trainer(trainer: Trainer, variant: str, batches: int, warmup: int) -> BenchRow:
    trainer._start_stage(0)
    trainer.cfg.train.max_batches = warmup  # warm-up (and torch.compile) outside the measurement
    trainer.train_epoch()
    trainer.cfg.train.max_batches = batches
    stats = trainer.train_epoch()
    c = trainer.cfg.train
    settings = ", ".join([str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32",
                          "compiled" if c.compile else "eager", "channels_last" if c.channels_last else "NCHW",
                          f"augment {trainer.cfg.augment.preset}"])
    return BenchRow(variant, settings, stats["images_per_s"], stats["data_share"])


def bench_train(data: str | Path, model: str = "fernet", batch_size: int = 128, batches: int = 20,
                warmup: int = 3, precision: str = "auto", compile: bool = True) -> list[BenchRow]:
    """Images/s of the naive loop and of ferkit's trainer (without and with the default augmentation)."""
    base = [f"data.path={data}", "data.val_split=test", f"model.name={model}", f"train.batch_size={batch_size}",
            "optim.name=sgd", "optim.lr=0.01", "optim.nesterov=true", f"train.precision={precision}",
            f"train.compile={str(compile).lower()}", "train.channels_last=true"]
    rows = []
    with tempfile.TemporaryDirectory() as run_dir:  # trainers built here never write a run
        plain = Trainer(load_config(None, base), run_dir)
        rows.append(naive_loop(plain, batches, warmup))
        rows.append(ferkit_trainer(plain, "ferkit trainer", batches, warmup))
        augmented = Trainer(load_config(None, [*base, "augment.preset=fer_strong"]), run_dir)
        rows.append(ferkit_trainer(augmented, "ferkit trainer + augmentation", batches, warmup))
    for r in rows:
        r.ratio = r.images_per_s / rows[0].images_per_s
    return rows
