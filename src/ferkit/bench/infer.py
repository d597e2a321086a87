"""Inference speed: classification per backend, detection per detector, photos and video end to end.

Every figure is measured in the same run on the same inputs, and each table has a ratio against its first row
(classification: PyTorch eager; detection: Haar; end to end: the fer package when it is importable here or from
``fer_python``, else ferkit's PyTorch pipeline).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ferkit.config import INPUT_SIZE
from ferkit.errors import FerkitError

FRAME_SIZE = (640, 480)  # width, height of the benchmark video frames
THROUGHPUT_BATCH = 64
END_TO_END_DETECTORS = ("auto", "haar")  # the default (BlazeFace where installed) and the one that needs no install


@dataclass
class Row:
    name: str
    settings: str
    value: float  # the headline: ms per item for latencies, items/s for rates
    unit: str
    extra: dict[str, float] = field(default_factory=dict)
    ratio: float = 1.0  # speed relative to the table's first row (> 1: faster)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class InferBench:
    classification: list[Row]
    detection: list[Row]
    end_to_end: list[Row]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ms(fn: Callable[[], Any], repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def _ratios(rows: list[Row], lower_is_better: bool) -> list[Row]:
    base = rows[0].value
    for r in rows:
        r.ratio = (base / r.value if lower_is_better else r.value / base) if r.value and base else float("nan")
    return rows


def _classifiers(model: str, calibration: str | Path | None, tmp: Path, notes: list[str]):
    """(name, settings, Classifier) for torch eager, torch compiled, onnxruntime fp32 and int8 (where possible)."""
    from ferkit.export import export_onnx
    from ferkit.infer.classify import Classifier, load_classifier

    eager = load_classifier(model, "torch")
    yield "PyTorch eager", "fp32", eager
    (net, meta), = eager.members
    yield "PyTorch compiled", "fp32, torch.compile", Classifier([(torch.compile(net), meta)], "none", "torch",
                                                             eager.model)
    try:
        yield "onnxruntime fp32", "ferkit export", load_classifier(model, "onnxruntime")
    except FerkitError as e:
        notes.append(f"onnxruntime skipped: {e}")
        return
    try:
        int8 = export_onnx(model, tmp / "int8.onnx", int8=True, calibration=calibration)
    except FerkitError as e:
        notes.append(f"int8 skipped: {e}")
        return
    yield "onnxruntime int8", f"static QDQ, keeps {int8.top1_agreement:.0%} of top-1", load_classifier(int8.path)


def bench_classification(model: str, faces: np.ndarray, repeats: int, calibration: str | Path | None,
                         tmp: Path, notes: list[str]) -> tuple[list[Row], dict[str, Any]]:
    rows, loaded = [], {}
    batch = faces[np.arange(THROUGHPUT_BATCH) % len(faces)]  # (64, S, S)
    for name, settings, clf in _classifiers(model, calibration, tmp, notes):
        one = median_ms(lambda: clf.predict(faces[:1]), repeats)
        many = median_ms(lambda: clf.predict(batch), max(3, repeats // 10))
        rows.append(Row(name, settings, one, "ms/face (batch 1)",
                        {"faces_per_s_batch64": 1000 * THROUGHPUT_BATCH / many}))
        loaded[name] = clf
    return _ratios(rows, lower_is_better=True), loaded


def bench_detection(frame: np.ndarray, repeats: int, notes: list[str]) -> list[Row]:
    from ferkit.infer.detect import DEFAULT_DETECTOR, get_detector, list_detectors

    rows = []
    for name in list_detectors():
        if name == DEFAULT_DETECTOR:
            continue  # another name for one of the others
        try:
            det = get_detector(name)
        except FerkitError as e:
            notes.append(f"detector {name} skipped: {e}")
            continue
        found = len(det(frame))
        rows.append(Row(name, f"{frame.shape[1]}x{frame.shape[0]} frame, {found} face(s) found",
                        median_ms(lambda: det(frame), repeats), "ms/frame"))
    return _ratios(rows, lower_is_better=True)


def bench_frame(photo: np.ndarray) -> np.ndarray:
    """The photo on a 640x480 canvas (a webcam-sized frame with one face)."""
    w, h = FRAME_SIZE
    scale = min(w / photo.shape[1], h / photo.shape[0]) * 0.8
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    frame = cv2.resize(photo, (w, h), interpolation=cv2.INTER_AREA)
    frame = cv2.GaussianBlur(frame, (0, 0), 25)  # a blurred copy as background
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small
    return frame


def write_clip(photo: np.ndarray, path: Path, frames: int, fps: float = 30.0) -> Path:
    """A 640x480 clip of the photo drifting slowly across a blurred background."""
    base = bench_frame(photo)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_SIZE)
    for i in range(frames):
        shift = np.float32([[1, 0, 20 * np.sin(i / 15)], [0, 1, 10 * np.cos(i / 20)]])
        out.write(cv2.warpAffine(base, shift, FRAME_SIZE, borderMode=cv2.BORDER_REFLECT))
    out.release()
    return path


def bench_end_to_end(photo_path: Path, clip: Path, classifiers: dict[str, Any], repeats: int,
                     detect_every: int, fer_python: str | None, notes: list[str]) -> list[Row]:
    from ferkit.infer.detect import get_detector
    from ferkit.infer.recognizer import Recognizer
    from ferkit.infer.video import process_video

    from ferkit.infer.source import read_image

    photo = read_image(photo_path)
    rows = []
    fer_row = _fer_row(photo_path, repeats, fer_python, notes)
    if fer_row is not None:
        rows.append(fer_row)
    detectors = {}
    for detector in END_TO_END_DETECTORS:
        try:
            detectors[detector] = get_detector(detector)
        except FerkitError as e:
            notes.append(f"end to end with {detector} skipped: {e}")
    for detector_name, detector in detectors.items():
        for name, clf in classifiers.items():
            if "compiled" in name:
                continue  # compiled graphs specialise on the batch size; photos have varying face counts
            rec = Recognizer(clf, detector)
            photo_ms = median_ms(lambda: rec.predict(photo), repeats)
            fps = {}
            for every in sorted({1, detect_every}):
                res = process_video(clip, rec, detect_every=every)
                fps[f"video_fps_detect_every_{every}"] = res.frames_per_s
            label = detector_name if detector_name == detector.name else f"{detector_name} ({detector.name})"
            rows.append(Row(f"ferkit {name}", f"{label} detector", photo_ms, "ms/photo", fps))
    return _ratios(rows, lower_is_better=True)


def _fer_row(photo: Path, repeats: int, python: str | None, notes: list[str]) -> Row | None:
    """fer's end-to-end time on the same photo, measured by ``python`` (see ``fer_interpreter``)."""
    import json

    from ferkit.bench.fer import TIME_PHOTO, run_fer

    if python is None:
        notes.append("the fer package is not importable here; give --fer-python PATH (a Python that has fer) to "
                     "measure it as the end-to-end baseline")
        return None
    res = json.loads(run_fer(python, TIME_PHOTO, str(photo), str(repeats), timeout=1800).strip().splitlines()[-1])
    return Row("fer", f"its default (Haar + TensorFlow CNN), {res['faces']} face(s) found", res["ms"], "ms/photo")


def bench_infer(model: str = "default", repeats: int = 50, calibration: str | Path | None = None,
                video_frames: int = 150, detect_every: int = 3, fer_python: str | None = None) -> InferBench:
    """Measure everything in one run on this machine; see the module docstring."""
    from ferkit.infer.crop import crop_faces
    from ferkit.infer.detect import get_detector
    from ferkit.infer.source import SAMPLE_PHOTO, read_image

    if repeats < 1 or video_frames < 1 or detect_every < 1:
        raise FerkitError("repeats, video frames and detect-every must be at least 1")
    from ferkit.bench.fer import fer_interpreter

    notes: list[str] = []
    fer_python = fer_interpreter(fer_python)
    photo = read_image(SAMPLE_PHOTO)
    boxes = [d.box for d in get_detector("haar")(photo)]
    faces = crop_faces(photo, boxes, INPUT_SIZE)  # (N, 48, 48): the real face of the sample photo
    with tempfile.TemporaryDirectory() as tmp:
        classification, loaded = bench_classification(model, faces, repeats, calibration, Path(tmp), notes)
        detection = bench_detection(bench_frame(photo), repeats, notes)
        clip = write_clip(photo, Path(tmp) / "clip.mp4", video_frames)
        end_to_end = bench_end_to_end(SAMPLE_PHOTO, clip, loaded, max(5, repeats // 2), detect_every, fer_python,
                                      notes)
    return InferBench(classification, detection, end_to_end, notes)
