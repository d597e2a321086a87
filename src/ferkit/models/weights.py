"""The models that ship inside the package: one entry each, resolved by name here and nowhere else.

An entry is the name users type (``--model fer2013``, ``Recognizer.load("default")``) and the files beside the
weights in ``ferkit/weights/``: ``<name>.safetensors`` (weights plus the description the trainer wrote: labels,
input size, normalisation, recipe, metrics, and the test-time augmentation protocol written by ``ship``),
``<name>.md`` (the model card) and ``<name>_metrics.csv`` (its training curves).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ferkit.errors import UnknownNameError

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT = "default"


@dataclass(frozen=True)
class Weights:
    name: str
    summary: str  # one line for lists and menus

    @property
    def path(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    @property
    def card(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.md"

    @property
    def metrics_file(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}_metrics.csv"

    @property
    def meta(self) -> dict[str, Any]:
        from ferkit.models.checkpoint import read_meta

        return read_meta(self.path)


WEIGHTS: dict[str, Weights] = {w.name: w for w in (
    Weights(DEFAULT, "8 emotions, trained on FER+ annotator votes, robust to framing and image quality"),
    Weights("fer2013", "7 emotions, trained on FER-2013's original labels"),
)}


def names() -> str:
    return ", ".join(WEIGHTS)


def get_weights(name: str) -> Weights:
    if name not in WEIGHTS:
        raise UnknownNameError(f"unknown shipped model {name!r}; available: {names()}")
    return WEIGHTS[name]

