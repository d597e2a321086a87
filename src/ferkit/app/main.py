"""The page ``ferkit app`` serves; run by ``streamlit run``, which passes ferkit's options after ``--``."""

from __future__ import annotations

import sys

import streamlit as st

from ferkit.app.compare import render_compare_tab
from ferkit.app.launch import parse_app_args
from ferkit.app.photo import render_photo_tab
from ferkit.app.sidebar import render_sidebar
from ferkit.app.video import render_video_tab
from ferkit.app.views import inject_style
from ferkit.app.webcam import render_webcam_tab

st.set_page_config(page_title="ferkit: facial emotion recognition", page_icon=":material/mood:", layout="wide")
inject_style()
st.title("Facial emotion recognition")
st.html('<p class="fk-lead">Drop in a photo or a video, or turn on your webcam: ferkit finds every face and '
        "shows how likely each emotion is. Everything runs on this computer.</p>")

selection = render_sidebar(parse_app_args(sys.argv[1:]))
photo, video, webcam, compare = st.tabs([":material/image: Photo", ":material/movie: Video",
                                         ":material/videocam: Webcam", ":material/compare: Compare models"])
with photo:
    render_photo_tab(selection)
with video:
    render_video_tab(selection)
with webcam:
    render_webcam_tab(selection)
with compare:
    render_compare_tab(selection)
