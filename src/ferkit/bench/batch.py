"""``ferkit bench batch``: archive-scale prediction, a naive loop against ferkit's engines, in one run.

The archive is N photos of 640x480 scenes, each with one to three real FER-2013 faces (PublicTest) enlarged and
pasted on a blurred copy of another face, written as JPEGs to a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.bench.infer import FRAME_SIZE
from ferkit.errors import FerkitError
from ferkit.infer.detect import DEFAULT_DETECTOR


@dataclass
class BatchRow:
    engine: str
    settings: str
    photos: int
    faces: int
    seconds: float
    ratio: float = 1.0  # photos/s against the naive loop

    @property
    def photos_per_s(self) -> float:
        return self.photos / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "photos_per_s": round(self.photos_per_s, 2),
                "faces_per_s": round(self.faces / self.seconds, 2)}


def write_scenes(data: str | Path, folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` 640x480 JPEG scenes of real faces from ``data``'s evaluation split."""
    from ferkit.data import load_dataset

    ds = load_dataset(data)
    split = "test" if "test" in ds.splits else "val" if "val" in ds.splits else "train"
    faces = ds[split].images
    faces = faces[faces.std(axis=(1, 2)) > 20]  # no blank frames
    rng = np.random.default_rng(seed)
    w, h = FRAME_SIZE
    paths = []
    for i in range(n):
        scene = cv2.GaussianBlur(cv2.resize(faces[rng.integers(len(faces))], (w, h)), (0, 0), 20)
        count = int(rng.integers(1, 4))
        for k in range(count):
            side = int(rng.integers(110, 160))
            x = k * (w // count) + int(rng.integers(0, max(1, w // count - side)))
            y = int(rng.integers(0, h - side))
            scene[y:y + side, x:x + side] = cv2.resize(faces[rng.integers(len(faces))], (side, side),
                                                       interpolation=cv2.INTER_CUBIC)
        path = folder / f"scene{i:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(scene, cv2.COLOR_GRAY2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(path)
    return paths


def bench_batch(data: str | Path, photos: int = 300, model: str = "default", detector: str = DEFAULT_DETECTOR,
                ray: bool = True) -> list[BatchRow]:
    from ferkit.infer import Recognizer
    from ferkit.infer.archive import predict_archive
    from ferkit.infer.source import read_image

    if photos < 1:
        raise FerkitError(f"--photos {photos}: give 1 or more")
    rows = []
    with tempfile.TemporaryDirectory(prefix="ferkit-bench-batch-") as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        paths = write_scenes(data, folder, photos)
        rec = Recognizer.load(model, detector)
        rec.predict(read_image(paths[0]))  # warm
        start, faces = time.perf_counter(), 0
        for p in paths:  # what people write first: read, detect, classify, one file at a time
            faces += len(rec.predict(read_image(p)))
        rows.append(BatchRow("naive loop", "one file at a time", photos, faces, time.perf_counter() - start))
        engines = [("local", "threads: decode + detect per core, faces batched per chunk")]
        if ray:
            engines.append(("ray", "Ray Data: one actor per core, model loaded once each"))
        for engine, settings in engines:
            s = predict_archive([folder], Path(tmp) / engine, model, detector, engine=engine)
            rows.append(BatchRow(f"ferkit batch --engine {engine}", settings, s.inputs, s.faces, s.seconds))
    for r in rows:
        r.ratio = r.photos_per_s / rows[0].photos_per_s
    return rows
