"""Cleaning findings and the decode cache, on folders made from real FER-2013 images."""

from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from conftest import zip_folder
from ferkit.data import find_issues, load_dataset, scan_dataset, write_report
from ferkit.data.scan import default_cache_dir
from ferkit.errors import DataError


@pytest.fixture
def dirty_folder(kaggle_folder):
    train, test = kaggle_folder / "train", kaggle_folder / "test"
    happy = sorted((train / "happy").iterdir())
    shutil.copy(happy[0], train / "sad" / "copy_of_happy.jpg")  # duplicate, with another label
    shutil.copy(sorted((test / "fear").iterdir())[0], train / "fear" / "leaked.jpg")  # test image in train
    (train / "angry" / "notes.txt").write_text("not an image")
    (train / "angry" / "broken.jpg").write_bytes(happy[1].read_bytes()[:200])  # truncated JPEG
    import cv2

    cv2.imwrite(str(train / "neutral" / "blank.png"), np.full((48, 48), 128, np.uint8))
    (train / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # OS litter is not a dataset file
    return kaggle_folder


def test_findings(dirty_folder):
    scan = scan_dataset(dirty_folder)
    found = {(f.path, f.reason) for f in find_issues(scan)}
    assert ("train/angry/notes.txt", "not_image") in found
    assert ("train/angry/broken.jpg", "corrupt") in found
    assert ("train/neutral/blank.png", "near_blank") in found
    assert ("train/sad/copy_of_happy.jpg", "duplicate") in found
    assert ("train/fear/leaked.jpg", "leak") in found
    assert not any(".DS_Store" in p for p, _ in found)
    dup = next(f for f in find_issues(scan) if f.reason == "duplicate")
    assert "different label" in dup.detail


def test_findings_name_split_and_detail(dirty_folder):
    from ferkit.data.clean import Finding

    train = dirty_folder / "train"
    happy = sorted((train / "happy").iterdir())
    leaked_from = sorted((dirty_folder / "test" / "fear").iterdir())[0].name
    (train / "happy" / "same_label_copy.jpg").write_bytes(happy[0].read_bytes())
    edge = np.tile(np.array([125, 131], np.uint8), (48, 24))  # pixel std exactly 3.0: kept
    import cv2

    cv2.imwrite(str(train / "neutral" / "edge.png"), edge)
    found = {f.path: f for f in find_issues(scan_dataset(dirty_folder))}
    assert found["train/neutral/blank.png"] == Finding("train", "train/neutral/blank.png", "near_blank",
                                                       "pixel std 0.00")
    assert "train/neutral/edge.png" not in found
    assert found["train/fear/leaked.jpg"] == Finding("train", "train/fear/leaked.jpg", "leak",
                                                     f"same as test test/fear/{leaked_from}")
    copy = found["train/sad/copy_of_happy.jpg"]
    assert (copy.split, copy.reason) == ("train", "duplicate")
    assert copy.detail == f"same as train/happy/{happy[0].name} (with a different label)"
    assert found["train/happy/same_label_copy.jpg"].detail == f"same as train/happy/{happy[0].name}"
    assert all(type(f.split) is str and type(f.path) is str for f in found.values())


def test_findings_are_plain_strings():
    from ferkit.data.clean import Finding

    f = Finding(np.str_("train"), np.str_("train/a.png"), "corrupt")
    assert (type(f.split), type(f.path)) == (str, str) and (f.split, f.path) == ("train", "train/a.png")


def test_real_ferplus_faces_that_are_no_faces(ferplus_zip):
    found = [f for f in find_issues(scan_dataset(ferplus_zip)) if f.reason == "not_face"]
    assert len(found) == 3
    for f in found:
        votes, total = map(int, f.detail.removesuffix(" votes").split(" of "))
        assert f.split in ("train", "val") and total >= votes > total / 3  # the plurality said: not a face
        assert type(f.path) is str and f.path.endswith(".png")


def test_report_files_and_exclusion(dirty_folder, tmp_path):
    scan = scan_dataset(dirty_folder)
    before = {p.name: p.stat().st_mtime_ns for p in dirty_folder.rglob("*")}
    json_path, csv_path = write_report(scan, find_issues(scan), tmp_path / "report")
    assert {p.name: p.stat().st_mtime_ns for p in dirty_folder.rglob("*")} == before  # source untouched
    report = json.loads(json_path.read_text())
    rows = list(csv.DictReader(open(csv_path)))
    planted = {"train/angry/notes.txt", "train/angry/broken.jpg", "train/neutral/blank.png",
               "train/sad/copy_of_happy.jpg", "train/fear/leaked.jpg"}
    assert planted <= {r["path"] for r in rows}  # the real subset has a blank face and a leak of its own too
    assert report["num_flagged_files"] == len(rows)
    assert report["findings"]["leak"]["train"] == sum(r["reason"] == "leak" for r in rows)

    with pytest.raises(DataError, match="train/angry/broken.jpg: corrupt image .*ferkit data clean"):
        load_dataset(dirty_folder)
    by_file = load_dataset(dirty_folder, exclude=csv_path)
    by_flag = load_dataset(dirty_folder, exclude=True)
    assert by_file.excluded == by_flag.excluded == len(rows)
    assert len(by_file["train"]) == 42 + 5 - len(rows)
    assert "train/fear/leaked.jpg" not in set(by_file["train"].paths)


def test_report_is_written_into_new_and_existing_folders_whole(dirty_folder, tmp_path):
    from ferkit.data.clean import BLANK_STD, Finding, read_flagged

    scan = scan_dataset(dirty_folder)
    odd = Finding("train", "train/angry/odd\rname, \"quoted\".jpg", "corrupt")  # CSV must quote it and read it back
    findings = [*find_issues(scan), odd]
    out = tmp_path / "a" / "b"  # parents made as needed
    json_path, csv_path = write_report(scan, findings, out)
    assert (json_path, csv_path) == (out / "clean_report.json", out / "flagged.csv")
    report = json.loads(json_path.read_text())
    assert json_path.read_text() == json.dumps(report, indent=2) + "\n"
    assert report == {"source": scan.location, "format": scan.format, "fingerprint": scan.fingerprint,
                      "num_images": len(scan), "num_flagged_files": len({(f.split, f.path) for f in findings}),
                      "blank_std_threshold": BLANK_STD, "findings": report["findings"]}
    assert report["findings"]["corrupt"]["train"] == 2 and set(report["findings"]) == {
        "corrupt", "not_image", "missing", "near_blank", "duplicate", "leak", "not_face"}
    assert odd.path in read_flagged(csv_path) and read_flagged(csv_path) == {f.path for f in findings}
    assert csv_path.read_bytes().startswith(b"split,path,reason,detail\n") and b"\r\n" not in csv_path.read_bytes()
    write_report(scan, findings[:1], out)  # the folder exists: written again
    assert read_flagged(csv_path) == {findings[0].path}


def test_flagged_list_mistakes_are_named(tmp_path):
    from ferkit.data.clean import read_flagged

    with pytest.raises(DataError, match=rf"^{tmp_path}/nope.csv: cannot read the flagged-files list "
                                        r"\(No such file or directory\)$"):
        read_flagged(tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("file,reason\ntrain/a.jpg,corrupt\n")  # one row, no path column
    with pytest.raises(DataError, match=rf"^{tmp_path}/bad.csv: no 'path' column; give the flagged.csv written by "
                                        r"`ferkit data clean`$"):
        read_flagged(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("split,path,reason,detail\n")
    assert read_flagged(tmp_path / "empty.csv") == set()


def test_real_fer2013_findings(fer_zip):
    issues = {f.reason for f in find_issues(scan_dataset(fer_zip))}
    assert {"near_blank", "duplicate", "leak"} <= issues


def test_cache_hit_and_invalidation(kaggle_folder):
    cache = default_cache_dir()
    first = scan_dataset(kaggle_folder)
    files = set(cache.glob("scan-*.npz"))
    again = scan_dataset(kaggle_folder)
    assert set(cache.glob("scan-*.npz")) == files  # served from the cache, nothing new written
    assert np.array_equal(first.image, again.image) and list(first.path) == list(again.path)
    # Adding a file changes the source, so the next load decodes it again under a new key.
    src = next((kaggle_folder / "train" / "happy").iterdir())
    shutil.copy(src, kaggle_folder / "train" / "happy" / "new.jpg")
    changed = scan_dataset(kaggle_folder)
    assert len(changed) == len(first) + 1
    assert len(set(cache.glob("scan-*.npz")) - files) == 1


def test_a_copy_served_from_the_cache_is_named_by_its_own_path(kaggle_folder, tmp_path):
    first = zip_folder(kaggle_folder, tmp_path / "first.zip")
    copy = tmp_path / "copy.zip"
    shutil.copy(first, copy)
    assert scan_dataset(first, cache_dir=tmp_path / "c").location.startswith(str(first))
    assert scan_dataset(copy, cache_dir=tmp_path / "c").location.startswith(str(copy))
    assert len(list((tmp_path / "c").glob("scan-*.npz"))) == 1  # the same content, decoded once


def test_cache_dir_option_and_corrupt_cache(kaggle_folder, tmp_path):
    scan_dataset(kaggle_folder, cache_dir=tmp_path / "c")
    (cached,) = (tmp_path / "c").glob("scan-*.npz")
    cached.write_bytes(b"garbage")
    assert len(scan_dataset(kaggle_folder, cache_dir=tmp_path / "c")) == 84  # rebuilt, not a crash
    assert os.path.getsize(cached) > 1000


def test_exclusion_keeps_evaluation_splits_as_published(fer_zip):
    """Flagged duplicates of PublicTest stay in it; training loses its flagged files (leaks among them)."""
    full, cleaned = load_dataset(fer_zip), load_dataset(fer_zip, exclude=True)
    assert len(cleaned["test"]) == len(full["test"]) == 3589
    assert len(full["train"]) - len(cleaned["train"]) == cleaned.excluded - full.excluded > 1000
    assert full.excluded == full.leaks_excluded == 351  # leaks go even without exclusion
