"""What a model costs: parameters, checkpoint size, FLOPs per face and CPU latency per face, measured here."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ferkit.models.checkpoint import file_size_mb

LATENCY_WARMUP = 5  # untimed forward passes first: allocator and oneDNN kernel selection settle
LATENCY_REPEATS = 30  # timed batch-1 forward passes; the median is reported


@dataclass
class ModelCost:
    """Size and speed of one model for one face (batch 1, one view: test-time augmentation multiplies both)."""

    parameters: int
    size_mb: float  # checkpoint file on disk
    flops: int  # floating-point operations of one forward pass (a multiply-add counts 2)
    latency_ms: float  # median wall time of a batch-1 forward pass, torch eager on CPU
    repeats: int  # timed passes the median is taken over
    threads: int  # torch CPU threads the latency was measured with

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_flops(model: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of ``model(x)`` as torch's FlopCounterMode counts them (convolutions, matmuls, attention)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def cpu_latencies_ms(pairs: Sequence[tuple[nn.Module, torch.Tensor]], repeats: int = LATENCY_REPEATS,
                     warmup: int = LATENCY_WARMUP) -> list[float]:
    """Median milliseconds of ``model(x)`` per (model, x) pair on CPU in eager mode.

    The models take turns, one pass each per round, so whatever else the machine runs meanwhile weighs on every
    model alike and their ratios stay meaningful.
    """
    times: list[list[float]] = [[] for _ in pairs]
    with torch.inference_mode():
        for _ in range(warmup):
            for model, x in pairs:
                model(x)
        for _ in range(repeats):
            for k, (model, x) in enumerate(pairs):
                t0 = time.perf_counter()
                model(x)
                times[k].append(time.perf_counter() - t0)
    return [1000 * statistics.median(t) for t in times]


def measure_costs(models: Sequence[nn.Module], checkpoints: Sequence[str | Path], faces: Sequence[torch.Tensor],
                  repeats: int = LATENCY_REPEATS) -> list[ModelCost]:
    """Cost of each CPU model (in eval mode) for its one preprocessed face (1, C, size, size)."""
    for model in models:
        model.eval()
    latencies = cpu_latencies_ms(list(zip(models, faces)), repeats)
    return [
        ModelCost(parameters=sum(p.numel() for p in model.parameters()), size_mb=file_size_mb(checkpoint),
                  flops=count_flops(model, face), latency_ms=latency, repeats=repeats,
                  threads=torch.get_num_threads())
        for model, checkpoint, face, latency in zip(models, checkpoints, faces, latencies)
    ]
