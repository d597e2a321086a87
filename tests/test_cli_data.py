"""`ferkit data inspect|clean` on the real data, and every bad input as a one-line error with exit code 2."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest

from conftest import csv_from_faces, real_faces, run_cli, run_main
from ferkit.cli import main

FER_TRAIN = {"angry": 3995, "disgust": 436, "fear": 4097, "happy": 7215, "sad": 4830, "surprise": 3171,
             "neutral": 4965}
FER_TEST = {"angry": 467, "disgust": 56, "fear": 496, "happy": 895, "sad": 653, "surprise": 415, "neutral": 607}


def test_inspect_fer2013_json(fer_zip, capsys):
    assert main(["data", "inspect", str(fer_zip), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "fer2013-folders"
    assert out["splits"] == {"train": FER_TRAIN, "test": FER_TEST}
    assert out["num_images"] == 28709 + 3589
    assert out["issues"]["duplicate"]["train"] > 1000


def test_inspect_ferplus_json_and_plot(ferplus_zip, tmp_path, capsys):
    plot = tmp_path / "ferplus.png"
    assert main(["data", "inspect", str(ferplus_zip), "--json", "--plot", str(plot)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "ferplus"
    assert set(out["splits"]) == {"train", "val"}
    assert out["split_origin"] == {"train": "FER2013Train", "val": "FER2013Valid"}
    assert sum(out["splits"]["val"].values()) + out["unlabelled"]["val"] == 3579
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 50_000


def test_inspect_tables(kaggle_folder):
    r = run_cli("data", "inspect", kaggle_folder)
    assert r.returncode == 0, r.stderr
    assert "happy" in r.stdout and "total" in r.stdout and "cleaning findings" in r.stdout


def test_clean_writes_report(fer_zip, tmp_path, capsys):
    assert main(["data", "clean", str(fer_zip), "--out", str(tmp_path / "rep"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["num_images"] == 32298 and report["findings"]["leak"]["train"] > 0
    assert (tmp_path / "rep" / "flagged.csv").read_text().startswith("split,path,reason,detail\n")


def bad_zip(tmp_path):
    p = tmp_path / "flat.zip"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("a.jpg", b"x")
    return p


def bad_csv(tmp_path, fer_zip, mutate):
    text = csv_from_faces(real_faces(fer_zip, 1))
    p = tmp_path / "fer2013.csv"
    p.write_text(mutate(text))
    return p


def drop_pixels(text):
    lines = text.splitlines()
    e, px, u = lines[2].split(",")
    lines[2] = f"{e},{' '.join(px.split()[:2000])},{u}"
    return "\n".join(lines)


BAD_INPUTS = {
    "missing path": (lambda t, z: t / "nope", "no such file or folder"),
    "empty folder": (lambda t, z: (t / "empty").mkdir() or t / "empty", "is empty"),
    "no class folders": (lambda t, z: bad_zip(t), "no class sub-folders"),
    "not a dataset file": (lambda t, z: (t / "x.txt").write_text("hi") and t / "x.txt", "not a dataset"),
    "corrupt zip": (lambda t, z: (t / "d.zip").write_bytes(b"PK\x03\x04broken") and t / "d.zip", "not a"),
    "csv wrong header": (lambda t, z: bad_csv(t, z, lambda s: s.replace("emotion,pixels", "label,px", 1)),
                         "expected 'emotion,pixels,Usage'"),
    "csv wrong pixel count": (lambda t, z: bad_csv(t, z, drop_pixels), "line 3: 2000 pixel values"),
    "csv label out of range": (lambda t, z: bad_csv(t, z, lambda s: s.replace("\n0,", "\n9,", 1)),
                               "line 2: emotion 9 is out of range"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.parametrize("action", ["inspect", "clean"])
def test_bad_input_one_line_exit_2(case, action, fer_zip, tmp_path, capsys):
    make, message = BAD_INPUTS[case]
    path = make(tmp_path, fer_zip)
    out = tmp_path / "report"
    code, _, err = run_main(capsys, "data", action, path, *(["--out", out] if action == "clean" else []))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err
    assert not out.exists()  # nothing half-written


def test_plot_needs_png(kaggle_folder, tmp_path, capsys):
    code, _, err = run_main(capsys, "data", "inspect", kaggle_folder, "--plot", tmp_path / "x.jpg")
    assert code == 2 and "PNG" in err and not (tmp_path / "x.jpg").exists()


def test_broken_ferplus_label_files_and_unwritable_out_say_so(tmp_path, capsys):
    folder = tmp_path / "fp" / "FER2013Train"
    folder.mkdir(parents=True)
    label = folder / "label.csv"
    cases = [(b"", "list no images"), (bytes(range(256)) * 2, "is this a FER+ label.csv"),
             (b'a.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0\n"unclosed\n', "is this a FER+ label.csv"),
             (b',"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0\n', "the image name is empty")]
    for data, message in cases:
        label.write_bytes(data)
        code, _, err = run_main(capsys, "data", "inspect", tmp_path / "fp")
        assert code == 2 and message in err and "Traceback" not in err, (data[:20], err)
    code, _, err = run_main(capsys, "predict", "sample", "--out", "/proc/ferkit-out")
    assert code == 2 and err.startswith("error: --out /proc/ferkit-out") and len(err.strip().splitlines()) == 1


def test_agree_counts_how_two_labellings_of_the_same_faces_agree(kaggle_folder, fer_subset, tmp_path, capsys):
    relabelled = tmp_path / "relabelled"
    shutil.copytree(kaggle_folder, relabelled)
    moved = sorted((relabelled / "test" / "happy").iterdir())[:2]
    for f in moved:  # two happy faces called sad in the other labelling
        f.rename(relabelled / "test" / "sad" / f.name)
    next((relabelled / "test" / "fear").iterdir()).unlink()  # and one face it does not hold
    plot = tmp_path / "agree.png"
    code, out, _ = run_main(capsys, "data", "agree", kaggle_folder, relabelled, "--split", "test", "--json",
                            "--plot", plot)
    assert code == 0
    a = json.loads(out)
    n = sum(len(list(d.iterdir())) for d in (kaggle_folder / "test").iterdir())
    assert (a["n"], a["found"]) == (n, n - 1)
    happy, sad = a["rows"].index("happy"), a["cols"].index("sad")
    assert a["counts"][happy][sad] == 2 and sum(a["counts"][happy]) == 6
    assert a["agreement"] == pytest.approx((n - 3) / (n - 1))
    assert a["per_class"]["happy"] == pytest.approx(4 / 6) and a["per_class"]["fear"] == 1.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    assert a["faces"][a["rows"].index("fear")] == 6  # the face not found still counts among its class's faces
    code, out, _ = run_main(capsys, "data", "agree", kaggle_folder, relabelled, "--split", "test")
    assert code == 0 and f"{n - 1} of {n} faces found in both" in out and "sad 33%" in out

    # Among thousands of other faces a few look alike (similarity over 0.8); they are not two labellings.
    code, _, err = run_main(capsys, "data", "agree", kaggle_folder, fer_subset, "--split", "test",
                            "--other-split", "train", "--json")
    assert code == 2 and f"of the {n} faces of" in err and err.count("\n") == 1

    code, _, err = run_main(capsys, "data", "agree", kaggle_folder, relabelled, "--other-split", "test")
    assert code == 2 and f"of the {n} faces of" in err and err.count("\n") == 1  # train faces are not test faces
    code, _, err = run_main(capsys, "data", "agree", kaggle_folder, relabelled, "--split", "val")
    assert code == 2 and "has no 'val' split" in err and err.count("\n") == 1


def test_agree_fer2013_against_ferplus_publictest(decoded_fer_zip, ferplus_zip, capsys):
    """FER+'s ten annotators give the PublicTest faces FER-2013's label on 62.7% of them: fear and sad faces are
    mostly neutral to them."""
    code, out, _ = run_main(capsys, "data", "agree", decoded_fer_zip, ferplus_zip, "--split", "test",
                            "--other-split", "val", "--json")
    assert code == 0
    a = json.loads(out)
    assert (a["n"], a["found"]) == (3589, 3554)
    assert round(a["agreement"], 3) == 0.627
    assert a["per_class"]["happy"] > 0.9 and a["per_class"]["fear"] < 0.12
    assert len(a["rows"]) == 7 and a["cols"][-1] == "contempt"
