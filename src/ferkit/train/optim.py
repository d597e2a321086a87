"""Optimizers and learning-rate schedules, built from the config for one training stage."""

from __future__ import annotations

import math

import torch

from ferkit.config import OptimConfig, ScheduleConfig
from ferkit.errors import FerkitError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("none", "plateau", "onecycle", "cosine", "step")
PER_BATCH = ("onecycle", "cosine")  # these step after every batch, the others once per epoch


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    raise FerkitError(f"unknown optimizer {cfg.name!r}; choose one of: {', '.join(OPTIMIZERS)}")


def build_schedule(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int, mode: str
):
    """A scheduler for a stage of ``epochs`` epochs; ``mode`` is "max" or "min" for the monitored metric."""
    total = max(1, epochs * steps_per_epoch)
    if cfg.name == "none":
        return None
    if cfg.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, threshold=cfg.min_delta,
            threshold_mode="abs", min_lr=cfg.min_lr,
        )
    if cfg.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=total, pct_start=cfg.pct_start
        )
    if cfg.name == "cosine":
        warmup = int(cfg.warmup_epochs * steps_per_epoch)
        floor = [cfg.min_lr / g["lr"] if g["lr"] else 0.0 for g in optimizer.param_groups]

        def factor(step: int, floor: float) -> float:
            if step < warmup:
                return (step + 1) / warmup
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, f=f: factor(s, f) for f in floor])
    if cfg.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.factor)
    raise FerkitError(f"unknown schedule {cfg.name!r}; choose one of: {', '.join(SCHEDULES)}")


def schedule_state(scheduler) -> dict | None:
    """Scheduler state without the lambdas LambdaLR keeps (they are rebuilt from the config)."""
    if scheduler is None:
        return None
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
