"""VGG-style networks: ``vgg_fer`` (the ~73% FER-2013 VGG variant) and ``fernet`` (ferkit's CPU-efficient default)."""

from __future__ import annotations

from torch import nn

from ferkit.config import INPUT_SIZE
from ferkit.models.layers import FER_MEAN, FER_STD, BlockNet, Normalize, check_int, check_rate, conv_bn_relu
from ferkit.models.registry import register_model


def _stage(c_in: int, c_out: int, *, pool: bool, bias: bool = False) -> nn.Sequential:
    layers = [*conv_bn_relu(c_in, c_out, bias=bias), *conv_bn_relu(c_out, c_out, bias=bias)]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


@register_model(
    "vgg_fer", family="vgg", input_size=INPUT_SIZE,
    description="Khaireddin & Chen 2021 VGG (73.3% on FER-2013): 4 stages 64-512, dense 4096-4096; 29.9M params",
)
def vgg_fer(num_classes: int = 7, input_size: int = INPUT_SIZE) -> nn.Module:
    """The VGG variant of Khaireddin & Chen, "Facial Emotion Recognition: State of the Art Performance on FER2013"
    (2021), as in the authors' code: 29,890,759 parameters with 7 classes.

    Four stages (64, 128, 256, 512) of two 3x3 Conv-BN-ReLU and a 2x2 max-pool; Dense4096-ReLU-Drop0.2 twice;
    Dense(num_classes). The paper trains on 40x40 crops of the 48x48 faces (``input_size=40`` with a crop
    augmentation), where the last feature map is 2x2; the adaptive pool brings 48x48's 3x3 map to that 2x2 too.
    """
    check_int("input_size", input_size, 16)
    blocks = {
        "stage1": _stage(1, 64, pool=True, bias=True),  # (B, 64, 24, 24) at 48
        "stage2": _stage(64, 128, pool=True, bias=True),  # (B, 128, 12, 12)
        "stage3": _stage(128, 256, pool=True, bias=True),  # (B, 256, 6, 6)
        "stage4": _stage(256, 512, pool=True, bias=True),  # (B, 512, 3, 3); 2x2 at 40
    }
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),  # (B, 2048)
        nn.Linear(512 * 2 * 2, 4096), nn.ReLU(inplace=True), nn.Dropout(0.2),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.2),
        nn.Linear(4096, num_classes),
    )
    return BlockNet(Normalize(FER_MEAN, FER_STD), blocks, head)


@register_model(
    "fernet", family="vgg", input_size=INPUT_SIZE,
    description="ferkit's default: 4 stages of 2 conv-BN-ReLU (32-64-128-256), GAP, linear; 1.17M params, fast on CPU",
)
def fernet(num_classes: int = 7, width: int = 32, dropout: float = 0.3, input_size: int = INPUT_SIZE) -> nn.Module:
    """ferkit's CPU-efficient default: 1,174,439 parameters at ``width=32`` with 7 classes.

    Stages of two 3x3 Conv-BN-ReLU with ``width`` x (1, 2, 4, 8) channels and a 2x2 max-pool between stages,
    global average pooling, dropout and a linear layer. Only plain conv / BN / ReLU / pool and no Python
    branching in forward, so channels_last, bf16 autocast and torch.compile apply as they are; global pooling
    makes any ``input_size`` work (about 117M multiply-adds at 48x48).
    """
    check_int("width", width, 1)
    check_int("input_size", input_size, 8)
    dropout = check_rate("dropout", dropout)
    w = width
    blocks = {
        "stage1": _stage(1, w, pool=True),  # (B, w, 24, 24) at 48
        "stage2": _stage(w, 2 * w, pool=True),  # (B, 2w, 12, 12)
        "stage3": _stage(2 * w, 4 * w, pool=True),  # (B, 4w, 6, 6)
        "stage4": _stage(4 * w, 8 * w, pool=False),  # (B, 8w, 6, 6)
    }
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(8 * w, num_classes))
    return BlockNet(Normalize(FER_MEAN, FER_STD), blocks, head)
