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
    assert "contempt" in lines[1] and "tencrop" in lines[1]
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
