"""`ferkit evaluate`: TTA, ensembles, label matching by name, files, bad inputs.

Two tiny real runs are trained once for the module: one on 40x40 crops of the 48px faces, one on whole faces.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import decode, real_faces, run_cli, run_main

from ferkit.config import load_config
from ferkit.errors import FerkitError
from ferkit.evaluate import evaluate, predict_proba
from ferkit.models.predict import load_members, tta_views
from ferkit.labels import FER2013
from ferkit.train.augment import eval_transform
from ferkit.train.trainer import train



@pytest.fixture(scope="module")
def runs(fer_zip, tmp_path_factory) -> dict[str, Path]:
    """Run "crop" (random 40px crops, centre crop in evaluation) and run "whole" (48px faces), 1 epoch each."""
    root = tmp_path_factory.mktemp("evaluate_runs")
    out = {}
    for name, preset, seed in (("crop", "crop_flip", 0), ("whole", "none", 1)):
        cfg = load_config(None, [
            f"data.path={fer_zip}", "data.val_split=test", "data.limit_per_class=40", "model.name=fernet",
            "model.kwargs={width: 8}", "train.batch_size=32", "train.precision=fp32", "train.channels_last=false",
            "train.epochs=1", f"augment.preset={preset}", f"train.seed={seed}", "optim.lr=0.01"])
        train(cfg, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def faces(fer_zip) -> np.ndarray:
    """64 real PublicTest faces, uint8 (64, 48, 48)."""
    files = real_faces(fer_zip, 10, "test")
    return np.stack([decode(data) for cls in sorted(files) for _, data in files[cls]])[:64]


# ---- prediction ----------------------------------------------------------------------------------------------


def test_no_tta_is_the_validation_preprocessing(runs, faces):
    from ferkit.config import AugmentConfig

    (model, meta), = load_members([runs["crop"]])
    assert meta["input"]["crop"] == 40
    x = eval_transform(AugmentConfig(**meta["config"]["augment"]), torch.from_numpy(faces).unsqueeze(1))
    with torch.no_grad():
        expected = model(x).softmax(1).numpy()
    assert np.allclose(predict_proba([(model, meta)], faces), expected, atol=1e-6)


@pytest.mark.parametrize("run", ["crop", "whole"])
def test_tta_changes_probabilities(runs, faces, run):
    members = load_members([runs[run]])
    p = {tta: predict_proba(members, faces, tta, batch_size=25) for tta in ("none", "flip", "tencrop", "multiscale")}
    for tta, probs in p.items():
        assert probs.shape == (64, 7) and np.allclose(probs.sum(1), 1, atol=1e-5), tta
    assert np.abs(p["flip"] - p["none"]).max() > 1e-4
    assert np.abs(p["tencrop"] - p["none"]).max() > 1e-4
    assert np.abs(p["tencrop"] - p["flip"]).max() > 1e-4
    assert np.abs(p["multiscale"] - p["tencrop"]).max() > 1e-4
    # A face that is its own mirror image: flipping adds nothing.
    symmetric = np.concatenate([faces[:, :, :24], faces[:, :, :24][:, :, ::-1]], axis=2)
    assert np.allclose(predict_proba(members, symmetric, "flip"), predict_proba(members, symmetric), atol=1e-6)


def test_tencrop_views():
    x = torch.rand(2, 1, 48, 48)
    crops = tta_views(x, 40, "tencrop")  # a crop model: ten-crop the face itself
    assert len(crops) == 10 and all(c.shape == (2, 1, 40, 40) for c in crops)
    assert torch.equal(crops[0], x[..., :40, :40]) and torch.equal(crops[4], x[..., 4:44, 4:44])
    whole = tta_views(x, 48, "tencrop")  # a whole-face model: padded by 4 px, so the centre view is the face
    assert len(whole) == 10 and torch.equal(whole[4], x) and torch.equal(whole[9], x.flip(-1))
    assert torch.equal(whole[0][..., 4:, 4:], x[..., :44, :44])


def test_multiscale_views_are_tencrops_of_three_framings():
    import torch.nn.functional as F

    x = torch.rand(2, 1, 48, 48)
    views = tta_views(x, 40, "multiscale")
    assert len(views) == 30 and all(v.shape == (2, 1, 40, 40) for v in views)
    looser = F.interpolate(x, size=(44, 44), mode="bilinear", antialias=True)
    tighter = F.interpolate(x, size=(56, 56), mode="bilinear", antialias=True)
    assert torch.allclose(views[4], looser[..., 2:42, 2:42])  # the 44 px face's centre crop
    assert all(torch.equal(a, b) for a, b in zip(views[10:20], tta_views(x, 40, "tencrop")))
    assert torch.allclose(views[24], tighter[..., 8:48, 8:48]) and torch.allclose(views[20], tighter[..., :40, :40])
    # A whole-face model: the looser view, smaller than its input, is padded with its border to 48 px first.
    whole = tta_views(x, 48, "multiscale")
    assert len(whole) == 30 and all(v.shape == (2, 1, 48, 48) for v in whole)
    assert torch.allclose(whole[4][..., 2:46, 2:46], looser) and torch.equal(whole[14], x)


def test_the_cli_names_every_tta():
    from ferkit.cli.common import TTA_METAVAR
    from ferkit.models.predict import TTA

    assert TTA_METAVAR == "{" + ",".join(TTA) + "}"


def test_faces_stored_at_another_size_are_resized(runs, faces):
    import cv2

    members = load_members([runs["whole"]])
    big = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_LINEAR) for f in faces])
    probs = predict_proba(members, big)
    assert probs.shape == (64, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)


class Reordered(torch.nn.Module):
    """A model whose outputs come in another label order."""

    def __init__(self, model: torch.nn.Module, order: list[int]):
        super().__init__()
        self.model, self.order = model, order

    def forward(self, x):
        return self.model(x)[:, self.order]


def test_ensemble_is_the_mean_of_its_members(runs, faces):
    crop, whole = load_members([runs["crop"], runs["whole"]])
    pa, pb = predict_proba([crop], faces), predict_proba([whole], faces)
    both = predict_proba([crop, whole], faces)
    assert np.allclose(both, (pa + pb) / 2, atol=1e-6)
    assert np.abs(both - pa).max() > 1e-4 and np.abs(both - pb).max() > 1e-4

    # Members are matched by label name, not by column position.
    order = [6, 5, 4, 3, 2, 1, 0]
    model, meta = crop
    shuffled = (Reordered(model, order), {**meta, "labels": [meta["labels"][i] for i in order]})
    assert np.allclose(predict_proba([crop, shuffled], faces), pa, atol=1e-6)
    other = (model, {**meta, "labels": [*meta["labels"][:6], "contempt"]})
    with pytest.raises(FerkitError, match="an ensemble needs models of the same label set"):
        predict_proba([crop, other], faces)


# ---- the command ---------------------------------------------------------------------------------------------


def test_progress_bar_counts_every_face_of_every_member(runs, kaggle_folder, capsys):
    evaluate(runs["crop"], kaggle_folder, ensemble=[runs["whole"]], batch_size=16, progress=True)
    err = capsys.readouterr().err
    assert "predicting (none)" in err and "84/84" in err and "face/s" in err  # 42 faces x 2 models, with a rate
    evaluate(runs["crop"], kaggle_folder, batch_size=16)
    assert capsys.readouterr().err == ""  # quiet unless asked


def test_json_contract_and_out_files(runs, kaggle_folder, tmp_path, capsys):
    out = tmp_path / "report"
    code, stdout, _ = run_main(capsys, "evaluate", runs["crop"], "--data", kaggle_folder, "--json", "--out", out,
                               "--ensemble", runs["whole"], "--tta", "flip", "--batch-size", "16")
    assert code == 0
    d = json.loads(stdout)  # exactly one JSON object
    labels = list(FER2013)
    assert d["labels"] == labels and d["n"] == 42 and d["split"] == "test" and d["tta"] == "flip"
    assert set(d["per_class"]) == set(labels)
    assert all(set(v) == {"precision", "recall", "f1", "support"} for v in d["per_class"].values())
    assert sum(v["support"] for v in d["per_class"].values()) == 42
    assert np.asarray(d["confusion_matrix"]).sum() == 42 and np.asarray(d["confusion_matrix"]).shape == (7, 7)
    for key in ("accuracy", "macro_f1", "top2_accuracy", "log_loss", "ece", "seconds", "images_per_s"):
        assert isinstance(d[key], float), key
    assert d["excluded_classes"] == [] and d["excluded_images"] == 0 and len(d["checkpoints"]) == 2
    assert sorted(p.name for p in out.iterdir()) == ["confusion_matrix.png", "metrics.json", "reliability.png"]
    assert json.loads((out / "metrics.json").read_text()) == d
    for png in ("confusion_matrix.png", "reliability.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    direct = evaluate(runs["crop"], kaggle_folder, tta="flip", ensemble=[runs["whole"]])
    assert direct.accuracy == d["accuracy"] and direct.confusion == d["confusion_matrix"]

    code, stdout, _ = run_main(capsys, "evaluate", runs["crop"], "--data", kaggle_folder)
    assert code == 0 and "macro avg" in stdout and "accuracy" in stdout and "images/s" in stdout


def write_ck_plus(fer_zip: Path, root: Path) -> dict[str, int]:
    """A CK+-style flat tree of real FER-2013 faces; contempt holds real neutral faces. Returns images per folder."""
    faces = real_faces(fer_zip, 5)
    folders = {"anger": "angry", "contempt": "neutral", "disgust": "disgust", "fear": "fear", "happy": "happy",
               "sadness": "sad", "surprise": "surprise"}
    counts = {}
    for folder, source in folders.items():
        files = faces[source][:3] if folder == "contempt" else faces[source]
        (root / folder).mkdir(parents=True)
        for name, data in files:
            (root / folder / name).write_bytes(data)
        counts[folder] = len(files)
    return counts


def test_ck_plus_folders_map_by_name(runs, fer_zip, tmp_path, capsys):
    counts = write_ck_plus(fer_zip, tmp_path / "ckplus")
    code, stdout, _ = run_main(capsys, "evaluate", runs["crop"], "--data", tmp_path / "ckplus", "--split", "train",
                               "--json")
    assert code == 0
    d = json.loads(stdout)
    assert d["excluded_classes"] == ["contempt"] and d["excluded_images"] == 3
    assert d["n"] == sum(counts.values()) - 3 and d["labels"] == list(FER2013)
    support = {c: v["support"] for c, v in d["per_class"].items()}
    assert support == {"angry": 5, "disgust": 5, "fear": 5, "happy": 5, "sad": 5, "surprise": 5, "neutral": 0}
    assert d["absent_classes"] == ["neutral"]

    code, stdout, _ = run_main(capsys, "evaluate", runs["crop"], "--data", tmp_path / "ckplus", "--split", "train")
    assert code == 0
    assert "left out 3 train images labelled contempt, which the model cannot predict" in " ".join(stdout.split())


def write_ferplus_subset(ferplus_zip: Path, root: Path, rows: int = 120) -> list[list[int]]:
    """The first ``rows`` images of FER+'s FER2013Valid with their label.csv rows; returns their votes."""
    with zipfile.ZipFile(ferplus_zip) as zf:
        lines = zf.read("FER2013Valid/label.csv").decode().splitlines()[:rows]
        folder = root / "FER2013Valid"
        folder.mkdir(parents=True)
        for row in csv.reader(io.StringIO("\n".join(lines))):
            (folder / row[0]).write_bytes(zf.read(f"FER2013Valid/{row[0]}"))
    (folder / "label.csv").write_text("\n".join(lines) + "\n")
    return [[int(v) for v in row[2:]] for row in csv.reader(io.StringIO("\n".join(lines)))]


def test_ferplus_scored_by_majority_vote(runs, ferplus_zip, tmp_path):
    from ferkit.labels import FERPLUS

    votes = np.array(write_ferplus_subset(ferplus_zip, tmp_path / "ferplus"))
    majority = votes.argmax(1)  # FER+ column order; 7 = contempt, 8 and 9 = unknown / not a face
    assert (majority == 7).sum() >= 1  # the subset holds contempt-majority faces
    ev = evaluate(runs["crop"], tmp_path / "ferplus", split="val")
    assert ev.excluded_classes == ["contempt"] and ev.excluded_images == int((majority == 7).sum())
    assert ev.n == int((majority < 7).sum())
    expected = {FERPLUS[i]: int((majority == i).sum()) for i in range(7)}
    assert {c: s.support for c, s in ev.per_class.items()} == expected


@pytest.mark.parametrize("make_args, message", [
    (lambda r, d, t: [t / "notes.txt", "--data", d], "not a readable safetensors checkpoint"),
    (lambda r, d, t: [t / "nowhere", "--data", d], "no such model"),
    (lambda r, d, t: [r, "--data", d, "--split", "private"], "has no 'private' split; it has: train, test"),
    (lambda r, d, t: [r, "--data", d, "--tta", "mirror"], "unknown TTA 'mirror'; choose one of: none, flip, tencrop"),
    (lambda r, d, t: [r, "--data", d, "--batch-size", "0"], "batch size must be at least 1"),
    (lambda r, d, t: [r, "--data", t / "pain"], "have no name in common"),
    (lambda r, d, t: [r, "--data", d, "--out", t / "notes.txt"], "is a file, not a folder"),
])
def test_bad_input_one_line_exit_2(runs, kaggle_folder, tmp_path, capsys, make_args, message):
    (tmp_path / "notes.txt").write_text("not a checkpoint\n")
    for cls in ("pain", "boredom"):  # real faces in classes no FER model predicts
        (tmp_path / "pain" / cls).mkdir(parents=True)
        for f in (kaggle_folder / "test" / "happy").iterdir():
            (tmp_path / "pain" / cls / f.name).write_bytes(f.read_bytes())
    code, stdout, stderr = run_main(capsys, "evaluate", *make_args(runs["crop"], kaggle_folder, tmp_path))
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert (tmp_path / "notes.txt").read_text() == "not a checkpoint\n"


def test_checkpoint_whose_weights_do_not_fit_one_line_exit_2(runs, kaggle_folder, tmp_path, capsys):
    from ferkit.models.checkpoint import save_checkpoint

    (model, meta), = load_members([runs["crop"]])
    bad = save_checkpoint(tmp_path / "bad.safetensors", model, {**meta, "kwargs": {**meta["kwargs"], "width": 16}})
    code, stdout, stderr = run_main(capsys, "evaluate", bad, "--data", kaggle_folder)
    assert code == 2 and stderr.count("\n") == 1 and "the weights do not fit the fernet" in stderr, stderr


def test_console_script_bad_tta_no_traceback(runs, kaggle_folder):
    r = run_cli("evaluate", runs["crop"], "--data", kaggle_folder, "--tta", "ten")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: unknown TTA 'ten'")


def test_tree_without_split_folders_is_scored_as_its_only_split(kaggle_folder, capsys):
    plain = kaggle_folder / "test"  # class folders, no split folders
    code, out, _ = run_main(capsys, "evaluate", "fer2013", "--data", plain, "--tta", "none", "--json")
    assert code == 0
    d = json.loads(out)
    assert d["split"] == "train" and d["n"] == 42  # the one split such a tree has, said by name
    code, _, err = run_main(capsys, "evaluate", "fer2013", "--data", kaggle_folder, "--split", "val")
    assert code == 2 and "has no 'val' split; it has: train, test" in err
