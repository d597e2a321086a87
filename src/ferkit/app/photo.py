"""The Photo tab: upload photos, see every face with its emotions, download the results as JSON."""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, replace
from typing import Any

import cv2
import numpy as np
import streamlit as st

from ferkit.app.models import load_recognizer
from ferkit.app.sidebar import Selection
from ferkit.app.uploads import MAX_PHOTO_MB, PHOTO_TYPES, UploadError, read_photo
from ferkit.app.views import face_thumbnail, show_faces, summary_line
from ferkit.errors import FerkitError
from ferkit.infer import SAMPLE_PHOTO, annotate

log = logging.getLogger(__name__)


SHOWN_SIDE = 2048  # the annotated copy a page shows is at most this many pixels across (a browser shows less)


@dataclass
class PhotoView:
    """One analysed upload, as the page shows it: what it kept is small whatever the photo's size (the decoded
    photo itself is let go once its faces are read)."""

    name: str
    width: int  # of the photo as uploaded; boxes are in its pixels
    height: int
    annotated: np.ndarray  # (h, w, 3) RGB, boxes and labels drawn, at most SHOWN_SIDE across
    faces: list[dict[str, Any]]  # Face.to_dict() of each face
    thumbnails: list[str]  # each face's crop as a PNG data URI

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.name, "width": self.width, "height": self.height, "faces": self.faces}


@st.cache_data(max_entries=64, show_spinner=False)
def analyse_photo(name: str, data: bytes, source: str, detector: str, tta: str) -> PhotoView:
    """Decode, recognise and draw one uploaded photo (cached on its bytes and the settings)."""
    image = read_photo(name, data)
    faces = load_recognizer(source, detector, tta).predict(image)
    thumbnails = [face_thumbnail(image, list(f.box)) for f in faces]
    height, width = image.shape[:2]
    scale = min(1.0, SHOWN_SIDE / max(height, width))
    drawn = faces
    if scale < 1:  # drawn on a smaller copy, so that labels keep their size on the page
        image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        drawn = [replace(f, box=tuple(round(v * scale) for v in f.box)) for f in faces]
    annotated = cv2.cvtColor(annotate(image, drawn), cv2.COLOR_BGR2RGB)
    return PhotoView(name, width, height, annotated, [f.to_dict() for f in faces], thumbnails)


def run_photo(name: str, data: bytes, sel: Selection, source: str | None = None) -> PhotoView | None:
    """``analyse_photo`` with every failure shown in the page as one message; None when it failed."""
    try:
        return analyse_photo(name, data, source or sel.model.source, sel.detector, sel.tta)
    except UploadError as e:
        st.error(str(e), icon=":material/broken_image:")
    except FerkitError as e:
        st.error(f"The model could not be used: {e}", icon=":material/error:")
    except Exception as e:  # a file no check foresaw must not end the page
        log.exception("analysing %s failed", name)
        st.error(f"{name} could not be analysed ({type(e).__name__}: {e}). Try another file.",
                 icon=":material/error:")
    return None


def uploaded_or_sample(files: list, sample_key: str) -> list[tuple[str, bytes]]:
    """The uploaded files as (name, bytes); the bundled sample photo when none is uploaded and it was asked for."""
    if files:
        st.session_state[sample_key] = False
        return [(f.name, f.getvalue()) for f in files]
    if st.session_state.get(sample_key):
        return [(SAMPLE_PHOTO.name, SAMPLE_PHOTO.read_bytes())]
    st.button("No photo at hand? Try the sample photo", key=f"{sample_key}_button", icon=":material/photo:",
              on_click=lambda: st.session_state.update({sample_key: True}))
    return []


def render_photo_tab(sel: Selection) -> None:
    files = st.file_uploader("Photos (JPG, PNG, WEBP, BMP, TIFF, ...)", accept_multiple_files=True,
                             max_upload_size=MAX_PHOTO_MB, key="photos",
                             help=f"One or more photos; every face in them is found and read. "
                                  f"Accepted: {', '.join(PHOTO_TYPES)}.")
    download = st.empty()
    results = []
    for name, data in uploaded_or_sample(files or [], "photo_sample"):
        result = run_photo(name, data, sel)
        if result is None:
            continue
        results.append(result)
        st.html(f'<div class="fk-photo-head"><span class="fk-file">{html.escape(name)}</span>'
                f'<span class="fk-summary" data-faces="{len(result.faces)}">{summary_line(result.faces)}</span></div>')
        left, right = st.columns([3, 2], gap="large")
        left.image(result.annotated, width="stretch")
        with right:
            show_faces(result.faces, result.thumbnails)
    if results:
        report = {"model": sel.model.label, "detector": sel.detector, "tta": sel.tta,
                  "photos": [r.to_dict() for r in results]}
        download.download_button("Download results (JSON)", json.dumps(report, indent=2),
                                 file_name="ferkit-photos.json", mime="application/json",
                                 icon=":material/download:")
