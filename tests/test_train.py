"""`ferkit train` on the real data: a short run that learns, resume after SIGKILL, DDP, stages, soft labels."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from safetensors.torch import load_file

from ferkit.config import load_config
from ferkit.models.checkpoint import load_checkpoint, read_meta
from ferkit.train.trainer import train

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
    assert meta["input"]["face_size"] == 48 and meta["metrics"]["val_accuracy"] == summary["best"]["val_accuracy"]
    x = torch.rand(3, 1, meta["input"]["size"], meta["input"]["size"])
    assert model(x).shape == (3, 7)


def test_resume_after_sigkill_continues_exactly(fer_zip, tmp_path):
    args = [f"--data={fer_zip}", "--data.val_split=test", "--data.limit_per_class=60", "--model.name=fernet",
            "--model.kwargs={width: 8}", "--train.precision=fp32", "--train.batch_size=32", "--train.epochs=3",
            "--augment.preset=s4", "--schedule.name=onecycle", "--train.channels_last=false"]
    cfg = tmp_path / "r.yaml"
    cfg.write_text("optim: {name: sgd, lr: 0.05, nesterov: true}\n")
    straight = tmp_path / "straight"
    r = run_cli("train", cfg, "--out", straight, *args)
    assert r.returncode == 0, r.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen([BIN / "ferkit", "train", cfg, "--out", killed, *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (killed / "resume.safetensors").exists():
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(rows(killed)) < 3
    r = run_cli("train", "--resume", killed)
    assert r.returncode == 0, r.stderr
    a, b = rows(straight), rows(killed)
    assert [x["epoch"] for x in b] == ["1", "2", "3"]
    for x, y in zip(a, b):
        assert float(x["train_loss"]) == pytest.approx(float(y["train_loss"]), rel=1e-5)
        assert x["val_accuracy"] == y["val_accuracy"]
    wa, wb = load_file(straight / "last.safetensors"), load_file(killed / "last.safetensors")
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


def test_ddp_two_cpu_processes(fer_zip, tmp_path):
    run = tmp_path / "ddp"
    r = subprocess.run(
        [BIN / "torchrun", "--standalone", "--nproc_per_node=2", "-m", "ferkit.cli", "train",
         ROOT / "configs" / "fer2013.yaml", "--out", run, f"--data={fer_zip}", "--data.limit_per_class=40",
         "--model.kwargs={width: 8}", "--train.epochs=1", "--train.compile=false", "--train.batch_size=32"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (row,) = rows(run)
    # Each process trains on half of the 280 images: 4 batches of 32 each, 256 images in all.
    meta = read_meta(run / "best.safetensors")
    assert meta["dataset"]["train"] == 280
    assert 0 <= float(row["val_accuracy"]) <= 1 and r.stdout.count("epoch   1") == 1


@pytest.mark.parametrize("sampler", ["random", "weighted"])
def test_ddp_ranks_train_on_disjoint_shards(fer_zip, tmp_path, sampler):
    from dataclasses import replace

    from ferkit.train.trainer import Trainer

    trainer = Trainer(small(fer_zip, f"train.sampler={sampler}"), tmp_path / "run")
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


def test_stages_freeze_then_fine_tune(fer_zip, tmp_path):
    cfg = small(fer_zip, "train.stages=[{epochs: 1, trainable: head}, {epochs: 1, trainable: all, lr: 0.0001}]")
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
    # Stage 1 trains the head alone: every body tensor (weights and batch-norm statistics) stays as it was.
    assert all(torch.equal(start[k], after_stage_1[k]) for k in body)
    assert any(not torch.equal(start[k], after_stage_1[k]) for k in head)
    assert any(not torch.equal(after_stage_1[k], final[k]) for k in body)  # stage 2 moves the body


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


def test_made_validation_split_is_recorded(fer_zip, tmp_path):
    cfg = small(fer_zip, "data.val_split=val", "data.val_fraction=0.2", "train.epochs=1", "train.max_batches=2")
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
    (["--data.classes", "[happy]"], "the class settings leave 1 class (happy); a classifier needs at least two"),
])
def test_bad_config_one_line_exit_2(fer_zip, tmp_path, args, message):
    r = run_cli("train", ROOT / "configs" / "fer2013.yaml", f"--data={fer_zip}", "--out", tmp_path / "run",
                "--data.limit_per_class=5", *args)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1 and message in r.stderr
    assert not (tmp_path / "run" / "best.safetensors").exists()


def test_missing_recipe_and_nothing_to_resume(tmp_path):
    r = run_cli("train", tmp_path / "nope.yaml", "--data", tmp_path)
    assert r.returncode == 2 and "no such config file" in r.stderr
    r = run_cli("train", ROOT / "configs" / "fer2013.yaml", "--data", tmp_path / "a #1" / "x.zip")
    assert r.returncode == 2 and "a #1/x.zip" in r.stderr  # the path as given, not cut at "#"
    for name, content in (("list.yaml", b"- a\n- b\n"), ("binary.yaml", b"\xff\xfe\x00\x01")):
        (tmp_path / name).write_bytes(content)
        r = run_cli("train", tmp_path / name, "--data", tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "recipe" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("train", "--resume", tmp_path)
    assert r.returncode == 2 and "nothing to resume" in r.stderr


def test_resume_of_a_finished_run_keeps_its_best(fer_zip, tmp_path):
    from ferkit.train.trainer import resume

    first = train(small(fer_zip, "train.epochs=2", "train.max_batches=3"), tmp_path / "run")
    again = resume(tmp_path / "run")  # nothing left to train; the callbacks' state comes back without a printer
    assert again["epochs"] == 2 and again["best_epoch"] == first["best_epoch"]
    assert again["best"] == first["best"]
