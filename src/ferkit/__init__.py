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

Names are imported on first use, so ``import ferkit`` stays light.
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
    "evaluate": "ferkit.evaluate",
}

__all__ = ["__version__", *_LAZY, "load_model", "train"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value  # once imported, an ordinary attribute
        return value
    raise AttributeError(f"module 'ferkit' has no attribute {name!r}")


def load_model(model: str | Path = "default", device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """A model and its description: a shipped model's name, a run directory, a .safetensors checkpoint (a PyTorch
    module in eval mode) or an .onnx export (an onnxruntime-backed callable)."""
    from ferkit.evaluate.predict import load_members
    from ferkit.models.checkpoint import resolve_checkpoint

    return load_members([resolve_checkpoint(model)], device)[0]


def train(recipe: str | Path | None = None, data: str | Path | None = None, out: str | Path = "runs/run",
          epochs: int | None = None, overrides: list[str] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train a recipe (a YAML file of ``configs/``, or None for the defaults) on ``data`` into the run directory
    ``out``; ``epochs`` caps the run (every stage, with stages); ``overrides`` are ``section.key=value`` strings,
    as ``--section.key value`` on the command line.
    Returns the run summary (best epoch and its metrics, train time, data, checkpoint path)."""
    from ferkit.config import load_config, set_epochs
    from ferkit.train.trainer import train as fit

    extra = list(overrides or [])
    if data is not None:
        extra.append(f"data.path={data}")
    cfg = load_config(recipe, extra)
    if epochs is not None:
        set_epochs(cfg, epochs)
    return fit(cfg, out, progress=progress)
