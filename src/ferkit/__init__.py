"""ferkit: train, compare and deploy facial emotion recognition models.

    import ferkit

    rec = ferkit.Recognizer.load()                   # the shipped default model and a face detector
    faces = rec.predict("photo.jpg")                 # [Face(box, emotions), ...]
    model, meta = ferkit.load_model("fer2013")       # a shipped model, run directory, checkpoint or .onnx
    net = ferkit.create_model("fernet", num_classes=8, width=32)
    ferkit.list_models()                             # every registered architecture
    faces = ferkit.load_dataset("fer2013.zip")["train"]
    summary = ferkit.train("configs/default.yaml", data="ferplus.zip", out="runs/mine", epochs=5)
    scores = ferkit.evaluate("runs/mine", "ferplus.zip", split="val")

Names are imported on first use, so ``import ferkit`` stays light. ``ferkit.train`` and ``ferkit.evaluate`` are
the packages of those names, callable as their functions.
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "FER2013": "ferkit.labels",
    "FERPLUS": "ferkit.labels",
    "LabelMap": "ferkit.labels",
    "DataError": "ferkit.errors",
    "FerkitError": "ferkit.errors",
    "FaceSet": "ferkit.data",
    "load_dataset": "ferkit.data",
    "scan_dataset": "ferkit.data",
    "create_model": "ferkit.models",
    "list_models": "ferkit.models",
    "Recognizer": "ferkit.infer",
    "Face": "ferkit.infer",
}
# Packages that are also the function of their name (see ferkit.callable_package).
_CALLABLE = ("train", "evaluate")

__all__ = ["__version__", *_LAZY, *_CALLABLE, "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value
    if name in _CALLABLE:
        return import_module(f"ferkit.{name}")
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")


def load_model(model: str | Path = "default", device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A model and its description: a shipped model's name, a run directory, a .safetensors checkpoint (a PyTorch
    module in eval mode) or an .onnx export (an onnxruntime-backed callable)."""
    from ferkit.models.predict import load_members
    from ferkit.models.checkpoint import resolve_checkpoint

    return load_members([resolve_checkpoint(model)], device)[0]
