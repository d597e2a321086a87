"""Small building blocks shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ferkit.errors import FerkitError

# Pixel statistics of the Kaggle FER-2013 train split (28,709 faces, gray in [0, 1], pooled over all pixels):
# what the from-scratch models normalise with. Pretrained backbones use their own weights' statistics instead.
FER_MEAN = (0.5136,)
FER_STD = (0.3067,)


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; the first layer of every model, so training and serving cannot drift."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean {tuple(mean)} and std {tuple(std)} differ in length")
        # Plain tuples as well as buffers: readable without touching tensors (meta-device builds have no values).
        self.mean_values = tuple(float(m) for m in mean)
        self.std_values = tuple(float(s) for s in std)
        self.register_buffer("mean", torch.tensor(self.mean_values).view(1, -1, 1, 1))  # (1, C, 1, 1)
        self.register_buffer("std", torch.tensor(self.std_values).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean_values}, std={self.std_values}"


def conv_bn_relu(c_in: int, c_out: int, *, bias: bool = False) -> list[nn.Module]:
    """3x3 'same' convolution, batch norm, ReLU (``bias=True`` mirrors Keras' default Conv2D)."""
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class BlockNet(nn.Sequential):
    """normalize -> body blocks -> head, as named children.

    The freezing strategies walk these children: everything but ``head`` is the body, and each body child with
    parameters is one block for ``last_blocks:N``.
    """

    def __init__(self, normalize: Normalize, blocks: dict[str, nn.Module], head: nn.Module):
        super().__init__()
        self.normalize = normalize
        for name, block in blocks.items():
            self.add_module(name, block)
        self.head = head


def check_int(option: str, value: object, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``; anything else is the user's mistake."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FerkitError(f"model option {option} must be an integer >= {minimum}, got {value!r}")
    return value


def check_rate(option: str, value: object) -> float:
    """``value`` as a dropout probability in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise FerkitError(f"model option {option} must be a number in [0, 1), got {value!r}")
    return float(value)
