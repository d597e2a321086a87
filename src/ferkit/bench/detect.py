"""Face detectors against FER-2013's own framing: on held-out faces of a dataset, how often each detector finds the
face, how its box frames it compared with the dataset's crop, and what the classifier scores on its crops.

Each 48x48 face is enlarged 3x and set in a frame of repeated border pixels (the face a third of the image side),
so a detector sees a face with surroundings and the dataset's crop is known exactly. The box geometry measured
here is what ``Detector.framing`` holds for each detector.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ferkit.errors import FerkitError

ENLARGE = 3  # a 48x48 face becomes 144x144 ...
PAD = 1  # ... with one face side of border on every side: a 432x432 image


@dataclass
class DetectorRow:
    detector: str
    faces: int
    found: float  # share of faces with a box centred on the face
    side: float  # median native box side / the dataset crop's side
    below: float  # median native box centre below the crop's centre, in crop sides
    accuracy_dataset_crops: float  # the classifier on the dataset's own crops of the found faces
    accuracy_detector_crops: float  # ... on crops of the (reframed) detector boxes
    ms_per_image: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def framed_face(face: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A gray face set in its repeated border: (BGR image, left/top offset of the face, face side)."""
    side = face.shape[0] * ENLARGE
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = side * PAD
    image = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), pad, side


def bench_detect(data: str | Path, model: str = "default", faces: int = 1000, split: str = "test",
                 detectors: list[str] | None = None, seed: int = 0) -> tuple[list[DetectorRow], list[str]]:
    """One row per detector (all installed ones by default: a named one that is not installed is left out with a
    note), measured on ``faces`` random faces of ``split``."""
    from ferkit.data.dataset import load_dataset
    from ferkit.infer.classify import load_classifier
    from ferkit.infer.crop import crop_faces
    from ferkit.infer.detect import check_detector_name, get_detector, list_detectors, reframe

    if faces < 1:
        raise FerkitError("--faces must be at least 1")
    detectors = detectors or list_detectors()
    for name in detectors:
        check_detector_name(name)
    clf = load_classifier(model)
    test = load_dataset(data, size=clf.face_size, progress=True)[split]
    pick = np.random.default_rng(seed).permutation(len(test))[:faces]
    truth = test.labels[pick]
    dataset_right = clf.predict(test.images[pick]).argmax(1) == truth
    rows, notes = [], []
    for name in detectors:
        try:
            det = get_detector(name, min_face=test.images.shape[1] * ENLARGE // 2)
        except FerkitError as e:
            notes.append(f"detector {name} skipped: {e}")
            continue
        framing, det.framing = det.framing, (1.0, 0.0)  # measure the native boxes
        found, sides, belows, crops, seconds = [], [], [], [], []
        for i in tqdm(pick, desc=name, unit="face", leave=False):
            image, pad, side = framed_face(test.images[i])
            t0 = time.perf_counter()
            boxes = [d.box for d in det(image)]
            seconds.append(time.perf_counter() - t0)
            centre = pad + side / 2
            offsets = [((x + w / 2 - centre) / side, (y + h / 2 - centre) / side) for x, y, w, h in boxes]
            near = [k for k, (dx, dy) in enumerate(offsets) if abs(dx) < 0.5 and abs(dy) < 0.5]
            if not near:
                found.append(False)
                continue
            k = min(near, key=lambda k: abs(offsets[k][0]) + abs(offsets[k][1]))
            x, y, w, h = boxes[k]
            found.append(True)
            sides.append(max(w, h) / side)
            belows.append(offsets[k][1])
            crops.append(crop_faces(image, [tuple(round(v) for v in reframe(boxes[k], framing))], clf.face_size)[0])
        found = np.array(found)
        detector_right = (clf.predict(np.stack(crops)).argmax(1) == truth[found]) if crops else np.zeros(0, bool)
        nan = float("nan")
        rows.append(DetectorRow(
            name, len(pick), float(found.mean()), statistics.median(sides) if sides else nan,
            statistics.median(belows) if belows else nan, float(dataset_right[found].mean()) if crops else nan,
            float(detector_right.mean()) if crops else nan, 1000 * statistics.median(seconds)))
    return rows, notes
