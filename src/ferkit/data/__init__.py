"""Readers for the FER dataset formats people have, cleaning, splits and the decode cache."""

from ferkit.data.clean import Finding, find_issues, write_report
from ferkit.data.dataset import Dataset, FaceSet, load_dataset, split_off, write_split_file
from ferkit.data.scan import INPUT_SIZE, Scan, scan_dataset

__all__ = [
    "INPUT_SIZE",
    "Dataset",
    "FaceSet",
    "Finding",
    "Scan",
    "find_issues",
    "load_dataset",
    "scan_dataset",
    "split_off",
    "write_report",
    "write_split_file",
]
