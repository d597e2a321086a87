"""Transfer learning: any timm model as the body of a gray-face classifier.

``TransferNet`` = ``adapter`` (gray ``(B, 1, S, S)`` in [0, 1] -> bilinear resize to the backbone's resolution,
3 channels, the pretrained weights' own mean/std) -> ``backbone`` (timm, ``num_classes=0``: pooled features) ->
``head`` (a new classifier). Options of every backbone model:

- ``head``: ``linear`` (dropout + linear; default), ``s0`` (SEEDS S0's ResNet50V2 head: Dropout0.25, BN,
  Dense64-ReLU-BN-Drop0.5, Dense) or ``s3`` (S3's EfficientNet-B3 head: Dense256-ReLU-Drop0.4, Dense).
- ``drop_rate``: dropout before the linear head (default 0; the s0 and s3 heads have their recipes' dropouts).
- ``image_size``: the resolution the backbone sees (default: its pretrained weights', e.g. 224; smaller is much
  faster on CPU). ViTs get it as timm's ``img_size``, so their position embeddings are resized to match.
- ``input_size``: the gray face side fed to the model (default 48).

Recipes and ``trainable`` (see ferkit.models.freeze): S4's "VGG16, only the last three dense layers trained" is
``vgg16`` with ``trainable: modules:backbone.pre_logits``: timm keeps VGG's fc6/fc7 as ``pre_logits`` (a ConvMlp:
fc6 as a 7x7 convolution over the 7x7x512 map, fc7 as a 1x1 one, which is what Keras' Dense layers compute on
224 inputs), and the third dense layer is ferkit's head. ``last_blocks:1`` selects the same layers.

Timm is imported only when a backbone is built, so ``import ferkit`` stays fast.
"""

from __future__ import annotations

import difflib
import functools
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ferkit.config import INPUT_SIZE
from ferkit.errors import FerkitError, UnknownNameError
from ferkit.models.layers import Normalize, check_int, check_rate
from ferkit.models.registry import TIMM_PREFIX, ModelSpec, options, register_model

log = logging.getLogger(__name__)

HEADS = ("linear", "s0", "s3")

# ferkit name -> (timm name with the weights' tag, description). Tags are pinned so a newer timm cannot swap the
# weights under a recipe; torchvision's weights (tv_in1k) where the seed experiments used torchvision or Keras
# originals of the classic ImageNet recipe.
BACKBONES = {
    "resnet18": ("resnet18.tv_in1k", "ResNet-18, torchvision ImageNet weights (S1)"),
    "resnet50": ("resnet50.tv_in1k", "ResNet-50, torchvision ImageNet weights (S2, S4)"),
    "resnetv2_50": ("resnetv2_50.a1h_in1k", "ResNet50V2 (pre-activation), timm ImageNet weights (S0)"),
    "vgg16": ("vgg16.tv_in1k", "VGG16 with its fc6/fc7 MLP (backbone.pre_logits), torchvision weights (S1, S4)"),
    "densenet121": ("densenet121.tv_in1k", "DenseNet-121, torchvision ImageNet weights (S1)"),
    "efficientnet_b3": ("efficientnet_b3.ra2_in1k", "EfficientNet-B3, timm ImageNet weights, 288px (S3)"),
    "vit_base_patch16_224": (
        "vit_base_patch16_224.augreg2_in21k_ft_in1k", "ViT-B/16, ImageNet-21k pretrained, 1k fine-tuned (S1)",
    ),
    # OpenAI's CLIP towers use QuickGELU; timm's plain-GELU clip_224 variant loads the same weights but computes
    # slightly different features, so the quickgelu variant is the faithful CLIP ViT-B/32.
    "clip_vit_b32": ("vit_base_patch32_clip_quickgelu_224.openai", "CLIP ViT-B/32 image tower, OpenAI weights (S1)"),
}


def _timm():
    try:
        import timm
    except ImportError:
        raise FerkitError("pretrained backbones need timm; install it with: pip install timm") from None
    return timm


class GrayAdapter(nn.Module):
    """Gray faces to what an ImageNet backbone expects: resized, three identical channels, its normalisation."""

    def __init__(self, image_size: int, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.image_size = image_size
        self.normalize = Normalize(mean, std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, S, S) in [0, 1]
        size = (self.image_size, self.image_size)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)  # (B, 1, I, I)
        return self.normalize(x.expand(-1, 3, -1, -1))  # (B, 3, I, I)


class TransferNet(nn.Module):
    """``adapter`` -> ``backbone`` (timm, pooled features) -> ``head``."""

    def __init__(self, adapter: GrayAdapter, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.adapter = adapter
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, 1, S, S)
        return self.head(self.backbone(self.adapter(x)))  # (B, F) features -> (B, num_classes)


def _check_head(kind: str, drop_rate: float | None) -> None:
    if kind not in HEADS:
        raise UnknownNameError(f"unknown head {kind!r}; choose one of: {', '.join(HEADS)}")
    if kind != "linear" and drop_rate is not None:
        raise FerkitError(f"drop_rate is for head 'linear'; head {kind!r} uses its recipe's dropout rates")
    if drop_rate is not None:
        check_rate("drop_rate", drop_rate)


def make_head(kind: str, features: int, num_classes: int, drop_rate: float | None) -> nn.Module:
    """The classifier over ``(B, features)`` pooled features: ``linear``, ``s0`` or ``s3``."""
    _check_head(kind, drop_rate)
    if kind == "s0":
        return nn.Sequential(
            nn.Dropout(0.25), nn.BatchNorm1d(features),
            nn.Linear(features, 64), nn.ReLU(inplace=True), nn.BatchNorm1d(64), nn.Dropout(0.5),
            nn.Linear(64, num_classes),
        )
    if kind == "s3":
        return nn.Sequential(
            nn.Linear(features, 256), nn.ReLU(inplace=True), nn.Dropout(0.4), nn.Linear(256, num_classes)
        )
    return nn.Sequential(nn.Dropout(drop_rate or 0.0), nn.Linear(features, num_classes))


def build_backbone(
    timm_name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    pretrained_file: str | Path | None = None,
    head: str = "linear",
    drop_rate: float | None = None,
    image_size: int | None = None,
    input_size: int = INPUT_SIZE,
) -> TransferNet:
    """A ``TransferNet`` around timm model ``timm_name`` (see the module docstring for the options)."""
    timm = _timm()
    check_int("input_size", input_size, 8)
    _check_head(head, drop_rate)  # before the (slow) timm build
    cfg = timm.models.get_pretrained_cfg(timm_name)
    kwargs: dict[str, Any] = {}
    if image_size is not None:
        check_int("image_size", image_size, 32)
        if cfg is not None and cfg.fixed_input_size:  # ViTs: resize the position embeddings
            kwargs["img_size"] = image_size
    if pretrained_file is not None:
        body = _load_file(timm, timm_name, Path(pretrained_file), kwargs)
    elif pretrained:
        body = _download(timm, timm_name, kwargs)
    else:
        body = _create(timm, timm_name, kwargs, image_size)
    data = timm.data.resolve_data_config({}, model=body)
    adapter = GrayAdapter(image_size or data["input_size"][-1], data["mean"], data["std"])
    features = getattr(body, "head_hidden_size", None) or body.num_features  # VGG: fc7's 4096, not conv 512
    return TransferNet(adapter, body, make_head(head, features, num_classes, drop_rate))


def _create(timm, timm_name: str, kwargs: dict[str, Any], image_size: int | None) -> nn.Module:
    try:
        return timm.create_model(timm_name, num_classes=0, **kwargs)
    except (AssertionError, TypeError, ValueError) as e:
        if image_size is None:
            raise
        raise FerkitError(f"timm {timm_name} cannot be built at image_size={image_size} ({_first_line(e)})") from None


def _download(timm, timm_name: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(timm_name, pretrained=True, num_classes=0, **kwargs)
    except OSError as e:  # huggingface_hub's offline / not-cached errors and urllib's are all OSErrors
        log.debug("download of %s failed: %s", timm_name, e)
        raise FerkitError(
            f"the pretrained weights for {timm_name} are not in the local cache and cannot be downloaded; connect "
            f"once to fill the cache, or pass --pretrained-file PATH (a .safetensors or state-dict file; "
            f"model.pretrained_file in a recipe)"
        ) from None
    except RuntimeError as e:
        if "No pretrained weights" in str(e):
            raise FerkitError(f"timm has no pretrained weights for {timm_name}; use pretrained=false") from None
        raise


def _load_file(timm, timm_name: str, path: Path, kwargs: dict[str, Any]) -> nn.Module:
    """Build ``timm_name`` with the weights in ``path``, loaded by timm (never unpickled: weights_only=True)."""
    if not path.is_file():
        raise FerkitError(f"{path}: no such weights file; give a .safetensors or state-dict file of {timm_name}")
    hint = f"it must hold a state dict of timm's {timm_name} (.safetensors, or torch.save(model.state_dict()))"
    try:
        keys = set(timm.models.load_state_dict(str(path)))  # timm's own reader: what it will load below
    except Exception as e:  # safetensors header, pickle (weights_only refused a global), bad zip, ...
        raise FerkitError(f"{path}: cannot read these weights ({_first_line(e)}); {hint}") from None
    # timm loads non-strictly once the classifier is dropped, so a file of another model (resnet34 into
    # resnet18) or a partial one would load silently; compare the names against a storage-free build first.
    with torch.device("meta"):
        shape = timm.create_model(timm_name, num_classes=0, **kwargs)
    classifier = shape.pretrained_cfg.get("classifier") or ()
    classifier = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    expected = set(shape.state_dict())
    missing = sorted(expected - keys)
    extra = sorted(k for k in keys - expected if not k.startswith(tuple(c + "." for c in classifier)))
    if missing or extra:
        what = f"lacks {len(missing)} of the model's weights (e.g. {missing[0]})" if missing else ""
        what += " and " if missing and extra else ""
        what += f"holds {len(extra)} the model does not have (e.g. {extra[0]})" if extra else ""
        raise FerkitError(f"{path}: not weights of {timm_name}: the file {what}; {hint}")
    try:
        # Through timm, so its classifier dropping and per-model key fixes (e.g. ViT position embeddings at
        # another image_size) apply exactly as for hub weights.
        return timm.create_model(
            timm_name, pretrained=True, num_classes=0, pretrained_cfg_overlay={"file": str(path)}, **kwargs
        )
    except RuntimeError as e:  # shapes that do not fit (another width of the same family)
        raise FerkitError(f"{path}: cannot load these weights into {timm_name} ({_first_line(e)}); {hint}") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _builder(timm_name: str) -> Callable[..., nn.Module]:
    """``build_backbone`` bound to one timm model; its signature (read by the registry) lists the options."""
    return functools.partial(build_backbone, timm_name)


for _name, (_timm_name, _description) in BACKBONES.items():
    register_model(_name, family="timm", input_size=INPUT_SIZE, pretrained=True, description=_description)(
        _builder(_timm_name)
    )


def timm_entry(timm_name: str) -> tuple[ModelSpec, Callable[..., nn.Module]]:
    """Spec and builder of ``timm:<timm_name>``: any model timm knows, tag optional (``convnext_tiny.fb_in1k``)."""
    timm = _timm()
    if not timm_name or not timm.is_model(timm_name):
        close = difflib.get_close_matches(timm_name.split(".")[0], timm.list_models(), n=3)
        also = f"; did you mean {', '.join(TIMM_PREFIX + c for c in close)}?" if close else ""
        raise FerkitError(f"timm has no model {timm_name!r}{also} (timm.list_models() lists them)")
    build = _builder(timm_name)
    spec = ModelSpec(TIMM_PREFIX + timm_name, "timm", INPUT_SIZE, True, f"timm model {timm_name}", options(build))
    return spec, build
