"""Classifiers: gray face crops -> emotion probabilities, with the preprocessing the checkpoint's meta describes.

A classifier is loaded by backend name from ``BACKENDS``. ``torch`` runs checkpoints (and .onnx exports, through
``ferkit.evaluate.load_members``); ``onnxruntime`` runs a checkpoint's ONNX export (made once and cached by
``ferkit.export``). Another backend is one more entry: a function from the model name to the file it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.errors import FerkitError
from ferkit.evaluate.predict import Member, check_tta, load_members, predict_proba
from ferkit.train.checkpoint import is_onnx, resolve_checkpoint

@dataclass
class Classifier:
    """Loaded model(s) plus the TTA to apply; ``predict`` runs one batch for all the faces it is given."""

    members: list[Member]
    tta: str
    backend: str
    model: str  # the file the weights came from

    @property
    def labels(self) -> list[str]:
        return list(self.members[0][1]["labels"])

    @property
    def face_size(self) -> int:
        """Side of the square face the model's preprocessing starts from (48 for FER-2013 models)."""
        return int(self.members[0][1]["input"]["face_size"])

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """uint8 faces (N, face_size, face_size) -> probabilities (N, C) in ``labels`` order."""
        if not len(faces):
            return np.zeros((0, len(self.labels)), np.float32)
        return predict_proba(self.members, faces, self.tta)


def _cached_onnx(model: str | Path) -> Path:
    from ferkit.export import cached_onnx

    return cached_onnx(model)


# Backend name -> the model file it runs for a model name ('default', run, checkpoint or export).
BACKENDS: dict[str, Callable[[str | Path], Path]] = {
    "torch": resolve_checkpoint,
    "onnxruntime": _cached_onnx,
}


def load_classifier(model: str | Path = "default", backend: str | None = None, tta: str = "none") -> Classifier:
    """The classifier for ``model`` ('default', a run directory, a .safetensors checkpoint or a .onnx export).

    ``backend`` None picks onnxruntime for .onnx files and torch otherwise. ``tta``: none, flip or tencrop.
    """
    check_tta(tta)
    onnx = is_onnx(model)
    if backend is None:
        backend = "onnxruntime" if onnx else "torch"
    if backend not in BACKENDS:
        raise FerkitError(f"unknown backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
    if onnx and backend != "onnxruntime":
        raise FerkitError(f"{model} is an ONNX export and runs on the onnxruntime backend, not {backend}; "
                          "leave out the backend or give a .safetensors checkpoint")
    path = BACKENDS[backend](model)
    return Classifier(load_members([path]), tta, backend, str(path))
