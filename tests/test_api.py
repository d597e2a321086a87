"""The public API at ``ferkit``: README's Python API block runs as it is."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import ROOT


def readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(f"## {heading}\n"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_runs(tmp_path):
    code = readme_block("Python API").replace('"runs/quick"', repr(str(tmp_path / "quick")))
    script = tmp_path / "api.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "'emotion': 'happy'" in lines[0]  # the astronaut
    assert "contempt" in lines[1] and "multiscale" in lines[1]
    assert "fernet" in lines[2]
    accuracy, macro_f1, recall = map(float, lines[3].split())
    assert 0.1 < accuracy < 1 and 0 < macro_f1 < 1 and 0 <= recall <= 1
    assert (tmp_path / "quick" / "best.safetensors").is_file()


def test_import_is_light_and_names_resolve():
    r = subprocess.run([sys.executable, "-c", "import sys, ferkit; print('torch' in sys.modules); "
                        "print(ferkit.Recognizer.__name__, ferkit.load_dataset.__name__, ferkit.FER2013[0])"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "Recognizer", "load_dataset", "angry"]
    r = subprocess.run([sys.executable, "-c", "import ferkit; ferkit.nope"], capture_output=True, text=True)
    assert "module 'ferkit' has no attribute 'nope'" in r.stderr


def test_api_errors_are_also_the_builtin_a_caller_expects():
    import numpy as np
    import pytest

    import ferkit
    from ferkit.config import load_config
    from ferkit.infer import get_detector
    from ferkit.infer.source import check_image

    with pytest.raises(LookupError, match="unknown model 'resnet9000'"):
        ferkit.create_model("resnet9000")
    with pytest.raises(LookupError, match="unknown face detector 'dlib'"):
        get_detector("dlib")
    with pytest.raises(ValueError, match="shape .* has no pixels"):
        check_image(np.zeros((0, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="holds NaN"):
        check_image(np.full((4, 4), np.nan))
    with pytest.raises(TypeError, match="expected a numpy array"):
        check_image([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="train.epochs"):
        load_config(None, ["train.epochs=0"])
    with pytest.raises(LookupError, match="nope: no such model"):
        ferkit.Recognizer.load("nope")
    with pytest.raises(TypeError, match="model: give a name or a path"):
        ferkit.Recognizer.load(None)
    with pytest.raises(ValueError, match="foo is not among them"):
        ferkit.Recognizer.load(classes=["happy", "foo"])
    with pytest.raises(TypeError, match="classes: give emotion names"):
        ferkit.Recognizer.load(classes=[1, 2])
    assert ferkit.Recognizer.load(classes="happy, sad").labels == ["happy", "sad"]  # as on the command line
    with pytest.raises(ferkit.FerkitError):  # and each is still a FerkitError, which the CLI prints in one line
        ferkit.create_model("resnet9000")
