"""The model registry: builders register themselves by name; ``create_model`` is the one way to build a model.

A builder is a function ``builder(num_classes, **options) -> nn.Module`` in one family file. Builders of
pretrained-capable models also take ``pretrained`` and ``pretrained_file``; the registry passes those only to them,
so a from-scratch model asked for weights fails loudly instead of silently starting from random ones.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ferkit.errors import FerkitError, UnknownNameError

TIMM_PREFIX = "timm:"
RESERVED = ("num_classes", "pretrained", "pretrained_file")  # passed by create_model itself, never as options


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str  # the file it lives in: seed_cnn, cbam, xception, vgg, timm
    input_size: int  # default side of the square gray face the model takes
    pretrained_capable: bool  # ImageNet weights exist (timm backbones)
    description: str
    kwargs: tuple[str, ...] = ()  # the options create_model accepts for it (the builder's own arguments)


_REGISTRY: dict[str, tuple[ModelSpec, Callable[..., nn.Module]]] = {}


def options(fn: Callable[..., nn.Module]) -> tuple[str, ...]:
    """The option names a builder takes, besides num_classes and the pretrained arguments."""
    return tuple(k for k in inspect.signature(fn).parameters if k not in RESERVED)


def register_model(
    name: str, *, family: str, input_size: int, pretrained: bool = False, description: str
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``fn`` as the builder of model ``name``."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = (ModelSpec(name, family, input_size, pretrained, description, options(fn)), fn)
        return fn

    return wrap


def list_models() -> list[ModelSpec]:
    """Every registered model, by name (``timm:<name>`` reaches any other timm model)."""
    return [spec for _, (spec, _) in sorted(_REGISTRY.items())]


def _lookup(name: str) -> tuple[ModelSpec, Callable[..., nn.Module]]:
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name.startswith(TIMM_PREFIX):
        from ferkit.models.backbones import timm_entry

        return timm_entry(name[len(TIMM_PREFIX):])
    raise UnknownNameError(
        f"unknown model {name!r}; available: {', '.join(sorted(_REGISTRY))} (or timm:<name> for any timm model)"
    )


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered model or of ``timm:<name>``."""
    return _lookup(name)[0]


def create_model(
    name: str,
    num_classes: int = 7,
    *,
    pretrained: bool = False,
    pretrained_file: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build model ``name`` with ``num_classes`` logits; ``kwargs`` are the builder's options.

    The model takes gray faces ``(B, 1, S, S)`` in [0, 1] with ``S = model.input_size`` and returns logits
    ``(B, num_classes)``; ``model.mean`` / ``model.std`` are the statistics its first layer normalises with.
    """
    spec, fn = _lookup(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise FerkitError(f"num_classes must be a positive integer, got {num_classes!r}")
    unknown = sorted(set(kwargs) - set(spec.kwargs))
    if unknown:
        accepted = ", ".join(spec.kwargs) or "none"
        raise FerkitError(f"model {name!r} does not take {', '.join(unknown)}; its options are: {accepted}")
    if spec.pretrained_capable:
        kwargs.update(pretrained=pretrained, pretrained_file=pretrained_file)
    elif pretrained or pretrained_file is not None:
        raise FerkitError(
            f"model {name!r} is trained from scratch and has no pretrained weights; drop pretrained/pretrained_file "
            f"or pick a timm backbone (e.g. resnet18)"
        )
    model = fn(num_classes, **kwargs)
    model.input_size = int(kwargs.get("input_size", spec.input_size))  # builders default to spec.input_size
    from ferkit.models.layers import Normalize

    norm = next(m for m in model.modules() if isinstance(m, Normalize))
    model.mean, model.std = norm.mean_values, norm.std_values
    return model


def count_parameters(name: str, num_classes: int = 7, **kwargs: Any) -> int:
    """Number of parameters of ``create_model(name, num_classes, **kwargs)``, without allocating its weights."""
    try:
        # Meta tensors have shapes but no storage: even ViT-B counts in milliseconds.
        with torch.device("meta"):
            model = create_model(name, num_classes, **kwargs)
    except FerkitError:
        raise
    except (NotImplementedError, RuntimeError):  # an initialiser that needs real values
        model = create_model(name, num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())
