"""Training: the fit loop, augmentation, losses, optimizers and schedules, training state, the class prior.

``ferkit.train(recipe, data=..., out=...)`` (this package, called) trains a recipe; see ``train_recipe``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ferkit.callable_package import make_callable


def train_recipe(recipe: str | Path | None = None, data: str | Path | None = None, out: str | Path = "runs/run",
                 epochs: int | None = None, overrides: list[str] | None = None,
                 progress: bool = False) -> dict[str, Any]:
    """Train a recipe (a YAML file of ``configs/``, or None for the defaults) on ``data`` into the run directory
    ``out``; ``epochs`` caps the run (every stage, with stages); ``overrides`` are ``section.key=value`` strings,
    as ``--section.key value`` on the command line. Returns the run summary (best epoch and its metrics, train
    time, data, checkpoint path)."""
    from ferkit.config import load_config, set_epochs
    from ferkit.train.trainer import train

    cfg = load_config(recipe, overrides)
    if data is not None:
        cfg.data.path = str(data)
    if epochs is not None:
        set_epochs(cfg, epochs)
    return train(cfg, out, progress=progress)


make_callable(__name__, train_recipe)
