"""Every recipe in configs/ starts and completes a 1-epoch run on a small real subset through the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ferkit.cli import main
from ferkit.models import get_spec
from ferkit.models.checkpoint import read_meta

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs").rglob("*.yaml"))


def test_every_seed_has_a_recipe():
    names = {p.stem for p in RECIPES}
    assert {"default", "fer2013", "s0_cnn", "s0_resnet50v2", "s1_resnet18", "s1_vgg16", "s1_densenet121", "s1_vit_b16",
            "s1_clip_vit_b32", "s2_resnet50", "s3_cbam_5cnn", "s3_efficientnet_b3", "s4_cnn", "s4_cnn_aug",
            "s4_vgg16", "s4_resnet50"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_runs_one_epoch(recipe, fer_zip, ferplus_zip, tmp_path, capsys):
    cfg = yaml.safe_load(recipe.read_text())
    model = cfg.get("model", {}).get("name", "fernet")
    data = ferplus_zip if recipe.stem.startswith("s3_") or recipe.stem == "default" else fer_zip
    args = ["train", str(recipe), "--data", str(data), "--out", str(tmp_path / "run"), "--epochs", "1",
            "--data.limit_per_class", "6", "--train.batch_size", "8", "--train.max_batches", "2",
            "--train.compile", "false"]
    if get_spec(model).pretrained_capable:
        # No ImageNet weights can be fetched here (loading them is tested in test_models); small inputs keep
        # the big backbones quick on a CPU.
        args += ["--model.pretrained", "false", "--model.kwargs.image_size", "32"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "epoch   1" in out
    # Leak-free whatever the recipe says elsewhere: no training copy of an evaluation image is trained on.
    summary = yaml.safe_load((tmp_path / "run" / "summary.yaml").read_text())
    assert "data: leak-free" in out and summary["data"]["leaks_kept"] == 0 and summary["data"]["leaks_excluded"] > 0
    meta = read_meta(tmp_path / "run")
    assert meta["architecture"] == model
    stages = cfg.get("train", {}).get("stages") or [None]
    assert (tmp_path / "run" / "metrics.csv").read_text().count("\n") == 1 + len(stages)
