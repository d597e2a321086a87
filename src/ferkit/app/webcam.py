"""The Webcam tab: live recognition on the browser's camera through WebRTC, with a frame-rate readout."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import av
import cv2
import streamlit as st
from streamlit_webrtc import WebRtcMode, webrtc_streamer

from ferkit.app.models import load_recognizer
from ferkit.app.sidebar import Selection
from ferkit.app.views import face_card
from ferkit.errors import FerkitError
from ferkit.infer import Recognizer, annotate
from ferkit.infer.source import Frame
from ferkit.infer.video import FaceFollower

log = logging.getLogger(__name__)

# The app listens on 127.0.0.1, so browser and server meet on host candidates; no STUN server is needed
# (and none may be reachable).
RTC_CONFIGURATION = {"iceServers": []}
FPS_WINDOW = 30  # frames the rate is averaged over
READOUT_EVERY_S = 1.0  # how often the readout beside the video refreshes
MAX_LIVE_CARDS = 4


class LiveStats:
    """Frame rate and the latest faces, written by the video thread and read by the page."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._times: deque[float] = deque(maxlen=FPS_WINDOW)
        self._faces: list[dict] = []

    def tick(self, faces: list[dict]) -> None:
        with self._lock:
            self._times.append(time.perf_counter())
            self._faces = faces

    @property
    def fps(self) -> float:
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    @property
    def faces(self) -> list[dict]:
        with self._lock:
            return list(self._faces)


def frame_callback(recognizer: Recognizer, stats: LiveStats) -> Callable[[av.VideoFrame], av.VideoFrame]:
    """The function streamlit-webrtc calls on every camera frame: follow the faces (tracks, smoothing, detection
    every few frames, as ``ferkit predict --webcam`` does), draw, stamp the frame rate."""
    follow = FaceFollower(recognizer)
    start = time.perf_counter()
    count = itertools.count()

    def callback(frame: av.VideoFrame) -> av.VideoFrame:
        image = frame.to_ndarray(format="bgr24")  # (H, W, 3)
        faces = follow(Frame(image, next(count), time.perf_counter() - start))
        out = annotate(image, faces)
        stats.tick([f.to_dict() for f in faces])
        text = f"{stats.fps:.1f} fps"
        cv2.putText(out, text, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(out, text, (10, 26), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1, cv2.LINE_AA)
        return av.VideoFrame.from_ndarray(out, format="bgr24")

    return callback


@st.fragment(run_every=READOUT_EVERY_S)
def live_readout(stats: LiveStats) -> None:
    """Frame rate and a card per face of the latest frame, refreshed while the camera runs."""
    faces = stats.faces
    a, b = st.columns(2)
    a.metric("Frames per second", f"{stats.fps:.1f}")
    b.metric("Faces", len(faces))
    for i, face in enumerate(faces[:MAX_LIVE_CARDS], 1):
        st.html(face_card(i, face))


def render_webcam_tab(sel: Selection) -> None:
    st.markdown("Press **Start** and allow the camera: every frame goes through the model selected in the "
                "sidebar and comes back with the faces drawn on it.")
    try:
        recognizer = load_recognizer(sel.model.source, sel.detector, sel.tta)
    except FerkitError as e:
        st.error(f"The model could not be used: {e}", icon=":material/error:")
        return
    stats = st.session_state.setdefault("webcam_stats", LiveStats())
    left, right = st.columns([3, 2], gap="large")
    with left:
        try:
            ctx = webrtc_streamer(key="webcam", mode=WebRtcMode.SENDRECV, rtc_configuration=RTC_CONFIGURATION,
                                  media_stream_constraints={"video": True, "audio": False},
                                  video_frame_callback=frame_callback(recognizer, stats), async_processing=True)
        except Exception as e:  # no camera, no WebRTC: the other tabs must keep working
            log.exception("webcam component failed")
            st.warning(f"The webcam cannot be used here ({type(e).__name__}: {e}).", icon=":material/videocam_off:")
            return
    with right:
        if ctx.state.playing:
            live_readout(stats)
        else:
            st.caption("The frame rate and each face's emotions appear here while the camera runs. "
                       "No camera? The Photo and Video tabs work without one.")
