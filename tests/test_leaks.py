"""Leak-free by default: training data never holds the pixels of an evaluation split, unless a recipe says so, and
then the run, evaluate and report say so."""

from __future__ import annotations

import json

import yaml

from conftest import run_main
from ferkit.data import load_dataset


def pixels(faces) -> set[bytes]:
    return {img.tobytes() for img in faces.images}


def test_training_split_holds_no_evaluation_pixels(fer_zip, ferplus_zip):
    for path, leaks in ((fer_zip, 351), (ferplus_zip, 340)):
        ds = load_dataset(path)
        evaluation = set().union(*(pixels(fs) for name, fs in ds.splits.items() if name != "train"))
        assert ds.leaks_excluded == leaks and ds.leaks_kept == 0
        assert not pixels(ds["train"]) & evaluation
        kept = load_dataset(path, keep_leaks=True)
        assert kept.leaks_kept >= leaks - 5 and len(pixels(kept["train"]) & evaluation) > 200
        assert len(kept["train"]) > len(ds["train"])


def test_seed_recipes_run_leak_free_and_keep_leaks_is_said(fer_zip, tmp_path, capsys):
    from ferkit.models.checkpoint import read_meta

    args = ["--data", fer_zip, "--epochs", "1", "--data.limit_per_class", "20", "--train.max_batches", "2"]
    # S0 excludes nothing: leaks go all the same. Its validation split is carved out of train.
    code, out, _ = run_main(capsys, "train", "configs/seeds/s0_cnn.yaml", "--out", tmp_path / "s0", *args)
    assert code == 0 and "data: leak-free: 351 training copies of evaluation images left out" in out
    summary = yaml.safe_load((tmp_path / "s0" / "summary.yaml").read_text())
    assert summary["data"]["leaks_excluded"] == 351 and summary["data"]["leaks_kept"] == 0

    code, out, _ = run_main(capsys, "train", "configs/fer2013.yaml", "--out", tmp_path / "leaky", *args,
                            "--model.kwargs", "{width: 8}", "--data.exclude", "false", "--data.keep_leaks", "true")
    assert code == 0 and "NOT leak-free: training kept" in out
    assert read_meta(tmp_path / "leaky")["dataset"]["leaks_kept"] > 0

    code, out, _ = run_main(capsys, "evaluate", tmp_path / "leaky", "--data", fer_zip, "--json")
    assert code == 0 and "copies of evaluation images (data.keep_leaks)" in json.loads(out)["warnings"][0]
    code, out, _ = run_main(capsys, "evaluate", tmp_path / "s0", "--data", fer_zip, "--json")
    assert code == 0 and json.loads(out)["warnings"] == []
    from ferkit.evaluate import overlap_warning

    meta = read_meta(tmp_path / "s0")
    assert "trained on this train split" in overlap_warning(meta, str(fer_zip), "train")
    assert overlap_warning(meta, str(fer_zip), "test") is None
    assert "before ferkit left out" in overlap_warning({**meta, "dataset": {"location": str(fer_zip)}}, str(fer_zip),
                                                       "test")
