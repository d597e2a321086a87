"""The train and validation sets of a run, from the data section of its config."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ferkit.config import DataConfig
from ferkit.data import Dataset, FaceSet, load_dataset, split_off, write_split_file
from ferkit.errors import DataError
from ferkit.labels import LabelMap


@dataclass
class RunData:
    dataset: Dataset
    train: FaceSet
    val: FaceSet
    split_made: bool  # val was split off train by the run (recorded in splits.csv)
    extra_matched: int = 0  # training faces that got a label from data.extra_labels


def limit_per_class(faces: FaceSet, n: int, seed: int) -> FaceSet:
    """At most ``n`` images per class, picked at random with ``seed``; original order kept."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(faces.labels == c))[:n] for c in range(len(faces.classes))]
    return faces.subset(np.sort(np.concatenate(keep)))


def prepare_data(cfg: DataConfig, seed: int, run_dir: Path | None = None, progress: bool = False) -> RunData:
    if not cfg.path:
        raise DataError("no dataset given; pass --data PATH (a folder, .zip or fer2013.csv)")
    label_map = LabelMap(classes=tuple(cfg.classes) if cfg.classes else None, rename=cfg.rename,
                         drop=tuple(cfg.drop))
    ds = load_dataset(cfg.path, size=cfg.size, label_map=label_map, exclude=cfg.exclude, cache_dir=cfg.cache_dir,
                      progress=progress, keep_leaks=cfg.keep_leaks)
    if len(ds.classes) < 2:
        raise DataError(f"{ds.location}: the class settings leave {len(ds.classes)} class "
                        f"({', '.join(ds.classes) or 'none'}); a classifier needs at least two")
    train = ds["train"]
    if cfg.soft_labels and train.soft is None:
        raise DataError(f"data.soft_labels needs annotator votes (FER+); {ds.location} ({ds.format}) has none")
    if not cfg.soft_labels:
        train = replace(train, soft=None)  # the labels are the targets
    extra_matched = 0
    if cfg.extra_labels:
        train, extra_matched = blend_labels(train, cfg.extra_labels, cfg.extra_weight, cfg.size, cfg.cache_dir,
                                            progress)
    if cfg.val_split in ds.splits:
        val, made = ds[cfg.val_split], False
    elif cfg.val_split != "val":  # only the default name falls back to a split made from train
        raise DataError(f"data.val_split: {ds.location} has no {cfg.val_split!r} split; it has: "
                        f"{', '.join(ds.splits)} (or leave it at 'val' to split {cfg.val_fraction:g} off train)")
    else:
        train, val = split_off(train, cfg.val_fraction, seed, name="val")
        made = True
    if cfg.limit_per_class:
        train = limit_per_class(train, cfg.limit_per_class, seed)
        val = limit_per_class(val, cfg.limit_per_class, seed)
    if len(train) == 0 or len(val) == 0:
        raise DataError(f"{ds.location}: no images left to train or validate on after mapping and exclusion")
    if made and run_dir is not None:
        write_split_file(run_dir / "splits.csv", [train, val])
    return RunData(ds, train, val, made, extra_matched)


def blend_labels(train: FaceSet, path: str, weight: float, size: int, cache_dir: str | None,
                 progress: bool) -> tuple[FaceSet, int]:
    """``train`` with soft targets ``(1 - weight) * its votes or labels + weight * the label another dataset gives
    the same face`` (found by pixels in that dataset's train split), and how many faces got one.

    FER+ and FER-2013 label the same faces: FER+ by 10 annotators, FER-2013 once, with more of the strong, rare
    expressions (fear, disgust, anger) that FER+ annotators often call neutral or sad.
    """
    from ferkit.data.match import match_faces

    other = load_dataset(path, size=size, cache_dir=cache_dir, progress=progress)
    if "train" not in other.splits:
        raise DataError(f"data.extra_labels: {other.location} has no train split to take labels from")
    ref = other["train"]
    index, _ = match_faces(train.images, ref.images)
    names = [train.classes.index(c) if c in train.classes else -1 for c in ref.classes]
    extra = np.array(names, np.int64)[ref.labels[np.maximum(index, 0)]]  # (N,) class in train's order or -1
    extra[index < 0] = -1
    base = train.soft if train.soft is not None else np.eye(len(train.classes), dtype=np.float32)[train.labels]
    soft = base.copy()
    hit = np.flatnonzero(extra >= 0)
    if len(hit) == 0:
        raise DataError(f"data.extra_labels: none of the training faces is in {other.location}'s train split; "
                        "give a labelling of the same images")
    soft[hit] *= 1 - weight
    soft[hit, extra[hit]] += weight
    return replace(train, soft=soft), len(hit)
