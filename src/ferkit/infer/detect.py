"""Face detectors behind one interface, registered by name: ``get_detector("haar")(image_bgr) -> [Detection]``.

Every detector looks for faces on a copy of the image whose longest side is at most ``max_side`` pixels (large
photos cost the same as a webcam frame) and maps the boxes back to the full image. Faces smaller than
``min_face`` pixels (in the full image, or the detector's own lower limit at the reduced size) are not reported.

- ``haar``: OpenCV's Haar frontal-face cascade, shipped inside opencv-python: no extra dependency, fast, frontal
  faces only. The score is the cascade's last-stage weight (higher is more face-like; not a probability).
- ``mtcnn``: the MTCNN of facenet-pytorch (weights inside its wheel), slower, handles turned and tilted faces;
  the score is its face probability. Optional: ``pip install --no-deps facenet-pytorch requests``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ferkit.data.formats import to_gray
from ferkit.errors import FerkitError

MAX_SIDE = 640  # longest side of the image the detectors search
MIN_FACE = 40  # smallest face reported, in pixels of the full image
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_WINDOW = 24  # the cascade's own window: no face smaller than this is found at the reduced size


@dataclass(frozen=True)
class Detection:
    """One face: its box (x, y, w, h) in pixels of the full image and the detector's confidence."""

    box: tuple[int, int, int, int]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score}


class Detector:
    """Base class: downscale, run ``_detect`` on the small copy, map the boxes back, sort them left to right."""

    name = ""
    min_size = 1  # the smallest box (pixels of the small copy) the backend can find

    def __init__(self, max_side: int | None = MAX_SIDE, min_face: int = MIN_FACE):
        if max_side is not None and max_side < 64:
            raise FerkitError(f"max_side {max_side} is too small to find faces; use at least 64 or None")
        self.max_side = max_side
        self.min_face = min_face

    def __call__(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR (H, W, 3) or gray (H, W) uint8 image."""
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        min_size = max(self.min_size, round(self.min_face * scale))
        found = []
        for (x, y, bw, bh), score in self._detect(small, min_size):
            # Back to full-image pixels, clipped to the image.
            x0, y0 = max(0, round(x / scale)), max(0, round(y / scale))
            x1, y1 = min(w, round((x + bw) / scale)), min(h, round((y + bh) / scale))
            if x1 - x0 >= 2 and y1 - y0 >= 2:
                found.append(Detection((int(x0), int(y0), int(x1 - x0), int(y1 - y0)), float(score)))
        return sorted(found, key=lambda d: (d.box[0], d.box[1]))

    def _detect(self, image: np.ndarray, min_size: int) -> list[tuple[tuple[float, float, float, float], float]]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_side": self.max_side, "min_face": self.min_face}


class HaarDetector(Detector):
    """OpenCV's Haar cascade for frontal faces (the cascade file ships inside opencv-python)."""

    name = "haar"
    min_size = HAAR_WINDOW

    def __init__(self, max_side: int | None = MAX_SIDE, min_face: int = MIN_FACE, scale_factor: float = 1.1,
                 min_neighbors: int = 5):
        super().__init__(max_side, min_face)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades + HAAR_CASCADE)
        if self.cascade.empty():
            raise FerkitError(f"OpenCV's {HAAR_CASCADE} cannot be loaded; reinstall opencv-python-headless")

    def _detect(self, image, min_size):
        gray = cv2.equalizeHist(to_gray(image))  # as in OpenCV's face detection sample: robust to exposure
        boxes, _, weights = self.cascade.detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(min_size, min_size),
            outputRejectLevels=True)
        return [(tuple(b), float(s)) for b, s in zip(boxes, np.ravel(weights))]

    def describe(self):
        return {**super().describe(), "scale_factor": self.scale_factor, "min_neighbors": self.min_neighbors}


class MTCNNDetector(Detector):
    """facenet-pytorch's MTCNN on the CPU (its three small networks ship inside its wheel)."""

    name = "mtcnn"
    min_size = 12  # MTCNN's smallest window

    def __init__(self, max_side: int | None = MAX_SIDE, min_face: int = MIN_FACE):
        super().__init__(max_side, min_face)
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise FerkitError("the mtcnn detector needs facenet-pytorch: pip install --no-deps facenet-pytorch "
                              "requests (--no-deps keeps your torch and numpy)") from None
        self.mtcnn_class = MTCNN
        self.models: dict[int, Any] = {}  # min_size -> MTCNN (its minimum face size is fixed when built)

    def _detect(self, image, min_size):
        if min_size not in self.models:
            self.models[min_size] = self.mtcnn_class(keep_all=True, min_face_size=min_size, device="cpu")
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB) if image.ndim == 2 else \
            cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2RGB)  # BGR or BGRA
        boxes, probs = self.models[min_size].detect(rgb)
        if boxes is None:
            return []
        return [((x0, y0, x1 - x0, y1 - y0), float(p)) for (x0, y0, x1, y1), p in zip(boxes, probs)]


DETECTORS: dict[str, Callable[..., Detector]] = {
    HaarDetector.name: HaarDetector,
    MTCNNDetector.name: MTCNNDetector,
}


def list_detectors() -> list[str]:
    """Names ``get_detector`` accepts (optional ones included: selecting one whose package is missing says what
    to install)."""
    return list(DETECTORS)


def get_detector(name: str = "haar", **opts: Any) -> Detector:
    """The detector registered as ``name``, built with ``opts`` (max_side, min_face, and its own options)."""
    if name not in DETECTORS:
        raise FerkitError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")
    try:
        return DETECTORS[name](**opts)
    except TypeError as e:
        raise FerkitError(f"detector {name!r}: {e}") from None

