"""Every dataset reader on real data: the shared zips, and folders, CSVs and trees built from their images."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
from conftest import csv_from_faces, decode, real_faces, zip_folder
from ferkit.data import load_dataset, scan_dataset
from ferkit.labels import FER2013

FER_TRAIN = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "neutral": 4965, "sad": 4830,
             "surprise": 3171}


def test_kaggle_zip_read_without_extracting(fer_zip):
    ds = load_dataset(fer_zip, keep_leaks=True)  # as published: training copies of test faces too
    assert ds.format == "fer2013-folders"
    assert ds.classes == FER2013
    assert list(ds.splits) == ["train", "test"]
    assert len(ds["train"]) == 28709 and len(ds["test"]) == 3589
    assert ds["train"].counts() == {c: FER_TRAIN[c] for c in FER2013}
    assert ds["train"].images.shape == (28709, 48, 48) and ds["train"].images.dtype == np.uint8
    # The image stored for a file is that file's pixels.
    i = 123
    path = str(ds["train"].paths[i])
    import zipfile

    with zipfile.ZipFile(fer_zip) as zf:
        assert np.array_equal(decode(zf.read(path)), ds["train"].images[i])
    assert FER2013[ds["train"].labels[i]] == path.split("/")[1]


def test_kaggle_folder_matches_zip(kaggle_folder, tmp_path):
    folder = load_dataset(kaggle_folder, keep_leaks=True)
    zipped = load_dataset(zip_folder(kaggle_folder, tmp_path / "archive.zip"), keep_leaks=True)  # in a top folder
    assert folder.format == zipped.format == "fer2013-folders"
    for split in ("train", "test"):
        assert folder[split].counts() == zipped[split].counts() == {c: 6 for c in FER2013}
        assert np.array_equal(folder[split].images, zipped[split].images)


def test_fer2013_csv_from_real_images(fer_zip, tmp_path):
    faces = real_faces(fer_zip, 4)
    tests = real_faces(fer_zip, 2, "test")
    text = csv_from_faces(faces) + csv_from_faces(tests, "PublicTest").split("\n", 1)[1]
    text += csv_from_faces(tests, "PrivateTest").split("\n", 1)[1]
    path = tmp_path / "fer2013.csv"
    path.write_text(text)
    ds = load_dataset(path)
    assert ds.format == "fer2013-csv"
    assert list(ds.splits) == ["train", "test", "private"]
    assert ds["train"].counts() == {c: 4 for c in FER2013}
    assert ds["test"].counts() == {c: 2 for c in FER2013}
    first_class = next(iter(faces))
    assert np.array_equal(ds["train"].images[ds["train"].labels == FER2013.index(first_class)][0],
                          decode(faces[first_class][0][1]))
    # The same CSV inside a folder (as the challenge download ships it) is found too.
    (tmp_path / "challenge").mkdir()
    shutil.copy(path, tmp_path / "challenge" / "fer2013.csv")
    assert load_dataset(tmp_path / "challenge")["train"].counts() == ds["train"].counts()


def test_ferplus_zip_majority_and_votes(ferplus_zip):
    ds = load_dataset(ferplus_zip, keep_leaks=True)
    assert ds.format == "ferplus"
    assert ds.classes == (*FER2013, "contempt")  # canonical order, whatever the source order
    assert list(ds.splits) == ["train", "val"]
    train, val = ds["train"], ds["val"]
    # Images whose plurality vote is unknown or not-a-face have no label and are left out.
    assert 28000 < len(train) < 28558 and 3500 < len(val) < 3579
    assert ds.unlabelled == 28558 + 3579 - len(train) - len(val)
    assert train.soft.shape == (len(train), 8)
    np.testing.assert_allclose(train.soft.sum(axis=1), 1, rtol=1e-5)
    # The majority label holds the most votes (ties go to the first emotion in FER+ column order).
    rows = np.arange(len(train))
    assert np.array_equal(train.soft[rows, train.labels], train.soft.max(axis=1))
    assert train.counts()["neutral"] > train.counts()["happy"] > train.counts()["contempt"] > 0


def test_ferplus_folder_subset(ferplus_zip, tmp_path):
    import zipfile

    root = tmp_path / "ferplus" / "FER2013Valid"
    root.mkdir(parents=True)
    with zipfile.ZipFile(ferplus_zip) as zf:
        rows = zf.read("FER2013Valid/label.csv").decode().splitlines()[:20]
        for row in rows:
            name = row.split(",")[0]
            (root / name).write_bytes(zf.read(f"FER2013Valid/{name}"))
    (root / "label.csv").write_text("\n".join(rows) + "\n")
    scan = scan_dataset(tmp_path / "ferplus")
    assert scan.format == "ferplus" and set(scan.split) == {"val"} and len(scan) == 20
    votes = [int(v) for v in rows[0].rsplit(",", 10)[1:]]  # after the quoted box
    assert scan.votes[0].tolist() == votes


def test_any_class_folder_tree_any_size_and_colour(fer_zip, tmp_path):
    """CK+-style: one folder per class, colour images of another size, CK+ class spellings, no splits."""
    root = tmp_path / "CK+48"
    spelling = {"angry": "anger", "sad": "sadness", "happy": "happy", "surprise": "surprise"}
    for cls, files in real_faces(fer_zip, 5).items():
        if cls not in spelling:
            continue
        (root / spelling[cls]).mkdir(parents=True)
        for name, data in files:
            colour = cv2.resize(cv2.cvtColor(decode(data), cv2.COLOR_GRAY2BGR), (96, 80))
            cv2.imwrite(str(root / spelling[cls] / name.replace(".jpg", ".png")), colour)
    scan = scan_dataset(tmp_path)
    assert scan.format == "class-folders"
    assert set(scan.native_hw[:, 0]) == {80} and set(scan.channels) == {3}
    ds = load_dataset(tmp_path, size=64)
    assert list(ds.splits) == ["train"]
    assert ds.classes == ("angry", "happy", "sad", "surprise")
    assert ds["train"].images.shape == (20, 64, 64)


def test_face_expression_layout_with_validation_folder(fer_zip, tmp_path):
    root = tmp_path / "images"
    for folder, split in (("train", "train"), ("validation", "test")):
        for cls, files in real_faces(fer_zip, 3, split).items():
            if cls == "disgust":  # that set has 6 classes
                continue
            (root / folder / cls).mkdir(parents=True)
            for name, data in files:
                (root / folder / cls / name).write_bytes(data)
    ds = load_dataset(tmp_path)
    assert list(ds.splits) == ["train", "val"]
    assert ds.classes == ("angry", "fear", "happy", "sad", "surprise", "neutral")
    assert len(ds["val"]) == 18


def test_names_outside_the_dataset_fifos_and_link_loops_are_never_read(ferplus_zip, fer_zip, tmp_path):
    import os
    import zipfile

    import pytest

    from ferkit.errors import DataError

    root = tmp_path / "ferplus" / "FER2013Valid"
    root.mkdir(parents=True)
    secret = tmp_path / "secret.png"
    with zipfile.ZipFile(ferplus_zip) as zf:
        rows = zf.read("FER2013Valid/label.csv").decode().splitlines()[:3]
        for row in rows:
            name = row.split(",")[0]
            (root / name).write_bytes(zf.read(f"FER2013Valid/{name}"))
        secret.write_bytes(zf.read(f"FER2013Valid/{rows[0].split(',')[0]}"))  # a real image outside the dataset
    votes = rows[0].split(",", 1)[1]
    (root / "label.csv").write_text("\n".join([*rows, f"../../secret.png,{votes}"]) + "\n")
    with pytest.raises(DataError, match=r"\.\./\.\./secret\.png: file is missing"):
        load_dataset(tmp_path / "ferplus")

    classes = tmp_path / "classes"
    for cls, files in real_faces(fer_zip, 2).items():
        (classes / cls).mkdir(parents=True)
        for name, data in files:
            (classes / cls / name).write_bytes(data)
    os.mkfifo(classes / "happy" / "pipe.jpg")  # reading it would block forever
    os.symlink(classes, classes / "sad" / "loop")  # a folder that contains itself
    ds = load_dataset(classes)
    assert len(ds["train"]) == 14 and not any("pipe" in p or "loop" in p for p in ds["train"].paths)
