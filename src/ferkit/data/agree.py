"""How often two labellings of the same faces agree: FER-2013's one label per face against FER+'s ten-annotator
majority, or a relabelling of your own. The faces are found in the other dataset by their pixels, so the two may be
stored differently (JPEG and PNG, another tone curve) and in any order.

The agreement bounds what a model can score on one labelling while it agrees with the other: a model that answered
every face as FER+'s annotators did would score the FER+/FER-2013 agreement on FER-2013's labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.data.dataset import FaceSet
from ferkit.fileio import atomic_write


@dataclass
class Agreement:
    """Faces of ``split`` of ``location`` by their label there (rows) and in ``other`` (columns)."""

    location: str
    split: str
    other: str
    other_split: str
    rows: list[str]  # the classes of location
    cols: list[str]  # the classes of other
    counts: list[list[int]]  # counts[i][j]: faces labelled rows[i] in location and cols[j] in other
    faces: list[int]  # faces[i]: faces labelled rows[i] in the split of location, found in other or not

    @property
    def names(self) -> tuple[str, str]:
        """The two datasets' names (their file or folder names)."""
        return Path(self.location).resolve().name, Path(self.other).resolve().name

    @property
    def n(self) -> int:
        """Faces of the split of location."""
        return int(sum(self.faces))

    @property
    def found(self) -> int:
        """Faces of the split found in the other split."""
        return int(np.sum(self.counts))

    @property
    def same(self) -> np.ndarray:
        """(rows, cols) True where the row and column name the same class."""
        return np.array([[r == c for c in self.cols] for r in self.rows], bool).reshape(len(self.rows), -1)

    @property
    def agreement(self) -> float:
        """Share of the faces found in both whose two labels name the same class."""
        return float(np.asarray(self.counts)[self.same].sum() / self.found) if self.found else 0.0

    @property
    def per_class(self) -> dict[str, float]:
        """For each class of location with faces found: the share the other labelling gives the same class."""
        cm = np.asarray(self.counts)
        return {r: float(cm[i][self.same[i]].sum() / cm[i].sum()) for i, r in enumerate(self.rows) if cm[i].sum()}

    def to_dict(self) -> dict[str, Any]:
        return {"location": self.location, "split": self.split, "other": self.other, "other_split": self.other_split,
                "n": self.n, "found": self.found, "agreement": self.agreement, "per_class": self.per_class,
                "rows": self.rows, "cols": self.cols, "counts": self.counts, "faces": self.faces}


def label_agreement(faces: FaceSet, other: FaceSet, location: str = "", other_location: str = "") -> Agreement:
    """Cross-count the labels of the faces of ``faces`` found (by pixels) among those of ``other``."""
    from ferkit.data.match import match_faces

    index, _ = match_faces(faces.images, other.images)
    found = index >= 0
    counts = np.zeros((len(faces.classes), len(other.classes)), np.int64)
    np.add.at(counts, (faces.labels[found], other.labels[index[found]]), 1)
    return Agreement(location, faces.split, other_location, other.split, list(faces.classes), list(other.classes),
                     counts.tolist(), np.bincount(faces.labels, minlength=len(faces.classes)).tolist())


def plot_agreement(agreement: Agreement, path: str | Path) -> Path:
    """The cross-count as a matrix picture (PNG), written atomically."""
    from ferkit.evaluate.plots import matrix_png

    a = agreement
    name, other_name = a.names
    png = matrix_png(a.counts, a.rows, a.cols, f"{other_name} {a.other_split}", f"{name} {a.split} (faces found)",
                     f"the same label on {a.agreement:.1%} of {a.found:,} faces")
    return atomic_write(path, png)
