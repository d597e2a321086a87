"""CBAM attention (Woo et al. 2018) and SEEDS S3's CBAM-5CNN, with the attention maps kept for drawing."""

from __future__ import annotations

import torch
from torch import nn

from ferkit.config import INPUT_SIZE
from ferkit.errors import FerkitError
from ferkit.models.layers import FER_MEAN, FER_STD, BlockNet, Normalize
from ferkit.models.registry import register_model


class ChannelAttention(nn.Module):
    """A shared MLP over the average- and max-pooled channel vectors; sigmoid of their sum, ``(B, C)``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        avg = self.mlp(x.mean(dim=(2, 3)))  # (B, C)
        mx = self.mlp(x.amax(dim=(2, 3)))  # (B, C)
        return torch.sigmoid(avg + mx)


class SpatialAttention(nn.Module):
    """A 7x7 convolution over the channel-mean and channel-max maps; sigmoid, ``(B, 1, H, W)``."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)  # (B, 2, H, W)
        return torch.sigmoid(self.conv(pooled))


class CBAM(nn.Module):
    """Channel attention, then spatial attention, each multiplied into the features.

    With ``keep_attention`` on, the last forward's maps stay in ``last_channel`` ``(B, C)`` and
    ``last_spatial`` ``(B, 1, H, W)``, detached, for drawing (see ``attention_maps``).
    """

    def __init__(self, channels: int, reduction: int = 16, kernel_size: int = 7):
        super().__init__()
        self.channel = ChannelAttention(channels, reduction)
        self.spatial = SpatialAttention(kernel_size)
        self.keep_attention = False
        self.last_channel: torch.Tensor | None = None
        self.last_spatial: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W)
        ch = self.channel(x)  # (B, C)
        x = x * ch[:, :, None, None]
        sp = self.spatial(x)  # (B, 1, H, W)
        if self.keep_attention:
            self.last_channel, self.last_spatial = ch.detach(), sp.detach()
        return x * sp


def _block(c_in: int, c_out: int, convs: int, *, bn: bool, drop: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(convs):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), *([nn.BatchNorm2d(c_out)] if bn else []), nn.ReLU(True)]
        c_in = c_out
    layers += [CBAM(c_out), nn.MaxPool2d(2)]
    if drop:
        layers.append(nn.Dropout(drop))
    return nn.Sequential(*layers)


@register_model(
    "cbam_5cnn", family="cbam", input_size=INPUT_SIZE,
    description="S3 CBAM-5CNN: 5 VGG-like blocks (64-128-256-512-512) each with CBAM attention; 14.6M params",
)
def cbam_5cnn(num_classes: int = 7) -> nn.Module:
    """SEEDS S3's CBAM-5CNN for 48x48 gray faces: 14,611,341 parameters with 7 classes.

    Block1 Conv64-BN-ReLU-CBAM-MaxPool-Drop0.25; Block2 Conv128-BN-ReLU-CBAM-MaxPool; Blocks 3-5 three
    Conv-ReLU (256, 512, 512; S3 names no batch norm there) then CBAM-MaxPool; Flatten; Dense(num_classes).
    S3 does not give block 1's dropout rate: 0.25 here. Five pools take 48 to 1, so Flatten sees 512 values.
    """
    blocks = {
        "block1": _block(1, 64, 1, bn=True, drop=0.25),  # (B, 64, 24, 24)
        "block2": _block(64, 128, 1, bn=True),  # (B, 128, 12, 12)
        "block3": _block(128, 256, 3, bn=False),  # (B, 256, 6, 6)
        "block4": _block(256, 512, 3, bn=False),  # (B, 512, 3, 3)
        "block5": _block(512, 512, 3, bn=False),  # (B, 512, 1, 1)
    }
    side = INPUT_SIZE // 32
    head = nn.Sequential(nn.Flatten(), nn.Linear(512 * side * side, num_classes))
    return BlockNet(Normalize(FER_MEAN, FER_STD), blocks, head)


def attention_maps(model: nn.Module, x: torch.Tensor) -> list[dict]:
    """Run ``model`` on ``x`` (in eval mode, without gradients) and return every CBAM module's maps.

    One dict per CBAM module in forward order: ``name`` (its qualified name), ``channel`` ``(B, C)`` and
    ``spatial`` ``(B, 1, H, W)``, both detached, values in [0, 1]. The model's mode is restored afterwards.
    """
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, CBAM)]
    if not found:
        raise FerkitError("this model has no CBAM modules; attention maps exist for cbam_5cnn and other CBAM models")
    was_training, kept = model.training, [m.keep_attention for _, m in found]
    model.eval()
    try:
        for _, m in found:
            m.keep_attention = True
        with torch.no_grad():
            model(x)
        return [{"name": name, "channel": m.last_channel, "spatial": m.last_spatial} for name, m in found]
    finally:
        for (_, m), keep in zip(found, kept):
            m.keep_attention = keep
            if not keep:  # the caller holds the maps; the model need not keep this batch alive
                m.last_channel = m.last_spatial = None
        model.train(was_training)
