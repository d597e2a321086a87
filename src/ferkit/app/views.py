"""How results look in the page: the style sheet, one card per face with probability bars, face crops."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import streamlit as st

from ferkit.infer import draw

STYLE = """
<style>
.block-container {padding-top: 2.2rem; max-width: 1200px;}
.fk-lead {color: #5b6472; font-size: 1.02rem; margin: -0.6rem 0 0.6rem 0;}
.fk-summary {font-size: 0.95rem; color: #374151; margin: 0.2rem 0 0.6rem 0;}
.fk-photo-head {display: flex; align-items: baseline; gap: 0.9rem; border-bottom: 1px solid #e5e7eb;
                padding: 0.6rem 0 0.45rem 0; margin: 0.4rem 0 0.3rem 0;}
.fk-photo-head .fk-summary {margin: 0;}
.fk-file {font-weight: 650; font-size: 1.15rem; color: #111827;}
.fk-face {border: 1px solid #e5e7eb; border-radius: 12px; padding: 0.7rem 0.9rem 0.6rem 0.9rem;
          background: #ffffff; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.05); margin-bottom: 0.8rem;}
.fk-head {display: flex; align-items: center; gap: 0.75rem; margin-bottom: 0.55rem;}
.fk-thumb {width: 3.4rem; height: 3.4rem; border-radius: 10px; object-fit: cover;}
.fk-n {color: #6b7280; font-size: 0.75rem; text-transform: uppercase; letter-spacing: 0.05em;
       margin-bottom: 0.15rem;}
.fk-emotion {font-weight: 650; font-size: 1rem; padding: 0.05rem 0.6rem; border-radius: 999px;}
.fk-score {margin-left: auto; color: #111827; font-variant-numeric: tabular-nums; font-weight: 700;
           font-size: 1.3rem;}
.fk-row {display: grid; grid-template-columns: 5.2rem 1fr 3rem; align-items: center; gap: 0.5rem;
         font-size: 0.82rem; line-height: 1.45rem;}
.fk-label {color: #4b5563;}
.fk-row.fk-top .fk-label {color: #111827; font-weight: 600;}
.fk-bar {background: #f1f3f6; border-radius: 999px; height: 0.5rem; overflow: hidden;}
.fk-fill {height: 100%; border-radius: 999px;}
.fk-p {text-align: right; color: #6b7280; font-variant-numeric: tabular-nums;}
.fk-track {margin: 0.9rem 0 0.1rem 0; display: flex; align-items: center; gap: 0.5rem;}
.fk-key {display: flex; flex-wrap: wrap; gap: 0.3rem 1rem; font-size: 0.85rem; color: #374151; margin: 0;}
.fk-key span {display: inline-flex; align-items: center; gap: 0.35rem;}
.fk-key i {display: inline-block; width: 0.9rem; height: 0.25rem; border-radius: 2px;}
.fk-dim {color: #6b7280; font-size: 0.88rem;}
.fk-empty {color: #6b7280; font-style: italic;}
</style>
"""

THUMBNAIL = 64  # pixels of the face crop in each card


def emotion_color(label: str, labels: Sequence[str] = ()) -> str:
    """The CSS colour of an emotion: the one its boxes and bars have in annotated images."""
    b, g, r = draw.emotion_color(label, labels)
    return f"#{r:02x}{g:02x}{b:02x}"


def label_style(label: str, labels: Sequence[str] = ()) -> str:
    """A pill in the emotion's colour with readable text, like the tab over each box in annotated images."""
    bg = draw.emotion_color(label, labels)
    b, g, r = draw.text_color(bg)
    return f"background:{emotion_color(label, labels)};color:#{r:02x}{g:02x}{b:02x}"


def inject_style() -> None:
    st.html(STYLE)


def face_card(index: int, face: dict[str, Any], thumbnail: str = "") -> str:
    """HTML of one face: its crop (a data URI), its top emotion and a bar per emotion in the model's order."""
    top, labels = face["emotion"], list(face["emotions"])
    rows = []
    for label, p in face["emotions"].items():
        rows.append(
            f'<div class="fk-row{" fk-top" if label == top else ""}"><span class="fk-label">{html.escape(label)}</span>'
            f'<div class="fk-bar"><div class="fk-fill" style="width:{100 * p:.1f}%;'
            f'background:{emotion_color(label, labels)}"></div></div><span class="fk-p">{100 * p:.0f}%</span></div>')
    img = f'<img class="fk-thumb" src="{thumbnail}" alt="face {index}">' if thumbnail else ""
    return (f'<div class="fk-face" data-emotion="{html.escape(top)}"><div class="fk-head">{img}<div>'
            f'<div class="fk-n">Face {index}</div>'
            f'<span class="fk-emotion" style="{label_style(top, labels)}">{html.escape(top)}</span></div>'
            f'<span class="fk-score">{100 * face["score"]:.0f}%</span></div>{"".join(rows)}</div>')


def face_thumbnail(image_bgr: np.ndarray, box: list[int], size: int = THUMBNAIL) -> str:
    """The face's box cut out of the photo, square, as a PNG data URI."""
    x, y, w, h = box
    crop = image_bgr[max(y, 0): y + h, max(x, 0): x + w]  # (h, w, 3)
    crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    return "data:image/png;base64," + base64.b64encode(cv2.imencode(".png", crop)[1].tobytes()).decode()


def show_faces(faces: list[dict[str, Any]], thumbnails: list[str]) -> None:
    """One card per face, with its crop (``face_thumbnail``)."""
    if not faces:
        st.html('<p class="fk-empty">No face found. Try a photo where faces are larger, frontal and well lit, '
                "or another face detector in the sidebar.</p>")
        return
    for i, (face, thumbnail) in enumerate(zip(faces, thumbnails), 1):
        st.html(face_card(i, face, thumbnail))


def summary_line(faces: list[dict[str, Any]]) -> str:
    """'2 faces · 1 happy, 1 neutral'."""
    if not faces:
        return "no face found"
    counts: dict[str, int] = {}
    for f in faces:
        counts[f["emotion"]] = counts.get(f["emotion"], 0) + 1
    found = ", ".join(f"{n} {label}" if len(faces) > 1 else label
                      for label, n in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(faces)} face{'s' if len(faces) != 1 else ''} &middot; {found}"
