"""The train and validation sets of a run, from the data section of its config."""

from __future__ import annotations

from dataclasses import dataclass
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
    if cfg.val_split in ds.splits:
        val, made = ds[cfg.val_split], False
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
    return RunData(ds, train, val, made)
