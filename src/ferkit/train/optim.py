"""Optimizers and learning-rate schedules: name registries, built from the config for one training stage.

An optimizer builder is ``builder(param_groups, cfg: OptimConfig) -> torch.optim.Optimizer``; a schedule builder is
``builder(optimizer, cfg: ScheduleConfig, epochs, steps_per_epoch, mode) -> scheduler``. A schedule registered
``per_batch`` steps after every batch, the others once per epoch (plateau with the monitored metric).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ferkit.config import OptimConfig, ScheduleConfig
from ferkit.errors import UnknownNameError

OptimizerBuilder = Callable[[list[dict], OptimConfig], torch.optim.Optimizer]


@dataclass(frozen=True)
class Schedule:
    build: Callable  # (optimizer, cfg, epochs, steps_per_epoch, mode) -> scheduler or None
    per_batch: bool  # steps after every batch (else once per epoch)


OPTIMIZERS: dict[str, OptimizerBuilder] = {}
SCHEDULES: dict[str, Schedule] = {}


def register_optimizer(name: str) -> Callable[[OptimizerBuilder], OptimizerBuilder]:
    def wrap(fn: OptimizerBuilder) -> OptimizerBuilder:
        OPTIMIZERS[name] = fn
        return fn

    return wrap


def register_schedule(name: str, *, per_batch: bool = False) -> Callable[[Callable], Callable]:
    def wrap(fn: Callable) -> Callable:
        SCHEDULES[name] = Schedule(fn, per_batch)
        return fn

    return wrap


@register_optimizer("adam")
def _adam(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=cfg.lr)


@register_optimizer("adamw")
def _adamw(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=cfg.lr)


@register_optimizer("sgd")
def _sgd(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


@register_schedule("none")
def _constant(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int, mode: str):
    return None


@register_schedule("plateau")
def _plateau(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int, mode: str):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode=mode, factor=cfg.factor, patience=cfg.patience, threshold=cfg.min_delta,
        threshold_mode="abs", min_lr=cfg.min_lr,
    )


@register_schedule("onecycle", per_batch=True)
def _onecycle(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int, mode: str):
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=max(1, epochs * steps_per_epoch),
        pct_start=cfg.pct_start,
    )


@register_schedule("cosine", per_batch=True)
def _cosine(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int, mode: str):
    """Linear warm-up for ``warmup_epochs``, then half a cosine down to ``min_lr``."""
    total = max(1, epochs * steps_per_epoch)
    warmup = int(cfg.warmup_epochs * steps_per_epoch)
    floor = [cfg.min_lr / g["lr"] if g["lr"] else 0.0 for g in optimizer.param_groups]

    def factor(step: int, floor: float) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda s, f=f: factor(s, f) for f in floor])


@register_schedule("step")
def _step(optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int, mode: str):
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.factor)


def optimizer(name: str) -> OptimizerBuilder:
    if name not in OPTIMIZERS:
        raise UnknownNameError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name]


def build_optimizer(groups: list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    return optimizer(cfg.name)(groups, cfg)


def schedule(name: str) -> Schedule:
    if name not in SCHEDULES:
        raise UnknownNameError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    return SCHEDULES[name]


def build_schedule(optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, epochs: int, steps_per_epoch: int,
                   mode: str):
    """A scheduler (or None) for a stage of ``epochs`` epochs; ``mode`` is "max" or "min" for the monitored
    metric."""
    return schedule(cfg.name).build(optimizer, cfg, epochs, steps_per_epoch, mode)


def schedule_state(scheduler) -> dict | None:
    """Scheduler state without the lambdas LambdaLR keeps (they are rebuilt from the config)."""
    if scheduler is None:
        return None
    return {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
