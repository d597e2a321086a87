"""`ferkit bench`: the tables hold every variant, with ratios against the first row (no timing is asserted)."""

from __future__ import annotations

import json
import math
import sys

import cv2
import numpy as np
import pytest
from conftest import run_cli, run_main

from ferkit.bench.detect import GROUP_FACES, GROUP_SIDES, bench_detect, group_photo, match_faces
from ferkit.bench.train import bench_train
from ferkit.data.dataset import load_dataset

def test_bench_train_measures_three_variants(kaggle_folder):
    rows = bench_train(kaggle_folder, model="fernet", batch_size=8, batches=2, warmup=1, compile=False, rounds=2)
    assert [r.variant for r in rows] == ["naive PyTorch loop", "ferkit trainer", "ferkit trainer + augmentation"]
    assert rows[0].ratio == 1.0 and all(r.images_per_s > 0 and 0 <= r.data_share <= 1 for r in rows)
    assert "fer_strong" in rows[2].settings


def test_bench_train_refuses_bad_counts(fer_zip, capsys):
    code, _, err = run_main(capsys, "bench", "train", "--data", fer_zip, "--rounds", "0")
    assert code == 2 and err.count("\n") == 1 and "at least 1" in err


def test_bench_infer_json(kaggle_folder):
    r = run_cli("bench", "infer", "--repeats", "1", "--video-frames", "4", "--calibration", kaggle_folder, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    names = [row["name"] for row in res["classification"]]
    assert names == ["PyTorch eager", "PyTorch compiled", "onnxruntime fp32", "onnxruntime int8"]
    # Each table's ratio is its first row's time over the row's own (lower is better: > 1 is faster).
    for table in ("classification", "detection", "end_to_end"):
        base = res[table][0]["value"]
        assert all(row["ratio"] == pytest.approx(base / row["value"]) for row in res[table]), table
    assert all(math.isfinite(row["extra"]["faces_per_s_batch64"]) for row in res["classification"])
    assert res["detection"][0]["name"] == "haar" and "1 face(s) found" in res["detection"][0]["settings"]
    e2e = res["end_to_end"]
    pipelines = ["ferkit PyTorch eager", "ferkit onnxruntime fp32", "ferkit onnxruntime int8"]
    assert [(row["name"], row["settings"]) for row in e2e if row["name"].startswith("ferkit")] == [
        (name, f"{detector} detector") for detector in ("auto (blazeface_multiscale)", "haar") for name in pipelines]
    for row in e2e:
        if row["name"].startswith("ferkit"):
            assert set(row["extra"]) == {"video_fps_detect_every_1", "video_fps_detect_every_3"}
            assert all(v > 0 and math.isfinite(v) for v in row["extra"].values())


def test_bench_infer_refuses_bad_counts(capsys):
    code, _, err = run_main(capsys, "bench", "infer", "--repeats", "0")
    assert code == 2 and err.count("\n") == 1 and "at least 1" in err


def test_bench_infer_refuses_a_python_without_fer(capsys):
    code, _, err = run_main(capsys, "bench", "infer", "--fer-python", sys.executable)
    assert code == 2 and err.count("\n") == 1 and "import fer" in err


def test_bench_detect_on_real_faces(fer_zip):
    names = ["haar", "blazeface_short", "blazeface_multiscale"]
    rows, notes = bench_detect(fer_zip, faces=40, detectors=names, groups=5)
    assert [r.detector for r in rows] == names and notes == []
    for r in rows:
        assert r.faces == 40 and 0.3 < r.found <= 1
        assert 0.7 < r.side < 1.2 and abs(r.below) < 0.1  # the box sits on the face
        assert r.accuracy_detector_crops > 0.4  # the default model on what the detector framed: far above chance
        assert r.group_faces == 5 * GROUP_FACES and r.group_correct <= r.group_found
    haar, short, multiscale = rows
    assert haar.group_found > 0.4  # Haar finds most faces of a group photo
    # The default detector finds at least as many faces as Haar, alone and in group photos, thanks to its fine
    # pass: the short-range model at its own 128x128 misses the small faces of a group.
    assert multiscale.found >= haar.found and multiscale.group_found >= haar.group_found
    assert short.group_found < 0.5 * multiscale.group_found


def test_group_photo_places_every_face_where_it_says(fer_zip):
    """The group photo bench's scene: each face at its stated place and size, and a detection matched to a face
    only when its centre lies on that face, each detection once."""
    faces = load_dataset(fer_zip, size=48)["test"].images[:GROUP_FACES]
    rng = np.random.default_rng(0)
    image, boxes = group_photo(list(faces), list(GROUP_SIDES), rng)
    assert image.shape[1] == 1280 and len(boxes) == GROUP_FACES
    for face, (left, top, side) in zip(faces, boxes):
        placed = cv2.cvtColor(image[top:top + side, left:left + side], cv2.COLOR_BGR2GRAY)
        expected = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
        assert np.abs(placed.astype(int) - expected).mean() < 1
    left, top, side = boxes[0]
    on_face = (left + 5, top + 5, side, side)
    assert match_faces(boxes[:1], [(0, 0, 10, 10), on_face]) == [1]
    assert match_faces(boxes[:1] * 2, [on_face]) == [0, None]  # one detection cannot count twice


def test_bench_detect_cli(fer_zip):
    r = run_cli("bench", "detect", "--data", fer_zip, "--faces", "12", "--groups", "1", "--detector", "haar", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["detectors"]
    assert [row["detector"] for row in rows] == ["haar"] and rows[0]["faces"] == 12 and rows[0]["group_faces"] == 6
    # The console script itself: one line, no traceback.
    r = run_cli("bench", "detect", "--data", fer_zip, "--detector", "dlib")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown face detector 'dlib'" in r.stderr
