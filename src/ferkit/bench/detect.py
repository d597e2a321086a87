"""Face detectors against FER-2013's own framing: on held-out faces of a dataset, how often each detector finds the
face, how its box frames it compared with the dataset's crop, and what the classifier scores on its crops.

Each 48x48 face is enlarged 3x and set in a frame of repeated border pixels (the face a third of the image side),
so a detector sees a face with surroundings and the dataset's crop is known exactly. The box geometry measured
here is what ``Detector.framing`` holds for each detector.

Group photos: scenes of several faces of different sizes (``GROUP_SIDES``), each in its own border frame, on one
1280-pixel-wide canvas. Per detector: the share of faces found, the share found *and* given their dataset label by
the model (on the detector's crop), and the detections that are no face.
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
GROUP_WIDTH = 1280  # group photo canvas width
GROUP_FACES = 6  # faces per group photo ...
GROUP_SIDES = (64, 96, 128, 160, 200, 240)  # ... of these sides in pixels, shuffled


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
    group_faces: int = 0  # faces in the group photos
    group_found: float = float("nan")  # share of them found
    group_correct: float = float("nan")  # share found and labelled as the dataset labels them
    group_false: int = 0  # detections matching no face

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def framed_face(face: np.ndarray) -> tuple[np.ndarray, int, int]:
    """A gray face set in its repeated border: (BGR image, left/top offset of the face, face side)."""
    side = face.shape[0] * ENLARGE
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = side * PAD
    image = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), pad, side


def framed_tile(face: np.ndarray, side: int) -> np.ndarray:
    """A gray face resized to ``side`` in a frame of its repeated border pixels, half a side on every side."""
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
    pad = side // 2
    return cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)


def group_photo(faces: list[np.ndarray], sides: list[int], rng: np.random.Generator
                ) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """Faces of the given sides, each in its border frame, packed in rows on a noisy gray canvas ``GROUP_WIDTH``
    wide: (BGR image, (left, top, side) of every face)."""
    tiles = [framed_tile(f, s) for f, s in zip(faces, sides)]
    places, x, y, row = [], 0, 0, 0
    for tile in tiles:
        t = tile.shape[0]
        if x + t > GROUP_WIDTH:
            x, y, row = 0, y + row, 0
        places.append((x, y))
        x, row = x + t, max(row, t)
    canvas = rng.normal(110, 25, (y + row, GROUP_WIDTH)).clip(0, 255).astype(np.uint8)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 3)
    boxes = []
    for tile, side, (x, y) in zip(tiles, sides, places):
        canvas[y:y + tile.shape[0], x:x + tile.shape[1]] = tile
        boxes.append((x + side // 2, y + side // 2, side))
    return cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR), boxes


def match_faces(truth: list[tuple[int, int, int]], boxes: list[tuple[int, int, int, int]]) -> list[int | None]:
    """For each true face (left, top, side), the index of the detection whose centre lies closest to its centre
    within the face, or None; each detection is used once."""
    used, out = set(), []
    for left, top, side in truth:
        cx, cy = left + side / 2, top + side / 2
        best = None
        for k, (x, y, w, h) in enumerate(boxes):
            dx, dy = abs(x + w / 2 - cx) / side, abs(y + h / 2 - cy) / side
            if k not in used and dx < 0.5 and dy < 0.5 and (best is None or dx + dy < best[1]):
                best = (k, dx + dy)
        out.append(None if best is None else best[0])
        if best is not None:
            used.add(best[0])
    return out


def bench_detect(data: str | Path, model: str = "default", faces: int = 1000, split: str = "test",
                 detectors: list[str] | None = None, seed: int = 0, groups: int = 20
                 ) -> tuple[list[DetectorRow], list[str]]:
    """One row per detector (all installed ones by default: a named one that is not installed is left out with a
    note), measured on ``faces`` random faces of ``split`` and on ``groups`` group photos of ``GROUP_FACES`` other
    faces each (taken from the other end of the shuffled split)."""
    from ferkit.data.dataset import load_dataset
    from ferkit.infer.classify import load_classifier
    from ferkit.infer.crop import crop_faces
    from ferkit.infer.detect import DEFAULT_DETECTOR, check_detector_name, get_detector, list_detectors, reframe

    if faces < 1 or groups < 0:
        raise FerkitError("--faces must be at least 1 and --groups at least 0")
    detectors = detectors or [d for d in list_detectors() if d != DEFAULT_DETECTOR]
    for name in detectors:
        check_detector_name(name)
    clf = load_classifier(model)
    test = load_dataset(data, size=clf.face_size, progress=True)[split]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(test))
    pick = order[:faces]
    truth = test.labels[pick]
    scenes = []
    for g in range(groups):
        members = order[::-1][g * GROUP_FACES:(g + 1) * GROUP_FACES]  # faces from the other end of the order
        image, boxes = group_photo([test.images[i] for i in members], list(rng.permutation(GROUP_SIDES)), rng)
        scenes.append((image, boxes, test.labels[members]))
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
        det.framing = framing
        group = _group_scores(det, clf, scenes)
        rows.append(DetectorRow(
            name, len(pick), float(found.mean()), statistics.median(sides) if sides else nan,
            statistics.median(belows) if belows else nan, float(dataset_right[found].mean()) if crops else nan,
            float(detector_right.mean()) if crops else nan, 1000 * statistics.median(seconds), *group))
    return rows, notes


def _group_scores(det, clf, scenes) -> tuple[int, float, float, int]:
    """(faces, share found, share found and labelled right, detections matching no face) over the group photos."""
    from ferkit.infer.crop import crop_faces

    total = found = right = false = 0
    for image, truth, labels in scenes:
        boxes = [d.box for d in det(image)]
        matched = match_faces(truth, boxes)
        hits = [(k, label) for k, label in zip(matched, labels) if k is not None]
        total, found, false = total + len(truth), found + len(hits), false + len(boxes) - len(hits)
        if hits:
            predicted = clf.predict(crop_faces(image, [boxes[k] for k, _ in hits], clf.face_size)).argmax(1)
            right += int((predicted == np.array([label for _, label in hits])).sum())
    nan = float("nan")
    return total, found / total if total else nan, right / total if total else nan, false
