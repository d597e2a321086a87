"""A trained checkpoint made into a shipped model (see ``ferkit.models.weights``)."""

from __future__ import annotations

from pathlib import Path

import torch

from ferkit.models.predict import check_tta
from ferkit.models.checkpoint import load_checkpoint, save_checkpoint
from ferkit.models.weights import get_weights


def ship(checkpoint: str | Path, name: str, tta: str, trained_on: str) -> Path:
    """Write ``checkpoint`` as shipped model ``name``: fp16 weights, and in its description the name, the test-time
    augmentation protocol its scores were measured with and the hardware it was trained on."""
    weights = get_weights(name)
    model, meta = load_checkpoint(checkpoint)
    meta = {**meta, "name": name, "tta": check_tta(tta), "weights_dtype": "float16", "trained_on": trained_on}
    return save_checkpoint(weights.path, model, meta, dtype=torch.float16)
