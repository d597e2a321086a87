"""The bad-input corpus: every command that takes a kind of input, fed broken, hostile or nonsensical versions of
it. Each case must end with exit code 2 and one line on stderr that says what is wrong (no traceback), leave
nothing at its output path, and finish promptly. The corpus is generated here from the real sample photo, the
shipped model and the real datasets; no broken file is kept in git."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import FERKIT, run_main
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ferkit.errors import FerkitError
from ferkit.models.checkpoint import META_KEY, load_checkpoint

PHOTO = Path(__file__).parents[1] / "src" / "ferkit" / "assets" / "astronaut.jpg"
SHIPPED = Path(__file__).parents[1] / "src" / "ferkit" / "weights" / "default.safetensors"
TIME_LIMIT = 60  # seconds for a case run in its own process (the cases that could hang)


def tampered(folder: Path, change: Callable[[dict], None], weights: Callable[[dict], None] | None = None) -> Path:
    """A copy of the shipped model whose header description (and optionally weights) ``change`` altered."""
    with safe_open(str(SHIPPED), framework="pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
    change(meta)
    state = load_file(str(SHIPPED))
    if weights:
        weights(state)
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"), metadata={META_KEY: json.dumps(meta)})
    return folder / "model.safetensors"


def nan_weights(state: dict) -> None:
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first][...] = float("nan")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, decoded_fer_zip) -> dict[str, tuple[list, list[Path]]]:
    """Case name -> (command line, paths that must not exist afterwards)."""
    t = tmp_path_factory.mktemp("corpus")
    photo = str(PHOTO)
    data = PHOTO.read_bytes()
    (t / "text.jpg").write_text("hello")
    (t / "empty").mkdir()
    (t / "texts").mkdir()
    (t / "texts" / "a.txt").write_text("not a photo")
    (t / "bad.csv").write_text("a,b\n1,2\n")
    (t / "abc.csv").write_text("emotion,pixels,Usage\n0," + " ".join(["abc"] * 2304) + ",Training\n")
    (t / "short.csv").write_text("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",Training\n0,1 2 3,Training\n")
    (t / "empty.csv").write_text("")
    (t / "list.yaml").write_text("- 1\n- 2\n")
    (t / "scalar.yaml").write_text("3\n")
    (t / "binary.yaml").write_bytes(bytes(range(256)))
    (t / "latin1.yaml").write_bytes("model: caf\xe9\n".encode("latin-1"))
    (t / "tag.yaml").write_text("model: !!python/object/apply:os.system ['echo hi']\n")
    (t / "empty.yaml").write_text("")
    (t / "garbage.safetensors").write_bytes(b"\x00" * 100)
    (t / "garbage.onnx").write_bytes(b"onnx")
    (t / "not.zip").write_text("not an archive")
    (t / "afile").write_text("x")
    (t / "trunc.jpg").write_bytes(data[: len(data) // 3])
    (t / "results").mkdir()
    (t / "results" / "results.json").mkdir()  # a folder where predict's results file must go
    (t / "evalout" / "reliability.png").mkdir(parents=True)  # a folder where evaluate's last file must go
    (t / "report.md").mkdir()  # a folder where a report's Markdown twin must go
    recipe = str(Path(__file__).parents[1] / "configs" / "default.yaml")
    fer = str(decoded_fer_zip)  # decoded already: no progress bar beside the error line
    ckpt = {name: tampered(t / name, change, weights) for name, change, weights in [
        ("labels_text", lambda m: m.update(labels="happy"), None),
        ("labels_one", lambda m: m.update(labels=["happy"]), None),
        ("kwargs_list", lambda m: m.update(kwargs=[1]), None),
        ("face_zero", lambda m: m["input"].update(face_size=0), None),
        ("face_huge", lambda m: m["input"].update(face_size=100_000, size=100_000), None),
        ("channels", lambda m: m["input"].update(channels=5), None),
        ("arch", lambda m: m.update(architecture="nope"), None),
        ("nan", lambda m: None, nan_weights),
    ]}
    o = t / "out"  # every output goes under here; none may be created
    cases = {
        "predict: missing photo": (["predict", t / "nope.jpg", "--out", o / "p1"], [o / "p1"]),
        "predict: empty folder": (["predict", t / "empty", "--out", o / "p2"], [o / "p2"]),
        "predict: folder of non-images": (["predict", t / "texts", "--out", o / "p3"], [o / "p3"]),
        "predict: unknown model": (["predict", photo, "--model", "nope", "--out", o / "p4"], [o / "p4"]),
        "predict: garbage checkpoint": (["predict", photo, "--model", t / "garbage.safetensors", "--out", o / "p5"],
                                        [o / "p5"]),
        "predict: garbage onnx": (["predict", photo, "--model", t / "garbage.onnx", "--out", o / "p6"], [o / "p6"]),
        "predict: --out is a file": (["predict", photo, "--out", t / "afile"], []),
        "predict: --out under /proc": (["predict", photo, "--out", "/proc/ferkit-out"], []),
        "predict: results.json is a folder": (["predict", photo, "--out", t / "results"],
                                              [t / "results" / "astronaut.jpg"]),
        "predict: unknown detector": (["predict", photo, "--detector", "nope", "--out", o / "p7"], [o / "p7"]),
        "predict: unknown tta": (["predict", photo, "--tta", "nope", "--out", o / "p8"], [o / "p8"]),
        "predict: unknown class": (["predict", photo, "--classes", "happy,nope", "--out", o / "p9"], [o / "p9"]),
        **{f"predict: checkpoint {name}": (["predict", photo, "--model", path, "--out", o / f"c-{name}"],
                                           [o / f"c-{name}"]) for name, path in ckpt.items()},
        "evaluate: unknown model": (["evaluate", "nope", "--data", fer], []),
        "evaluate: not a zip": (["evaluate", "default", "--data", t / "not.zip"], []),
        "evaluate: csv header": (["evaluate", "default", "--data", t / "bad.csv"], []),
        "evaluate: csv pixels not numbers": (["evaluate", "default", "--data", t / "abc.csv"], []),
        "evaluate: csv short row": (["evaluate", "default", "--data", t / "short.csv"], []),
        "evaluate: empty csv": (["evaluate", "default", "--data", t / "empty.csv"], []),
        "evaluate: empty folder": (["evaluate", "default", "--data", t / "empty"], []),
        "evaluate: unknown split": (["evaluate", "default", "--data", fer, "--split", "nope"], []),
        "evaluate: --out under /proc": (["evaluate", "default", "--data", fer, "--out", "/proc/ferkit-eval"], []),
        "evaluate: a result is a folder": (["evaluate", "default", "--data", fer, "--out", t / "evalout"],
                                           [t / "evalout" / "metrics.json"]),
        "evaluate: checkpoint nan": (["evaluate", ckpt["nan"], "--data", fer], []),
        "train: recipe is a list": (["train", t / "list.yaml", "--data", fer, "--out", o / "t1"], [o / "t1"]),
        "train: recipe is a number": (["train", t / "scalar.yaml", "--data", fer, "--out", o / "t2"], [o / "t2"]),
        "train: binary recipe": (["train", t / "binary.yaml", "--data", fer, "--out", o / "t3"], [o / "t3"]),
        "train: latin-1 recipe": (["train", t / "latin1.yaml", "--data", fer, "--out", o / "t4"], [o / "t4"]),
        "train: python tag": (["train", t / "tag.yaml", "--data", fer, "--out", o / "t5"], [o / "t5"]),
        "train: empty recipe": (["train", t / "empty.yaml", "--data", fer, "--out", o / "t6"], [o / "t6"]),
        "train: missing recipe": (["train", t / "nope.yaml", "--data", fer, "--out", o / "t7"], [o / "t7"]),
        "train: unparsable override": (["train", recipe, "--data", fer, "--out", o / "t8", "--optim.lr", "[1"],
                                       [o / "t8"]),
        "train: --epochs 0": (["train", recipe, "--data", fer, "--out", o / "t9", "--epochs", "0"], [o / "t9"]),
        "train: --epochs -1": (["train", recipe, "--data", fer, "--out", o / "t10", "--epochs", "-1"], [o / "t10"]),
        "train: batch size 0": (["train", recipe, "--data", fer, "--out", o / "t11", "--train.batch_size", "0"],
                                [o / "t11"]),
        "train: lr nan": (["train", recipe, "--data", fer, "--out", o / "t12", "--optim.lr", ".nan"], [o / "t12"]),
        "train: limit 0": (["train", recipe, "--data", fer, "--out", o / "t13", "--data.limit_per_class", "0"],
                           [o / "t13"]),
        "train: unknown key": (["train", recipe, "--data", fer, "--out", o / "t14", "--optim.nope", "1"], [o / "t14"]),
        "train: unknown model": (["train", recipe, "--data", fer, "--out", o / "t15", "--model.name", "nope"],
                                 [o / "t15"]),
        "train: one class left": (["train", recipe, "--data", fer, "--out", o / "t16", "--data.classes", "[happy]"],
                                  [o / "t16"]),
        "train: data glob": (["train", recipe, "--data", "*x", "--out", o / "t17"], [o / "t17"]),
        "train: --out under /proc": (["train", recipe, "--data", fer, "--out", "/proc/ferkit-run"], []),
        "train: --out is a file": (["train", recipe, "--data", fer, "--out", t / "afile"], []),
        "train: no such val split": (["train", recipe, "--data", fer, "--out", o / "t6", "--data.val_split", "nope",
                                      "--data.soft_labels", "false", "--epochs", "1", "--data.limit_per_class", "5"],
                                     [o / "t6"]),
        "train: resume nothing": (["train", "--resume", t / "empty"], []),
        "train: resume a model": (["train", "--resume", ckpt["arch"].parent], []),
        "data inspect: missing": (["data", "inspect", t / "nope.zip"], []),
        "data inspect: not a zip": (["data", "inspect", t / "not.zip"], []),
        "data inspect: plot not png": (["data", "inspect", fer, "--plot", o / "plot.txt"], [o / "plot.txt"]),
        "data inspect: plot under /proc": (["data", "inspect", fer, "--plot", "/proc/ferkit.png"], []),
        "data clean: empty folder": (["data", "clean", t / "empty", "--out", o / "d1"], [o / "d1"]),
        "data clean: --out under /proc": (["data", "clean", fer, "--out", "/proc/ferkit-clean"], []),
        "export: unknown model": (["export", "nope", "--onnx", o / "e1.onnx"], [o / "e1.onnx"]),
        "export: not .onnx": (["export", "default", "--onnx", o / "e2.txt"], [o / "e2.txt"]),
        "export: under /proc": (["export", "default", "--onnx", "/proc/ferkit.onnx"], []),
        "export: garbage checkpoint": (["export", t / "garbage.safetensors", "--onnx", o / "e3.onnx"],
                                       [o / "e3.onnx"]),
        "export: checkpoint nan": (["export", ckpt["nan"], "--onnx", o / "e4.onnx"], [o / "e4.onnx"]),
        "export: hub under /proc": (["export", "default", "--hub", "/proc/ferkit-hub"], []),
        "export: hub is a file": (["export", "default", "--hub", t / "afile"], []),
        "batch: empty folder": (["batch", t / "empty", "--out", o / "b1"], [o / "b1"]),
        "batch: missing input": (["batch", t / "nope", "--out", o / "b2"], [o / "b2"]),
        "batch: not a zip": (["batch", t / "not.zip", "--out", o / "b3"], [o / "b3"]),
        "batch: --out under /proc": (["batch", photo, "--out", "/proc/ferkit-batch"], []),
        "batch: detect every 0": (["batch", photo, "--out", o / "b4", "--detect-every", "0"], [o / "b4"]),
        "batch: chunk 0": (["batch", photo, "--out", o / "b5", "--chunk", "0"], [o / "b5"]),
        "report: missing run": (["report", t / "nope", "--data", fer, "--out", o / "r.html"], [o / "r.html"]),
        "report: not a run": (["report", t / "empty", "--data", fer, "--out", o / "r.html"], [o / "r.html"]),
        "report: not html": (["report", "default", "--data", fer, "--out", o / "r.txt"], [o / "r.txt"]),
        "report: markdown twin is a folder": (["report", "default", "--data", fer, "--out", t / "report.html"],
                                              [t / "report.html"]),
        "prior: missing run": (["prior", t / "nope", "--data", fer], []),
        "prior: tau without out": (["prior", "default", "--data", fer, "--tau", "0.3"], []),
        "bench detect: no faces": (["bench", "detect", "--data", fer, "--faces", "0"], []),
        "bench detect: missing data": (["bench", "detect", "--data", t / "nope.zip"], []),
        "serve: port out of range": (["serve", "--port", "-1"], []),
        "serve: unknown model": (["serve", "--model", "nope"], []),
        "serve: endless batch wait": (["serve", "--max-wait-ms", "inf"], []),
        "serve: timeout nan": (["serve", "--timeout", "nan"], []),
        "serve: upload limit inf": (["serve", "--max-upload-mb", "inf"], []),
    }
    return cases


CASES = [  # the corpus's case names, listed here so that pytest can name each test
    "predict: missing photo", "predict: empty folder", "predict: folder of non-images", "predict: unknown model",
    "predict: garbage checkpoint", "predict: garbage onnx", "predict: --out is a file", "predict: --out under /proc",
    "predict: results.json is a folder", "predict: unknown detector", "predict: unknown tta",
    "predict: unknown class",
    *[f"predict: checkpoint {n}" for n in ("labels_text", "labels_one", "kwargs_list", "face_zero", "face_huge",
                                          "channels", "arch", "nan")],
    "evaluate: unknown model", "evaluate: not a zip", "evaluate: csv header", "evaluate: csv pixels not numbers",
    "evaluate: csv short row", "evaluate: empty csv", "evaluate: empty folder", "evaluate: unknown split",
    "evaluate: --out under /proc", "evaluate: a result is a folder", "evaluate: checkpoint nan",
    "train: recipe is a list", "train: recipe is a number", "train: binary recipe", "train: latin-1 recipe",
    "train: python tag", "train: empty recipe", "train: missing recipe", "train: unparsable override",
    "train: --epochs 0", "train: --epochs -1", "train: batch size 0", "train: lr nan", "train: limit 0",
    "train: unknown key", "train: unknown model", "train: one class left", "train: data glob",
    "train: --out under /proc", "train: --out is a file", "train: no such val split", "train: resume nothing",
    "train: resume a model",
    "data inspect: missing", "data inspect: not a zip", "data inspect: plot not png",
    "data inspect: plot under /proc", "data clean: empty folder", "data clean: --out under /proc",
    "export: unknown model", "export: not .onnx", "export: under /proc", "export: garbage checkpoint",
    "export: checkpoint nan", "export: hub under /proc", "export: hub is a file",
    "batch: empty folder", "batch: missing input", "batch: not a zip", "batch: --out under /proc",
    "batch: detect every 0", "batch: chunk 0",
    "report: missing run", "report: not a run", "report: not html", "report: markdown twin is a folder",
    "prior: missing run", "prior: tau without out",
    "bench detect: no faces", "bench detect: missing data", "serve: port out of range", "serve: unknown model",
    "serve: endless batch wait", "serve: timeout nan", "serve: upload limit inf",
]


def test_the_case_list_is_the_corpus(corpus):
    assert sorted(CASES) == sorted(corpus)


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, corpus, capsys):
    args, outputs = corpus[case]
    code, _, err = run_main(capsys, *args)
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for path in outputs:
        assert not path.exists(), f"{path} was written"


@pytest.fixture(scope="module")
def hostile_trees(tmp_path_factory) -> dict[str, Path]:
    """Class-folder datasets and a photo folder, each with a symlink loop or a FIFO beside real image files
    (reading a FIFO blocks until someone writes to it)."""
    t = tmp_path_factory.mktemp("trees")
    face = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    trees = {}
    for kind in ("loop", "fifo"):
        for cls in ("happy", "sad"):
            (t / kind / "train" / cls).mkdir(parents=True)
            cv2.imwrite(str(t / kind / "train" / cls / "a.png"), face)
        (t / f"{kind}-photos").mkdir()
        cv2.imwrite(str(t / f"{kind}-photos" / "a.png"), face)
        trees[kind] = t / kind
        trees[f"{kind}-photos"] = t / f"{kind}-photos"
    os.symlink(t / "loop" / "train", t / "loop" / "train" / "sad" / "back.png")
    os.symlink(t / "loop-photos", t / "loop-photos" / "back.png")
    os.mkfifo(t / "fifo" / "train" / "sad" / "pipe.png")
    os.mkfifo(t / "fifo-photos" / "pipe.png")
    return trees


@pytest.mark.parametrize("tree", ["loop", "fifo"])
@pytest.mark.parametrize("command", ["data inspect", "predict"])
def test_symlink_loops_and_fifos_neither_hang_nor_crash(tree, command, hostile_trees, tmp_path):
    """Only regular files are read: a FIFO is skipped (reading it would block forever), a symlink loop is not
    followed round and round. Run in a process of its own so that a hang fails the test instead of the suite."""
    if command == "predict":
        args = ["predict", hostile_trees[f"{tree}-photos"], "--out", tmp_path / "out"]
    else:
        args = ["data", "inspect", hostile_trees[tree], "--json"]
    r = subprocess.run([str(FERKIT), *map(str, args)], capture_output=True, text=True, timeout=TIME_LIMIT)
    assert "Traceback" not in r.stderr
    assert r.returncode == 0, r.stderr  # the real image files are read
    if command == "data inspect":
        assert json.loads(r.stdout)["num_files"] == 2  # the loop and the FIFO are no files of the dataset
    else:
        assert [p["source"].endswith("a.png") for p in json.loads((tmp_path / "out" / "results.json").read_text())
                ["results"]] == [True]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6)
HEADER_FIELDS = ["architecture", "labels", "kwargs", "input", "kwargs.width", "kwargs.input_size", "kwargs.dropout",
                 "input.size", "input.face_size", "input.channels", "labels.0"]


@pytest.fixture(scope="module")
def shipped_state():
    with safe_open(str(SHIPPED), framework="pt") as f:
        meta = json.loads(f.metadata()[META_KEY])
    return meta, load_file(str(SHIPPED))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(HEADER_FIELDS), value=JSON)
@example(field="kwargs.width", value=10**12)  # a model too large to exist
@example(field="kwargs.width", value=20_000)  # a model of 29 billion parameters, that would fill the memory
def test_any_checkpoint_header_loads_or_is_refused_in_one_line(field, value, shipped_state, tmp_path):
    """Whatever a checkpoint's header says in one of its fields, loading either gives a model that answers with
    probabilities or raises ferkit's one-line error; never another exception, never an allocation the header
    asked for."""
    meta, state = shipped_state
    meta = json.loads(json.dumps(meta))
    *parents, last = field.split(".")
    node = meta
    for key in parents:
        node = node[key]
    node[int(last) if isinstance(node, list) else last] = value
    path = tmp_path / "model.safetensors"
    save_file(state, str(path), metadata={META_KEY: json.dumps(meta)})
    try:
        model, loaded = load_checkpoint(path)
    except FerkitError as e:
        assert "\n" not in str(e)
        return
    size = loaded["input"]["size"]
    probs = model(torch.zeros(2, 1, size, size)).softmax(1)
    assert probs.shape == (2, len(loaded["labels"])) and torch.isfinite(probs).all()
