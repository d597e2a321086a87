"""`ferkit report`: one self-contained HTML page and a Markdown table comparing real trained runs; Grad-CAM.

Two tiny real runs are trained once for the module on a real FER-2013 subset: a fernet on 40px crops and a
CBAM-5CNN on whole faces; the report scores them on a small real Kaggle-layout folder.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_main, write_kaggle_folder

from ferkit.config import load_config
from ferkit.evaluate import evaluate
from ferkit.evaluate.gradcam import feature_layer, grad_cam
from ferkit.models.predict import load_members
from ferkit.models import create_model
from ferkit.report import make_report
from ferkit.report.compare import model_view
from ferkit.report.runs import best_row, resolve_run
from ferkit.train.trainer import train

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(fer_zip, tmp_path_factory) -> dict[str, Path]:
    """Run "fernet" (random 40px crops, 2 epochs) and run "cbam" (cbam_5cnn on 48px faces, 1 epoch)."""
    root = tmp_path_factory.mktemp("report_runs")
    out = {}
    for name, model, preset, limit, epochs in (("fernet", "fernet", "crop_flip", 40, 2),
                                               ("cbam", "cbam_5cnn", "none", 8, 1)):
        kwargs = ["model.kwargs={width: 8}"] if model == "fernet" else []
        cfg = load_config(None, [
            f"data.path={fer_zip}", "data.val_split=test", f"data.limit_per_class={limit}", f"model.name={model}",
            *kwargs, "train.batch_size=32", "train.precision=fp32", "train.channels_last=false",
            f"train.epochs={epochs}", f"augment.preset={preset}", f"optim.lr={0.01 if model == 'fernet' else 0.001}"])
        train(cfg, root / name)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def data(fer_zip, tmp_path_factory) -> Path:
    """A real Kaggle-layout folder: 6 faces per class in train/ and test/."""
    return write_kaggle_folder(fer_zip, tmp_path_factory.mktemp("report_data") / "fer2013", per_class=6)


@pytest.fixture(scope="module")
def made(runs, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.html"
    report, html, md = make_report([runs["fernet"], runs["cbam"]], data, out, latency_repeats=3)
    return report, html, md


def metrics_rows(run: Path) -> list[dict[str, float]]:
    with (run / "metrics.csv").open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


# ---- the report ----------------------------------------------------------------------------------------------


def test_html_is_one_self_contained_file(made):
    report, html_path, md_path = made
    assert sorted(p.name for p in html_path.parent.iterdir()) == ["report.html", "report.md"]  # no temp files left
    html = html_path.read_text()
    assert "http://" not in html and "https://" not in html and "<link" not in html and "<script" not in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) > 20 and all(s.startswith("data:image/png;base64,") for s in sources)
    for s in set(sources):
        assert base64.b64decode(s.split(",", 1)[1])[:8] == PNG
    assert "<style>" in html and html.count("<html") == 1


def test_metrics_match_evaluate(made, runs, data):
    report, html_path, _ = made
    html = html_path.read_text()
    for name, result in zip(("fernet", "cbam"), report.runs):
        assert result.name == name and name in html
        direct = evaluate(runs[name], data)
        ev = result.evaluation
        assert ev.n == direct.n == 42
        assert ev.accuracy == direct.accuracy and ev.confusion == direct.confusion
        assert ev.macro_f1 == pytest.approx(direct.macro_f1) and ev.log_loss == pytest.approx(direct.log_loss)
        for figure in (f"{ev.accuracy:.1%}", f"{ev.macro_f1:.3f}", f"{ev.log_loss:.3f}"):
            assert figure in html, (name, figure)
        # train / validation figures: the run's metrics.csv at the epoch its best checkpoint was saved at
        rows = metrics_rows(runs[name])
        best = max(rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))
        assert result.best_epoch == int(best["epoch"])
        assert result.epochs == len(rows) == (2 if name == "fernet" else 1)
        assert result.val_accuracy == pytest.approx(best["val_accuracy"])
        assert result.train_loss == pytest.approx(best["train_loss"])
        assert result.train_time_s == pytest.approx(sum(r["epoch_time_s"] for r in rows))
        (model, _), = load_members([runs[name]])
        assert result.cost.parameters == sum(p.numel() for p in model.parameters())
        assert result.cost.latency_ms > 0 and result.cost.size_mb == pytest.approx(
            (runs[name] / "best.safetensors").stat().st_size / 1e6)
    d = json.loads(json.dumps(report.to_dict()))  # JSON-ready as it is
    assert [r["test"]["accuracy"] for r in d["runs"]] == [r.evaluation.accuracy for r in report.runs]
    fernet, cbam = report.runs
    # fernet width 8 on a 40px crop: 3x3 convolutions (8-8, 16-16, 32-32, 64-64 channels at 40, 20, 10, 5 px)
    # and a 64 -> 7 linear layer; a multiply-add is 2 FLOPs
    convs = [(1, 8, 40), (8, 8, 40), (8, 16, 20), (16, 16, 20), (16, 32, 10), (32, 32, 10), (32, 64, 5), (64, 64, 5)]
    assert fernet.cost.flops == sum(2 * 9 * a * b * s * s for a, b, s in convs) + 2 * 64 * 7
    assert cbam.cost.flops > fernet.cost.flops and cbam.cost.size_mb > fernet.cost.size_mb


def test_markdown_has_one_row_per_run(made):
    report, _, md_path = made
    md = md_path.read_text()
    table = [line for line in md.splitlines() if line.startswith("|")]
    header, rule, *rows = table
    assert len(rows) == 2 and "test acc" in header and "CPU ms" in header and set(rule) <= set("|-: ")
    for row, result in zip(rows, report.runs):
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert cells[0] == result.name and len(cells) == len(header.strip("|").split("|"))
        assert f"{result.evaluation.accuracy:.1%}" in row
    # The best value of a column is bold, in every row that has it (both, when they tie), and only there.
    names = [c.strip() for c in header.strip("|").split("|")]
    best_acc = f"{max(r.evaluation.accuracy for r in report.runs):.1%}"
    for row, result in zip(rows, report.runs):
        cells = dict(zip(names, (c.strip() for c in row.strip("|").split("|"))))
        acc = f"{result.evaluation.accuracy:.1%}"
        assert cells["test acc"] == (f"**{acc}**" if acc == best_acc else acc)
        assert cells["params"].startswith("**") == (result.name == "fernet")  # fernet w8 is far smaller than CBAM


def test_cbam_run_gets_attention_maps(made):
    report, html_path, _ = made
    fernet, cbam = report.views
    assert fernet.attention == [] and len(cbam.attention) == 5
    faces = len(cbam.showcase)
    assert faces == 7  # one face per emotion, the same for both models
    assert list(fernet.paths[fernet.showcase]) == list(cbam.paths[cbam.showcase])
    sides = [a["spatial"].shape for a in cbam.attention]
    assert sides == [(faces, 48, 48), (faces, 24, 24), (faces, 12, 12), (faces, 6, 6), (faces, 3, 3)]
    assert [a["channel"].shape[1] for a in cbam.attention] == [64, 128, 256, 512, 512]
    html = html_path.read_text()
    assert "CBAM attention" in html and html.count('alt="spatial attention"') == 5 * faces


def test_shipped_models_and_checkpoint_files_find_their_history(runs, tmp_path):
    from ferkit.models.checkpoint import read_meta

    for name in ("default", "fer2013"):
        shipped = resolve_run(name)
        assert shipped.name == name and shipped.metrics_file.name == f"{name}_metrics.csv"
        # the curves cover the whole training of the shipped weights (the default: 120 epochs, then 4 of its head)
        assert len(shipped.history) >= read_meta(name)["metrics"]["epoch"] and len(shipped.history) > 10
        saved = read_meta(name)["metrics"]  # the row the report shows for the weights is theirs
        row = best_row(shipped, read_meta(name))
        assert (row["stage"], row["val_accuracy"]) == (saved["stage"], pytest.approx(saved["val_accuracy"]))
    ckpt = tmp_path / "mine.safetensors"
    shutil.copy(runs["fernet"] / "best.safetensors", ckpt)
    assert resolve_run(ckpt).history == [] and resolve_run(ckpt).name == "mine"
    shutil.copy(runs["fernet"] / "metrics.csv", tmp_path / "mine_metrics.csv")
    assert resolve_run(ckpt).history == metrics_rows(runs["fernet"])
    assert resolve_run(runs["fernet"] / "best.safetensors").name == "fernet"  # a run's own checkpoint file


# ---- Grad-CAM ------------------------------------------------------------------------------------------------


def test_grad_cam_shape_and_contrast(made, runs):
    (model, meta), = load_members([runs["fernet"]])
    x = model_view(made[0].views[0].faces[:16], meta)  # (16, 1, 40, 40)
    cam = grad_cam(model, x)
    assert cam.layer == "stage4" and cam.maps.shape == (16, 40, 40) and cam.maps.dtype == np.float32
    assert cam.maps.min() >= 0 and cam.maps.max() <= 1
    with torch.no_grad():
        assert (cam.target == model(x).argmax(1).numpy()).all()
    lit = cam.maps.reshape(16, -1).max(1) > 0
    assert lit.sum() >= 12  # most faces have evidence for their prediction
    assert np.allclose(cam.maps[lit].reshape(lit.sum(), -1).max(1), 1)
    assert all(cam.maps[i].std() > 0.05 for i in np.flatnonzero(lit))  # maps, not constants
    assert np.abs(cam.maps[0] - cam.maps[1]).max() > 0.1  # each face its own map
    other = grad_cam(model, x, target=(cam.target + 1) % 7)
    assert np.abs(other.maps - cam.maps).max() > 0.1  # another class is found elsewhere
    assert not model.training


def test_grad_cam_of_cbam_is_its_last_attention(made, runs):
    (model, meta), = load_members([runs["cbam"]])
    x = model_view(made[0].views[1].faces[:4], meta)  # (4, 1, 48, 48)
    cam = grad_cam(model, x)
    # block5 ends in a 1x1 pool: its last map wider than 1x1 is the CBAM output at 3x3
    assert cam.layer == "block5.6" and cam.maps.shape == (4, 48, 48)
    assert cam.maps.min() >= 0 and cam.maps.max() <= 1


def test_grad_cam_finds_a_timm_backbones_last_stage():
    model = create_model("resnet18", num_classes=7, image_size=64).eval()
    x = torch.rand(3, 1, 48, 48)
    assert feature_layer(model, x) == "backbone.layer4"
    cam = grad_cam(model, x)
    assert cam.maps.shape == (3, 48, 48) and cam.maps.max() == pytest.approx(1)


# ---- bad input -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_args, message", [
    (lambda r, d, t: [t / "nowhere", "--data", d, "--out", t / "out" / "r.html"], "no such run or checkpoint"),
    (lambda r, d, t: [t / "notarun", "--data", d, "--out", t / "out" / "r.html"], "not a run directory"),
    (lambda r, d, t: [r, "--data", d, "--split", "private", "--out", t / "out" / "r.html"],
     "has no 'private' split; it has: train, test"),
    (lambda r, d, t: [r, "--data", d, "--tta", "mirror", "--out", t / "out" / "r.html"], "unknown TTA 'mirror'"),
    (lambda r, d, t: [r, "--data", d, "--out", t / "notes.txt" / "r.html"], "is a file, not a folder"),
    (lambda r, d, t: [r, "--data", d, "--out", t / "out"], "one HTML file; give a file name ending in .html"),
    (lambda r, d, t: [r, "--data", d, "--out", t / "dir.html"], "is a folder"),
])
def test_bad_input_one_line_exit_2(runs, data, tmp_path, capsys, make_args, message):
    (tmp_path / "notes.txt").write_text("not a folder\n")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "photo.jpg").write_bytes(b"")
    (tmp_path / "dir.html").mkdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code, stdout, stderr = run_main(capsys, "report", *make_args(runs["fernet"], data, tmp_path))
    assert code == 2 and stdout == ""
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr, stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written


def test_command_writes_both_files(runs, data, tmp_path, capsys):
    bare = tmp_path / "bare.safetensors"  # a checkpoint without a training history beside it
    shutil.copy(runs["fernet"] / "best.safetensors", bare)
    code, stdout, stderr = run_main(capsys, "report", runs["fernet"], bare, "--data", data, "--out",
                                    tmp_path / "r" / "cmp.html", "--tta", "flip")
    assert code == 0, stderr
    html, md = (tmp_path / "r" / "cmp.html").read_text(), (tmp_path / "r" / "cmp.md").read_text()
    assert "fernet: test accuracy" in stdout and "bare: test accuracy" in stdout and "report written to" in stdout
    assert "TTA flip" in md and html.count("No training history beside this checkpoint") == 1
    fernet, bare = ([c.strip(" *") for c in line.split("|")[1:-1]] for line in md.splitlines()
                    if line.startswith(("| fernet", "| bare")))
    # Same weights: same scores, and the train / val figures the checkpoint carries; no history, no training time.
    assert fernet[6:13] == bare[6:13]
    assert fernet[13] != "—" and bare[13] == "—" and fernet[14] == bare[14] + " / 2"


def test_a_dataset_without_split_folders_is_reported_on_its_only_split(runs, kaggle_folder, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(kaggle_folder / "test", flat)  # class folders only
    report, html, _ = make_report([runs["fernet"]], flat, tmp_path / "r.html", latency_repeats=1)
    assert report.split == report.runs[0].evaluation.split == "train" and html.is_file()
