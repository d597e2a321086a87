"""ONNX export and the onnxruntime backend."""

from ferkit.export.onnx import ExportResult, OnnxModel, cached_onnx, export_onnx, load_onnx, read_onnx_meta

__all__ = ["ExportResult", "OnnxModel", "cached_onnx", "export_onnx", "load_onnx", "read_onnx_meta"]
