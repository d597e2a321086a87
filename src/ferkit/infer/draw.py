"""Drawing results on images: a box per face, its top emotion and probability, and a bar per emotion.

Drawing only: no inference, no saving. Sizes follow the image, so the overlay reads the same on a 320 px thumbnail
and a 4000 px photo.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
TITLE_SCALES = (1.0, 0.75, 0.5, 0.35, 0.25)  # title text sizes tried where the full size finds no free place ...
MIN_SCALE = 0.35  # ... as long as they stay legible


def emotion_color(label: str, labels: Sequence[str] = ()) -> tuple[int, int, int]:
    if label in EMOTION_COLORS:
        return EMOTION_COLORS[label]
    i = list(labels).index(label) if label in labels else len(label)
    return PALETTE[i % len(PALETTE)]


def text_color(bg: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black on light backgrounds, white on dark ones."""
    b, g, r = bg
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


Rect = tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


@dataclass
class Label:
    """Where one face's annotations go: its title tab, and its panel of bars (None where no place was free)."""

    title: Rect
    panel: Rect | None
    title_scale: float = 1.0  # the titles' text size relative to the image's (smaller where space is short)


def annotate(image_bgr: np.ndarray, faces: Sequence[Face]) -> np.ndarray:
    """A copy of a BGR (or gray) uint8 image with every face drawn on it: a box, a title tab with the top emotion and
    a panel with a bar per emotion, placed by ``layout`` so that no label covers another face or another label."""
    out = image_bgr.copy() if image_bgr.ndim == 3 else cv2.cvtColor(image_bgr, cv2.COLOR_GRAY2BGR)
    s = scale_for(out.shape)
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), emotion_color(face.emotion, list(face.emotions)),
                      max(1, round(2 * s)), cv2.LINE_AA)
    for face, label in zip(faces, layout(faces, out.shape)):
        _draw_title(out, face, label.title, s * label.title_scale)
        if label.panel is not None:
            _draw_bars(out, face, label.panel, s)
    return out


def scale_for(shape: Sequence[int]) -> float:
    """Size of the drawing relative to a REFERENCE_SIDE image: the same look from thumbnails to 4K photos."""
    return max(min(shape[:2]) / REFERENCE_SIDE, MIN_SCALE)


def _title(face: Face) -> str:
    return f"{'' if face.track_id is None else f'#{face.track_id} '}{face.emotion} {face.score:.0%}"


def _title_size(face: Face, s: float) -> tuple[int, int]:
    (tw, th), base = cv2.getTextSize(_title(face), FONT, 0.6 * s, max(1, round(1.5 * s)))
    pad = max(2, round(4 * s))
    return tw + 2 * pad, th + base + 2 * pad


def _panel_size(face: Face, s: float) -> tuple[int, int]:
    labels = list(face.emotions)
    fs, ft = 0.4 * s, max(1, round(s))
    name_w = max(cv2.getTextSize(lb, FONT, fs, ft)[0][0] for lb in labels)
    pad = max(2, round(4 * s))
    return name_w + round(60 * s) + 3 * pad, max(6, round(15 * s)) * len(labels) + 2 * pad


def _overlap(a: Rect, b: Rect) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def _inside(r: Rect, W: int, H: int) -> Rect:
    """``r`` moved (not resized) into the image where it sticks out."""
    w, h = r[2] - r[0], r[3] - r[1]
    x0, y0 = min(max(0, r[0]), max(0, W - w)), min(max(0, r[1]), max(0, H - h))
    return x0, y0, x0 + w, y0 + h


def _best(candidates: list[Rect], blockers: list[Rect], W: int, H: int) -> tuple[Rect, int]:
    """The first candidate (moved into the image) that covers no blocker, else the one covering the least."""
    scored = []
    for c in candidates:
        c = _inside(c, W, H)
        cover = sum(_overlap(c, b) for b in blockers)
        if cover == 0:
            return c, 0
        scored.append((cover, c))
    cover, c = min(scored, key=lambda t: t[0])
    return c, cover


def layout(faces: Sequence[Face], shape: Sequence[int]) -> list[Label]:
    """Places every face's title and panel, biggest faces first: the titles above their boxes (else below, else
    inside; left- or right-aligned; all in smaller text where some found no free place), then the panels right of
    their boxes (else left, below, above). A panel that would cover a face or a label is left out; a title that
    cannot avoid them at the smallest size goes where it covers the least."""
    H, W = shape[:2]
    s = scale_for(shape)
    gap = max(2, round(4 * s))
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (f.box for f in faces)]
    order = sorted(range(len(faces)), key=lambda i: -faces[i].box[2] * faces[i].box[3])
    for k in [k for k in TITLE_SCALES if s * k >= MIN_SCALE] or [1.0]:  # titles first, all at one size
        titles: dict[int, Rect] = {}
        taken: list[Rect] = []
        free = True
        for i in order:
            x0, y0, x1, y1 = boxes[i]
            tw, th = _title_size(faces[i], s * k)
            titles[i], cover = _best([(x0, y0 - th, x0 + tw, y0), (x1 - tw, y0 - th, x1, y0),
                                      (x0, y1, x0 + tw, y1 + th), (x1 - tw, y1, x1, y1 + th),
                                      (x0, y0, x0 + tw, y0 + th), (x0, y1 - th, x0 + tw, y1)],
                                     [b for j, b in enumerate(boxes) if j != i] + taken, W, H)
            taken.append(titles[i])
            free = free and cover == 0
        if free:
            break
    placed: dict[int, Label] = {}
    for i in order:
        x0, y0, x1, y1 = boxes[i]
        title = titles[i]
        pw, ph = _panel_size(faces[i], s)
        below, above = max(y1, title[3]) + gap, min(y0, title[1]) - gap
        candidates = [(x1 + gap, y0, x1 + gap + pw, y0 + ph), (x0 - gap - pw, y0, x0 - gap, y0 + ph),
                      (x0, below, x0 + pw, below + ph), (x0, above - ph, x0 + pw, above)]
        panel, cover = _best(candidates, boxes + taken, W, H)
        fits = cover == 0 and panel[2] - panel[0] <= W and panel[3] - panel[1] <= H
        if fits:
            taken.append(panel)
        placed[i] = Label(title, panel if fits else None, k)
    return [placed[i] for i in range(len(faces))]


def _draw_title(img: np.ndarray, face: Face, rect: Rect, s: float) -> None:
    """ "#2 happy 84%" on a tab in the top emotion's colour."""
    color = emotion_color(face.emotion, list(face.emotions))
    fs, ft = 0.6 * s, max(1, round(1.5 * s))
    (_, th), _ = cv2.getTextSize(_title(face), FONT, fs, ft)
    pad = max(2, round(4 * s))
    cv2.rectangle(img, rect[:2], (rect[2] - 1, rect[3] - 1), color, -1)
    cv2.putText(img, _title(face), (rect[0] + pad, rect[1] + pad + th), FONT, fs, text_color(color), ft, cv2.LINE_AA)


def _draw_bars(img: np.ndarray, face: Face, rect: Rect, s: float) -> None:
    """One row per emotion (name and a bar as long as its probability) on a darkened panel."""
    labels = list(face.emotions)
    fs, ft = 0.4 * s, max(1, round(s))
    name_w = max(cv2.getTextSize(lb, FONT, fs, ft)[0][0] for lb in labels)
    row_h = max(6, round(15 * s))
    pad = max(2, round(4 * s))
    bar_w = round(60 * s)
    px, py = rect[:2]
    region = img[rect[1]:rect[3], rect[0]:rect[2]]
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
