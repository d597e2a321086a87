"""Drawing results on images: a box per face, its top emotion and probability, and a bar per emotion.

Drawing only: no inference, no saving. Sizes follow the image, so the overlay reads the same on a 320 px thumbnail
and a 4000 px photo.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ferkit.infer.recognizer import Face

# BGR colour per emotion; other labels take PALETTE colours in label order.
EMOTION_COLORS = {
    "angry": (48, 48, 220), "disgust": (40, 150, 90), "fear": (170, 70, 150), "happy": (0, 200, 255),
    "sad": (200, 120, 40), "surprise": (220, 200, 0), "neutral": (190, 190, 190), "contempt": (90, 110, 170),
}
PALETTE = [(80, 175, 255), (255, 140, 80), (120, 220, 120), (200, 90, 220), (90, 90, 255), (220, 220, 90)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
REFERENCE_SIDE = 500  # an image whose shorter side is this many pixels gets scale 1


def emotion_color(label: str, labels: Sequence[str] = ()) -> tuple[int, int, int]:
    if label in EMOTION_COLORS:
        return EMOTION_COLORS[label]
    i = list(labels).index(label) if label in labels else len(label)
    return PALETTE[i % len(PALETTE)]


def text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def annotate(image_bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of a BGR (or gray) uint8 image with every face drawn on it."""
    out = image_bgr.copy() if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    scale = max(min(out.shape[:2]) / REFERENCE_SIDE, 0.35)
    for face in faces:
        _draw_face(out, face, scale)
    return out


def _draw_face(img: np.ndarray, face: Face, s: float) -> None:
    W = img.shape[1]
    labels = list(face.emotions)
    x, y, w, h = face.box
    color = emotion_color(face.emotion, labels)
    thick = max(1, round(2 * s))
    cv2.rectangle(img, (x, y), (x + w - 1, y + h - 1), color, thick, cv2.LINE_AA)

    # Title: "#2 happy 84%" on a filled tab above the box (inside it when the box touches the top edge).
    title = f"{'' if face.track_id is None else f'#{face.track_id} '}{face.emotion} {face.score:.0%}"
    fs, ft = 0.6 * s, max(1, round(1.5 * s))
    (tw, th), base = cv2.getTextSize(title, FONT, fs, ft)
    pad = max(2, round(4 * s))
    tab_h = th + base + 2 * pad
    ty = y - tab_h if y - tab_h >= 0 else y
    tx = min(max(0, x), max(0, W - tw - 2 * pad))
    cv2.rectangle(img, (tx, ty), (tx + tw + 2 * pad, ty + tab_h), color, -1)
    cv2.putText(img, title, (tx + pad, ty + pad + th), FONT, fs, text_color(color), ft, cv2.LINE_AA)

    _draw_bars(img, face, x, y, w, h, s, labels)


def _draw_bars(img: np.ndarray, face: Face, x: int, y: int, w: int, h: int, s: float, labels: list[str]) -> None:
    """One row per emotion (name and a bar as long as its probability) on a dark panel beside the box."""
    H, W = img.shape[:2]
    fs, ft = 0.4 * s, max(1, round(s))
    name_w = max(cv2.getTextSize(lb, FONT, fs, ft)[0][0] for lb in labels)
    row_h = max(6, round(15 * s))
    pad = max(2, round(4 * s))
    bar_w = round(60 * s)
    pw, ph = name_w + bar_w + 3 * pad, row_h * len(labels) + 2 * pad
    gap = max(2, round(4 * s))
    if x + w + gap + pw <= W:  # right of the box, else left of it, else over its lower part
        px = x + w + gap
    elif x - gap - pw >= 0:
        px = x - gap - pw
    else:
        px = min(max(0, x), max(0, W - pw))
    py = min(max(0, y), max(0, H - ph))
    x0, y0, x1, y1 = px, py, min(W, px + pw), min(H, py + ph)
    if x1 <= x0 or y1 <= y0:
        return
    region = img[y0:y1, x0:x1]
    region[:] = (region * 0.35).astype(np.uint8)  # darken so the bars read on any background
    for i, label in enumerate(labels):
        ry = py + pad + i * row_h
        p = face.emotions[label]
        c = emotion_color(label, labels)
        cv2.putText(img, label, (px + pad, ry + row_h - max(1, round(4 * s))), FONT, fs, (235, 235, 235), ft,
                    cv2.LINE_AA)
        bx = px + 2 * pad + name_w
        bh = max(2, round(row_h * 0.6))
        by = ry + (row_h - bh) // 2
        cv2.rectangle(img, (bx, by), (bx + bar_w, by + bh), (90, 90, 90), -1)
        if p > 0:
            cv2.rectangle(img, (bx, by), (bx + max(1, round(bar_w * p)), by + bh), c, -1)
