"""ONNX export of the shipped default model: parity with PyTorch, int8, self-description, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli, write_kaggle_folder

from ferkit.evaluate import evaluate
from ferkit.evaluate.predict import load_members, predict_proba
from ferkit.export import ExportResult, export_onnx, read_onnx_meta
from ferkit.export.onnx import PARITY_ATOL
from ferkit.models.checkpoint import read_meta

@pytest.fixture(scope="module")
def faces_dir(fer_zip, tmp_path_factory) -> Path:
    return write_kaggle_folder(fer_zip, tmp_path_factory.mktemp("fer") / "fer2013", per_class=12)


@pytest.fixture(scope="module")
def exported(faces_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("onnx")
    r = run_cli("export", "default", "--onnx", out / "default.onnx", "--calibration", faces_dir, "--json")
    assert r.returncode == 0, r.stderr
    fp32 = ExportResult(**json.loads(r.stdout))
    int8 = export_onnx("default", out / "default-int8.onnx", int8=True, calibration=faces_dir)
    return {"fp32": Path(fp32.path), "int8": Path(int8.path), "fp32_result": fp32, "int8_result": int8}


def test_fp32_export_matches_pytorch_on_real_faces(exported, faces_dir):
    r = exported["fp32_result"]
    assert r.check_faces == 83  # 12 faces x 7 classes of the train split, less its copy of a test face
    assert r.max_prob_diff <= PARITY_ATOL and r.top1_agreement == 1.0
    members = load_members(["default"])
    faces = members[0][1]
    onnx_members = load_members([exported["fp32"]])
    from ferkit.data import load_dataset

    images = load_dataset(faces_dir)["test"].images
    p_torch = predict_proba(members, images, "flip")
    p_onnx = predict_proba(onnx_members, images, "flip")
    assert np.abs(p_torch - p_onnx).max() < PARITY_ATOL
    assert faces["labels"] == onnx_members[0][1]["labels"]


def test_exported_file_describes_itself(exported):
    meta = read_onnx_meta(exported["int8"])
    shipped = read_meta("default")
    assert meta["labels"] == shipped["labels"] and meta["input"] == shipped["input"]
    assert meta["onnx"] == {"int8": True, "source": "default"}
    assert not list(exported["fp32"].parent.glob(".export-*"))  # no temporary files left


def test_int8_is_smaller_and_scores_like_fp32(exported, faces_dir):
    r8 = exported["int8_result"]
    assert r8.int8 and r8.size_mb < exported["fp32_result"].size_mb / 3
    assert r8.top1_agreement >= 0.9
    ev32 = evaluate(exported["fp32"], faces_dir, tta="none")
    ev8 = evaluate(exported["int8"], faces_dir, tta="none")
    evt = evaluate("default", faces_dir, tta="none")
    assert ev32.accuracy == pytest.approx(evt.accuracy)
    assert abs(ev8.accuracy - evt.accuracy) <= 0.15  # 84 faces: a few may flip


def test_export_cli_and_bad_inputs(exported, tmp_path):
    r = run_cli("export", "default", "--onnx", str(tmp_path / "model.txt"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "must end in .onnx" in r.stderr
    r = run_cli("export", "default", "--onnx", str(tmp_path / "missing" / "m.onnx"))
    assert r.returncode == 2 and "no such folder" in r.stderr
    r = run_cli("export", "nonexistent-run", "--onnx", str(tmp_path / "m.onnx"))
    assert r.returncode == 2 and "no such model" in r.stderr
    assert not list(tmp_path.iterdir())
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    r = run_cli("evaluate", str(broken), "--data", str(exported["fp32"].parent))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "not a readable ONNX model" in r.stderr

