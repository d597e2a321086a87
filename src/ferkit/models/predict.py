"""Class probabilities from one checkpoint or an ensemble, each with the preprocessing its meta describes.

Test-time augmentation (TTA) averages softmax probabilities over views of each face:

- ``none``: the face as in validation (centre crop to ``input.size`` when the model was trained on crops);
- ``flip``: that view and its horizontal mirror;
- ``tencrop``: the four corner crops and the centre crop of size ``input.size``, and their mirrors. A model trained
  without crops (``input.size == face_size``) gets its face padded by ``face_size // 12`` pixels per side with the
  border pixels repeated (4 px at 48, the same 4 px offsets a 40-of-48 crop model sees) and then ten-cropped:
  the centre crop is the face itself and the corners are shifts at the model's own scale, like the shift
  augmentation such models train with, where resizing up would show every view at a zoom never seen in training.
- ``multiscale``: ``tencrop`` of the face at three framings, resized to 11/12, 1 and 7/6 of its side (44, 48 and
  56 px of a 48 px face: a looser, the native and a tighter framing; 30 views), for models trained with crop-scale
  augmentation (``fer_robust`` spans 0.75-1.3x). A view smaller than the model's input is padded with its border's
  pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from ferkit.data.scan import resize_face
from ferkit.errors import FerkitError, UnknownNameError
from ferkit.labels import canonical

TTA = ("none", "flip", "tencrop", "multiscale")
TENCROP_PAD_DIVISOR = 12  # pad = face_size // 12 per side for models trained without crops (see above)
MULTISCALE = (11 / 12, 1.0, 7 / 6)  # the face's side, scaled, for each ten-crop of ``multiscale``

Member = tuple[torch.nn.Module, dict[str, Any]]


def check_tta(tta: str) -> str:
    if tta not in TTA:
        raise UnknownNameError(f"unknown TTA {tta!r}; choose one of: {', '.join(TTA)}")
    return tta


def load_members(paths: Sequence[str | Path], device: str | torch.device = "cpu") -> list[Member]:
    """``load_checkpoint`` for each path (``load_onnx`` for .onnx files, which run on the CPU with onnxruntime),
    with damaged checkpoints turned into one-line errors."""
    from safetensors import SafetensorError

    from ferkit.models.checkpoint import is_onnx, load_checkpoint
    from ferkit.models.onnx import load_onnx

    members = []
    for path in paths:
        try:
            if is_onnx(path):
                members.append(load_onnx(path))
            else:
                model, meta = load_checkpoint(path, device)
                # channels_last: oneDNN's and cuDNN's fast convolution layout (1.5x the faces/s at batch 64 on CPU)
                members.append((model.to(memory_format=torch.channels_last), meta))
        except FerkitError:
            raise
        except (RuntimeError, KeyError, ValueError, SafetensorError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise FerkitError(f"{path}: the checkpoint cannot be loaded ({reason}); train or export it again") from None
    return members


def resize_faces(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 faces (N, S, S) -> (N, size, size), resized as `scan_dataset` resizes what it decodes."""
    if images.shape[1:] == (size, size):
        return images
    return np.stack([resize_face(img, size) for img in images])


def tta_views(x: torch.Tensor, size: int, tta: str) -> list[torch.Tensor]:
    """Float faces (B, 1, S, S) -> the views to average, each (B, 1, size, size)."""
    S = x.shape[-1]
    if size > S:
        raise FerkitError(f"the model takes {size}px faces, larger than the {S}px faces it is given")
    if tta == "multiscale":
        views = []
        for factor in MULTISCALE:
            side = round(S * factor)
            y = x if side == S else F.interpolate(x, size=(side, side), mode="bilinear", antialias=True)
            if side < size:
                lo, hi = (size - side) // 2, (size - side + 1) // 2
                y = F.pad(y, (lo, hi, lo, hi), mode="replicate")  # (B, 1, size, size)
            views += tta_views(y, size, "tencrop")
        return views
    if tta == "tencrop":
        if size == S:
            pad = max(1, S // TENCROP_PAD_DIVISOR)
            x = F.pad(x, (pad, pad, pad, pad), mode="replicate")  # (B, 1, S + 2 pad, S + 2 pad)
        return list(TF.ten_crop(x, [size, size]))
    centre = TF.center_crop(x, [size, size])  # the rounding of the trainer's eval_transform (torchvision's)
    return [centre, TF.horizontal_flip(centre)] if tta == "flip" else [centre]


def face_tensor(images: np.ndarray, meta: dict[str, Any], device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 faces (N, S, S) -> float (N, 1, F, F) in [0, 1] on ``device``, at the model's face size F (its meta's
    ``input.face_size``), before cropping. The bytes travel to the device before the conversion to float."""
    faces = resize_faces(np.ascontiguousarray(images, dtype=np.uint8), int(meta["input"]["face_size"]))
    return torch.from_numpy(faces).to(device).unsqueeze(1).float().div_(255)


def model_view(images: np.ndarray, meta: dict[str, Any]) -> torch.Tensor:
    """uint8 faces (N, S, S) -> the model's validation view (N, 1, size, size) in [0, 1], as ``predict_proba``
    sees them without test-time augmentation."""
    return tta_views(face_tensor(images, meta), int(meta["input"]["size"]), "none")[0]


@torch.no_grad()
def model_proba(model: torch.nn.Module, meta: dict[str, Any], images: np.ndarray, tta: str = "none",
                batch_size: int = 256, bar: tqdm | None = None) -> np.ndarray:
    """Softmax probabilities (N, C) of one model, in its own label order, for uint8 faces (N, S, S); ``bar``
    (a progress bar) advances by the faces of each batch."""
    check_tta(tta)
    size = int(meta["input"]["size"])
    device = next(model.parameters(), torch.empty(0)).device  # an OnnxModel has no parameters: CPU
    model.eval()
    out = np.empty((len(images), len(meta["labels"])), np.float32)
    for start in range(0, len(images), batch_size):
        x = face_tensor(images[start:start + batch_size], meta, device)  # (B, 1, F, F)
        views = tta_views(x, size, tta)
        # Views run one by one so memory stays that of one batch whatever the TTA.
        probs = sum(model(v).float().softmax(1) for v in views) / len(views)  # (B, C)
        out[start:start + len(x)] = probs.cpu().numpy()
        if bar is not None:
            bar.update(len(x))
    return out


def predict_proba(members: Sequence[Member], images: np.ndarray, tta: str = "none",
                  batch_size: int = 256, progress: bool = False) -> np.ndarray:
    """Mean softmax probabilities (N, C) of ``members`` ((model, meta) pairs) in the first member's label order.

    ``images`` are uint8 faces (N, S, S); each model gets them resized to its ``input.face_size`` when S differs,
    then centre-cropped (or TTA-viewed) as its meta says. Members are matched by label name. ``progress``: a bar
    with rate and ETA on stderr.
    """
    check_tta(tta)
    if batch_size < 1:
        raise FerkitError(f"batch size must be at least 1, got {batch_size}")
    if not members:
        raise ValueError("predict_proba needs at least one (model, meta) pair")
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square gray faces (N, S, S), got shape {images.shape}")
    orders = ensemble_orders([meta["labels"] for _, meta in members])
    total = np.zeros((len(images), len(orders[0])), np.float64)
    with tqdm(total=len(images) * len(members), desc=f"predicting ({tta})", unit="face", disable=not progress,
              leave=False) as bar:
        for (model, meta), order in zip(members, orders):
            total += model_proba(model, meta, images, tta, batch_size, bar)[:, order]
    return (total / len(members)).astype(np.float32)


def ensemble_orders(label_lists: Sequence[Sequence[str]], names: Sequence[str] | None = None) -> list[np.ndarray]:
    """For each member, the column of its output that holds each of the first member's labels, in order.

    Members may list their labels in any order but must predict the same set: averaging a probability over
    classes some members cannot predict would not be a probability of anything.
    """
    names = list(names) if names is not None else [f"model {i + 1}" for i in range(len(label_lists))]
    first = [canonical(c) for c in label_lists[0]]
    orders = []
    for name, labels in zip(names, label_lists):
        labels = [canonical(c) for c in labels]
        if sorted(labels) != sorted(first) or len(set(labels)) != len(labels):
            raise FerkitError(f"{name} predicts ({', '.join(labels)}) but {names[0]} predicts ({', '.join(first)}); "
                              "an ensemble needs models of the same label set")
        orders.append(np.array([labels.index(c) for c in first]))
    return orders
