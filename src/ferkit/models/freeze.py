"""Which parameters train: freezing strategies, Keras-style frozen batch norm, optimizer parameter groups.

Every ferkit model has a ``head`` submodule (the classifier); everything else is the body. The head always trains.
"""

from __future__ import annotations

from torch import nn

from ferkit.errors import FerkitError

FORMS = "all | head | last_layers:N | last_blocks:N | modules:name1,name2"


def _head(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise FerkitError("this model has no 'head' submodule; build it with ferkit.models.create_model")
    return head


def _body_params(model: nn.Module) -> dict[str, nn.Parameter]:
    head = {id(p) for p in _head(model).parameters()}
    return {n: p for n, p in model.named_parameters() if id(p) not in head}


def _count(spec: str, arg: str) -> int:
    if not arg.isdigit() or int(arg) < 1:
        raise FerkitError(f"trainable {spec!r}: N must be a positive integer (for the head alone use 'head')")
    return int(arg)


def body_layers(model: nn.Module) -> list[list[str]]:
    """The body's parameterised modules in registration (roughly forward) order, as lists of parameter names.

    A module counts when it owns parameters itself (a conv, a norm, a ViT's position embedding holder); Keras
    also counts parameter-free layers (activations, pooling, adds), so its "last 50 layers" is a smaller N here.
    """
    body = _body_params(model)
    layers = []
    for prefix, module in model.named_modules():
        names = [f"{prefix}.{n}" if prefix else n for n, _ in module.named_parameters(recurse=False)]
        names = [n for n in names if n in body]
        if names:
            layers.append(names)
    return layers


def body_blocks(model: nn.Module) -> list[list[str]]:
    """The body's blocks in order, as lists of parameter names.

    A timm backbone is split by its own ``group_matcher(coarse=True)`` (ResNet: stem, layer1..layer4; ViT:
    embeddings, block 0..11); a backbone without one (timm's MetaFormers, PiT) by its top-level children, and the
    from-scratch nets by theirs (their stages).
    """
    body = _body_params(model)
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module) and hasattr(backbone, "group_matcher"):
        from timm.models import group_parameters

        groups = group_parameters(backbone, backbone.group_matcher(coarse=True))
        blocks = [[f"backbone.{n}" for n in names] for _, names in sorted(groups.items())]
        # Parameters timm's matcher leaves unmatched form a last group of their own; when that is only a final
        # norm (DenseNet's norm5) it is no block, so it joins the one before.
        if len(blocks) > 1 and all(body[n].ndim == 1 for n in blocks[-1]):
            last = blocks.pop()
            blocks[-1] += last
        return blocks
    root, prefix = (backbone, "backbone.") if isinstance(backbone, nn.Module) else (model, "")
    blocks = []
    for name, child in root.named_children():
        names = [f"{prefix}{name}.{n}" for n, _ in child.named_parameters()]
        names = [n for n in names if n in body]
        if names:
            blocks.append(names)
    return blocks


def _pick_last(spec: str, units: list[list[str]], n: int, what: str) -> list[str]:
    if n > len(units):
        raise FerkitError(f"trainable {spec!r}: the body has only {len(units)} {what}; use 'all' to train everything")
    return [name for unit in units[-n:] for name in unit]


def set_trainable(model: nn.Module, spec: str) -> int:
    """Set ``requires_grad`` by ``spec`` (one of: all | head | last_layers:N | last_blocks:N | modules:a,b);
    returns the number of trainable parameters.

    ``last_layers:N``: the last N parameterised modules of the body (Keras' "last N layers trainable");
    ``last_blocks:N``: the last N blocks or stages (see ``body_blocks``); ``modules:a,b``: body submodules whose
    qualified names start with these prefixes, e.g. ``modules:backbone.layer3,backbone.layer4``.
    """
    kind, _, arg = spec.strip().partition(":")
    body = _body_params(model)
    if kind == "all" and not arg:
        chosen = list(body)
    elif kind == "head" and not arg:
        chosen = []
    elif kind == "last_layers":
        chosen = _pick_last(spec, body_layers(model), _count(spec, arg), "parameterised layers")
    elif kind == "last_blocks":
        chosen = _pick_last(spec, body_blocks(model), _count(spec, arg), "blocks")
    elif kind == "modules" and arg:
        chosen = []
        for prefix in (p.strip() for p in arg.split(",")):
            hits = [n for n in body if n == prefix or n.startswith(prefix + ".")]
            if not prefix or not hits:
                depth = 2 if isinstance(getattr(model, "backbone", None), nn.Module) else 1
                tops = sorted({".".join(n.split(".")[:depth]) for n in body})
                raise FerkitError(f"trainable {spec!r}: {prefix!r} names no body module; some are: {', '.join(tops)}")
            chosen += hits
    else:
        raise FerkitError(f"trainable {spec!r} is not one of: {FORMS}")
    keep = set(chosen)
    for name, p in body.items():
        p.requires_grad_(name in keep)
    for p in _head(model).parameters():
        p.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except batch-norm layers whose parameters are all frozen stay in eval mode.

    Keras semantics: a frozen layer keeps its statistics, so a frozen pretrained body keeps its ImageNet running
    means instead of drifting to the batches of a head-only stage.
    """
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
    return model


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, backbone_lr_mult: float = 1.0
) -> list[dict]:
    """Optimizer parameter groups of the trainable parameters.

    The head learns at ``lr``, the body at ``lr * backbone_lr_mult``; biases, norm weights (every 1-d
    parameter) and a timm backbone's ``no_weight_decay()`` tokens (ViT position embeddings, class token) get no
    weight decay. Each group carries a ``name`` (head, head_no_decay, body, body_no_decay); empty ones are left out.
    """
    head = {id(p) for p in _head(model).parameters()}
    backbone = getattr(model, "backbone", None)
    skip = set()
    if isinstance(backbone, nn.Module) and hasattr(backbone, "no_weight_decay"):
        skip = {f"backbone.{n}" for n in backbone.no_weight_decay()}
    groups: dict[str, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if id(p) in head else "body"
        no_decay = p.ndim <= 1 or name in skip
        key = part + ("_no_decay" if no_decay else "")
        group = groups.setdefault(key, {
            "name": key,
            "params": [],
            "lr": lr if part == "head" else lr * backbone_lr_mult,
            "weight_decay": 0.0 if no_decay else weight_decay,
        })
        group["params"].append(p)
    order = ("head", "head_no_decay", "body", "body_no_decay")
    return [groups[k] for k in order if k in groups]
