"""Videos and webcams: faces tracked across frames with stable IDs, probabilities smoothed per track, a timeline
per track, and an annotated copy of the video.

Tracks follow one person each. A face continues a track only if its box overlaps the track's last box (IoU, optimal
assignment) *and* it looks like the track's face (``APPEARANCE_MATCH``: correlation of small equalized gray
thumbnails); a shot change (``SHOT_CHANGE``: the mean HSV change between consecutive frames, as PySceneDetect's
content detector measures it) ends every track and makes the detector search that frame. A face unmatched for
``MAX_MISSED`` frames ends its track, and a new face starts one with the next ID, its smoothing started afresh. Each
track's probabilities are an exponential moving average (``smoothing`` is the newest frame's weight), so a one-frame
flicker does not flip the label. Tracks seen in fewer than ``MIN_TRACK_FRAMES`` frames (a false detection, a face
passing by) are left out of the summaries; their timeline rows stay, marked ``short_track``.
"""

from __future__ import annotations

import csv
import io
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from ferkit.data.formats import to_gray
from ferkit.errors import FerkitError
from ferkit.fileio import atomic_write, temp_beside
from ferkit.infer.draw import annotate
from ferkit.infer.recognizer import DECIMALS, Face, Recognizer
from ferkit.infer.source import Frame, open_source

IOU_MATCH = 0.3  # least overlap for a face to continue a track
APPEARANCE_MATCH = 0.5  # least thumbnail correlation for a face to continue a track
APPEARANCE_SIDE = 16  # thumbnail side
SHOT_CHANGE = 27.0  # mean HSV change (0-255) between consecutive frames that counts as a cut
SHOT_WIDTH = 160  # frames are compared at this width
MIN_TRACK_FRAMES = 10  # tracks seen in fewer frames are left out of the summaries
MAX_MISSED = 15  # frames a track survives without a face (a blink of the detector does not end it)
SMOOTHING = 0.5  # weight of the newest frame in each track's moving average of probabilities
DETECT_EVERY = 3  # frames per detector run; in between, emotions are read at the tracks' last boxes
VIDEO_SUFFIX = ".mp4"
CRF = "23"  # x264's default quality: boxes and text stay sharp
DEFAULT_FPS = 30.0  # for sources that do not say (some webcams)
TIMELINE_COLUMNS = ("frame", "time_s", "track_id", "short_track", "x", "y", "w", "h")  # then one per emotion


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of boxes a (N, 4) and b (M, 4), each (x, y, w, h): (N, M)."""
    ax0, ay0, ax1, ay1 = a[:, 0:1], a[:, 1:2], a[:, 0:1] + a[:, 2:3], a[:, 1:2] + a[:, 3:4]  # (N, 1) each
    bx0, by0, bx1, by1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]  # (M,) each
    iw = np.clip(np.minimum(ax1, bx1) - np.maximum(ax0, bx0), 0, None)
    ih = np.clip(np.minimum(ay1, by1) - np.maximum(ay0, by0), 0, None)
    inter = iw * ih  # (N, M)
    union = a[:, 2:3] * a[:, 3:4] + b[:, 2] * b[:, 3] - inter
    return inter / np.maximum(union, 1e-9)


def appearance(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """A face's look: its square crop, equalized, as a zero-mean unit-length vector of APPEARANCE_SIDE² pixels."""
    from ferkit.infer.crop import crop_face

    t = cv2.equalizeHist(crop_face(gray, box, APPEARANCE_SIDE)).astype(np.float32).ravel()
    t -= t.mean()
    return t / (np.linalg.norm(t) + 1e-6)


class ShotDetector:
    """Says when a frame starts a new shot: the mean absolute change of its HSV pixels (at SHOT_WIDTH) against the
    previous frame's exceeds ``threshold``."""

    def __init__(self, threshold: float = SHOT_CHANGE):
        self.threshold = threshold
        self.last: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> bool:
        h, w = image.shape[:2]
        small = cv2.resize(image, (SHOT_WIDTH, max(1, round(h * SHOT_WIDTH / w))), interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(small, cv2.COLOR_BGR2HSV).astype(np.int16)
        cut = self.last is not None and (self.last.shape != hsv.shape
                                         or float(np.abs(hsv - self.last).mean()) > self.threshold)
        self.last = hsv
        return cut


@dataclass
class TrackSummary:
    """One tracked face over a video: when it was seen and its dominant emotion (the highest mean probability
    over its frames, before smoothing)."""

    track_id: int
    frames: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    emotion: str
    emotions: dict[str, float]  # mean probability per emotion

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "emotions": {k: round(v, DECIMALS) for k, v in self.emotions.items()}}


@dataclass
class _Track:
    id: int
    box: tuple[int, int, int, int]
    look: np.ndarray  # appearance() of its face, a moving average
    smooth: np.ndarray  # (C,) moving average of probabilities
    total: np.ndarray  # (C,) sum of raw probabilities
    first_frame: int
    first_s: float
    last_frame: int = 0
    last_s: float = 0.0
    frames: int = 0
    missed: int = 0


class Tracker:
    """Gives each face a track ID and its track's smoothed probabilities, frame after frame."""

    def __init__(self, labels: list[str], smoothing: float = SMOOTHING, iou_match: float = IOU_MATCH,
                 max_missed: int = MAX_MISSED, appearance_match: float = APPEARANCE_MATCH,
                 min_frames: int = MIN_TRACK_FRAMES):
        if not 0 < smoothing <= 1:
            raise FerkitError(f"smoothing {smoothing} must be in (0, 1]; 1 means no smoothing")
        self.labels = labels
        self.smoothing, self.iou_match, self.max_missed = smoothing, iou_match, max_missed
        self.appearance_match, self.min_frames = appearance_match, min_frames
        self.active: list[_Track] = []
        self.ended: list[_Track] = []
        self.next_id = 1

    def boxes_seen_last(self) -> list[tuple[int, int, int, int]]:
        return [t.box for t in self.active if t.missed == 0]

    def end_all(self) -> None:
        """End every track (a shot change: whoever is seen next is someone new until shown otherwise)."""
        self.ended += self.active
        self.active = []

    def update(self, faces: list[Face], frame: Frame) -> list[Face]:
        """Faces of ``frame`` (raw probabilities) -> the same faces with track IDs and smoothed probabilities."""
        gray = to_gray(frame.image) if faces else None
        looks = [appearance(gray, f.box) for f in faces]
        matches: dict[int, _Track] = {}
        if faces and self.active:
            overlap = iou(np.array([f.box for f in faces], float), np.array([t.box for t in self.active], float))
            alike = np.array(looks) @ np.array([t.look for t in self.active]).T  # (faces, tracks) correlations
            score = np.where(alike >= self.appearance_match, overlap, 0.0)
            rows, cols = linear_sum_assignment(-score)
            matches = {r: self.active[c] for r, c in zip(rows, cols) if score[r, c] >= self.iou_match}
        out = []
        for i, face in enumerate(faces):
            p = np.array([face.emotions[k] for k in self.labels], np.float64)  # (C,)
            track = matches.get(i)
            if track is None:
                track = _Track(self.next_id, face.box, looks[i], p.copy(), np.zeros_like(p), frame.index,
                               frame.time_s)
                self.next_id += 1
                self.active.append(track)
            else:
                track.smooth = self.smoothing * p + (1 - self.smoothing) * track.smooth
                look = 0.5 * track.look + 0.5 * looks[i]
                track.look = look / (np.linalg.norm(look) + 1e-6)
            track.box, track.missed = face.box, -1  # -1: seen now; the increment below makes it 0
            track.total += p
            track.frames += 1
            track.last_frame, track.last_s = frame.index, frame.time_s
            out.append(Face(face.box, dict(zip(self.labels, map(float, track.smooth))), track.id))
        for t in self.active:
            t.missed += 1
        self.ended += [t for t in self.active if t.missed > self.max_missed]
        self.active = [t for t in self.active if t.missed <= self.max_missed]
        return out

    def short_tracks(self) -> set[int]:
        """IDs of the tracks seen in fewer than ``min_frames`` frames."""
        return {t.id for t in self.ended + self.active if t.frames < self.min_frames}

    def summaries(self) -> list[TrackSummary]:
        """One summary per track seen in at least ``min_frames`` frames, in ID order."""
        out = []
        for t in sorted(self.ended + self.active, key=lambda t: t.id):
            if t.frames < self.min_frames:
                continue
            mean = t.total / t.frames
            out.append(TrackSummary(t.id, t.frames, t.first_frame, t.last_frame, round(t.first_s, 3),
                                    round(t.last_s, 3), self.labels[int(mean.argmax())],
                                    dict(zip(self.labels, map(float, mean)))))
        return out


class FaceFollower:
    """Faces frame after frame, the one path of ``process_video``, ``ferkit predict --webcam`` and the app's webcam
    tab: a shot change ends every track and makes the detector search; otherwise the detector runs on every
    ``detect_every``-th frame and the emotions are read at the tracks' last boxes in between; the ``Tracker`` gives
    IDs and smoothed probabilities."""

    def __init__(self, recognizer: Recognizer, detect_every: int = DETECT_EVERY, smoothing: float = SMOOTHING):
        self.recognizer = recognizer
        self.detect_every = check_detect_every(detect_every)
        self.tracker = Tracker(recognizer.labels, smoothing)
        self.shots = ShotDetector()

    def __call__(self, frame: Frame) -> list[Face]:
        new_shot = self.shots(frame.image)
        if new_shot:
            self.tracker.end_all()
        carried = self.tracker.boxes_seen_last() if frame.index % self.detect_every and not new_shot else None
        raw = (self.recognizer.predict(frame.image) if carried is None
               else self.recognizer.predict_boxes(frame.image, carried))
        return self.tracker.update(raw, frame)


def timeline_rows(faces: list[Face], frame: Frame) -> list[dict[str, Any]]:
    """One row per tracked face: frame, time_s, track_id, short_track (0 until the track is known to be short), x, y,
    w, h, then the smoothed probability per emotion."""
    return [{"frame": frame.index, "time_s": round(frame.time_s, 3), "track_id": f.track_id, "short_track": 0,
             **dict(zip("xywh", f.box)), **{k: round(v, DECIMALS) for k, v in f.emotions.items()}} for f in faces]


def mark_short_tracks(rows: list[dict[str, Any]], short: set[int]) -> list[dict[str, Any]]:
    """The timeline with ``short_track`` set to 1 on the rows of the tracks left out of the summaries."""
    for row in rows:
        row["short_track"] = int(row["track_id"] in short)
    return rows


@dataclass
class VideoResult:
    """What ``process_video`` saw: the source, every track's summary, the per-frame timeline and files written."""

    source: str
    kind: str  # video, webcam, image or folder
    labels: list[str]
    fps: float
    width: int
    height: int
    frames: int
    processing_s: float  # wall time spent reading it
    tracks: list[TrackSummary]
    timeline: list[dict[str, Any]] = field(repr=False)  # rows as in the CSV (not in to_dict)
    out_video: str | None = None
    out_csv: str | None = None
    frames_announced: int | None = None  # what the file's header says it holds (None: it does not say)

    @property
    def truncated(self) -> bool:
        """Fewer frames could be read than the header announces (beyond the few a header's estimate may be off)."""
        return bool(self.frames_announced) and self.frames + max(2, self.frames_announced // 20) < self.frames_announced

    @property
    def duration_s(self) -> float:
        """Length of the footage read, at its frame rate."""
        return self.frames / self.fps if self.fps else 0.0

    @property
    def frames_per_s(self) -> float:
        """Frames processed per second of wall time."""
        return self.frames / self.processing_s if self.processing_s else 0.0

    @property
    def brief_tracks(self) -> int:
        """Faces tracked in fewer than ``MIN_TRACK_FRAMES`` frames: in the timeline, left out of ``tracks``."""
        return len({r["track_id"] for r in self.timeline} - {t.track_id for t in self.tracks})

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("tracks", "timeline")}
        return {**d, "status": "ok", "duration_s": round(self.duration_s, 3),
                "processing_s": round(self.processing_s, 3), "frames_per_s": round(self.frames_per_s, 2),
                "truncated": self.truncated, "timeline_rows": len(self.timeline), "brief_tracks": self.brief_tracks,
                "tracks": [t.to_dict() for t in self.tracks]}


def timeline_csv(rows: list[dict[str, Any]], labels: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*TIMELINE_COLUMNS, *labels], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


class VideoFile:
    """The annotated video, written as it is made, to a temporary file beside ``path`` that ``commit`` renames into
    place: H.264 in 4:2:0 with its index first (what browsers play), encoded by PyAV in one pass; odd widths and
    heights lose their last pixel, which 4:2:0 cannot hold, and a side of one pixel is doubled."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        import av

        fd, self.tmp = temp_beside(path, VIDEO_SUFFIX)
        os.close(fd)
        self.path, self.size = path, size
        self.even = (max(2, size[0] // 2 * 2), max(2, size[1] // 2 * 2))
        rate = Fraction(fps if fps > 0 else DEFAULT_FPS).limit_denominator(1001)
        try:
            self.container = av.open(str(self.tmp), "w", options={"movflags": "+faststart"})
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": CRF, "preset": "veryfast"}
            self.stream.width, self.stream.height = self.even
        except (av.FFmpegError, ValueError) as e:
            self.tmp.unlink(missing_ok=True)
            raise FerkitError(f"{path}: cannot write an H.264 video here ({e})") from None

    def write(self, image: np.ndarray) -> None:
        """Append a BGR frame (resized to the first frame's size when the frames of a folder differ)."""
        import av

        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        image = image[:self.even[1], :self.even[0]]
        if image.shape[:2] != self.even[::-1]:  # a side of one pixel, doubled
            image = cv2.copyMakeBorder(image, 0, self.even[1] - image.shape[0], 0, self.even[0] - image.shape[1],
                                       cv2.BORDER_REPLICATE)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def commit(self) -> None:
        for packet in self.stream.encode():  # what the encoder still holds
            self.container.mux(packet)
        self.container.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        try:
            self.container.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def has_display() -> bool:
    """Whether cv2.imshow can open a window: OpenCV built with a GUI (not opencv-python-headless) and, on
    Linux, a display to show it on."""
    gui = next((line.split(":", 1)[1].strip() for line in cv2.getBuildInformation().splitlines()
                if line.strip().startswith("GUI:")), "NONE")
    if gui.upper() == "NONE":
        return False
    return os.name != "posix" or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) or \
        os.uname().sysname == "Darwin"


def check_detect_every(detect_every: int) -> int:
    if isinstance(detect_every, bool) or not isinstance(detect_every, int) or detect_every < 1:
        raise FerkitError(f"detect_every must be at least 1, got {detect_every}")
    return detect_every


def process_video(source: str | Path | int, recognizer: Recognizer, out_video: str | Path | None = None,
                  out_csv: str | Path | None = None, progress: bool = False, *, detect_every: int = DETECT_EVERY,
                  smoothing: float = SMOOTHING, window: str | None = None,
                  on_frame: Callable[[int], None] | None = None) -> VideoResult:
    """Track the faces of a video file, webcam index, image or folder of frames and read their emotions.

    ``out_video`` (.mp4): the annotated frames; ``out_csv``: the timeline (one row per face per frame). Both are
    written atomically: an error leaves neither behind. ``detect_every`` N > 1 runs the detector on every Nth frame
    and reads the emotions at the tracks' last boxes in between. ``window``: a title to show the annotated frames
    live in (needs a display; press q or Esc to stop). A webcam runs until stopped (q, Esc or Ctrl-C).
    ``on_frame`` is called with the number of frames done after each one (for progress displays of other kinds).
    """
    check_detect_every(detect_every)
    if out_video is not None and Path(out_video).suffix.lower() != VIDEO_SUFFIX:
        raise FerkitError(f"{out_video}: the annotated video is written as H.264 MP4; give a name ending in .mp4")
    if window is not None and not has_display():
        raise FerkitError("no window can be shown: this OpenCV has no GUI (opencv-python-headless) or there is no "
                          "display; write the annotated video with an output folder instead")
    follow = FaceFollower(recognizer, detect_every, smoothing)
    rows: list[dict[str, Any]] = []
    video: VideoFile | None = None
    start = time.perf_counter()
    n, size = 0, (0, 0)
    with open_source(source) as src:
        bar = tqdm(total=src.frame_count, desc=Path(src.name).name, unit="frame", disable=not progress,
                   leave=False)
        try:
            try:
                for frame in src:
                    size = frame.image.shape[1], frame.image.shape[0]
                    faces = follow(frame)
                    rows += timeline_rows(faces, frame)
                    n += 1
                    bar.update()
                    if on_frame is not None:
                        on_frame(n)
                    if out_video is None and window is None:
                        continue
                    drawn = annotate(frame.image, faces)
                    if out_video is not None:
                        if video is None:
                            video = VideoFile(Path(out_video), src.fps, size)
                        video.write(drawn)
                    if window is not None:
                        cv2.imshow(window, drawn)
                        if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                            break
            except KeyboardInterrupt:
                if not src.live:  # a camera is stopped with Ctrl-C: keep what was recorded
                    raise
            rows = mark_short_tracks(rows, follow.tracker.short_tracks())
            if out_csv is not None:
                atomic_write(out_csv, timeline_csv(rows, recognizer.labels))
            if video is not None:
                video.commit()
        except BaseException:
            if video is not None:
                video.discard()
            raise
        finally:
            bar.close()
            if window is not None:
                cv2.destroyAllWindows()
        return VideoResult(src.name, src.kind, recognizer.labels, src.fps, size[0], size[1], n,
                           time.perf_counter() - start, follow.tracker.summaries(), rows,
                           str(out_video) if out_video is not None else None,
                           str(out_csv) if out_csv is not None else None,
                           src.frame_count if src.kind == "video" else None)
