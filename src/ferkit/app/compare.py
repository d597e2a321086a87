"""The Compare tab: two or more models on the same photo, side by side, and where they disagree."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ferkit.app.photo import run_photo, uploaded_or_sample
from ferkit.app.sidebar import Selection
from ferkit.app.uploads import MAX_PHOTO_MB
from ferkit.app.views import show_faces, summary_line

MAX_COMPARED = 4  # columns narrower than a quarter of the page cannot show a face card


def render_compare_tab(sel: Selection) -> None:
    if len(sel.choices) < 2:
        st.info("Only one model is on offer. Open **Your own models** in the sidebar and enter a folder with "
                "checkpoints (.safetensors) or ONNX exports to compare them.", icon=":material/info:")
        return
    picked = st.multiselect("Models to compare", sel.choices, default=list(sel.choices[:2]),
                            format_func=lambda c: c.label, max_selections=MAX_COMPARED, key="compare_models")
    files = st.file_uploader("Photo for every model", max_upload_size=MAX_PHOTO_MB, key="compare_photo",
                             help="The same photo goes through every selected model.")
    items = uploaded_or_sample([files] if files else [], "compare_sample")
    if not items:
        return
    if len(picked) < 2:
        st.warning("Pick at least two models to compare.", icon=":material/compare:")
        return
    name, data = items[0]
    results = {}
    for col, choice in zip(st.columns(len(picked), gap="medium"), picked):
        with col:
            st.markdown(f"**{choice.label}**")
            result = run_photo(name, data, sel, source=choice.source)
            if result is None:
                continue
            results[choice.label] = result.faces
            st.image(result.annotated, width="stretch")
            st.html(f'<p class="fk-summary" data-faces="{len(result.faces)}">{summary_line(result.faces)}</p>')
            show_faces(result.faces, result.thumbnails)
    if len(results) > 1 and any(results.values()):
        st.markdown("**Face by face**")
        st.dataframe(agreement_table(results), width="stretch")


def agreement_table(results: dict[str, list[dict]]) -> pd.DataFrame:
    """A row per face: each model's top emotion and probability, and whether they all agree. The detector is the
    same for every model, so face i is the same box in every column."""
    n = max(len(faces) for faces in results.values())
    table = pd.DataFrame(index=pd.Index([f"Face {i + 1}" for i in range(n)], name="face"))
    for label, faces in results.items():
        table[label] = [f"{f['emotion']} {100 * f['score']:.0f}%" for f in faces] + [""] * (n - len(faces))
    tops = [{faces[i]["emotion"] for faces in results.values() if i < len(faces)} for i in range(n)]
    table["models agree"] = ["yes" if len(t) == 1 else "no" for t in tops]
    return table
