"""ONNX export of a checkpoint, int8 quantization, and the onnxruntime model that serves it.

An exported file is self-describing like a checkpoint: the checkpoint's JSON meta (labels, input size, ...) is stored
in the ONNX ``metadata_props`` under ``ferkit``, so ``.onnx`` files load wherever checkpoints do (``ferkit evaluate``,
``ferkit predict``, the Recognizer). The graph takes ``faces`` (N, 1, size, size) float32 in [0, 1] and returns
``logits`` (N, C), with N dynamic.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ferkit.errors import FerkitError
from ferkit.fileio import check_out_file, staging_dir
from ferkit.models.checkpoint import META_KEY, is_onnx, load_checkpoint, resolve_checkpoint
from ferkit.models.onnx import INPUT_NAME, OUTPUT_NAME, OnnxModel, onnx_modules
from ferkit.models.predict import model_proba, model_view

PARITY_ATOL = 1e-4  # largest |p_onnx - p_torch| accepted for an fp32 export (probabilities)
INT8_MIN_AGREEMENT = 0.9  # share of check faces (not calibrated on) whose top emotion an int8 export must keep
CALIBRATION_FACES = 512


@dataclass
class ExportResult:
    path: str
    size_mb: float
    int8: bool
    max_prob_diff: float  # largest |p_onnx - p_torch| over the check faces
    top1_agreement: float  # share of check faces with the same top emotion as PyTorch
    check_faces: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _real_faces(data: str | Path | None, meta: dict[str, Any], n: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(calibration faces, check faces): two disjoint random sets of up to ``n`` training faces (N, S, S) uint8 from
    ``data`` or the checkpoint's own training set when it is on this machine (a set too small for two gives the same
    faces to both); None when neither is available."""
    from ferkit.data import load_dataset

    if data is None:
        data = meta.get("dataset", {}).get("location")
        if not data or not Path(data).exists():
            return None
    ds = load_dataset(data, size=int(meta["input"]["face_size"]))
    faces = ds["train" if "train" in ds.splits else next(iter(ds.splits))]
    pick = np.random.default_rng(0).permutation(len(faces))
    calib = np.sort(pick[:n])
    check = np.sort(pick[n:2 * n]) if len(pick) >= 2 * n else calib
    return faces.images[calib], faces.images[check]


def _noise_faces(meta: dict[str, Any]) -> np.ndarray:
    """Without real faces, fp32 parity is checked on noise."""
    s = int(meta["input"]["face_size"])
    return np.random.default_rng(0).integers(0, 256, (64, s, s), dtype=np.uint8)


def _export_graph(model: torch.nn.Module, size: int, path: Path) -> None:
    x = torch.rand(2, 1, size, size)
    batch = torch.export.Dim("batch", min=1)
    # The exporter narrates every step on stdout; keep the CLI's output to the result.
    with contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(model, (x,), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                    dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    program.save(str(path), external_data=False)


def _quantize(src: Path, dst: Path, faces: np.ndarray, meta: dict[str, Any]) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process


    batches = [model_view(faces[i:i + 32], meta).numpy() for i in range(0, len(faces), 32)]

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(batches)

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {INPUT_NAME: b}

    pre = dst.with_suffix(".pre.onnx")
    try:
        quant_pre_process(str(src), str(pre))
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        pre.unlink(missing_ok=True)


def _set_meta(path: Path, meta: dict[str, Any]) -> None:
    onnx, _ = onnx_modules()
    model = onnx.load(str(path))
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    onnx.save(model, str(path))


def export_onnx(checkpoint: str | Path, out: str | Path, *, int8: bool = False,
                calibration: str | Path | None = None) -> ExportResult:
    """Export ``checkpoint`` to ``out`` (.onnx), optionally int8-quantized, and check it against PyTorch.

    int8 uses static QDQ quantization calibrated on ``calibration`` faces (a dataset path; default: the checkpoint's
    training set when it is on this machine) and must keep the top emotion of most of them. Nothing is left at
    ``out`` when the export or its check fails.
    """
    start = time.perf_counter()
    onnx_modules()
    out = check_out_file(out, (".onnx",), "an ONNX model file", "--onnx")
    if not out.parent.is_dir():
        raise FerkitError(f"{out.parent}: no such folder; create it first")
    model, meta = load_checkpoint(checkpoint)
    real = _real_faces(calibration, meta, CALIBRATION_FACES)
    if int8 and real is None:
        raise FerkitError("int8 export needs calibration faces: pass --calibration PATH (e.g. the training dataset)")
    calib, faces = real if real is not None else (None, _noise_faces(meta))
    tmp = staging_dir(out.parent, ".ferkit-export-")
    try:
        fp32 = Path(tmp) / "fp32.onnx"
        _export_graph(model, int(meta["input"]["size"]), fp32)
        final = fp32
        if int8:
            final = Path(tmp) / "int8.onnx"
            _quantize(fp32, final, calib, meta)
        _set_meta(final, {**meta, "onnx": {"int8": int8, "source": str(checkpoint)}})
        diff, agree = _parity(model, OnnxModel(final), meta, faces)
        if not int8 and diff > PARITY_ATOL:
            raise FerkitError(f"the ONNX model's probabilities differ from PyTorch's by {diff:.2g} "
                              f"(allowed {PARITY_ATOL:g}); nothing written")
        if int8 and agree < INT8_MIN_AGREEMENT:
            raise FerkitError(f"the int8 model keeps the top emotion of only {agree:.1%} of the check faces "
                              f"(needs {INT8_MIN_AGREEMENT:.0%}); export fp32 instead")
        os.replace(final, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(str(out), out.stat().st_size / 1e6, int8, diff, agree, len(faces),
                        time.perf_counter() - start)


def _parity(model: torch.nn.Module, onnx_model: OnnxModel, meta: dict[str, Any],
            faces: np.ndarray) -> tuple[float, float]:

    p_torch = model_proba(model, meta, faces)
    p_onnx = model_proba(onnx_model, meta, faces)
    return float(np.abs(p_torch - p_onnx).max()), float((p_torch.argmax(1) == p_onnx.argmax(1)).mean())


def cached_onnx(checkpoint: str | Path) -> Path:
    """The fp32 ONNX export of a .safetensors checkpoint, made once and kept in the ferkit cache."""
    from ferkit.data.scan import default_cache_dir
    from ferkit.data.tree import file_digest

    path = resolve_checkpoint(checkpoint)
    if is_onnx(path):
        return path
    out = default_cache_dir() / "onnx" / f"{path.stem}-{file_digest(path)}.onnx"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        export_onnx(path, out)
    return out
