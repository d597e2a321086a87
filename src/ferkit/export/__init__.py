"""ONNX export (fp32 and int8; ``ferkit.models.onnx`` runs the exports), Hub folders, and shipping a checkpoint as
a named model."""

from ferkit.export.hub import export_hub
from ferkit.export.onnx import ExportResult, cached_onnx, export_onnx
from ferkit.export.ship import ship

__all__ = ["ExportResult", "cached_onnx", "export_hub", "export_onnx", "ship"]
