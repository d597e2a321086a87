"""Grad-CAM (Selvaraju et al. 2017): where in the face a model looked for the class it explains.

The map is computed on the model's last convolutional feature map: the last module outside the classifier head
whose output is a ``(B, K, h, w)`` map larger than 1x1, found by running the model once with hooks. That is the
last stage of ferkit's ``Classifier`` models (fernet, vgg_fer, the seed CNNs), the last CBAM before the final
pool of cbam_5cnn, and the last stage of a timm CNN backbone (whose own pooling turns it into a vector). A ViT
has no map after its patch embedding, so its Grad-CAM is that of the patch embedding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ferkit.errors import FerkitError

HEAD = "head"  # the classifier head of ferkit's models: never a feature map to explain


@dataclass
class GradCam:
    """Grad-CAM maps of a batch of faces, at the resolution the model was given."""

    layer: str  # qualified name of the module whose feature map is weighted
    target: np.ndarray  # (B,) int64 class explained per face
    maps: np.ndarray  # (B, H, W) float32 in [0, 1], 1 = the strongest evidence for the target in that face


def _has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


@torch.no_grad()
def feature_layer(model: nn.Module, x: torch.Tensor) -> str:
    """Name of the last module (in forward order, outside ``head``) whose output is a 4D map larger than 1x1.

    Modules without parameters (activations, pooling, normalisation constants) are skipped: their maps are those
    of the layer before them, or the input image itself.
    """
    finished: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if not name or name == HEAD or name.startswith(f"{HEAD}.") or not _has_parameters(module):
            continue

        def hook(m, inputs, out, name=name):
            if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] * out.shape[-2] > 1:
                finished.append(name)

        hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        model(x[:1])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    if not finished:
        raise FerkitError(f"{type(model).__name__} makes no spatial feature map outside its head; Grad-CAM needs one")
    return finished[-1]  # a container finishes after its children: the outermost module of the last map


def grad_cam(model: nn.Module, x: torch.Tensor, target: torch.Tensor | np.ndarray | None = None,
             layer: str | None = None) -> GradCam:
    """Grad-CAM of ``model`` for faces ``x`` (B, C, H, W) as the model takes them.

    ``target`` (B,) are the classes to explain (default: each face's predicted class); ``layer`` the module to
    explain (default: `feature_layer`). The model runs in eval mode and its mode is restored afterwards.
    """
    layer = layer or feature_layer(model, x)
    module = dict(model.named_modules()).get(layer)
    if module is None:
        raise FerkitError(f"the model has no module {layer!r}")
    store: dict[str, torch.Tensor] = {}

    def keep(m, inputs, out):
        store["features"] = out
        return out.clone()  # later in-place layers (ReLU(inplace=True)) then cannot overwrite the kept map

    was_training = model.training
    model.eval()
    handle = module.register_forward_hook(keep)
    try:
        with torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)  # a graph even when every parameter is frozen
            logits = model(x)  # (B, classes)
            if target is None:
                target = logits.argmax(1)
            target = torch.as_tensor(target, dtype=torch.long, device=logits.device)  # (B,)
            score = logits.gather(1, target[:, None]).sum()
            features = store["features"]  # (B, K, h, w)
            (grads,) = torch.autograd.grad(score, features)  # (B, K, h, w)
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (B, K, 1, 1): each channel's importance for the target
    cam = F.relu((weights * features.detach()).sum(1, keepdim=True))  # (B, 1, h, w)
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]  # (B, H, W)
    peak = cam.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]  # (B, 1, 1)
    return GradCam(layer, target.cpu().numpy(), (cam / peak).float().cpu().numpy())
