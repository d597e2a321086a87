"""Robust training and its measurement: the photo-like augmentations, the robustness benchmark, the class prior,
answers restricted to some classes, distillation from teachers, and the shipped models by name."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import decode, real_faces, run_main
from ferkit.bench.robustness import PERTURBATIONS, _warp, bench_robustness
from ferkit.config import AugmentConfig, load_config
from ferkit.errors import FerkitError
from ferkit.labels import FER2013, FERPLUS
from ferkit.models.predict import TTA
from ferkit.train.augment import JPEG_QUALITY, BatchAugment, resolve

C = len(FER2013)


@pytest.fixture(scope="module")
def faces(fer_zip) -> torch.Tensor:
    """Real training faces, three per class less the blank ones: uint8 (B, 1, 48, 48)."""
    images = [decode(data) for files in real_faces(fer_zip, 3).values() for _, data in files]
    return torch.from_numpy(np.stack([f for f in images if f.std() > 10]))[:, None]


def augment(cfg: AugmentConfig, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return BatchAugment(cfg, 48, C)(x, torch.zeros(len(x), dtype=torch.long), torch.Generator().manual_seed(seed))[0]


def sharpness(x: torch.Tensor) -> torch.Tensor:
    """Mean squared Laplacian per image (B,): high-frequency energy."""
    k = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3)
    return torch.nn.functional.conv2d(x, k).pow(2).mean(dim=(1, 2, 3))


# ---- augmentations ----------------------------------------------------------------------------------------------


def test_framing_scale_is_a_centred_zoom(faces):
    from test_augment_losses import keras_affine

    x = faces[:4]
    out = augment(AugmentConfig(scale=[1.5, 1.5]), x)  # a window 1.5x the face: the face shrinks to 2/3
    for o, img in zip(out, x.float().numpy()[:, 0]):
        ref = keras_affine(img, 0, 0, 0, 0, 1.5, 1.5)
        assert np.abs(o[0].numpy() * 255 - ref).max() < 1e-2
    tight = augment(AugmentConfig(scale=[0.75, 0.75]), x)
    assert (sharpness(tight) < sharpness(x.float() / 255)).all()  # upscaled: smoother


def test_aspect_keeps_the_area_and_scales_draw_per_sample(faces, monkeypatch):
    from ferkit.train import augment as aug

    seen = []
    original = aug.BatchAugment._affine_transform

    def spy(self, x, rng, flip):
        out = original(self, x, rng, flip)
        seen.append(out)
        return out

    monkeypatch.setattr(aug.BatchAugment, "_affine_transform", spy)
    out = augment(AugmentConfig(aspect=0.3), faces)
    assert seen and not torch.equal(out, faces.float() / 255)
    varied = augment(AugmentConfig(scale=[0.75, 1.3]), faces[:1].expand(6, -1, -1, -1))
    assert len({tuple(v.flatten()[:200].tolist()) for v in varied}) == 6  # one scale per sample


def test_jpeg_gives_a_real_jpeg_of_each_image(faces):
    x = faces[:6]
    out = augment(AugmentConfig(jpeg=1.0), x)
    for o, img in zip(out, x.numpy()[:, 0]):
        got = (o[0] * 255).round().to(torch.uint8).numpy()
        candidates = [cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1], 0)
                      for q in range(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1)]
        assert any(np.array_equal(got, c) for c in candidates)
        assert not np.array_equal(got, img)
    assert torch.equal(augment(AugmentConfig(jpeg=0.0), x), x.float() / 255)


def test_blur_softens_every_chosen_image(faces):
    out = augment(AugmentConfig(blur=1.0), faces)
    assert (sharpness(out) < 0.8 * sharpness(faces.float() / 255)).all()
    half = augment(AugmentConfig(blur=0.5), faces)
    changed = [not torch.equal(o, f) for o, f in zip(half, faces.float() / 255)]
    assert 0 < sum(changed) < len(faces)


def test_lighting_and_noise(faces):
    ref = faces.float() / 255
    gamma = augment(AugmentConfig(gamma=0.5), faces)
    for o, r in zip(gamma, ref):  # one exponent per image: o = r ** g
        mid = (r > 0.2) & (r < 0.8)
        g = torch.log(o[mid]) / torch.log(r[mid])
        assert g.std() < 1e-3 and 1 / 1.5 - 1e-3 <= g.mean() <= 1.5 + 1e-3
    contrast = augment(AugmentConfig(contrast=0.5), faces)
    ratios = contrast.std(dim=(1, 2, 3)) / ref.std(dim=(1, 2, 3))
    assert ratios.min() >= 0.49 and ratios.max() <= 1.51 and ratios.std() > 0.05
    noisy = augment(AugmentConfig(noise=0.05), faces)
    residual = (noisy - ref).std(dim=(1, 2, 3))
    assert residual.max() <= 0.055 and residual.mean() > 0.005


def test_robust_preset_and_its_checks():
    cfg = resolve(AugmentConfig(preset="fer_robust"))
    assert cfg.scale == [0.75, 1.3] and cfg.jpeg > 0 and cfg.blur > 0 and cfg.crop == 40
    for bad, match in ((AugmentConfig(scale=[1.3, 0.75]), "augment.scale"), (AugmentConfig(scale=[0.0, 1.0]),
                       "augment.scale"), (AugmentConfig(jpeg=1.5), "augment.jpeg"),
                       (AugmentConfig(noise=-0.1), "augment.noise")):
        with pytest.raises(FerkitError, match=match):
            resolve(bad)


# ---- the robustness benchmark -----------------------------------------------------------------------------------


def test_perturbations_do_what_they_say(faces):
    x = faces[:, 0].numpy()
    assert np.array_equal(_warp(x), x)
    shifted = _warp(x, shift=0.25)  # the window moves 12 px right and down
    assert np.array_equal(shifted[:, :36, :36], x[:, 12:, 12:])
    half = _warp(x, scale=0.5)  # the central 24 px, twice as large
    ref = np.stack([cv2.resize(f[12:36, 12:36], (48, 48), interpolation=cv2.INTER_LINEAR) for f in x])
    assert np.abs(half[:, 4:44, 4:44].astype(int) - ref[:, 4:44, 4:44]).mean() < 2
    for name, (_, fn) in PERTURBATIONS.items():
        out = fn(x)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert np.array_equal(out, x) == (name == "clean"), name


def test_bench_robustness_scores_like_evaluate(kaggle_folder, tmp_path, capsys):
    from ferkit.evaluate import evaluate

    rows = bench_robustness(["fer2013"], kaggle_folder, "test", "none", ["looser crop"])
    clean = evaluate("fer2013", kaggle_folder, "test", tta="none")
    assert rows[0].accuracy["clean"] == pytest.approx(clean.accuracy) and rows[0].images == clean.n
    assert set(rows[0].accuracy) == {"clean", "looser crop"}

    plot = tmp_path / "robustness.png"
    code, out, _ = run_main(capsys, "bench", "robustness", "fer2013", "default", "--data", kaggle_folder,
                            "--split", "test", "--perturbation", "blur", "--plot", plot, "--json")
    assert code == 0
    d = json.loads(out)
    assert [m["model"] for m in d["models"]] == ["fer2013", "default"]
    assert all(set(m["accuracy"]) == {"clean", "blur"} for m in d["models"])
    assert cv2.imread(str(plot)).shape[1] > 600

    code, _, err = run_main(capsys, "bench", "robustness", "fer2013", "--data", kaggle_folder, "--perturbation",
                            "snow")
    assert code == 2 and "unknown perturbation 'snow'" in err


FER_PYTHON = Path.home() / "fer-env" / "bin" / "python"


def test_bench_robustness_refuses_a_python_without_fer_before_any_work(kaggle_folder, capsys):
    code, out, err = run_main(capsys, "bench", "robustness", "fer2013", "--data", kaggle_folder,
                              "--fer-python", sys.executable)
    assert code == 2 and err.count("\n") == 1 and "import fer" in err and out == ""


@pytest.mark.skipif(not FER_PYTHON.exists(), reason="the fer package's environment (~/fer-env) is not here")
def test_bench_robustness_scores_the_fer_package_on_the_same_faces(kaggle_folder):
    from ferkit.bench.fer import LABELS, fer_scores
    from ferkit.evaluate.data import load_eval_data

    rows = bench_robustness(["fer2013"], kaggle_folder, "test", "none", ["tighter crop"], limit=40,
                            fer_python=str(FER_PYTHON))
    assert [r.model for r in rows] == ["fer2013", "fer"] and rows[1].images == 40
    d = load_eval_data(kaggle_folder, "test", LABELS, 48)
    pick = np.sort(np.random.default_rng(0).permutation(len(d.y))[:40])
    faces, y = d.faces.images[pick], d.y[pick]
    for name in ("clean", "tighter crop"):
        scores = fer_scores(str(FER_PYTHON), PERTURBATIONS[name][1](faces))
        assert scores.shape == (40, 7) and np.allclose(scores.sum(1), 1, atol=0.05)  # fer's rounded probabilities
        assert rows[1].accuracy[name] == pytest.approx((scores.argmax(1) == y).mean())
    assert rows[1].accuracy["clean"] > 0.3  # fer reads these faces far above chance (1/7)


# ---- answers restricted to some classes -------------------------------------------------------------------------


def test_classes_restrict_and_renormalise(faces):
    from ferkit.infer import Recognizer

    crops = list(faces[:5, 0].numpy())
    full = Recognizer.load("fer2013")
    some = Recognizer.load("fer2013", classes=["Happiness", "sad", "neutral"])  # aliases, any order
    assert some.labels == ["happy", "sad", "neutral"]  # the model's order
    for a, b in zip(full.predict_faces(crops), some.predict_faces(crops)):
        kept = np.array([a.emotions[c] for c in some.labels])
        assert np.allclose([b.emotions[c] for c in some.labels], kept / kept.sum(), atol=1e-6)
    for classes, match in ((["happy", "joyful"], "joyful is not among them"), (["happy"], "at least two"),
                           (["contempt", "happy"], "contempt is not among them")):
        with pytest.raises(FerkitError, match=match):
            Recognizer.load("fer2013", classes=classes)


def test_classes_on_the_cli(capsys):
    code, out, _ = run_main(capsys, "predict", "sample", "--classes", "happy,sad", "--json")
    assert code == 0
    face = json.loads(out)["results"][0]["faces"][0]
    assert set(face["emotions"]) == {"happy", "sad"} and face["emotion"] == "happy"
    code, _, err = run_main(capsys, "predict", "sample", "--classes", "happy,glee")
    assert code == 2 and "glee is not among them" in err


# ---- shipped models ---------------------------------------------------------------------------------------------


def test_shipped_models_load_by_name():
    from ferkit.models.checkpoint import read_meta, resolve_checkpoint
    from ferkit.models.weights import WEIGHTS, get_weights

    assert list(WEIGHTS) == ["default", "fer2013"]
    default, fer2013 = read_meta("default"), read_meta("fer2013")
    assert sorted(default["labels"]) == sorted(FERPLUS) and default["name"] == "default"
    assert fer2013["labels"] == list(FER2013) and fer2013["name"] == "fer2013"
    for meta in (default, fer2013):
        assert meta["tta"] in TTA and meta["trained_on"]
    assert resolve_checkpoint("fer2013") == get_weights("fer2013").path
    assert get_weights("default").card.is_file() and get_weights("fer2013").card.is_file()
    with pytest.raises(FerkitError, match="unknown shipped model 'fer'; available: default, fer2013"):
        get_weights("fer")
    with pytest.raises(FerkitError, match=r"give a shipped model \(default, fer2013\)"):
        resolve_checkpoint("fer")


def test_eight_class_model_on_seven_class_data_says_so(kaggle_folder, capsys):
    code, out, _ = run_main(capsys, "evaluate", "default", "--data", kaggle_folder, "--split", "test", "--tta",
                            "none")
    assert code == 0
    assert "not in the data: contempt (support 0): the model's answers of it count as wrong" in " ".join(out.split())


# ---- the class prior --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ferplus_run(ferplus_zip, tmp_path_factory):
    """A tiny FER+ soft-label run (8 classes)."""
    from ferkit.train.trainer import train

    run = tmp_path_factory.mktemp("ferplus") / "run"
    cfg = load_config(None, [f"data.path={ferplus_zip}", "data.soft_labels=true", "data.limit_per_class=30",
                             "model.kwargs={width: 8}", "train.epochs=1", "train.batch_size=32"])
    train(cfg, run)
    return run


def test_prior_is_folded_into_the_last_bias(ferplus_run, ferplus_zip, tmp_path, faces):
    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.train.prior import adjust_checkpoint, adjust_probs, training_prior

    model, meta = load_checkpoint(ferplus_run)
    prior = training_prior(meta)
    assert prior.shape == (8,) and prior.sum() == pytest.approx(1, abs=1e-4)
    code = adjust_checkpoint(ferplus_run, tmp_path / "adjusted.safetensors", 0.7, ferplus_zip)
    adjusted, adj_meta = load_checkpoint(code)
    assert adj_meta["prior_adjustment"]["tau"] == 0.7
    x = faces.float()[:8] / 255
    x = x[..., 4:44, 4:44] if meta["input"]["size"] == 40 else x
    with torch.no_grad():
        before, after = model(x), adjusted(x)
    assert torch.allclose(after, before - 0.7 * torch.log(torch.as_tensor(prior, dtype=torch.float32)), atol=1e-4)
    probs = before.softmax(1).numpy()
    assert np.allclose(adjust_probs(probs, prior, 0.7), after.softmax(1).numpy(), atol=1e-5)
    assert np.allclose(adjust_probs(probs, prior, 0.0), probs)
    # An adjusted model moves to another tau from the model as trained, against the prior it records: no data.
    again = adjust_checkpoint(code, tmp_path / "again.safetensors", 0.2)
    readjusted, again_meta = load_checkpoint(again)
    with torch.no_grad():
        after = readjusted(x)
    assert torch.allclose(after, before - 0.2 * torch.log(torch.as_tensor(prior, dtype=torch.float32)), atol=1e-3)
    assert again_meta["prior_adjustment"]["tau"] == 0.2
    assert again_meta["prior_adjustment"]["source"] == str(ferplus_run)
    with pytest.raises(FerkitError, match="give --data, the dataset the model was trained on"):
        adjust_checkpoint(ferplus_run, tmp_path / "no.safetensors", 0.5)


def test_prior_cli_readjusts_an_adjusted_model_and_sweeps_it_from_the_model_as_trained(ferplus_run, ferplus_zip,
                                                                                       tmp_path, capsys):
    code, sweep, _ = run_main(capsys, "prior", ferplus_run, "--data", ferplus_zip, "--tta", "none", "--json")
    assert code == 0
    adjusted = tmp_path / "adjusted.safetensors"
    assert run_main(capsys, "prior", ferplus_run, "--data", ferplus_zip, "--tau", "0.6", "--out", adjusted)[0] == 0
    code, out, _ = run_main(capsys, "prior", adjusted, "--data", ferplus_zip, "--tta", "none", "--json")
    assert code == 0
    for a, b in zip(json.loads(sweep)["rows"], json.loads(out)["rows"]):  # the same sweep, whatever tau it has
        assert a["tau"] == b["tau"] and a["accuracy"] == pytest.approx(b["accuracy"], abs=2e-3)
    code, out, _ = run_main(capsys, "prior", adjusted, "--tau", "0.1", "--out", tmp_path / "less.safetensors")
    assert code == 0 and "from the model as trained" in out
    code, _, err = run_main(capsys, "prior", adjusted)
    assert code == 2 and err.startswith("error: give --data") and err.count("\n") == 1
    code, _, err = run_main(capsys, "prior", adjusted, "--tau", "0.1", "--out", tmp_path / "x.safetensors", "--json")
    assert code == 2 and "the sweep's --json do nothing" in err and not (tmp_path / "x.safetensors").exists()


def test_a_shipped_model_moved_to_another_tau_is_a_new_float32_model(tmp_path, capsys):
    from ferkit.models.checkpoint import load_checkpoint, read_meta, save_checkpoint
    from ferkit.train.prior import adjust_checkpoint

    shipped = read_meta("default")
    code, out, _ = run_main(capsys, "prior", "default", "--data", "nowhere.zip", "--tau", "0.2",
                            "--out", tmp_path / "rare.safetensors")
    assert code == 0 and "--data not read" in out
    model, meta = load_checkpoint(tmp_path / "rare.safetensors")
    assert "name" not in meta and "weights_dtype" not in meta and meta["tta"] == shipped["tta"]
    assert meta["prior_adjustment"]["source"] == shipped["prior_adjustment"]["source"]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    damaged = {**meta, "prior_adjustment": {**meta["prior_adjustment"], "prior": {"happy": 0.5}}}
    save_checkpoint(tmp_path / "damaged.safetensors", model, damaged)
    with pytest.raises(FerkitError, match="damaged prior_adjustment"):
        adjust_checkpoint(tmp_path / "damaged.safetensors", tmp_path / "no.safetensors", 0.0)
    assert not (tmp_path / "no.safetensors").exists()


def test_prior_sweep_cli(ferplus_run, ferplus_zip, tmp_path, capsys):
    code, out, _ = run_main(capsys, "prior", ferplus_run, "--data", ferplus_zip, "--tta", "none", "--json")
    assert code == 0
    rows = json.loads(out)["rows"]
    assert rows[0]["tau"] == 0 and rows[-1]["tau"] == 1
    # Balancing trades accuracy for the rare classes: the lowest recall does not fall from tau 0 to tau 1.
    assert rows[-1]["min_recall"] >= rows[0]["min_recall"]
    code, _, err = run_main(capsys, "prior", ferplus_run, "--data", ferplus_zip, "--tau", "0.5")
    assert code == 2 and "--tau and --out go together" in err


def test_a_logit_adjusted_model_can_be_given_its_prior_back(ferplus_run, ferplus_zip, tmp_path, capsys):
    from ferkit.train.prior import adjust_checkpoint
    from ferkit.train.trainer import train

    with pytest.raises(FerkitError, match=r"--tau -0.1: give a value between 0 and 2"):
        adjust_checkpoint(ferplus_run, tmp_path / "no.safetensors", -0.1, ferplus_zip)
    run = tmp_path / "adjusted-run"
    train(load_config(None, [f"data.path={ferplus_zip}", "data.soft_labels=true", "data.limit_per_class=10",
                             "model.kwargs={width: 8}", "train.epochs=1", "train.batch_size=32",
                             "train.logit_adjust=0.5"]), run)
    code, out, _ = run_main(capsys, "prior", run, "--data", ferplus_zip, "--tta", "none", "--json")
    assert code == 0
    assert [r["tau"] for r in json.loads(out)["rows"]][:7] == [-0.5, -0.4, -0.3, -0.2, -0.1, 0, 0.1]
    with pytest.raises(FerkitError, match=r"--tau -0.6: give a value between -0.5 and 2 \(0: as trained; 0.5 bal"):
        adjust_checkpoint(run, tmp_path / "no.safetensors", -0.6, ferplus_zip)
    assert adjust_checkpoint(run, tmp_path / "back.safetensors", -0.5, ferplus_zip).is_file()


@pytest.mark.parametrize(("train", "tau"), [({}, 0.0), ({"logit_adjust": 0.5}, 0.5), ({"sampler": "weighted"}, 1.0),
                                            ({"class_weights": "balanced"}, 1.0),
                                            ({"sampler": "weighted", "logit_adjust": 0.5}, 1.5)])
def test_a_model_trained_for_a_balanced_world_has_its_prior_to_give_back(train, tau):
    from ferkit.train.prior import trained_tau

    # Class-balanced sampling or weights train the answers of a balanced world, as the logit-adjusted loss does:
    # the sweep and the adjustment reach down to -tau to give the prior back.
    assert trained_tau({"config": {"train": {"sampler": "random", "class_weights": "none", **train}}}) == tau


# ---- distillation -----------------------------------------------------------------------------------------------


def test_distillation_mixes_teacher_probabilities_into_the_target(ferplus_run, ferplus_zip, tmp_path):
    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.train.trainer import Trainer

    base = [f"data.path={ferplus_zip}", "data.soft_labels=true", "data.limit_per_class=10",
            "model.kwargs={width: 8}", "train.epochs=1", "train.batch_size=16"]
    trainer = Trainer(load_config(None, [*base, f"train.teacher=[{ferplus_run}]", "train.distill=0.25"]),
                      tmp_path / "student")
    teacher, _ = load_checkpoint(ferplus_run)
    x = torch.rand(4, 1, 48, 48).contiguous(memory_format=torch.channels_last)
    y = torch.nn.functional.one_hot(torch.arange(4), 8).float()
    with torch.no_grad():
        expected = 0.75 * y + 0.25 * teacher(x).softmax(1)
    assert torch.allclose(trainer._distill(x, y), expected, atol=2e-2)  # bf16 autocast where the CPU has it
    summary = trainer.fit()
    assert summary["epochs"] == 1
    with pytest.raises(FerkitError, match="takes 48px views of 48px faces; this run trains on 40px views of 48px"):
        Trainer(load_config(None, [*base, "augment.crop=40", f"train.teacher=[{ferplus_run}]"]), tmp_path / "x")
    with pytest.raises(FerkitError, match="takes 48px views of 48px faces; this run trains on 48px views of 56px"):
        Trainer(load_config(None, [*base, "data.size=56", "augment.crop=48", f"train.teacher=[{ferplus_run}]"]),
                tmp_path / "y")


def test_teachers_are_averaged_each_with_its_own_class_order(ferplus_zip, tmp_path):
    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.train.trainer import Trainer, train

    base = [f"data.path={ferplus_zip}", "data.soft_labels=true", "data.limit_per_class=10", "model.kwargs={width: 8}",
            "train.epochs=1", "train.batch_size=16", "train.precision=fp32", "train.channels_last=false"]
    train(load_config(None, [*base, "data.classes=[contempt, neutral, surprise, sad, happy, fear, disgust, angry]"]),
          tmp_path / "reversed")
    train(load_config(None, [*base, "train.seed=1"]), tmp_path / "canonical")
    reversed_, meta = load_checkpoint(tmp_path / "reversed")
    canonical, _ = load_checkpoint(tmp_path / "canonical")
    x = torch.rand(4, 1, 48, 48)
    y = torch.nn.functional.one_hot(torch.arange(4), 8).float()
    with torch.no_grad():
        p_reversed, p_canonical = reversed_(x).softmax(1).flip(1), canonical(x).softmax(1)
    student = Trainer(load_config(None, [*base, f"train.teacher=[{tmp_path / 'reversed'}]", "train.distill=0.5"]),
                      tmp_path / "student")
    assert meta["labels"] == list(reversed(student.classes))
    assert torch.allclose(student._distill(x, y), 0.5 * y + 0.5 * p_reversed, atol=1e-6)
    # Two teachers: the mean of their probabilities, each read in the student's class order.
    student = Trainer(load_config(None, [*base, f"train.teacher=[{tmp_path / 'reversed'}, {tmp_path / 'canonical'}]",
                                         "train.distill=0.5"]), tmp_path / "student2")
    assert torch.allclose(student._distill(x, y), 0.5 * y + 0.25 * (p_reversed + p_canonical), atol=1e-6)


# ---- tone curves and a second labelling of the same faces ------------------------------------------------------


def test_equalize_is_cv2s_and_undoes_tone_curves(faces):
    eq = augment(AugmentConfig(equalize=1.0), faces)
    expected = np.stack([cv2.equalizeHist(f[0]) for f in faces.numpy()])
    assert np.array_equal((eq[:, 0] * 255).round().numpy(), expected)
    # A monotone tone curve (a darker exposure) leaves the equalized face nearly as it was.
    darker = ((faces.float() / 255) ** 1.8 * 255).round().to(torch.uint8)
    eq_dark = augment(AugmentConfig(equalize=1.0), darker)
    assert (eq_dark - eq).abs().mean() < 0.02 < ((darker - faces).float().abs().mean() / 255)
    half = augment(AugmentConfig(equalize=0.5), faces)
    changed = ((half - faces.float() / 255).abs().amax(dim=(1, 2, 3)) > 1e-6).float().mean()
    assert 0.2 < changed < 0.8


def test_match_faces_finds_each_face_however_it_was_stored(fer_zip):
    from ferkit.data.match import match_faces

    found = [decode(data) for files in real_faces(fer_zip, 40).values() for _, data in files]
    found = np.stack([f for f in found if f.std() > 10])
    other = np.stack([decode(data) for files in real_faces(fer_zip, 10, "test").values() for _, data in files])
    order = np.random.default_rng(0).permutation(len(found))
    stored = []  # the same faces in another order, with another tone curve and JPEG quality 40
    for img in found[order]:
        curved = (255 * (img / 255.0) ** 0.6).astype(np.uint8)
        stored.append(cv2.imdecode(cv2.imencode(".jpg", curved, [cv2.IMWRITE_JPEG_QUALITY, 40])[1], 0))
    index, similarity = match_faces(np.concatenate([found, other]), np.stack(stored))
    matched = index[: len(found)]
    assert (matched >= 0).all() and np.median(similarity[: len(found)]) > 0.98
    assert np.array_equal(found[order][matched], found)  # the same pixels (duplicates may swap)
    assert (index[len(found):] == -1).mean() > 0.95  # faces that are not there are not found


def test_extra_labels_blend_another_datasets_label_of_the_same_face(fer_zip, tmp_path):
    from ferkit.config import ConfigError, check_config
    from ferkit.data import FaceSet
    from ferkit.errors import DataError
    from ferkit.train.data import blend_labels

    train_faces = real_faces(fer_zip, 5)
    images, truth, names = [], [], []
    for cls, files in train_faces.items():  # the other labelling: the same faces, tone-curved JPEGs
        (tmp_path / "ref" / "train" / cls).mkdir(parents=True)
        for name, data in files:
            img = decode(data)
            if img.std() < 10:  # a blank frame has no face to find
                continue
            curved = (255 * (img / 255.0) ** 0.6).astype(np.uint8)
            cv2.imwrite(str(tmp_path / "ref" / "train" / cls / name), curved, [cv2.IMWRITE_JPEG_QUALITY, 60])
            images.append(img)
            truth.append(FERPLUS.index(cls))
            names.append(name)
    unseen = [decode(data) for files in real_faces(fer_zip, 1, "test").values() for _, data in files]
    order = np.random.default_rng(0).permutation(len(images) + len(unseen))
    all_images = np.stack(images + unseen)[order]
    votes = np.random.default_rng(1).dirichlet(np.ones(len(FERPLUS)), len(order)).astype(np.float32)
    train = FaceSet("train", FERPLUS, all_images, votes.argmax(1), np.array([str(i) for i in order]), votes)
    blended, matched = blend_labels(train, str(tmp_path / "ref"), 0.3, 48, None, False)
    assert matched == len(images)
    for row, i in enumerate(order):
        expected = votes[row].copy()
        if i < len(images):  # a face the other dataset has: its label there gets weight 0.3
            expected = 0.7 * expected + 0.3 * np.eye(len(FERPLUS))[truth[i]]
        assert np.allclose(blended.soft[row], expected, atol=1e-6)
    # Hard labels are blended the same way, as one-hot targets.
    hard, _ = blend_labels(dataclasses.replace(train, soft=None), str(tmp_path / "ref"), 0.3, 48, None, False)
    assert np.allclose(hard.soft.sum(1), 1) and np.allclose(hard.soft.max(1)[order >= len(images)], 1)
    (tmp_path / "other" / "train" / "happy").mkdir(parents=True)
    for k, img in enumerate(unseen):
        cv2.imwrite(str(tmp_path / "other" / "train" / "happy" / f"{k}.png"), img)
    (tmp_path / "other" / "train" / "sad").mkdir()
    cv2.imwrite(str(tmp_path / "other" / "train" / "sad" / "x.png"), unseen[0])
    with pytest.raises(DataError, match="none of the training faces"):
        blend_labels(train.subset(order < len(images)), str(tmp_path / "other"), 0.3, 48, None, False)
    for bad in (0, 1.5):
        with pytest.raises(ConfigError, match="data.extra_weight"):
            check_config(load_config(None, [f"data.extra_weight={bad}"]))
