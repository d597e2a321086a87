"""The class prior, handled on purpose: post-hoc logit adjustment (Menon et al., "Long-tail learning via logit
adjustment", ICLR 2021).

A model trained on FER+ learns its label prior (neutral and happy are a third each, contempt and disgust under 1%).
Subtracting ``tau * log(prior)`` from its logits moves it from the most likely answer under that prior towards the
answer of a balanced world: ``tau = 0`` leaves the model as trained, ``tau = 1`` is the balanced-error optimum.
The shift is folded into the bias of the model's last linear layer, so the adjusted model is an ordinary checkpoint
that runs everywhere (ONNX and int8 included); its description records ``tau`` and the prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.errors import FerkitError

TAUS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0)


def training_prior(meta: dict[str, Any], data: str | Path | None = None) -> np.ndarray:
    """The class distribution of a checkpoint's training targets (the mean soft target when it trained on FER+ votes
    or blended labels, label frequencies otherwise), read again with the run's own data settings (``data`` replaces
    the path it was trained from)."""
    from ferkit.config import DataConfig, from_dict
    from ferkit.train.data import prepare_data

    cfg = from_dict(DataConfig, dict(meta["config"]["data"]))
    if data is not None:
        cfg.path = str(data)
    seed = int(meta["config"]["train"]["seed"])
    train = prepare_data(cfg, seed).train
    if list(train.classes) != list(meta["labels"]):
        raise FerkitError(f"{cfg.path} gives classes {', '.join(train.classes)}, the model predicts "
                          f"{', '.join(meta['labels'])}; give the dataset it was trained on")
    return class_prior(train)


def model_prior(meta: dict[str, Any], data: str | Path | None = None) -> tuple[np.ndarray, float]:
    """The training prior a checkpoint's logits are adjusted against, and the tau already folded into them: an
    adjusted model records both in its description (``data`` is not needed); otherwise the prior is read from the
    training split of ``data`` and the tau is 0."""
    adjustment = meta.get("prior_adjustment")
    if adjustment:
        try:
            prior = np.array([adjustment["prior"][c] for c in meta["labels"]], np.float64)
            tau = float(adjustment["tau"])
        except (KeyError, TypeError, ValueError) as e:
            raise FerkitError(f"the model's description has a damaged prior_adjustment ({e!r} is missing or wrong); "
                              "adjust the checkpoint it came from") from None
        if not (np.isfinite(prior).all() and (prior > 0).all() and np.isfinite(tau)):
            raise FerkitError("the model's description records a prior with a class at zero or not a number; "
                              "adjust the checkpoint it came from")
        return prior, tau
    if data is None:
        raise FerkitError("give --data, the dataset the model was trained on: its training split gives the prior")
    if "config" not in meta:
        raise FerkitError("the model's description has no training recipe (config) to read its training prior from; "
                          "adjust a checkpoint that ferkit train wrote")
    return training_prior(meta, data), 0.0


def class_prior(split) -> np.ndarray:
    """A split's class distribution (C,): the mean soft target when it has FER+ votes or blended labels, label
    frequencies otherwise; at least 1e-6 per class (a class without examples would get an infinite boost)."""
    if split.soft is not None:
        prior = split.soft.mean(0)
    else:
        prior = np.bincount(split.labels, minlength=len(split.classes)) / len(split)
    return np.maximum(prior.astype(np.float64), 1e-6)


def adjust_probs(probs: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Probabilities (N, C) with logits shifted by ``-tau * log(prior)``, renormalised."""
    out = probs * prior[None, :] ** -tau
    return out / out.sum(1, keepdims=True)


def last_linear(model: torch.nn.Module, num_classes: int) -> torch.nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == num_classes]
    if not linears or linears[-1].bias is None:
        raise FerkitError("the model has no final linear layer with a bias to fold the prior into")
    return linears[-1]


@dataclass
class PriorRow:
    tau: float
    accuracy: float
    macro_f1: float
    min_recall: float
    min_recall_class: str

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def trained_tau(meta: dict[str, Any]) -> float:
    """The tau a checkpoint was trained with: ``train.logit_adjust``, plus 1 when class-balanced sampling or
    balanced class weights trained it for a balanced world (0 for plain cross entropy)."""
    train = meta["config"]["train"]
    balanced = train.get("sampler") == "weighted" or train.get("class_weights") == "balanced"
    return float(train.get("logit_adjust", 0.0)) + balanced


def sweep_prior(checkpoint: str | Path, data: str | Path, split: str, taus: tuple[float, ...] | None = None,
                tta: str | None = None, progress: bool = False) -> tuple[np.ndarray, list[PriorRow]]:
    """The training prior and, per ``tau``, accuracy, macro F1 and the lowest per-class recall on ``split``
    (``progress``: bars while the data is decoded and scored). The default taus are ``TAUS``, and for a model
    trained for a balanced world (``trained_tau``) also the negative ones down to minus its training tau, which
    give the prior back."""
    from ferkit.evaluate.data import load_eval_data
    from ferkit.evaluate.metrics import compute_metrics
    from ferkit.models.predict import load_members, predict_proba
    from ferkit.models.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    members = load_members([path])
    meta = members[0][1]
    if taus is None:
        taus = tuple(sorted({0.0 - t for t in TAUS if t <= trained_tau(meta)} | set(TAUS)))
    prior, folded = model_prior(meta, data)
    tta = tta or meta.get("tta", "none")
    d = load_eval_data(data, split, meta["labels"], int(meta["input"]["face_size"]), progress)
    probs = predict_proba(members, d.faces.images, tta, progress=progress)
    rows = []
    for tau in taus:
        ev = compute_metrics(d.y, adjust_probs(probs, prior, tau - folded), meta["labels"])
        recalls = {c: s.recall for c, s in ev.per_class.items() if s.support > 0}
        worst = min(recalls, key=recalls.get)
        rows.append(PriorRow(tau, ev.accuracy, ev.macro_f1, recalls[worst], worst))
    return prior, rows


def adjust_checkpoint(checkpoint: str | Path, out: str | Path, tau: float, data: str | Path | None = None) -> Path:
    """Write ``checkpoint`` with its logits shifted by ``-tau * log(training prior)`` to ``out`` (.safetensors).

    A checkpoint already adjusted (a shipped model) is moved to ``tau`` from the tau it has, against the prior its
    description records: ``tau`` always counts from the model as trained."""
    from ferkit.models.checkpoint import load_checkpoint, save_checkpoint

    model, meta = load_checkpoint(checkpoint)
    low = 0.0 - trained_tau(meta)
    if not low <= tau <= 2:
        raise FerkitError(f"--tau {tau}: give a value between {low:g} and 2 (0: as trained; "
                          f"{1 + low:g} balances the classes)")
    prior, folded = model_prior(meta, data)
    layer = last_linear(model, len(meta["labels"]))
    with torch.no_grad():
        layer.bias -= (tau - folded) * torch.log(torch.as_tensor(prior, dtype=layer.bias.dtype))
    source = meta.get("prior_adjustment", {}).get("source", str(checkpoint))
    # A new model: not the shipped one it may come from (its name), and written in float32.
    meta = {k: v for k, v in meta.items() if k not in ("name", "weights_dtype")}
    meta["prior_adjustment"] = {"tau": tau, "prior": dict(zip(meta["labels"], prior.round(6).tolist())),
                                "source": source}
    return save_checkpoint(out, model, meta)
