"""The sidebar: which model, which face detector, which test-time augmentation."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from ferkit.app.launch import AppOptions
from ferkit.app.models import ModelChoice, model_choices
from ferkit.models.predict import TTA
from ferkit.infer import list_detectors

TTA_HINTS = {"none": "none (fastest)", "flip": "flip: face and mirror",
             "tencrop": "ten crops: corners, centre, mirrors",
             "multiscale": "ten crops at three framings"}
DETECTOR_HINTS = {"auto": "auto (BlazeFace if installed, else Haar)", "haar": "haar (OpenCV)",
                  "mtcnn": "mtcnn (turned faces)", "blazeface": "blazeface (fast)",
                  "blazeface_short": "blazeface_short (fastest, close-ups)",
                  "blazeface_multiscale": "blazeface_multiscale (close-ups and groups)"}


@dataclass(frozen=True)
class Selection:
    """What every tab runs with."""

    model: ModelChoice
    choices: tuple[ModelChoice, ...]  # every model on offer, for the compare tab
    detector: str
    tta: str


def render_sidebar(options: AppOptions) -> Selection:
    """The sidebar's widgets; returns what they select."""
    with st.sidebar:
        st.markdown("### :material/mood: ferkit")
        st.caption("Facial emotion recognition")
        folder = st.session_state.setdefault("models_dir", options.models_dir or "")
        choices, problem = model_choices(options.model, folder.strip() or None)
        model = st.selectbox("Model", choices, format_func=lambda c: c.label, key="model")
        detector = st.selectbox("Face detector", list_detectors(), key="detector",
                                format_func=lambda d: DETECTOR_HINTS.get(d, d),
                                help="Finds the faces before the model reads their expression. mtcnn and the "
                                     "blazeface detectors are optional installs; the page says which if one is "
                                     "missing.")
        tta = st.selectbox("Test-time augmentation", TTA, format_func=lambda t: TTA_HINTS.get(t, t), key="tta",
                           help="Average the model over mirrored and shifted copies of each face.")
        with st.expander("Your own models", expanded=bool(problem), icon=":material/folder_open:"):
            st.text_input("Models folder", placeholder="/path/to/runs", key="models_dir",
                          help="A folder with .safetensors checkpoints (training run directories) and "
                               ".onnx exports (`ferkit export`); subfolders are searched too.")
            if problem:
                st.caption(f":orange[{problem}]")
            st.caption(f"{len(choices)} models on offer.")
        st.divider()
        st.caption("Everything runs on this computer: photos, videos and the camera never leave it.")
    return Selection(model=model, choices=tuple(choices), detector=detector, tta=tta)
