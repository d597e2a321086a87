"""Where models run: the device a name stands for, whether its hardware computes bf16 natively, and how many CPU
threads one model call may use."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ferkit.errors import FerkitError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise FerkitError(f"train.device={name} but no CUDA GPU is available; use train.device=cpu or auto")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether the hardware computes bf16 natively (on CPUs: AVX-512 BF16 or AMX; elsewhere it is emulated)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


_cpu_threads: int | None = None


def cpu_threads() -> int:
    """Threads one model call may use on the CPU (LiteRT, onnxruntime, torch, OpenCV): every core unless
    ``set_cpu_threads`` said otherwise. Read when a runtime is created; set it first."""
    return _cpu_threads or os.cpu_count() or 1


def set_cpu_threads(n: int | None) -> int | None:
    """Let each model call use ``n`` threads (None: every core), process-wide; gives the previous setting back.
    Code that runs one model call per core sets 1: the cores are then shared between calls rather than within one,
    which wastes less on thread hand-offs."""
    import cv2

    global _cpu_threads
    previous, _cpu_threads = _cpu_threads, n
    torch.set_num_threads(cpu_threads())
    cv2.setNumThreads(cpu_threads())
    return previous


@contextmanager
def cpu_threads_limited(n: int | None) -> Iterator[None]:
    """``set_cpu_threads(n)`` for the block, the previous setting back after it (also when it raises)."""
    previous = set_cpu_threads(n)
    try:
        yield
    finally:
        set_cpu_threads(previous)
