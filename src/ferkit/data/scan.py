"""Decode a whole dataset once into arrays, and keep the result in a cache keyed by the dataset files' content.

A scan keeps every entry, decodable or not, so cleaning can report the bad ones and loading can refuse them.
"""

from __future__ import annotations

import hashlib
import logging
import io
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm.auto import tqdm

from ferkit.config import INPUT_SIZE
from ferkit.data.formats import DatasetReader, open_reader
from ferkit.fileio import atomic_write
from ferkit.labels import FERPLUS_VOTE_COLUMNS

log = logging.getLogger(__name__)

SCAN_VERSION = 1
SPLIT_ORDER = ("train", "val", "test", "private")


def ordered_splits(names) -> list[str]:
    """Split names in the order train, val, test, private, then any others alphabetically."""
    return sorted(set(names), key=lambda s: (SPLIT_ORDER.index(s) if s in SPLIT_ORDER else len(SPLIT_ORDER), s))


def default_cache_dir() -> Path:
    """``$FERKIT_CACHE``, else ``$XDG_CACHE_HOME/ferkit``, else ``~/.cache/ferkit``."""
    if env := os.environ.get("FERKIT_CACHE"):
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser()
    return base / "ferkit"


@dataclass
class Scan:
    """Every entry of a dataset, decoded and resized to ``size`` x ``size``; row i of each array is entry i."""

    format: str
    location: str
    fingerprint: str
    size: int
    classes: np.ndarray  # (C,) str: canonical class names of the dataset
    split: np.ndarray  # (N,) str
    path: np.ndarray  # (N,) str, inside the dataset
    label: np.ndarray  # (N,) int16 index into classes, -1 = no usable label
    votes: np.ndarray  # (N, 10) uint8 FER+ votes, or (N, 0) for datasets without votes
    image: np.ndarray  # (N, size, size) uint8; zeros where problem != ""
    problem: np.ndarray  # (N,) str: "" | "corrupt" | "not_image" | "missing"
    native_hw: np.ndarray  # (N, 2) int32 height and width as stored
    channels: np.ndarray  # (N,) int8 channels as stored
    split_origin: np.ndarray  # (S, 2) str: split name, the dataset's own name for it

    def __len__(self) -> int:
        return len(self.path)


def resize_face(img: np.ndarray, size: int) -> np.ndarray:
    """A gray (H, W) image -> (size, size): area averaging when shrinking, bilinear when enlarging."""
    if img.shape == (size, size):
        return img
    interp = cv2.INTER_AREA if min(img.shape) > size else cv2.INTER_LINEAR
    return cv2.resize(img, (size, size), interpolation=interp)


def scan_dataset(
    path: str | Path, size: int = INPUT_SIZE, cache_dir: str | Path | None = None, progress: bool = False
) -> Scan:
    """Read and decode every image of the dataset at ``path``, or load the cached result of doing so."""
    reader = open_reader(path)
    fingerprint = reader.fingerprint()
    key = hashlib.blake2b(f"{SCAN_VERSION}|{fingerprint}|{size}".encode(), digest_size=12).hexdigest()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cached = cache / f"scan-{key}.npz"
    if cached.exists():
        try:
            with np.load(cached, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            scan = Scan(**{f.name: _unbox(arrays[f.name]) for f in fields(Scan)})
            return replace(scan, location=reader.location)  # the same content, perhaps first read elsewhere
        except (OSError, ValueError, KeyError) as e:
            log.warning("ignoring unreadable cache file %s (%s)", cached, e)
    scan = _decode_all(reader, fingerprint, size, progress)
    _save(scan, cached)
    return scan


def _unbox(a: np.ndarray):
    return a.item() if a.ndim == 0 else a


def _save(scan: Scan, target: Path) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k.name: np.asarray(getattr(scan, k.name)) for k in fields(Scan)})
    try:
        atomic_write(target, buf.getvalue())
    except OSError as e:  # a read-only or full cache only costs speed
        log.warning("could not write the dataset cache %s (%s)", target, e)


def _decode_all(reader: DatasetReader, fingerprint: str, size: int, progress: bool) -> Scan:
    entries = reader.entries()
    n = len(entries)
    classes = list(reader.classes)
    index = {c: i for i, c in enumerate(classes)}
    image = np.zeros((n, size, size), np.uint8)
    problem = np.full(n, "", dtype="<U9")
    native = np.zeros((n, 2), np.int32)
    channels = np.zeros(n, np.int8)
    has_votes = any(e.votes is not None for e in entries)
    votes = np.zeros((n, len(FERPLUS_VOTE_COLUMNS) if has_votes else 0), np.uint8)
    bar = tqdm(entries, desc=f"decoding {Path(reader.location).name}", unit="img", disable=not progress)
    for i, entry in enumerate(bar):
        d = reader.decode(entry)
        if entry.votes is not None:
            votes[i] = np.minimum(entry.votes, 255)
        if d.image is None:
            problem[i] = d.problem
            continue
        native[i] = d.image.shape
        channels[i] = d.channels
        image[i] = resize_face(d.image, size)
    return Scan(
        format=reader.format,
        location=reader.location,
        fingerprint=fingerprint,
        size=size,
        classes=np.array(classes, dtype=str),
        split=np.array([e.split for e in entries], dtype=str),
        path=np.array([e.path for e in entries], dtype=str),
        label=np.array([-1 if e.label is None else index[e.label] for e in entries], np.int16),
        votes=votes,
        image=image,
        problem=problem,
        native_hw=native,
        channels=channels,
        split_origin=np.array(sorted(reader.split_origin.items()), dtype=str).reshape(-1, 2),
    )
