"""Where models run: the device a name stands for, and whether its hardware computes bf16 natively."""

from __future__ import annotations

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
