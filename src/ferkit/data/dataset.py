"""Datasets as in-memory arrays: labels mapped, flagged files excluded, splits ready for training."""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ferkit.data.clean import TRAIN_SPLIT, find_issues, read_flagged
from ferkit.data.scan import INPUT_SIZE, Scan, ordered_splits, scan_dataset
from ferkit.errors import DataError
from ferkit.fileio import atomic_write
from ferkit.labels import LabelMap


@dataclass
class FaceSet:
    """One split of a dataset: row i of each array is image i."""

    split: str
    classes: tuple[str, ...]
    images: np.ndarray  # (N, S, S) uint8 gray faces
    labels: np.ndarray  # (N,) int64 index into classes
    paths: np.ndarray  # (N,) str, inside the source
    soft: np.ndarray | None = None  # (N, C) float32 soft targets (FER+ vote distribution), rows sum to 1

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Images per class, in class order."""
        n = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(k) for c, k in zip(self.classes, n)}

    def subset(self, index: np.ndarray, split: str | None = None) -> FaceSet:
        """The rows at ``index`` (a boolean mask or integer positions)."""
        return replace(
            self,
            split=split or self.split,
            images=self.images[index],
            labels=self.labels[index],
            paths=self.paths[index],
            soft=None if self.soft is None else self.soft[index],
        )


@dataclass
class Dataset:
    format: str
    location: str
    classes: tuple[str, ...]
    splits: dict[str, FaceSet]
    excluded: int = 0  # files left out because cleaning flagged them (leaks included)
    unlabelled: int = 0  # images without a usable label (dropped class, FER+ unknown / not-a-face majority)
    leaks_excluded: int = 0  # training copies of evaluation images, left out
    leaks_kept: int = 0  # training copies of evaluation images kept on request (keep_leaks)

    def __getitem__(self, split: str) -> FaceSet:
        if split not in self.splits:
            raise DataError(f"{self.location} has no {split!r} split; it has: {', '.join(self.splits)}")
        return self.splits[split]


def leak_note(leaks_excluded: int, leaks_kept: int) -> str:
    """What a run's training data holds of its evaluation splits, in words."""
    if leaks_kept:
        return (f"NOT leak-free: training kept {leaks_kept:,} copies of evaluation images (data.keep_leaks); "
                "scores on those splits are inflated")
    return f"leak-free: {leaks_excluded:,} training copies of evaluation images left out"


def load_dataset(
    path: str | Path,
    size: int = INPUT_SIZE,
    label_map: LabelMap | None = None,
    exclude: bool | str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    keep_leaks: bool = False,
) -> Dataset:
    """Load a dataset (Kaggle folders or .zip, fer2013.csv, FER+, any class-folder tree) as arrays.

    The training split never holds the pixels of an evaluation split: its copies of evaluation images (leaks) are
    left out unless ``keep_leaks`` (then ``Dataset.leaks_kept`` counts them). ``exclude``: True also leaves out of
    the training split every other file that `ferkit data clean` would flag; a path leaves out the files listed in
    that ``flagged.csv``. Evaluation splits lose only files that cannot be decoded. Such files must be excluded,
    or loading fails naming the first one.
    """
    scan = scan_dataset(path, size=size, cache_dir=cache_dir, progress=progress)
    return from_scan(scan, label_map or LabelMap(), exclude, keep_leaks)


def from_scan(scan: Scan, label_map: LabelMap, exclude: bool | str | Path | None = None,
              keep_leaks: bool = False) -> Dataset:
    findings = find_issues(scan) if exclude is True or TRAIN_SPLIT in set(scan.split.tolist()) else []
    leaks = {f.path for f in findings if f.reason == "leak"}
    if exclude is True:
        flagged = {f.path for f in findings}
    elif exclude:
        flagged = read_flagged(exclude)
    else:
        flagged = set()
    if not keep_leaks:
        flagged |= leaks
    elif exclude is True:
        flagged -= leaks
    excluded = np.isin(scan.path, list(flagged)) if flagged else np.zeros(len(scan), bool)
    is_leak = np.isin(scan.path, list(leaks)) if leaks else np.zeros(len(scan), bool)
    # Evaluation splits stay as published, so scores compare with other work: of them, only files that cannot be
    # decoded are left out.
    excluded &= (scan.split == TRAIN_SPLIT) | (scan.problem != "")
    bad = (scan.problem != "") & ~excluded
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        what = {"corrupt": "corrupt image", "not_image": "not an image", "missing": "file is missing"}
        raise DataError(
            f"{scan.location}: {scan.path[i]}: {what.get(scan.problem[i], scan.problem[i])} "
            f"({int(bad.sum())} such files); list them with `ferkit data clean {scan.location}` and exclude them"
        )

    classes, mapping = label_map.resolve(list(scan.classes))
    lookup = np.array([*mapping, -1], np.int64)  # scan label -1 indexes the trailing -1
    labels = lookup[scan.label]
    soft = None
    if scan.votes.shape[1]:
        emotion_votes = scan.votes[:, : len(scan.classes)].astype(np.float32)
        soft = np.zeros((len(scan), len(classes)), np.float32)
        for src, dst in enumerate(mapping):
            if dst >= 0:
                soft[:, dst] += emotion_votes[:, src]
        total = soft.sum(axis=1, keepdims=True)
        labels[total[:, 0] == 0] = -1
        soft /= np.maximum(total, 1)
    keep = (labels >= 0) & ~excluded

    splits = {}
    for name in ordered_splits(scan.split.tolist()):
        rows = np.flatnonzero(keep & (scan.split == name))
        splits[name] = FaceSet(
            split=name,
            classes=classes,
            images=scan.image[rows],
            labels=labels[rows],
            paths=scan.path[rows],
            soft=None if soft is None else soft[rows],
        )
    return Dataset(
        format=scan.format,
        location=scan.location,
        classes=classes,
        splits=splits,
        excluded=int(excluded.sum()),
        unlabelled=int(((labels < 0) & ~excluded).sum()),
        leaks_excluded=int((is_leak & excluded).sum()),
        leaks_kept=int((is_leak & ~excluded & (labels >= 0)).sum()),
    )


def split_off(faces: FaceSet, fraction: float, seed: int, name: str = "val") -> tuple[FaceSet, FaceSet]:
    """Split a stratified random ``fraction`` off ``faces``: (the rest, the part split off as ``name``).

    Images with the same pixels go to the same side, so no face is validated on that was also trained on.
    """
    from sklearn.model_selection import train_test_split

    if not 0 < fraction < 1:
        raise DataError(f"validation fraction must be between 0 and 1, got {fraction}")
    digests = [hashlib.blake2b(img.tobytes(), digest_size=12).digest() for img in faces.images]
    _, first, group = np.unique(digests, return_index=True, return_inverse=True)  # group[i]: i's set of copies
    try:
        rest, part = train_test_split(
            np.arange(len(first)), test_size=fraction, random_state=seed, stratify=faces.labels[first]
        )
    except ValueError as e:
        raise DataError(f"cannot split {fraction:.0%} of {faces.split} off by class: {e}") from None
    in_part = np.isin(group, part)
    return faces.subset(np.flatnonzero(~in_part)), faces.subset(np.flatnonzero(in_part), split=name)


def write_split_file(path: str | Path, sets: list[FaceSet]) -> Path:
    """Record which file went to which split: CSV of split, path, label."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["split", "path", "label"])
    for fs in sets:
        for p, y in zip(fs.paths, fs.labels):
            w.writerow([fs.split, p, fs.classes[y]])
    return atomic_write(path, buf.getvalue())
