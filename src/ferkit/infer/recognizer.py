"""The Recognizer: faces and their emotions in a photo, as ``Face`` results.

    rec = Recognizer.load()                   # the shipped default model, Haar faces
    faces = rec.predict("photo.jpg")          # or a BGR uint8 array (OpenCV convention)
    [f.to_dict() for f in faces]              # [{"box": [x, y, w, h], "emotions": {...}, "emotion": "happy", ...}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ferkit.infer.classify import Classifier, load_classifier
from ferkit.infer.crop import crop_faces, fit_faces
from ferkit.infer.detect import DEFAULT_DETECTOR, Detector, get_detector
from ferkit.infer.source import check_image, read_image

DECIMALS = 4  # probabilities in to_dict()


@dataclass
class Face:
    """One face: box (x, y, w, h) in image pixels, probabilities per emotion in the model's label order, the top
    emotion and its probability, and the track it belongs to in a video (None in photos)."""

    box: tuple[int, int, int, int]
    emotions: dict[str, float]
    track_id: int | None = None

    @property
    def emotion(self) -> str:
        return max(self.emotions, key=self.emotions.get)

    @property
    def score(self) -> float:
        return self.emotions[self.emotion]

    def to_dict(self) -> dict[str, Any]:
        d = {"box": [int(v) for v in self.box],
             "emotions": {k: round(float(v), DECIMALS) for k, v in self.emotions.items()},
             "emotion": self.emotion, "score": round(float(self.score), DECIMALS)}
        if self.track_id is not None:
            d["track_id"] = self.track_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Face:
        return cls(tuple(int(v) for v in d["box"]), {k: float(v) for k, v in d["emotions"].items()},
                   d.get("track_id"))


def make_faces(boxes: Sequence[Sequence[int]], probs: np.ndarray, labels: Sequence[str]) -> list[Face]:
    """Faces from boxes and probabilities (N, C) in ``labels`` order."""
    return [Face(tuple(int(v) for v in box), dict(zip(labels, map(float, p)))) for box, p in zip(boxes, probs)]


class Recognizer:
    """A face detector and an emotion classifier: image -> ``list[Face]``."""

    def __init__(self, classifier: Classifier, detector: Detector):
        self.classifier = classifier
        self.detector = detector

    @classmethod
    def load(cls, model: str | Path = "default", detector: str = DEFAULT_DETECTOR, backend: str | None = None,
             tta: str = "none", classes: Sequence[str] | None = None, **detector_opts: Any) -> Recognizer:
        """``model``: a shipped model's name ('default', 'fer2013'), a run directory, a .safetensors checkpoint, a
        .onnx export, or a model in Hugging Face Hub layout (its folder, or ``hf-hub:owner/name``); ``detector``: a
        name from ``list_detectors()``, built with ``detector_opts``; ``backend``: torch or onnxruntime (None:
        onnxruntime for .onnx files, else torch); ``tta``: none, flip, tencrop or multiscale; ``classes``: answer
        only these emotions (probabilities renormalised over them; None: all the model's)."""
        det = get_detector(detector, **detector_opts)  # the cheap, likely-to-be-mistyped part first
        return cls(load_classifier(model, backend, tta, classes), det)

    @property
    def labels(self) -> list[str]:
        return self.classifier.labels

    def predict(self, image: np.ndarray | str | Path) -> list[Face]:
        """Every face the detector finds in ``image`` (a BGR uint8 array or a path), left to right."""
        image = read_image(image) if isinstance(image, (str, Path)) else check_image(image)
        return self.predict_boxes(image, [d.box for d in self.detector(image)])

    def predict_boxes(self, image: np.ndarray, boxes: Sequence[Sequence[int]]) -> list[Face]:
        """Emotions of the faces at ``boxes`` (x, y, w, h) of a BGR image, in one forward pass."""
        faces = crop_faces(check_image(image), boxes, self.classifier.face_size)  # (N, S, S)
        return make_faces(boxes, self.classifier.predict(faces), self.labels)

    def predict_faces(self, crops: Sequence[np.ndarray]) -> list[Face]:
        """Emotions of already-cropped faces (BGR or gray arrays of any size), no detection: each box is the
        whole crop."""
        crops = [check_image(c, f"face {i}") for i, c in enumerate(crops)]
        faces = fit_faces(crops, self.classifier.face_size)  # (N, S, S)
        boxes = [(0, 0, c.shape[1], c.shape[0]) for c in crops]
        return make_faces(boxes, self.classifier.predict(faces), self.labels)

    def describe(self) -> dict[str, Any]:
        return {"model": self.classifier.model, "backend": self.classifier.backend, "tta": self.classifier.tta,
                "labels": self.labels, "detector": self.detector.describe()}
