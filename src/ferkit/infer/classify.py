"""Classifiers: gray face crops -> emotion probabilities, with the preprocessing the checkpoint's meta describes.

A classifier is loaded by backend name from ``BACKENDS``. ``torch`` runs checkpoints (and .onnx exports, through
``ferkit.models.predict.load_members``); ``onnxruntime`` runs a checkpoint's ONNX export (made once and cached by
``ferkit.export``). Another backend is one more entry: a function from the model name to the file it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.errors import FerkitError, InputError, InputTypeError, UnknownNameError
from ferkit.models.predict import Member, check_tta, load_members, predict_proba
from ferkit.labels import canonical
from ferkit.models.checkpoint import is_onnx, resolve_checkpoint

@dataclass
class Classifier:
    """Loaded model(s) plus the TTA to apply; ``predict`` runs one batch for all the faces it is given.

    ``classes`` restricts the answers to some of the model's labels (an app that never needs contempt, say): the
    other columns are dropped and the rest renormalised to sum to 1.
    """

    members: list[Member]
    tta: str
    backend: str
    model: str  # the file the weights came from
    classes: list[str] | None = None  # None: every label of the model

    def __post_init__(self) -> None:
        if self.classes is None:
            return
        model_labels = list(self.members[0][1]["labels"])
        if not all(isinstance(c, str) for c in self.classes):
            raise InputTypeError(f"classes: give emotion names, such as {model_labels[:2]}")
        wanted = [canonical(c) for c in self.classes]
        unknown = [c for c in wanted if c not in model_labels]
        if unknown or len(wanted) < 2 or len(set(wanted)) != len(wanted):
            what = (f"{', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not among them" if unknown
                    else "give at least two different ones")
            raise InputError(f"classes: the model answers {', '.join(model_labels)}; {what}")
        self.classes = [c for c in model_labels if c in wanted]  # the model's order
        self._columns = [model_labels.index(c) for c in self.classes]  # found once, not per frame

    @property
    def labels(self) -> list[str]:
        return list(self.classes or self.members[0][1]["labels"])

    @property
    def face_size(self) -> int:
        """Side of the square face the model's preprocessing starts from (48 for FER-2013 models)."""
        return int(self.members[0][1]["input"]["face_size"])

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, face_size, face_size) -> probabilities (N, C) in ``labels`` order."""
        if not len(faces):
            return np.zeros((0, len(self.labels)), np.float32)
        probs = predict_proba(self.members, faces, self.tta)  # (N, C) in the model's order
        if self.classes is None:
            return probs
        probs = probs[:, self._columns]  # (N, K)
        return probs / np.maximum(probs.sum(1, keepdims=True), np.finfo(np.float32).tiny)


def _cached_onnx(model: str | Path) -> Path:
    from ferkit.export import cached_onnx

    return cached_onnx(model)


# Backend name -> the model file it runs for a model name ('default', run, checkpoint or export).
BACKENDS: dict[str, Callable[[str | Path], Path]] = {
    "torch": resolve_checkpoint,
    "onnxruntime": _cached_onnx,
}


def load_classifier(model: str | Path = "default", backend: str | None = None, tta: str = "none",
                    classes: Sequence[str] | None = None) -> Classifier:
    """The classifier for ``model`` (a shipped model's name, a run directory, a .safetensors checkpoint or a .onnx
    export).

    ``backend`` None picks onnxruntime for .onnx files and torch otherwise. ``tta``: none, flip, tencrop or multiscale.
    ``classes``: answer only these of the model's labels, probabilities renormalised (None: all).
    """
    check_tta(tta)
    onnx = is_onnx(model)
    if backend is None:
        backend = "onnxruntime" if onnx else "torch"
    if backend not in BACKENDS:
        raise UnknownNameError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if onnx and backend != "onnxruntime":
        raise FerkitError(f"{model} is an ONNX export and runs on the onnxruntime backend, not {backend}; "
                          "leave out the backend or give a .safetensors checkpoint")
    path = BACKENDS[backend](model)
    if isinstance(classes, str):  # "happy,sad,neutral", as on the command line
        classes = [c for c in classes.split(",") if c.strip()]
    return Classifier(load_members([path]), tta, backend, str(path), list(classes) if classes is not None else None)
