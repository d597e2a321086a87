"""Class mapping and splits."""

from __future__ import annotations

import numpy as np
import pytest

from ferkit.data import load_dataset, split_off, write_split_file
from ferkit.errors import DataError
from ferkit.labels import FER2013, LabelMap, canonical


def test_canonical_names():
    assert [canonical(n) for n in ["Anger", "happiness", "sadness", "Surprised", "fearful", "disgusted"]] == [
        "angry", "happy", "sad", "surprise", "fear", "disgust"]


def test_drop_disgust_for_six_classes(kaggle_folder):
    ds = load_dataset(kaggle_folder, label_map=LabelMap(drop=("disgust",)), keep_leaks=True)
    assert ds.classes == ("angry", "fear", "happy", "sad", "surprise", "neutral")
    assert ds.unlabelled == 12  # 6 train + 6 test disgust images
    assert len(ds["train"]) == 36


def test_merge_and_fixed_order(kaggle_folder):
    lm = LabelMap(classes=("negative", "happy", "neutral", "surprise"),
                  rename={"angry": "negative", "disgust": "negative", "fear": "negative", "sad": "negative"})
    ds = load_dataset(kaggle_folder, label_map=lm, keep_leaks=True)
    assert ds.classes == lm.classes
    assert ds["train"].counts() == {"negative": 24, "happy": 6, "neutral": 6, "surprise": 6}


def test_classes_keep_only_those_listed(kaggle_folder):
    ds = load_dataset(kaggle_folder, label_map=LabelMap(classes=("sad", "happy")), keep_leaks=True)
    assert ds.classes == ("sad", "happy") and ds["test"].counts() == {"sad": 6, "happy": 6}
    assert ds.unlabelled == 2 * 5 * 6


def test_ferplus_votes_follow_the_mapping(ferplus_zip):
    ds = load_dataset(ferplus_zip, label_map=LabelMap(drop=("contempt",)))
    assert ds.classes == FER2013
    soft = ds["val"].soft
    assert soft.shape[1] == 7
    np.testing.assert_allclose(soft.sum(axis=1), 1, rtol=1e-5)


@pytest.mark.parametrize("lm, message", [
    (LabelMap(drop=("contempt",)), "'contempt' in the label mapping is not in this dataset"),
    (LabelMap(rename={"joyful": "happy"}), "'joyful'"),
    (LabelMap(classes=("happy", "joyful")), "requested classes joyful are not in this dataset"),
])
def test_unknown_class_in_mapping(kaggle_folder, lm, message):
    with pytest.raises(DataError, match=message):
        load_dataset(kaggle_folder, label_map=lm)


def test_stratified_split_is_seeded_and_recorded(fer_zip, tmp_path):
    train = load_dataset(fer_zip)["train"]
    rest, val = split_off(train, 0.2, seed=7)
    again, val2 = split_off(train, 0.2, seed=7)
    assert np.array_equal(val.paths, val2.paths)
    assert len(val) == pytest.approx(0.2 * len(train), rel=0.01) and len(rest) + len(val) == len(train)
    assert not set(rest.paths) & set(val.paths)
    # FER-2013's training split holds over a thousand exact copies; none may straddle the split.
    pixels = lambda fs: {img.tobytes() for img in fs.images}  # noqa: E731
    assert len(pixels(train)) < len(train) - 1000
    assert not pixels(rest) & pixels(val)
    ratio = np.array(list(val.counts().values())) / np.array(list(train.counts().values()))
    assert np.allclose(ratio, 0.2, atol=0.01)  # every class keeps its share
    out = write_split_file(tmp_path / "splits.csv", [rest, val])
    lines = out.read_text().splitlines()
    assert lines[0] == "split,path,label" and len(lines) == len(train) + 1
    assert lines[-1].startswith("val,train/")
