"""Face crops as the model saw faces in training: square, gray, framed like FER-2013, at the model's face size."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from ferkit.data.formats import to_gray
from ferkit.data.scan import resize_face


def square_box(box: Sequence[int]) -> tuple[int, int, int]:
    """(x, y, w, h) -> (left, top, side) of the square centred on the box, side = its longest side. Detectors frame
    their boxes as FER-2013 frames faces (``Detector.framing``), so the square is the model's view of the face."""
    x, y, w, h = box
    side = max(1, round(max(w, h)))
    return round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side


def crop_face(gray: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
    """The square around ``box`` of a gray (H, W) image, border pixels repeated where it leaves the image,
    resized to (size, size)."""
    H, W = gray.shape
    left, top, side = square_box(box)
    x0, y0, x1, y1 = max(0, left), max(0, top), min(W, left + side), min(H, top + side)
    if x1 <= x0 or y1 <= y0:
        raise ValueError(f"box {tuple(box)} lies outside the {W}x{H} image")
    crop = gray[y0:y1, x0:x1]
    if (x1 - x0, y1 - y0) != (side, side):
        crop = cv2.copyMakeBorder(crop, y0 - top, top + side - y1, x0 - left, left + side - x1, cv2.BORDER_REPLICATE)
    return resize_face(crop, size)


def crop_faces(image: np.ndarray, boxes: Sequence[Sequence[int]], size: int) -> np.ndarray:
    """Crops of every box of a BGR or gray image: uint8 (N, size, size)."""
    if not len(boxes):
        return np.zeros((0, size, size), np.uint8)
    gray = to_gray(image)
    return np.stack([crop_face(gray, b, size) for b in boxes])


def find_faces(detector: Callable[[np.ndarray], Sequence], image: np.ndarray,
               size: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """The box of every face ``detector`` finds in a BGR image and its crop: (boxes, uint8 (N, size, size))."""
    boxes = [d.box for d in detector(image)]
    return boxes, crop_faces(image, boxes, size)


def fit_faces(crops: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Already-cropped faces (any size, gray or colour) -> uint8 (N, size, size), resized as the dataset readers
    resize images."""
    if not len(crops):
        return np.zeros((0, size, size), np.uint8)
    return np.stack([resize_face(to_gray(np.asarray(c)), size) for c in crops])
