"""ONNX export of the shipped default model (parity with PyTorch, int8, self-description, errors), and the
checkpoint round trip and ONNX export of every registered model."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import kill_once, run_cli, run_main, write_kaggle_folder

from ferkit.errors import FerkitError
from ferkit.evaluate import evaluate
from ferkit.models.predict import load_members, predict_proba
from ferkit.export import ExportResult, export_onnx
from ferkit.export.onnx import PARITY_ATOL
from ferkit.models.onnx import load_onnx, read_onnx_meta
from ferkit.models import create_model, get_spec, list_models
from ferkit.models.checkpoint import load_checkpoint, read_meta, save_checkpoint

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


def test_export_cli_and_bad_inputs(exported, tmp_path, capsys):
    code, _, err = run_main(capsys, "export", "default", "--onnx", tmp_path / "model.txt")
    assert code == 2 and err.count("\n") == 1 and "ending in .onnx" in err
    code, _, err = run_main(capsys, "export", "default", "--onnx", tmp_path / "missing" / "m.onnx")
    assert code == 2 and "no such folder" in err
    code, _, err = run_main(capsys, "export", "nonexistent-run", "--onnx", tmp_path / "m.onnx")
    assert code == 2 and "no such model" in err
    assert not list(tmp_path.iterdir())
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    code, _, err = run_main(capsys, "evaluate", broken, "--data", exported["fp32"].parent)
    assert code == 2 and err.count("\n") == 1 and "not a readable ONNX model" in err



def test_killed_export_leaves_staging_that_the_next_export_removes(tmp_path):
    """kill -9 during an export: nothing at the output path; the next export into the folder removes the killed
    run's staging folder and publishes its file whole."""
    out = tmp_path / "model.onnx"
    kill_once(["export", "default", "--onnx", out], tmp_path, ".ferkit-export-*")
    (stale,) = tmp_path.glob(".ferkit-export-*")
    assert not out.exists()
    r = run_cli("export", "default", "--onnx", str(out))
    assert r.returncode == 0, r.stderr
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    assert read_onnx_meta(out)["labels"] == read_meta("default")["labels"]


# ---- every registered model ------------------------------------------------------------------------------------

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def saved(name: str, folder: Path) -> tuple[torch.nn.Module, Path]:
    """A freshly built ``name`` (timm backbones at 32px, as in test_models) written as a ferkit checkpoint."""
    kwargs = {"image_size": 32} if get_spec(name).family == "timm" else {}
    torch.manual_seed(0)
    model = create_model(name, **kwargs).eval()
    meta = {"architecture": name, "kwargs": kwargs, "labels": LABELS,
            "input": {"face_size": 48, "crop": None, "size": model.input_size, "channels": 1, "range": [0, 1]}}
    return model, save_checkpoint(folder / f"{name.replace(':', '_')}.safetensors", model, meta)


@pytest.mark.parametrize("name", [s.name for s in list_models()])
def test_checkpoint_round_trip_of_every_registered_model(name, tmp_path):
    model, path = saved(name, tmp_path)
    loaded, meta = load_checkpoint(path)
    assert meta["architecture"] == name and meta["labels"] == LABELS
    assert type(loaded) is type(model) and loaded.state_dict().keys() == model.state_dict().keys()
    x = torch.rand(3, 1, model.input_size, model.input_size)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


# Every registered model, and timm:vit_tiny for the timm models users name themselves.
ONNX_MODELS = [s.name for s in list_models()] + ["timm:vit_tiny_patch16_224"]


@pytest.mark.parametrize("name", ONNX_MODELS)
def test_onnx_export_of_every_registered_model_matches_pytorch(name, tmp_path):
    model, path = saved(name, tmp_path)
    result = export_onnx(path, tmp_path / "model.onnx")  # raises when the probabilities differ from PyTorch's
    assert result.max_prob_diff <= PARITY_ATOL and result.top1_agreement == 1.0
    onnx_model, meta = load_onnx(result.path)
    x = torch.rand(5, 1, model.input_size, model.input_size)  # another batch size than the export's
    with torch.no_grad():
        expected = model(x).softmax(1).numpy()
    assert np.abs(onnx_model(x).softmax(1).numpy() - expected).max() < PARITY_ATOL
    assert meta["architecture"] == name


# ---- Hugging Face Hub layout -----------------------------------------------------------------------------------


def test_hub_folder_loads_like_the_model_it_came_from(tmp_path, capsys):
    from ferkit.infer import SAMPLE_PHOTO, Recognizer

    code, out, err = run_main(capsys, "export", "default", "--hub", tmp_path / "hub")
    assert code == 0, err
    files = {f.name for f in (tmp_path / "hub").iterdir()}
    assert {"model.safetensors", "README.md", "default_confusion.png", "default_metrics.csv"} <= files
    from ferkit.fileio import UMASK

    assert (tmp_path / "hub").stat().st_mode & 0o777 == 0o777 & ~UMASK  # a folder others may read, as mkdir makes
    card = (tmp_path / "hub" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: ferkit\n") and "# ferkit `default` model" in card
    assert read_meta(tmp_path / "hub") == read_meta("default")
    face = cv2.imread(str(SAMPLE_PHOTO))[30:210, 140:310]  # the sample astronaut's head
    shipped = Recognizer.load("default", detector="haar").predict_faces([face])[0].emotions
    assert Recognizer.load(tmp_path / "hub", detector="haar").predict_faces([face])[0].emotions == shipped
    # Nothing is written over an existing folder's contents, and ONNX options do not apply.
    code, _, err = run_main(capsys, "export", "default", "--hub", tmp_path / "hub")
    assert code == 2 and err.count("\n") == 1 and "not an empty folder" in err
    code, _, err = run_main(capsys, "export", "default", "--hub", tmp_path / "h2", "--int8")
    assert code == 2 and "ONNX options" in err and not (tmp_path / "h2").exists()


def test_a_run_gets_a_card_written_from_its_description(tmp_path):
    from ferkit.export import export_hub

    model, path = saved("fernet", tmp_path)
    out = export_hub(path, tmp_path / "hub")
    card = (out / "README.md").read_text()
    assert "`fernet`" in card and "angry, disgust, fear, happy, sad, surprise, neutral" in card
    assert 'Recognizer.load(model="hf-hub:OWNER/NAME")' in card
    loaded, _ = load_checkpoint(out)
    x = torch.rand(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_hub_id_loads_offline_from_the_cache(tmp_path, monkeypatch):
    """``hf-hub:owner/name`` through huggingface_hub, offline, from a cache laid out as the Hub client writes it."""
    import huggingface_hub.constants

    from ferkit.models.checkpoint import resolve_checkpoint

    revision = "0" * 40
    snapshot = tmp_path / "hub" / "models--someone--fer-model" / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text(revision)
    _, path = saved("mini_xception", tmp_path)
    (snapshot / "model.safetensors").write_bytes(path.read_bytes())
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_checkpoint("hf-hub:someone/fer-model") == snapshot / "model.safetensors"
    model, meta = load_checkpoint("hf-hub:someone/fer-model")
    assert meta["architecture"] == "mini_xception"
    with pytest.raises(FerkitError, match="hf-hub:someone/other: cannot get model.safetensors"):
        load_checkpoint("hf-hub:someone/other")
    with pytest.raises(FerkitError, match="a Hub model is hf-hub:owner/name"):
        load_checkpoint("hf-hub:no-owner")
