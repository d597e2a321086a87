"""ONNX models exported by ``ferkit export``: their ferkit description and an onnxruntime session that runs like
the PyTorch model they came from, so ``.onnx`` files load wherever checkpoints do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.device import cpu_threads
from ferkit.errors import FerkitError
from ferkit.models.checkpoint import META_KEY, parse_meta

INPUT_NAME, OUTPUT_NAME = "faces", "logits"


def onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise FerkitError("ONNX support needs the onnx and onnxruntime packages: pip install 'ferkit[onnx]'") from None
    return onnx, onnxruntime


def session(path: str | Path):
    _, ort = onnx_modules()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only
    # Idle worker threads sleep instead of spinning: a face model runs between detector calls, and spinning threads
    # would take the CPU from them.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.intra_op_num_threads = cpu_threads()
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    onnx, _ = onnx_modules()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and others for a damaged file
        raise FerkitError(f"{path}: not a readable ONNX model ({type(e).__name__}); export it again") from None
    props = {p.key: p.value for p in model.metadata_props}
    if META_KEY not in props:
        raise FerkitError(f"{path}: an ONNX model without ferkit metadata; export it with `ferkit export`")
    return parse_meta(props[META_KEY], path)


class OnnxModel(torch.nn.Module):
    """An onnxruntime session with the call signature of the PyTorch model it was exported from (CPU)."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = str(path)
        self.session = session(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) float in [0, 1] -> (B, C) logits
        faces = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: faces})[0])


def load_onnx(path: str | Path) -> tuple[OnnxModel, dict[str, Any]]:
    meta = read_onnx_meta(path)
    return OnnxModel(path), meta
