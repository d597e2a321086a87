"""ONNX export, the onnxruntime backend, Hub folders, and shipping a checkpoint as a named model."""

from ferkit.export.hub import export_hub
from ferkit.export.onnx import ExportResult, OnnxModel, cached_onnx, export_onnx, load_onnx, read_onnx_meta
from ferkit.export.ship import ship

__all__ = ["ExportResult", "OnnxModel", "cached_onnx", "export_hub", "export_onnx", "load_onnx", "read_onnx_meta",
           "ship"]
