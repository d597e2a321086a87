"""Writing an evaluation to a folder: metrics.json, confusion_matrix.png, reliability.png."""

from __future__ import annotations

import json
from pathlib import Path

from ferkit.evaluate.metrics import Evaluation
from ferkit.evaluate.plots import confusion_png, reliability_png
from ferkit.fileio import atomic_write, check_out_dir

FILES = ("metrics.json", "confusion_matrix.png", "reliability.png")


def save_evaluation(ev: Evaluation, out: str | Path) -> list[Path]:
    """Render everything first, then write each file atomically: an error leaves no file half-written."""
    out = check_out_dir(out, files=FILES)
    contents = [json.dumps(ev.to_dict(), indent=2) + "\n", confusion_png(ev), reliability_png(ev)]
    return [atomic_write(out / name, data) for name, data in zip(FILES, contents)]
