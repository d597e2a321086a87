"""Soft-target cross entropy (one loss path for labels, FER+ votes and mixup) and class balancing weights."""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from ferkit.errors import FerkitError

log = logging.getLogger(__name__)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """scikit-learn's "balanced" weights ``n / (k * count)``, shape (num_classes,).

    A class with no training label gets weight 0 (no hard label can use it, and inventing a weight for it would be
    a guess); ``k`` is then the number of classes present, which keeps the mean weight per sample at 1.
    """
    labels = np.asarray(labels).ravel()
    if labels.size == 0:
        raise FerkitError("train.class_weights=balanced needs training labels, and the train set is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    present = np.unique(labels)
    weights = np.zeros(num_classes)  # float64
    # sklearn refuses classes absent from the labels, so it only sees the present ones.
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    if len(present) < num_classes:
        missing = sorted(set(range(num_classes)) - set(present.tolist()))
        log.warning("classes %s have no training images; their class weight is 0", missing)
    return weights


def sample_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-sample weights for class-balanced sampling (``WeightedRandomSampler``): each class gets equal total."""
    labels = np.asarray(labels).ravel()
    return balanced_class_weights(labels, num_classes)[labels]  # (N,), mean 1


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, class_weights: torch.Tensor | None = None,
                       label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross entropy of ``logits`` (B, C) against target distributions (B, C), computed in float32.

    Equals ``F.cross_entropy(logits, y, weight=w, label_smoothing=eps)`` for one-hot targets, including torch's
    weighted mean: per-sample losses ``sum_c w_c t'_c (-log p_c)`` (``t'`` = target smoothed towards uniform) are
    summed and divided by ``sum_i w . t_i``, the weight of the *unsmoothed* target (``w[y_i]`` for a label), as torch
    does. For soft targets the loss is linear in the target, so a mixup target gives the mixed loss.
    """
    if logits.ndim != 2 or logits.shape != target.shape:
        raise ValueError(f"logits and target must both be (B, C), got {tuple(logits.shape)} and {tuple(target.shape)}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing}")
    # Out of autocast: log-softmax and the sums must not run in bf16/fp16.
    with torch.autocast(device_type=logits.device.type, enabled=False):
        logp = F.log_softmax(logits.float(), dim=-1)  # (B, C)
        t = target.float()
        smoothed = t * (1.0 - label_smoothing) + label_smoothing / t.shape[1]
        if class_weights is None:
            return -(smoothed * logp).sum(-1).mean()
        w = class_weights.to(device=logp.device, dtype=torch.float32)  # (C,)
        per_sample = -(smoothed * w * logp).sum(-1)  # (B,)
        return per_sample.sum() / (t * w).sum()
