"""One split's faces labelled in a model's label order; images of classes the model cannot predict left out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ferkit.data import FaceSet, scan_dataset
from ferkit.data.dataset import from_scan
from ferkit.errors import DataError
from ferkit.evaluate.labels import match_classes
from ferkit.labels import LabelMap, canonical


@dataclass
class EvalData:
    location: str
    split: str
    faces: FaceSet  # classes: the model's labels the data has, in the model's order
    y: np.ndarray  # (N,) int64 index into the model's labels
    excluded_classes: list[str]  # data classes the model cannot predict
    excluded_images: int  # images of those classes in this split, left out


def load_eval_data(path: str | Path, split: str | None, model_labels: Sequence[str], size: int,
                   progress: bool = False) -> EvalData:
    """Load ``split`` of the dataset at ``path`` stored at ``size`` px, mapped onto ``model_labels`` by name.

    ``split`` None means ``test``, or the only split of a dataset that has one (a class-folder tree without split
    folders). FER+ images carry their majority-vote label (ties and unknown / not-a-face majorities as
    `load_dataset` treats them); an image whose majority is a class the model cannot predict is left out with that
    class.
    """
    scan = scan_dataset(path, size=size, progress=progress)
    data_classes = [canonical(str(c)) for c in scan.classes]
    common, excluded = match_classes(model_labels, data_classes)
    ds = from_scan(scan, LabelMap(classes=tuple(common)), keep_leaks=True)  # evaluation splits lose nothing
    if split is None:
        split = "test" if "test" in ds.splits or len(ds.splits) != 1 else next(iter(ds.splits))
    faces = ds[split]  # unknown split: DataError listing them
    model_index = {canonical(c): i for i, c in enumerate(model_labels)}
    lookup = np.array([model_index[c] for c in faces.classes], np.int64)
    left_out = [data_classes.index(c) for c in excluded]
    n_excluded = int((np.isin(scan.label, left_out) & (scan.split == split)).sum())
    if len(faces) == 0:
        raise DataError(f"{scan.location}: no {split!r} image of a class the model predicts "
                        f"({', '.join(common)}); nothing to evaluate")
    return EvalData(scan.location, split, faces, lookup[faces.labels], excluded, n_excluded)
