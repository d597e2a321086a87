"""The models the app offers (the shipped ones, the one it was started with, those found in a folder) and the
Recognizers it keeps loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ferkit.app.launch import MODEL_SUFFIXES
from ferkit.errors import FerkitError
from ferkit.infer import Recognizer
from ferkit.models.checkpoint import RESUME_FILE, is_onnx, read_meta
from ferkit.models.weights import WEIGHTS

MAX_FOUND_MODELS = 200  # a models folder pointed at a home directory must not scan for minutes


@dataclass(frozen=True)
class ModelChoice:
    """One entry of the model selector: what the user reads and what ``Recognizer.load`` gets."""

    label: str
    source: str


SHIPPED_CHOICES = [ModelChoice(f"{w.name} (shipped with ferkit: {w.summary})", w.name) for w in WEIGHTS.values()]


def model_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a model the app can run (a damaged file, weights not from ferkit, ...), or None for a
    ferkit ONNX export or checkpoint."""
    from ferkit.models.onnx import read_onnx_meta

    try:
        read_onnx_meta(path) if is_onnx(path) else read_meta(path)
    except FerkitError as e:
        return str(e).removeprefix(f"{path}: ")
    return None


@st.cache_data(ttl=30, show_spinner=False)
def find_models(folder: str) -> tuple[list[ModelChoice], list[str]]:
    """Checkpoints and ONNX files under ``folder`` (recursively), labelled by their path inside it, and each file
    that has a model's name but is not one, with the reason (runs' resume states are passed over in silence)."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise FerkitError(f"{folder}: no such folder")
    found: list[ModelChoice] = []
    unusable: list[str] = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in MODEL_SUFFIXES or path.name == RESUME_FILE or not path.is_file():
            continue
        label = path.relative_to(root).as_posix()
        if (problem := model_file_problem(path)) is not None:
            unusable.append(f"{label}: {problem}")
            continue
        found.append(ModelChoice(label, str(path.resolve())))
        if len(found) == MAX_FOUND_MODELS:
            break
    return found, unusable


def model_choices(start_model: str | None, folder: str | None) -> tuple[list[ModelChoice], str | None]:
    """Every model to offer, the start model first, and a message when the folder cannot be searched."""
    choices = list(SHIPPED_CHOICES)
    if start_model in WEIGHTS:  # the start model first
        choices.sort(key=lambda c: c.source != start_model)
    elif start_model is not None:
        choices.insert(0, ModelChoice(Path(start_model).name, start_model))
    problem = None
    if folder:
        try:
            found, unusable = find_models(folder)
        except FerkitError as e:
            found, unusable, problem = [], [], str(e)
        else:
            if not found:
                problem = f"no .safetensors checkpoints or .onnx models in {folder}"
        if unusable:
            problem = "; ".join(filter(None, [problem, f"not offered: {'; '.join(unusable)}"]))
        known = {c.source for c in choices}
        choices += [c for c in found if c.source not in known]
    return choices, problem


@st.cache_resource(max_entries=8, show_spinner="Loading the model...")
def load_recognizer(source: str, detector: str, tta: str):
    """One Recognizer per (model, detector, TTA), kept for every session of this server."""
    return Recognizer.load(source, detector=detector, tta=tta)
