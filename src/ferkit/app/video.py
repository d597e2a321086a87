"""The Video tab: upload a video, watch its progress, play the annotated result, see each tracked face's
emotions over time, download the video, the timeline CSV and the JSON summary."""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import altair as alt
import pandas as pd
import streamlit as st

from ferkit.app.models import load_recognizer
from ferkit.app.sidebar import Selection
from ferkit.app.uploads import MAX_VIDEO_MB, VIDEO_TYPES, UploadError, VideoInfo, save_video
from ferkit.app.views import emotion_color, label_style
from ferkit.errors import FerkitError
from ferkit.infer import process_video

log = logging.getLogger(__name__)

WORK_DIR = Path(tempfile.gettempdir()) / "ferkit-app"  # one folder per uploaded video's content
MAX_CHARTED_TRACKS = 6  # the longest tracks get a chart; the CSV has them all


@dataclass
class VideoView:
    """A finished analysis: the files it wrote and its summary."""

    info: VideoInfo  # the upload
    video: Path  # H.264 MP4 for the browser
    csv: Path
    summary: dict[str, Any]  # VideoResult.to_dict()


def analyse_video(info: VideoInfo, folder: Path, sel: Selection, bar) -> VideoView:
    """Track and read every frame (``bar`` shows how far), writing the annotated video (H.264, which browsers
    play) and the timeline."""
    recognizer = load_recognizer(sel.model.source, sel.detector, sel.tta)
    video, csv = folder / "annotated.mp4", folder / "timeline.csv"

    def on_frame(done: int) -> None:
        if info.frames:
            bar.progress(min(done / info.frames, 1.0), text=f"Analysing frame {done:,} of {info.frames:,}")
        else:
            bar.progress(0.0, text=f"Analysing frame {done:,}")

    result = process_video(info.path, recognizer, out_video=video, out_csv=csv, on_frame=on_frame)
    return VideoView(info=info, video=video, csv=csv, summary=result.to_dict())


def timeline_chart(rows: pd.DataFrame, labels: list[str]) -> alt.Chart:
    """Lines of one track's smoothed probabilities over time, one colour per emotion (the key is drawn once)."""
    long = rows.melt(id_vars=["time_s"], value_vars=labels, var_name="emotion", value_name="probability")
    colors = alt.Scale(domain=labels, range=[emotion_color(k, labels) for k in labels])
    return alt.Chart(long, height=220).mark_line(strokeWidth=2).encode(
        x=alt.X("time_s:Q", title="time (s)"),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), title="probability"),
        color=alt.Color("emotion:N", scale=colors, legend=None),
        tooltip=["emotion:N", alt.Tooltip("time_s:Q", title="time (s)"), alt.Tooltip("probability:Q", format=".0%")])


def show_timeline(view: VideoView) -> None:
    """A chart per tracked face (the longest ``MAX_CHARTED_TRACKS``): its smoothed probabilities over time."""
    tracks = sorted(view.summary["tracks"], key=lambda t: -t["frames"])[:MAX_CHARTED_TRACKS]
    labels = view.summary["labels"]
    st.html('<p class="fk-key">' + "".join(
        f'<span><i style="background:{emotion_color(k, labels)}"></i>{k}</span>' for k in labels) + "</p>")
    rows = pd.read_csv(view.csv)
    charts = sorted(tracks, key=lambda t: t["track_id"])
    for start in range(0, len(charts), 2):
        for col, track in zip(st.columns(2, gap="large"), charts[start: start + 2]):
            with col:
                st.html(f'<p class="fk-track"><b>Face #{track["track_id"]}</b> {track_text(track, labels)}</p>')
                st.altair_chart(timeline_chart(rows[rows["track_id"] == track["track_id"]], labels), width="stretch")
    if len(view.summary["tracks"]) > len(tracks):
        st.caption(f"{len(view.summary['tracks']) - len(tracks)} shorter tracks are in the CSV only.")


def track_text(track: dict[str, Any], labels: list[str]) -> str:
    """The track's dominant emotion as a pill, then when it was seen."""
    pill = f'<span class="fk-emotion" style="{label_style(track["emotion"], labels)}">{track["emotion"]}</span>'
    when = f'{track["start_s"]:.1f}&ndash;{track["end_s"]:.1f} s, {track["frames"]:,} frames'
    return f'{pill}<span class="fk-dim">{when}</span>'



def show_result(view: VideoView, name: str) -> None:
    s, stem = view.summary, Path(name).stem
    left, right = st.columns([3, 2], gap="large")
    left.video(str(view.video))
    with right:
        a, b = st.columns(2)
        a.metric("Faces tracked", len(s["tracks"]))
        b.metric("Analysed at", f"{s['frames_per_s']:.1f} fps",
                 help=f"{s['frames']:,} frames in {s['processing_s']:.1f} s")
        if not s["tracks"]:
            st.info("No face was found in this video.", icon=":material/face:")
        st.download_button("Annotated video (MP4)", view.video.read_bytes(), file_name=f"{stem}-ferkit.mp4",
                           mime="video/mp4", icon=":material/movie:", width="stretch")
        st.download_button("Emotion timeline (CSV)", view.csv.read_bytes(), file_name=f"{stem}-ferkit.csv",
                           mime="text/csv", icon=":material/table:", width="stretch")
        st.download_button("Summary (JSON)", json.dumps(s, indent=2), file_name=f"{stem}-ferkit.json",
                           mime="application/json", icon=":material/data_object:", width="stretch")
    if s["tracks"]:
        st.subheader("Emotions over time", divider="gray")
        show_timeline(view)


def render_video_tab(sel: Selection) -> None:
    file = st.file_uploader("Video (MP4, MOV, AVI, MKV, WEBM, ...)", max_upload_size=MAX_VIDEO_MB, key="video",
                            help="Faces are followed from frame to frame; each gets its own emotion timeline. "
                                 f"Accepted: {', '.join(VIDEO_TYPES)}.")
    if file is None:
        st.caption("Every frame goes through the face detector and the model on this computer's CPU; "
                   "a progress bar shows how far it is.")
        return
    digests: dict = st.session_state.setdefault("video_digests", {})  # hashed once per upload, not per rerun
    if file.file_id not in digests:
        digests[file.file_id] = hashlib.sha256(file.getvalue()).hexdigest()[:16]
    digest = digests[file.file_id]
    key = (digest, sel.model.source, sel.detector, sel.tta)
    done: dict = st.session_state.setdefault("videos", {})
    view = done.get(key)
    if view is None:
        view = run_video(file.name, file.getvalue(),
                         WORK_DIR / f"{digest}-{hashlib.sha256(repr(key).encode()).hexdigest()[:8]}", sel)
        if view is None:
            return
        done[key] = view
    i = view.info
    st.caption(f"{i.width}x{i.height}, {i.frames:,} frames, {i.seconds:.1f} s at {i.fps:.0f} fps")
    show_result(view, file.name)


def run_video(name: str, data: bytes, folder: Path, sel: Selection) -> VideoView | None:
    """Check, analyse and re-encode an upload with a progress bar; None (and a message) when that fails."""
    try:
        info = save_video(name, data, folder)
    except UploadError as e:
        st.error(str(e), icon=":material/broken_image:")
        return None
    bar = st.progress(0.0, text="Starting")
    try:
        return analyse_video(info, folder, sel, bar)
    except FerkitError as e:
        st.error(str(e), icon=":material/error:")
    except Exception as e:  # a video no check foresaw must not end the page
        log.exception("analysing %s failed", name)
        st.error(f"{name} could not be analysed ({type(e).__name__}: {e}). Try converting it to MP4.",
                 icon=":material/error:")
    finally:
        bar.empty()
    return None
