"""`ferkit train` on the real data: a short run that learns, resume after SIGKILL, DDP, stages, soft labels."""

from __future__ import annotations

import csv
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import run_main
from safetensors.torch import load_file

from ferkit.config import load_config, to_dict
from ferkit.errors import FerkitError
from ferkit.models.checkpoint import load_checkpoint, read_meta
from ferkit.train.callbacks import Callback
from ferkit.train.trainer import Trainer, resume, train

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def small(fer_zip, *extra: str, per_class: int = 40):
    """A recipe for a quick run: tiny fernet, a real subset of FER-2013, PublicTest as validation."""
    return load_config(None, [
        f"data.path={fer_zip}", "data.val_split=test", f"data.limit_per_class={per_class}",
        "model.name=fernet", "model.kwargs={width: 8}", "train.batch_size=32", "train.precision=fp32",
        "train.channels_last=false", *extra,
    ])


def rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_short_real_run_beats_chance(fer_zip, tmp_path):
    # The default recipe, shortened: a narrow fernet, 3 epochs on 700 real training faces per class.
    cfg = load_config(ROOT / "configs" / "fer2013.yaml", [
        f"data.path={fer_zip}", "train.epochs=3", "model.kwargs={width: 12}", "train.compile=false",
        "data.limit_per_class=700", "augment.mixup=0", "optim.lr=0.05"])
    summary = train(cfg, tmp_path / "run")
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "metrics.csv", "best.safetensors", "best.json",
                                               "last.safetensors", "last.json", "resume.safetensors", "summary.yaml"}
    assert len(rows(run)) == 3
    # Validation is PublicTest (limited to 700 per class: 3,000 images); answering "happy" always scores 23%.
    assert summary["best"]["val_accuracy"] > 0.33
    model, meta = load_checkpoint(run)
    assert meta["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]
    assert meta["metrics"]["val_accuracy"] == summary["best"]["val_accuracy"]
    # What a loader needs to prepare a face: 40x40 centre crops of 48px gray faces in [0, 1], FER-2013's statistics.
    assert meta["input"] == {"face_size": 48, "crop": 40, "size": 40, "channels": 1, "range": [0, 1]}
    assert meta["config"] == to_dict(cfg)  # the recipe, which `ferkit prior` reads the training data back with
    assert meta["normalization"] == {"mean": [0.5136], "std": [0.3067]}
    x = torch.rand(3, 1, meta["input"]["size"], meta["input"]["size"])
    assert model(x).shape == (3, 7)
    assert meta["parameters"] == sum(p.numel() for p in model.parameters()) == summary["parameters"]


def test_resume_after_sigkill_continues_exactly(fer_subset, tmp_path):
    overrides = ["data.val_split=test", "data.limit_per_class=60", "model.name=fernet", "model.kwargs={width: 8}",
                 "train.precision=fp32", "train.batch_size=32", "train.epochs=3", "augment.preset=s4",
                 "schedule.name=onecycle", "train.channels_last=false"]
    cfg = tmp_path / "r.yaml"
    cfg.write_text("optim: {name: sgd, lr: 0.05, nesterov: true}\n")
    straight = tmp_path / "straight"
    train(load_config(cfg, [f"data.path={fer_subset}", *overrides]), straight)

    killed = tmp_path / "killed"  # the command, killed once its first epoch is saved, then resumed
    proc = subprocess.Popen([BIN / "ferkit", "train", cfg, "--out", killed, f"--data={fer_subset}",
                             *(f"--{o}" for o in overrides)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "resume.safetensors").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(rows(killed)) < 3
    resume(killed)
    a, b = rows(straight), rows(killed)
    assert [x["epoch"] for x in b] == ["1", "2", "3"]
    for x, y in zip(a, b):
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-5)
        assert x["val_accuracy"] == y["val_accuracy"]
    wa, wb = load_file(straight / "last.safetensors"), load_file(killed / "last.safetensors")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


def test_ddp_two_cpu_processes(fer_subset, tmp_path):
    run = tmp_path / "ddp"
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "ferkit.cli",
         "train", ROOT / "configs" / "fer2013.yaml", "--out", run, f"--data={fer_subset}", "--data.limit_per_class=40",
         "--model.kwargs={width: 8}", "--train.epochs=1", "--train.compile=false", "--train.batch_size=32",
         "--train.precision=fp32"],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = rows(run)
    meta = read_meta(run / "best.safetensors")
    assert meta["dataset"]["train"] == 280 and r.stdout.count("epoch   1") == 1
    # Both ranks' images: 140 each, in 4 batches of 32; the rate is theirs over the training time.
    assert int(row["images"]) == 256
    assert 256 / float(row["images_per_s"]) <= float(row["epoch_time_s"])
    # Each rank scores half of the validation faces; their sums make the score one process gets on all of them.
    single = Trainer(load_config(run / "config.yaml"), tmp_path / "single")
    single.model.load_state_dict(load_file(run / "best.safetensors"))
    whole = single.validate()
    assert float(row["val_accuracy"]) == pytest.approx(whole["val_accuracy"], abs=1e-9)
    assert float(row["val_loss"]) == pytest.approx(whole["val_loss"], rel=1e-5)


@pytest.mark.parametrize("sampler", ["random", "weighted"])
def test_ddp_ranks_train_on_disjoint_shards(fer_subset, tmp_path, sampler):
    from dataclasses import replace

    trainer = Trainer(small(fer_subset, f"train.sampler={sampler}"), tmp_path / "run")
    n = len(trainer.x_train)
    shards = []
    for rank in (0, 1):
        trainer.ctx = replace(trainer.ctx, rank=rank, world_size=2)
        shards.append(trainer._epoch_order(torch.Generator().manual_seed(7)))  # every rank draws the same order
    assert len(shards[0]) == len(shards[1]) == n // 2
    positions = torch.cat(shards)
    if sampler == "random":  # a permutation cut in two: each image on exactly one rank
        assert not set(shards[0].tolist()) & set(shards[1].tolist()) and len(set(positions.tolist())) == n - n % 2
    else:  # one weighted draw with replacement cut in two: the halves of the same draw
        whole = torch.multinomial(trainer.sample_w, n, replacement=True, generator=torch.Generator().manual_seed(7))
        assert torch.equal(positions, whole[: 2 * (n // 2)])


def test_stages_freeze_then_fine_tune(fer_subset, tmp_path):
    cfg = small(fer_subset, "train.stages=[{epochs: 1, trainable: head}, {epochs: 1, trainable: all, lr: 0.0001}]")
    start, after_stage_1 = {}, {}

    from ferkit.train.callbacks import Callback

    class Snapshots(Callback):
        def on_stage_start(self, trainer, stage):
            if stage == 0:
                start.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

        def on_epoch_end(self, trainer, metrics):
            if metrics["epoch"] == 1:
                after_stage_1.update({k: v.clone() for k, v in trainer.model.state_dict().items()})

    train(cfg, tmp_path / "run", callbacks=[Snapshots()])
    final = dict(load_file(tmp_path / "run" / "last.safetensors"))
    body = [k for k in start if not k.startswith("head.") and not k.endswith("num_batches_tracked")]
    head = [k for k in start if k.startswith("head.")]
    assert body and head and [r["stage"] for r in rows(tmp_path / "run")] == ["1", "2"]
    # Each stage learns at its own rate: the recipe's optim.lr (1e-3) unless the stage gives one.
    assert [float(r["lr"]) for r in rows(tmp_path / "run")] == [1e-3, 1e-4]
    # Stage 1 trains the head alone: every body tensor (weights and batch-norm statistics) stays as it was.
    assert all(torch.equal(start[k], after_stage_1[k]) for k in body)
    assert any(not torch.equal(start[k], after_stage_1[k]) for k in head)
    assert any(not torch.equal(after_stage_1[k], final[k]) for k in body)  # stage 2 moves the body


def test_the_body_learns_at_backbone_lr_mult_times_the_heads_rate(fer_subset, tmp_path):
    tr = Trainer(small(fer_subset, "optim.lr=0.01", "optim.backbone_lr_mult=0.1"), tmp_path / "run")
    tr.start_stage(0)
    rates = {g["name"]: g["lr"] for g in tr.optimizer.param_groups}
    assert rates == pytest.approx({"head": 0.01, "head_no_decay": 0.01, "body": 0.001, "body_no_decay": 0.001})


def test_model_trainable_freezes_the_body_of_a_run_without_stages(fer_subset, tmp_path):
    tr = Trainer(small(fer_subset, "model.trainable=head"), tmp_path / "run")
    tr.start_stage(0)
    assert {g["name"] for g in tr.optimizer.param_groups} == {"head", "head_no_decay"}
    assert not any(p.requires_grad for n, p in tr.model.named_parameters() if not n.startswith("head."))


def test_a_stage_that_leaves_nothing_to_train_is_named(fer_subset, tmp_path, monkeypatch):
    # A model of one's own whose classifier is all convolution: its head (pooling) has no parameters.
    from torch import nn

    from ferkit.models import registry
    from ferkit.models.layers import FER_MEAN, FER_STD, BlockNet, Normalize

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @registry.register_model("all_conv", family="test", input_size=48, description="conv classifier, pooled")
    def all_conv(num_classes: int = 7, input_size: int = 48) -> nn.Module:
        return BlockNet(Normalize(FER_MEAN, FER_STD), {"conv": nn.Conv2d(1, num_classes, 3)},
                        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()))

    tr = Trainer(small(fer_subset, "model.name=all_conv", "model.kwargs={}",
                       "train.stages=[{epochs: 1}, {epochs: 1, trainable: head}]"), tmp_path / "run")
    tr.start_stage(0)
    with pytest.raises(FerkitError, match=r"^stage 2: trainable='head' leaves nothing to train$"):
        tr.start_stage(1)


@pytest.mark.parametrize("soft", [True, False])
def test_ferplus_soft_labels(ferplus_zip, tmp_path, monkeypatch, soft):
    from ferkit.train import trainer as trainer_module

    targets = []
    loss = trainer_module.soft_cross_entropy
    monkeypatch.setattr(trainer_module, "soft_cross_entropy",
                        lambda logits, target, *a: targets.append(target) or loss(logits, target, *a))
    cfg = small(ferplus_zip, f"data.soft_labels={str(soft).lower()}", "data.val_split=val", "data.drop=[contempt]",
                "train.epochs=1")
    summary = train(cfg, tmp_path / "run")
    assert summary["epochs"] == 1
    assert read_meta(tmp_path / "run")["labels"] == ["angry", "disgust", "fear", "happy", "sad", "surprise",
                                                       "neutral"]
    t = torch.cat(targets)
    assert torch.allclose(t.sum(1), torch.ones(len(t)))
    one_hot = (t.max(1).values == 1).float().mean()
    # FER+ votes: most faces split their 10 votes; majority labels are one-hot.
    assert one_hot < 0.6 if soft else one_hot == 1


def test_validation_accuracy_and_macro_f1_are_sklearns():
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    from ferkit.train.trainer import confusion_metrics

    # Four classes, the last never true and never answered: its F1 counts as 0, as sklearn's zero_division=0 has it.
    y_true = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
    y_pred = [0, 1, 0, 1, 2, 2, 2, 0, 1, 1]
    labels = [0, 1, 2, 3]
    got = confusion_metrics(confusion_matrix(y_true, y_pred, labels=labels))
    assert got["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert got["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    # One face, answered right; no face at all.
    assert confusion_metrics(confusion_matrix([1], [1], labels=labels)) == {"accuracy": 1.0, "macro_f1": 0.25}
    assert confusion_metrics(np.zeros((4, 4))) == {"accuracy": 0.0, "macro_f1": 0.0}


def test_the_validation_pass_scores_every_validation_face_as_sklearn_does(fer_subset, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from ferkit.train.augment import eval_transform

    tr = Trainer(small(fer_subset, "train.epochs=1", "train.max_batches=3"), tmp_path / "run")
    tr.fit()
    got = tr.validate()  # 420 PublicTest faces: two batches
    with torch.no_grad():
        probs = tr.model(eval_transform(tr.aug_cfg, tr.x_val)).softmax(1).numpy()
    y, labels = tr.y_val.numpy(), list(range(7))
    assert got["val_loss"] == pytest.approx(log_loss(y, probs, labels=labels), rel=1e-4)
    assert got["val_accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert got["val_macro_f1"] == pytest.approx(f1_score(y, probs.argmax(1), labels=labels, average="macro",
                                                         zero_division=0))


def test_a_batch_is_the_recipes_size_or_the_whole_training_set_when_that_is_smaller(fer_subset, tmp_path):
    for size, batch in ((1, 1), (1000, 280)):
        tr = Trainer(small(fer_subset, f"train.batch_size={size}", "train.epochs=1"), tmp_path / str(size))
        assert len(tr.x_train) == 280 and tr.batch_size == batch and type(tr.batch_size) is int
        tr.start_stage(0)
        assert tr.train_epoch(max_batches=2)["images"] == min(2 * batch, 280)


def test_made_validation_split_is_recorded(fer_subset, tmp_path):
    cfg = small(fer_subset, "data.val_split=val", "data.val_fraction=0.2", "train.epochs=1", "train.max_batches=2")
    train(cfg, tmp_path / "run")
    lines = (tmp_path / "run" / "splits.csv").read_text().splitlines()
    assert lines[0] == "split,path,label" and any(l.startswith("val,train/") for l in lines)


@pytest.mark.parametrize("args, message", [
    (["--train.epoch", "3"], "unknown key 'train.epoch'; valid keys of train: epochs"),
    (["--train.epochs", "many"], "train.epochs: expected an integer"),
    (["--model.name", "resnet9000"], "unknown model 'resnet9000'"),
    (["--optim.name", "adamax"], "unknown optimizer 'adamax'"),
    (["--data.drop", "[grumpy]"], "'grumpy' in the label mapping is not in this dataset"),
    (["--bogus"], "unrecognized argument '--bogus'"),
    (["--epochs", "0"], "epochs must be a whole number of at least 1, got 0"),
    (["--epochs", "-1"], "epochs must be a whole number of at least 1, got -1"),
    (["--train.batch_size", "0"], "train.batch_size is 0; it must be at least 1"),
    (["--optim.lr", ".nan"], "optim.lr is nan; it must be above 0"),
    (["--data.limit_per_class", "0"], "data.limit_per_class is 0; it must be at least 1"),
    (["--optim.lr", "[1"], "override optim.lr: '[1' is not a valid value"),
    (["--model.name", "!!python/object:os.system x"], "could not determine a constructor"),
    (["--train.compile", "maybe"], "train.compile is 'maybe'; use true, false or auto"),
    (["--data.classes", "[happy]"], "the class settings leave 1 class (happy); a classifier needs at least two"),
    (["--model.kwargs", "{width: 8, input_size: 44}"], "model fernet takes 44px faces but the data gives 40px "
                                                        "(data.size 48, augment.crop 40); change one of them"),
    (["--train.class_weights", "heavy"], "unknown train.class_weights 'heavy'; choose none or balanced"),
    (["--train.sampler", "uniform"], "unknown train.sampler 'uniform'; choose random or weighted"),
    (["--train.precision", "fp8"], "unknown precision 'fp8'; choose one of: auto, fp32, bf16, fp16"),
    (["--train.precision", "fp16", "--train.device", "cpu"],
     "precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU"),
    (["--train.teacher", "[default]"], "teacher default predicts (angry, disgust, fear, happy, sad, surprise, neutral, "
                                       "contempt) but this run predicts (angry, disgust, fear, happy, sad, surprise, "
                                       "neutral)"),
    (["--model.init", "default"], "model.init default answers angry, disgust, fear, happy, sad, surprise, neutral, "
                                  "contempt; this run's data has angry, disgust, fear, happy, sad, surprise, neutral"),
    (["--model.init", "fer2013", "--model.kwargs", "{width: 48}"],
     "model.init fer2013 does not fit this run's fernet (stage1.0.weight differs): give model.kwargs as it was "
     "trained with ({'width': 64, 'input_size': 40})"),
    (["--model.init", "fer2013", "--model.name", "mini_xception", "--model.kwargs", "{}"],
     "model.init fer2013 is a fernet; this run trains a mini_xception"),
    (["--model.init", "fer2013", "--model.name", "resnet18", "--model.kwargs", "{}", "--model.pretrained", "true"],
     "error: model.init and model.pretrained / pretrained_file both give starting weights; choose one\n"),
])
def test_bad_config_one_line_exit_2(decoded_fer_zip, tmp_path, capsys, args, message):
    code, _, err = run_main(capsys, "train", ROOT / "configs" / "fer2013.yaml", f"--data={decoded_fer_zip}", "--out",
                            tmp_path / "run", "--data.limit_per_class=5", *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_model_init_starts_from_a_trained_model(fer_subset, tmp_path):
    # Fine-tuning the shipped fer2013 model: the run starts from its weights, so before any training step it already
    # answers PublicTest faces as that model does (a fresh fernet answers at chance, about 1 in 7).
    cfg = small(fer_subset, "model.kwargs={width: 64}", "augment.crop=40", "model.init=fer2013")
    trainer = Trainer(cfg, tmp_path / "run")
    shipped, _ = load_checkpoint("fer2013")
    theirs = shipped.state_dict()
    assert all(torch.equal(v, theirs[k]) for k, v in trainer.model.state_dict().items())
    assert trainer.validate()["val_accuracy"] > 0.55


def test_a_data_path_with_a_hash_is_taken_whole(tmp_path, capsys):
    # (Missing, list and binary recipes and nothing to resume are cases of tests/test_bad_input.py.)
    code, _, err = run_main(capsys, "train", ROOT / "configs" / "fer2013.yaml", "--data", tmp_path / "a #1" / "x.zip")
    assert code == 2 and "a #1/x.zip" in err  # the path as given, not cut at "#"


def test_resume_of_a_finished_run_keeps_its_best(fer_subset, tmp_path):
    first = train(small(fer_subset, "train.epochs=2", "train.max_batches=3"), tmp_path / "run")
    again = resume(tmp_path / "run")  # nothing left to train; the callbacks' state comes back without a printer
    assert again["epochs"] == 2 and again["best_epoch"] == first["best_epoch"]
    assert again["best"] == first["best"]


def test_metrics_csv_takes_a_column_added_after_the_first_epochs(tmp_path):
    from ferkit.train.callbacks import CSVLogger

    logger = CSVLogger(tmp_path / "metrics.csv")
    logger.load_state_dict({"rows": [{"epoch": 1, "train_loss": 2.0}]})  # logged by an older ferkit
    logger.on_epoch_end(None, {"epoch": 2, "train_loss": 1.5, "images": 640})
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert rows == [{"epoch": "1", "train_loss": "2.0", "images": ""},
                    {"epoch": "2", "train_loss": "1.5", "images": "640"}]


# ---- training features, each by its observable effect ----------------------------------------------------------

# Up to 600 training faces per class: FER-2013 has only 436 disgust faces, so the classes are unequal.
UNEQUAL = 600


def labels_seen(trainer) -> torch.Tensor:
    """Wrap the trainer's augmentation to record the (hard) labels of every batch it trains on."""
    seen = []
    augment = trainer.augment
    trainer.augment = lambda x, y, gen: (seen.append(y.clone()), augment(x, y, gen))[1]
    return seen


def test_balanced_class_weights_reach_the_loss(fer_subset, tmp_path, monkeypatch):
    from ferkit.train import trainer as trainer_module

    weights = []
    loss = trainer_module.soft_cross_entropy
    monkeypatch.setattr(trainer_module, "soft_cross_entropy",
                        lambda logits, target, w=None, *a: weights.append(w) or loss(logits, target, w, *a))
    for setting in ("none", "balanced"):
        weights.clear()
        tr = trainer_module.Trainer(small(fer_subset, f"train.class_weights={setting}", "train.epochs=1",
                                          "train.max_batches=2", per_class=UNEQUAL), tmp_path / setting)
        tr.fit()
        assert len(weights) == 2
        if setting == "none":
            assert all(w is None for w in weights)
            continue
        counts = torch.bincount(torch.as_tensor(tr.data.train.labels), minlength=7).double()
        assert counts[1] < 440 and counts[0] == UNEQUAL  # disgust: FER-2013's 436 less its flagged files
        expected = counts.sum() / (7 * counts)  # scikit-learn's "balanced": n / (k * count)
        assert all(torch.allclose(w.double(), expected) for w in weights)
        assert expected[1] > 1.3 and expected[0] < 0.97  # disgust, the rare class, counts more


@pytest.mark.parametrize("tau", [0.0, 1.0])
def test_logit_adjusted_loss_sees_logits_plus_tau_log_prior(fer_subset, tmp_path, monkeypatch, tau):
    from ferkit.train import trainer as trainer_module

    seen = []
    loss = trainer_module.soft_cross_entropy
    monkeypatch.setattr(trainer_module, "soft_cross_entropy",
                        lambda logits, *a: seen.append(logits.detach()) or loss(logits, *a))
    tr = trainer_module.Trainer(small(fer_subset, f"train.logit_adjust={tau}", "train.epochs=1", "train.max_batches=2",
                                      per_class=UNEQUAL), tmp_path / "run")
    outputs = []
    tr.model.register_forward_hook(lambda module, args, out: outputs.append(out.detach().float()))
    tr.fit()
    assert len(seen) == 2
    counts = torch.bincount(torch.as_tensor(tr.data.train.labels), minlength=7).double()
    offset = tau * torch.log(counts / counts.sum()).float()  # disgust, the rare class, is pushed down most
    for adjusted, raw in zip(seen, outputs[:2]):
        torch.testing.assert_close(adjusted, raw + offset)


def test_train_epoch_reports_the_mean_loss_and_accuracy_of_its_batches(fer_subset, tmp_path, monkeypatch):
    from ferkit.train import trainer as trainer_module

    batches = []
    loss = trainer_module.soft_cross_entropy

    def recording(logits, target, *a):
        value = loss(logits, target, *a)
        batches.append((value.item(), len(target), (logits.argmax(1) == target.argmax(1)).sum().item()))
        return value

    monkeypatch.setattr(trainer_module, "soft_cross_entropy", recording)
    tr = trainer_module.Trainer(small(fer_subset, "train.epochs=1"), tmp_path / "run")
    tr.start_stage(0)
    stats = tr.train_epoch(max_batches=3)
    n = sum(b[1] for b in batches)
    assert len(batches) == 3 and stats["images"] == n == 96
    assert stats["train_loss"] == pytest.approx(sum(b[0] * b[1] for b in batches) / n, rel=1e-5)
    assert stats["train_accuracy"] == pytest.approx(sum(b[2] for b in batches) / n)
    assert 0 < stats["train_accuracy"] < 1


def test_label_smoothing_reaches_the_loss(fer_subset, tmp_path, monkeypatch):
    from ferkit.train import trainer as trainer_module

    smoothing = []
    loss = trainer_module.soft_cross_entropy
    monkeypatch.setattr(trainer_module, "soft_cross_entropy",
                        lambda logits, target, w, eps: smoothing.append(eps) or loss(logits, target, w, eps))
    trainer_module.Trainer(small(fer_subset, "train.label_smoothing=0.1", "train.epochs=1", "train.max_batches=2"),
                           tmp_path / "run").fit()
    assert smoothing == [0.1, 0.1]


def test_tensorboard_gets_every_epochs_numbers(fer_subset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    Trainer(small(fer_subset, "train.tensorboard=true", "train.epochs=2", "train.max_batches=2"), run).fit()
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    logged = rows(run)
    numbers = [k for k in logged[0] if k != "epoch"]
    assert sorted(events.Tags()["scalars"]) == sorted(numbers)
    for key in numbers:
        assert [(e.step, e.value) for e in events.Scalars(key)] == [
            (int(r["epoch"]), pytest.approx(float(r[key]), rel=1e-6)) for r in logged]


def test_tensorboard_without_its_package_says_how_to_install_it(fer_subset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as where tensorboard is not installed
    with pytest.raises(FerkitError, match=r"^train.tensorboard needs the tensorboard package: "
                                          r"pip install 'ferkit\[tensorboard\]'$"):
        Trainer(small(fer_subset, "train.tensorboard=true", "train.epochs=1"), tmp_path / "run")


@pytest.mark.parametrize("native", [True, False])
def test_precision_auto_is_bf16_where_the_hardware_has_it_else_fp16_on_gpus_and_fp32_on_cpus(native, monkeypatch,
                                                                                           caplog):
    from ferkit.train import trainer as trainer_module

    # The CPU kind is the machine's; both kinds are what an AVX-512 BF16 / AMX and an AVX2-only CPU report.
    monkeypatch.setattr(trainer_module, "native_bf16", lambda device: native)
    resolve = trainer_module.resolve_precision
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve("auto", cpu) is (torch.bfloat16 if native else None)
    assert resolve("auto", gpu) is (torch.bfloat16 if native else torch.float16)
    assert resolve("fp32", cpu) is None and resolve("fp16", gpu) is torch.float16
    with pytest.raises(FerkitError, match=r"^precision fp16 needs a CUDA GPU; use bf16 or fp32 on the CPU$"):
        resolve("fp16", cpu)
    with caplog.at_level(logging.WARNING, logger="ferkit.train.trainer"):
        assert resolve("bf16", cpu) is torch.bfloat16
    assert caplog.messages == ([] if native else [
        "this cpu has no native bf16: it is emulated and far slower than fp32 (precision auto picks fp32 here)"])


def test_compile_auto_compiles_on_cuda_gpus_only():
    from ferkit.train.trainer import resolve_compile

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert [resolve_compile(s, cpu) for s in ("auto", True, False)] == [False, True, False]
    assert [resolve_compile(s, gpu) for s in ("auto", True, False)] == [True, True, False]


def test_a_diverging_loss_stops_training_with_where_it_happened(fer_subset, tmp_path):
    tr = Trainer(small(fer_subset, "train.epochs=1"), tmp_path / "run")
    calls = []
    # The second batch's logits are NaN, as after an overflow.
    tr.model.register_forward_hook(lambda m, a, out: calls.append(1) or (out * torch.nan if len(calls) == 2 else out))
    with pytest.raises(FerkitError, match=r"^the loss became nan at epoch 1, batch 2; lower optim.lr or use "
                                          r"train.precision=fp32$"):
        tr.fit()


def test_weighted_sampler_draws_classes_equally(fer_subset, tmp_path):
    share, counts = {}, None
    for sampler in ("random", "weighted"):
        tr = Trainer(small(fer_subset, f"train.sampler={sampler}", "train.epochs=1", per_class=UNEQUAL),
                     tmp_path / sampler)
        seen = labels_seen(tr)
        tr.fit()
        counts = torch.bincount(torch.as_tensor(tr.data.train.labels), minlength=7).double()
        drawn = torch.cat(seen).argmax(1) if torch.cat(seen).ndim == 2 else torch.cat(seen)
        share[sampler] = torch.bincount(drawn, minlength=7).double() / len(drawn)
    # A random permutation shows each face once: disgust keeps its share of about 436 / 4,036. Balanced draws
    # give each class about a seventh.
    assert counts[1] < 440 and abs(share["random"][1] - counts[1] / counts.sum()) < 0.005
    assert (share["weighted"] - 1 / 7).abs().max() < 0.025


@pytest.mark.parametrize("restore", [True, False])
def test_early_stopping_stops_at_patience_and_restores_the_best(fer_subset, tmp_path, restore):
    # Adam at a high rate on 280 faces: the validation loss soon stops improving.
    tr = Trainer(small(fer_subset, "train.epochs=40", "train.early_stopping=2", "train.monitor=val_loss",
                       "optim.lr=0.01", f"train.restore_best={str(restore).lower()}"), tmp_path / "run")
    summary = tr.fit()
    losses = [float(r["val_loss"]) for r in rows(tmp_path / "run")]
    best_epoch = 1 + min(range(len(losses)), key=losses.__getitem__)
    assert len(losses) < 40, "never stopped early"
    assert len(losses) == best_epoch + 2  # two epochs without improvement, then stop
    assert summary["best_epoch"] == best_epoch and summary["epochs"] == len(losses)
    expected = load_file(tmp_path / "run" / ("best.safetensors" if restore else "last.safetensors"))
    other = load_file(tmp_path / "run" / ("last.safetensors" if restore else "best.safetensors"))
    state = tr.model.state_dict()
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    assert any(not torch.equal(state[k], other[k]) for k in other)


def test_resume_at_a_stage_boundary_starts_the_next_stage_afresh(fer_subset, tmp_path):
    """A run killed in the first epoch of its second stage resumes from the state saved at the end of the first:
    the second stage's early stopping starts afresh, as in the run that was never stopped."""
    from ferkit.train.callbacks import Callback

    class KilledInStageTwo(Callback):
        def on_stage_start(self, trainer, stage):
            if stage == 1:
                raise KeyboardInterrupt

    # Nothing improves by 1.0, so each stage stops two epochs after its first: 3 epochs of stage 1, 3 of stage 2.
    recipe = ("train.stages=[{epochs: 3}, {epochs: 5}]", "train.early_stopping=2", "train.monitor=val_accuracy",
              "schedule.min_delta=1.0")
    Trainer(small(fer_subset, *recipe), tmp_path / "straight").fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(small(fer_subset, *recipe), tmp_path / "killed", callbacks=[KilledInStageTwo()]).fit()
    assert len(rows(tmp_path / "killed")) == 3
    resume(tmp_path / "killed")
    stages = ["1", "1", "1", "2", "2", "2"]
    assert [r["stage"] for r in rows(tmp_path / "straight")] == stages
    assert [r["stage"] for r in rows(tmp_path / "killed")] == stages


class KillAt(Callback):
    """Interrupt a run in the first epoch of a stage, or at the end of an epoch (before its state is saved)."""

    def __init__(self, stage: int | None = None, epoch: int | None = None):
        self.stage, self.epoch = stage, epoch

    def on_stage_start(self, trainer, stage):
        if stage == self.stage:
            raise KeyboardInterrupt

    def on_epoch_end(self, trainer, metrics):
        if metrics["epoch"] == self.epoch:
            raise KeyboardInterrupt


def test_a_run_in_a_new_nested_folder_keeps_its_recipe_summary_and_epoch_times(fer_subset, tmp_path, capsys):
    cfg = small(fer_subset, "train.epochs=3", "train.max_batches=3")
    run = tmp_path / "new" / "nested" / "run"
    t0 = time.perf_counter()
    summary = Trainer(cfg, run).fit()
    wall = time.perf_counter() - t0
    assert "epoch 1/3" not in capsys.readouterr().err  # progress bars only when asked
    # config.yaml is the recipe in its own order: sections and keys as a recipe file lists them.
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert list(saved) == list(to_dict(cfg)) and list(saved["train"]) == list(to_dict(cfg)["train"])
    times = [float(r["epoch_time_s"]) for r in rows(run)]
    assert len(times) == 3 and all(0 < t < wall for t in times)
    assert summary["train_time_s"] == round(sum(times), 1)
    # summary.yaml is the summary fit returns, in the same order.
    written = yaml.safe_load((run / "summary.yaml").read_text())
    assert written == summary and list(written) == list(summary)
    best = max(rows(run), key=lambda r: float(r["val_accuracy"]))  # the first best: a tie does not improve
    model, meta = load_checkpoint(run)
    assert summary == {
        "run_dir": str(run), "model": "fernet", "parameters": sum(p.numel() for p in model.parameters()), "epochs": 3,
        "best_epoch": int(best["epoch"]), "monitor": "val_accuracy",
        "best": {k: pytest.approx(float(v)) for k, v in best.items() if k.startswith(("val_", "train_"))},
        "train_time_s": summary["train_time_s"], "data": meta["dataset"],
        "best_checkpoint": str(run / "best.safetensors"),
    }
    # What the run trained and was selected on: 40 faces of each class on both sides, the training copies of
    # PublicTest faces left out.
    excluded = summary["data"]["excluded"]
    assert summary["data"] == {"location": str(fer_subset), "format": "fer2013-folders", "train": 280, "val": 280,
                               "val_split": "test", "excluded": excluded, "leaks_excluded": excluded, "leaks_kept": 0,
                               "extra_labels_matched": 0}
    assert excluded > 0
    # Everything the run wrote (a TensorBoard log only when the recipe asks for one).
    assert sorted(p.name for p in run.iterdir()) == [
        "best.json", "best.safetensors", "config.yaml", "last.json", "last.safetensors", "metrics.csv",
        "resume.safetensors", "summary.yaml"]


def test_a_trainer_shows_the_decoding_bar_only_when_asked(fer_subset, tmp_path, monkeypatch, capsys):
    for progress in (False, True):
        monkeypatch.setenv("FERKIT_CACHE", str(tmp_path / f"cache-{progress}"))  # nothing decoded yet
        Trainer(small(fer_subset, "train.epochs=1"), tmp_path / f"run-{progress}", progress=progress)
        assert ("decoding fer2013.zip" in capsys.readouterr().err) is progress


def test_train_and_resume_show_bars_when_asked_call_the_callbacks_and_refuse_the_wrong_folder(fer_subset, tmp_path,
                                                                                            capsys):
    cfg = small(fer_subset, "train.epochs=2", "train.max_batches=2")

    class Epochs(Callback):
        def __init__(self):
            self.seen = []

        def on_epoch_end(self, trainer, metrics):
            self.seen.append(metrics["epoch"])

        def on_train_end(self, trainer):
            self.seen.append(f"end after {trainer.epoch}")

    for bars_in_train in (True, False):
        run = tmp_path / f"run-{bars_in_train}"
        with pytest.raises(KeyboardInterrupt):
            train(cfg, run, **({"progress": True} if bars_in_train else {}), callbacks=[KillAt(epoch=2)])
        assert ("epoch 1/2" in capsys.readouterr().err) is bars_in_train
        later = Epochs()
        resume(run, **({} if bars_in_train else {"progress": True}), callbacks=[later])
        assert ("epoch 2/2" in capsys.readouterr().err) is not bars_in_train
        assert later.seen == [2, "end after 2"]
    with pytest.raises(FerkitError, match="already holds a run; continue it with --resume"):
        train(cfg, run)
    with pytest.raises(FerkitError, match="nothing to resume .no resume.safetensors.; start it with ferkit train"):
        resume(tmp_path)


@pytest.mark.parametrize("stages, kill, saved", [
    ("[{epochs: 2}, {epochs: 2}]", KillAt(stage=1), 2),  # at the boundary: the next stage gets all its epochs
    ("[{epochs: 1}, {epochs: 3}]", KillAt(epoch=3), 2),  # one epoch into a longer second stage: two more to go
])
def test_resume_trains_every_epoch_of_every_stage(fer_subset, tmp_path, stages, kill, saved):
    Trainer(small(fer_subset, f"train.stages={stages}", "train.max_batches=2"), tmp_path / "straight").fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(small(fer_subset, f"train.stages={stages}", "train.max_batches=2"), tmp_path / "killed",
                callbacks=[kill]).fit()
    assert len(rows(tmp_path / "killed")) >= saved
    resume(tmp_path / "killed")
    assert [(r["epoch"], r["stage"]) for r in rows(tmp_path / "killed")] == [
        (r["epoch"], r["stage"]) for r in rows(tmp_path / "straight")]


@pytest.mark.parametrize("schedule, epochs, expected", [
    # StepLR: halve every 2 epochs.
    ("{name: step, step_size: 2, factor: 0.5}", 5, [0.1, 0.1, 0.05, 0.05, 0.025]),
    # ReduceLROnPlateau: nothing improves by 1.0, so the rate halves after every 1 + patience epochs.
    ("{name: plateau, patience: 1, factor: 0.5, min_delta: 1.0}", 6, [0.1, 0.1, 0.1, 0.05, 0.05, 0.025]),
    # Per batch (2 batches per epoch): one epoch of linear warm-up, then half a cosine from 0.1 down to 0.001.
    ("{name: cosine, warmup_epochs: 1, min_lr: 0.001}", 4,
     [0.05, 0.1, 0.001 + 0.099 * 0.75, 0.001 + 0.099 * 0.25]),
])
def test_schedules_set_the_learning_rate_of_each_epoch(fer_subset, tmp_path, schedule, epochs, expected):
    train(small(fer_subset, "optim={name: sgd, lr: 0.1}", f"schedule={schedule}", f"train.epochs={epochs}",
                "train.max_batches=2"), tmp_path / "run")
    lrs = [float(r["lr"]) for r in rows(tmp_path / "run")]
    assert lrs == pytest.approx(expected, rel=1e-6)


def test_a_registered_schedule_is_used_by_name(fer_subset, tmp_path):
    from ferkit.train.optim import SCHEDULES, register_schedule

    @register_schedule("drop_after_one")
    def drop(optimizer, cfg, epochs, steps_per_epoch, mode):
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [1], gamma=0.1)

    try:
        train(small(fer_subset, "optim={name: sgd, lr: 0.1}", "schedule.name=drop_after_one", "train.epochs=3",
                    "train.max_batches=1"), tmp_path / "run")
    finally:
        del SCHEDULES["drop_after_one"]
    assert [float(r["lr"]) for r in rows(tmp_path / "run")] == pytest.approx([0.1, 0.01, 0.01])


def test_bf16_training_runs_in_bf16_and_learns_like_fp32(fer_subset, tmp_path):
    losses, dtypes = {}, {}
    for precision in ("fp32", "bf16"):
        tr = Trainer(small(fer_subset, f"train.precision={precision}", "train.epochs=2", "train.max_batches=4"),
                     tmp_path / precision)
        seen = dtypes[precision] = set()
        tr.model.head.register_forward_hook(lambda module, args, out, seen=seen: seen.add(out.dtype))
        losses[precision] = tr.fit()["best"]["train_loss"]
    # The classifier computes in the precision asked for, in training and validation.
    assert dtypes == {"fp32": {torch.float32}, "bf16": {torch.bfloat16}}
    # The same batches and initial weights: autocast changes the arithmetic, not the learning.
    assert losses["bf16"] != losses["fp32"]
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_train_epoch_can_stop_after_some_batches(fer_subset, tmp_path):
    tr = Trainer(small(fer_subset, "train.epochs=1"), tmp_path)
    tr.start_stage(0)
    assert tr.train_epoch(max_batches=2)["images"] == 2 * 32
    assert tr.train_epoch()["images"] == tr.steps_per_epoch() * 32 > 2 * 32


def test_train_epoch_shows_its_bar_and_counts_the_time_preparing_batches(fer_subset, tmp_path, capsys):
    tr = Trainer(small(fer_subset, "train.epochs=1", "train.batch_size=16"), tmp_path, progress=True)
    tr.start_stage(0)
    augment = tr.augment
    tr.augment = lambda x, y, gen: (time.sleep(0.2), augment(x, y, gen))[1]  # 0.2 s more per batch
    capsys.readouterr()
    stats = tr.train_epoch(max_batches=2)
    err = capsys.readouterr().err
    # The epoch's bar, named, run to its end in batches, and cleared afterwards (no line left behind per epoch).
    assert "epoch 1/1" in err and "2/2" in err and "batch/s" in err and "\n" not in err
    data_time = stats["data_share"] * stats["images"] / stats["images_per_s"]  # share x elapsed
    assert 0.4 <= data_time < 0.9
    # 16 images a batch, each batch over 0.2 s: the rate the bar shows after the first batch, and the epoch's.
    shown = float(re.findall(r"img_s=([0-9.]+)", err)[-1])
    assert 10 <= shown <= 80 and 10 <= stats["images_per_s"] <= 80, (shown, stats)
    # The bar's running loss is refreshed every ten batches: after eleven it is the mean of all eleven.
    tr.augment = augment
    stats = tr.train_epoch(max_batches=11)
    shown = re.findall(r"loss=([0-9.]+)", capsys.readouterr().err)
    assert len(set(shown)) == 2 and shown[-1] == f"{stats['train_loss']:.3f}", shown
    tr.progress = False
    tr.train_epoch(max_batches=1)
    assert capsys.readouterr().err == ""


def test_compiled_training_matches_eager(fer_subset, tmp_path, caplog):
    losses = {}
    for compiled in (False, True):
        # No dropout: compiled code draws its masks from another random stream than eager PyTorch.
        tr = Trainer(small(fer_subset, f"train.compile={str(compiled).lower()}", "train.epochs=1",
                           "train.max_batches=3", "model.kwargs={width: 8, dropout: 0}"), tmp_path / str(compiled))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ferkit.train.trainer"):
            losses[compiled] = tr.fit()["best"]
        assert isinstance(tr.forward_model, torch._dynamo.eval_frame.OptimizedModule) == compiled
        said = [r.getMessage() for r in caplog.records]
        assert ("compiling the model with torch.compile (the first batches are slow)" in said) == compiled
    assert losses[True]["train_loss"] == pytest.approx(losses[False]["train_loss"], rel=1e-4)
    assert losses[True]["val_loss"] == pytest.approx(losses[False]["val_loss"], rel=1e-4)


def test_a_recipe_asking_for_imagenet_weights_is_given_them_or_told_where_they_are_missing(fer_subset, tmp_path,
                                                                                           capsys, offline_hub):
    code, _, err = run_main(capsys, "train", ROOT / "configs" / "seeds" / "s1_resnet18.yaml", f"--data={fer_subset}",
                            "--out", tmp_path / "run", "--data.limit_per_class=8")
    assert code == 2 and "not in the local cache" in err and "--pretrained-file" in err, err


def test_seed_recipe_at_its_own_size_from_a_local_weights_file(fer_subset, tmp_path, capsys):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    imagenet = timm.create_model("resnet18", num_classes=1000).state_dict()
    save_file({k: v.contiguous() for k, v in imagenet.items()}, tmp_path / "r18.safetensors")
    code, _, err = run_main(capsys, "train", ROOT / "configs" / "seeds" / "s1_resnet18.yaml", f"--data={fer_subset}",
                            "--out", tmp_path / "run", "--data.limit_per_class=8", "--train.batch_size=8",
                            "--train.max_batches=1", f"--model.pretrained_file={tmp_path / 'r18.safetensors'}",
                            "--train.stages=[{epochs: 1, trainable: head}]")
    assert code == 0, err
    meta = read_meta(tmp_path / "run")
    assert meta["architecture"] == "resnet18" and meta["input"]["size"] == 48  # a gray 48px face ...
    weights = load_file(tmp_path / "run" / "last.safetensors")
    body = {k.removeprefix("backbone."): v for k, v in weights.items() if k.startswith("backbone.")}
    # ... resized inside the model to the backbone's own 224px; the frozen body is the file's weights, unchanged.
    model, _ = load_checkpoint(tmp_path / "run")
    assert model.adapter.image_size == 224
    assert set(body) == set(imagenet) - {"fc.weight", "fc.bias"}
    assert all(torch.equal(v, imagenet[k]) for k, v in body.items() if not k.endswith("num_batches_tracked"))
