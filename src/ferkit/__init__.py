"""ferkit: train, compare and deploy facial emotion recognition models."""

from ferkit.data import FaceSet, load_dataset, scan_dataset
from ferkit.errors import DataError, FerkitError
from ferkit.labels import FER2013, FERPLUS, LabelMap

__version__ = "0.1.0"

__all__ = ["FER2013", "FERPLUS", "DataError", "FaceSet", "FerkitError", "LabelMap", "load_dataset", "scan_dataset"]
