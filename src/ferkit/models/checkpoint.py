"""Model files: safetensors weights plus a JSON description that rebuilds the model and its preprocessing.

The JSON travels twice: inside the safetensors header (so a checkpoint is one self-contained file and loading
needs only its path) and beside it as ``<name>.json`` for people and other tools. Nothing is ever unpickled.
A model is named by a shipped model's name (see ``ferkit.models.weights``), a run directory (its best
checkpoint), a checkpoint file, or an ONNX export.
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

from ferkit.errors import FerkitError, InputTypeError, UnknownNameError
from ferkit.fileio import atomic_write

META_KEY = "ferkit"
BEST, LAST = "best", "last"  # the checkpoints of a run directory
CONFIG_FILE = "config.yaml"  # the resolved recipe of a run directory
RESUME_FILE = "resume.safetensors"  # a run directory's training state (not a model)
ONNX_SUFFIX = ".onnx"


def save_checkpoint(path: str | Path, model: torch.nn.Module, meta: dict[str, Any],
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``path`` (.safetensors) and its ``.json`` twin atomically; ``dtype`` casts floating weights."""
    from ferkit import __version__

    path = Path(path).with_suffix(".safetensors")
    meta = {**meta, "ferkit_version": __version__, "saved": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    text = json.dumps(meta, indent=2, default=str)
    weights = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        weights[k] = (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous()
    atomic_write(path, save(weights, metadata={META_KEY: text}))
    atomic_write(path.with_suffix(".json"), text + "\n")
    return path


def is_onnx(path: str | Path) -> bool:
    """Whether ``path`` names an ONNX export (by its suffix, in any case) rather than a checkpoint or run."""
    return Path(str(path)).suffix.lower() == ONNX_SUFFIX


def resolve_checkpoint(path: str | Path) -> Path:
    """The file a model name stands for: a shipped model's name (write ``./default`` for a folder of that name), a
    Hub repository (``hf-hub:owner/name``), a run directory (its best checkpoint), a folder in Hub layout (its
    model.safetensors), a .json (its .safetensors twin), or a checkpoint or .onnx file itself."""
    from ferkit.models.hub import HUB_WEIGHTS, hub_weights, is_hub_id
    from ferkit.models.weights import WEIGHTS, names

    if not isinstance(path, (str, Path)):
        raise InputTypeError(f"model: give a name or a path, not {type(path).__name__}")
    if str(path) in WEIGHTS:
        return WEIGHTS[str(path)].path
    if is_hub_id(str(path)):
        return hub_weights(str(path))
    path = Path(path).expanduser()
    if path.is_dir():
        path = next((path / f for f in (f"{BEST}.safetensors", HUB_WEIGHTS) if (path / f).is_file()),
                    path / f"{BEST}.safetensors")
    elif path.suffix == ".json":
        path = path.with_suffix(".safetensors")
    if not path.is_file():
        raise UnknownNameError(f"{path}: no such model; give a shipped model ({names()}), a run directory, a "
                          ".safetensors checkpoint, an .onnx export or a Hub model (hf-hub:owner/name)")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The description stored in a checkpoint's header."""
    path = resolve_checkpoint(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError) as e:
        raise FerkitError(f"{path}: not a readable safetensors checkpoint ({e})") from None
    if text is None:
        raise FerkitError(f"{path}: a safetensors file without ferkit metadata; it was not written by ferkit")
    return parse_meta(text, path)


def parse_meta(text: str, path: str | Path) -> dict[str, Any]:
    """A model description from its JSON text, checked so that loading can trust it."""
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    problem = _meta_problem(meta)
    if problem:
        raise FerkitError(f"{path}: damaged ferkit description ({problem}); use the file as ferkit wrote it")
    return meta


def _meta_problem(meta: Any) -> str:
    """What is wrong with a checkpoint description, or '' when loading can trust it."""
    if not isinstance(meta, dict):
        return "not a JSON object"
    if not isinstance(meta.get("architecture"), str):
        return "no architecture name"
    labels = meta.get("labels")
    if not isinstance(labels, list) or len(labels) < 2 or not all(isinstance(c, str) for c in labels) \
            or len(set(labels)) != len(labels):
        return "labels must be two or more different names"
    if not isinstance(meta.get("kwargs", {}), dict):
        return "kwargs is not an object"
    inp = meta.get("input")
    if not isinstance(inp, dict) or not all(isinstance(inp.get(k), int) and 8 <= inp[k] <= 1024
                                            for k in ("size", "face_size")):
        return "input size and face_size must be whole numbers of pixels, 8-1024"
    if inp.get("channels", 1) != 1:
        return "input channels must be 1: ferkit models take gray faces"
    if inp["size"] > inp["face_size"]:
        return "input size must not exceed face_size (the model's view is cut from the face)"
    return ""


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint describes and load its weights; returns (model in eval mode, meta)."""
    from ferkit.models.registry import create_model

    path = resolve_checkpoint(path)
    meta = read_meta(path)
    # The weights are in the file: a header asking for pretrained ones is ignored, and nothing is downloaded.
    kwargs = {k: v for k, v in meta.get("kwargs", {}).items() if k not in ("pretrained", "pretrained_file")}
    try:
        with torch.device("meta"):  # shapes only, nothing allocated: a header may ask for a model of any size
            shapes = {k: tuple(v.shape) for k, v in create_model(
                meta["architecture"], num_classes=len(meta["labels"]), **kwargs).state_dict().items()}
    except RuntimeError as e:  # sizes beyond any memory
        raise FerkitError(f"{path}: its header describes a {meta['architecture']} that cannot be built "
                          f"({str(e).splitlines()[0]}); use the file as ferkit wrote it") from None
    with safe_open(str(path), framework="pt") as f:
        stored = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    if shapes != stored:
        wrong = sorted(set(shapes) ^ set(stored)) or [k for k in shapes if shapes[k] != stored[k]]
        raise FerkitError(f"{path}: the weights do not fit the {meta['architecture']} its header describes "
                          f"({len(wrong)} tensors differ, e.g. {wrong[0]})")
    model = create_model(meta["architecture"], num_classes=len(meta["labels"]), **kwargs)
    state = load_file(str(path), device="cpu")
    if not all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point()):
        raise FerkitError(f"{path}: weights hold NaN or infinite values; the training diverged or the file is "
                          "damaged")
    model.load_state_dict(state)  # names and shapes checked above; fp16-stored weights are cast to fp32
    return model.to(device).eval(), meta


def file_size_mb(path: str | Path) -> float:
    return os.path.getsize(path) / 1e6
