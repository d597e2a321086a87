"""Checkpoints: safetensors weights plus a JSON description that rebuilds the model and its preprocessing.

The JSON travels twice: inside the safetensors header (so a checkpoint is one self-contained file and loading
needs only its path) and beside it as ``<name>.json`` for people and other tools. Nothing is ever unpickled.

Training state for ``--resume`` (model, optimizer, scheduler, RNG, callbacks) is one more safetensors file whose
header holds the non-tensor parts, so a kill at any moment leaves either the old or the new state, never a mix.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from ferkit.errors import FerkitError
from ferkit.fileio import atomic_write

META_KEY = "ferkit"
BEST, LAST, RESUME = "best", "last", "resume"


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` twin atomically."""
    from ferkit import __version__

    path = Path(path).with_suffix(".safetensors")
    meta = {**meta, "ferkit_version": __version__, "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    text = json.dumps(meta, indent=2, default=str)
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, save(weights, metadata={META_KEY: text}))
    atomic_write(path.with_suffix(".json"), text + "\n")
    return path


DEFAULT_MODEL = "default"  # the name of the model shipped inside the package


def default_model_path() -> Path:
    return Path(__file__).resolve().parents[1] / "weights" / f"{DEFAULT_MODEL}.safetensors"


ONNX_SUFFIX = ".onnx"


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX export (by its suffix, in any case) rather than a checkpoint or run."""
    return Path(str(path)).suffix.lower() == ONNX_SUFFIX


def resolve_checkpoint(path: str | Path) -> Path:
    """``default`` means the shipped model (write ``./default`` for a folder of that name); a run directory means
    its best checkpoint; a .json means its .safetensors twin."""
    if str(path) == DEFAULT_MODEL:
        return default_model_path()
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / f"{BEST}.safetensors"
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise FerkitError(f"{path}: no such checkpoint; give 'default', a run directory, a .safetensors checkpoint "
                          "or an .onnx export")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as e:
        raise FerkitError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if text is None:
        raise FerkitError(f"{path}: a safetensors file without ferkit metadata; it was not written by ferkit")
    return json.loads(text)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, meta)."""
    from ferkit.models import create_model

    path = resolve_checkpoint(path)
    meta = read_meta(path)
    model = create_model(meta["architecture"], num_classes=len(meta["labels"]), **meta.get("kwargs", {}))
    model.load_state_dict(load_file(str(path), device="cpu"))  # fp16-stored weights are cast to the model's fp32
    return model.to(device).eval(), meta


# ---- resumable training state -------------------------------------------------------------------------------


def _split_tensors(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Replace every tensor in a nested dict/list with a reference, collecting the tensors."""
    if isinstance(obj, torch.Tensor):
        key = prefix or "tensor"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"cannot store a dict with keys {list(obj)[:3]} in a checkpoint")
        return {"__dict__": [[k, _split_tensors(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_split_tensors(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)],
                "tuple": isinstance(obj, tuple)}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _join_tensors(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _join_tensors(v, tensors) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            items = [_join_tensors(v, tensors) for v in obj["__list__"]]
            return tuple(items) if obj["tuple"] else items
    return obj


def save_state(path: str | Path, state: dict[str, Any]) -> Path:
    """Write a nested state (tensors anywhere inside) as one safetensors file, atomically."""
    tensors: dict[str, torch.Tensor] = {}
    tree = _split_tensors(state, "", tensors)
    return atomic_write(path, save(tensors, metadata={META_KEY: json.dumps(tree)}))


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            tree = json.loads(f.metadata()[META_KEY])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, json.JSONDecodeError) as e:
        raise FerkitError(f"{path}: not a readable ferkit training state ({e}); start a new run instead") from None
    return _join_tensors(tree, tensors)


def file_size_mb(path: str | Path) -> float:
    return os.path.getsize(path) / 1e6
