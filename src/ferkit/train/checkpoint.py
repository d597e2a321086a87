"""Training state for ``--resume`` (model, optimizer, scheduler, RNG, callbacks) is one more safetensors file whose
header holds the non-tensor parts, so a kill at any moment leaves either the old or the new state, never a mix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save

from ferkit.errors import FerkitError
from ferkit.fileio import atomic_write
from ferkit.models.checkpoint import META_KEY


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


