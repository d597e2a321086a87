"""``ferkit export --hub DIR``: a model as a folder in Hugging Face Hub layout (see ``ferkit.models.hub``), ready for
``huggingface-cli upload`` and loadable by its path or, once uploaded, as ``hf-hub:owner/name``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import yaml

from ferkit.errors import FerkitError
from ferkit.fileio import check_out_dir, staging_dir
from ferkit.models.checkpoint import is_onnx, read_meta, resolve_checkpoint
from ferkit.models.hub import HUB_CARD, HUB_WEIGHTS
from ferkit.models.weights import WEIGHTS

FRONT_MATTER = {"library_name": "ferkit", "pipeline_tag": "image-classification",
                "tags": ["facial-emotion-recognition", "ferkit"]}


def export_hub(checkpoint: str | Path, out: str | Path) -> Path:
    """Write ``checkpoint`` (a shipped model, run directory or .safetensors checkpoint) to the new folder ``out``:
    ``model.safetensors`` (the checkpoint as it is, its description in the header), ``README.md`` (the shipped
    model's card, or one written from the description) and the card's pictures and training curves. Nothing is
    left at ``out`` when something fails."""
    out = check_out_dir(out, "--hub")
    if out.exists() and any(out.iterdir()):
        raise FerkitError(f"--hub {out}: exists and is not an empty folder; give a new folder")
    if not out.parent.is_dir():
        raise FerkitError(f"--hub {out}: no such folder {out.parent}; create it first")
    path = resolve_checkpoint(checkpoint)
    if is_onnx(path):
        raise FerkitError(f"{checkpoint}: an ONNX export; a Hub folder holds the safetensors checkpoint it came from")
    meta = read_meta(path)
    shipped = WEIGHTS.get(str(checkpoint))
    tmp = staging_dir(out.parent, ".ferkit-hub-")
    try:
        shutil.copyfile(path, tmp / HUB_WEIGHTS)
        if shipped is not None:
            card = shipped.card.read_text(encoding="utf-8")
            for extra in shipped.card.parent.glob(f"{shipped.name}_*"):  # the card's pictures, its metrics.csv
                shutil.copyfile(extra, tmp / extra.name)
        else:
            card = written_card(meta, path)
            metrics = path.parent / "metrics.csv"
            if metrics.is_file():
                shutil.copyfile(metrics, tmp / "metrics.csv")
        (tmp / HUB_CARD).write_text(f"---\n{yaml.safe_dump(FRONT_MATTER, sort_keys=False)}---\n\n{card}",
                                    encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def written_card(meta: dict[str, Any], path: Path) -> str:
    """A model card from a checkpoint's description: what it is, what it was trained on, its scores, its recipe."""
    name = meta.get("name") or (path.parent.name if path.stem in ("best", "last") else path.stem)
    inp = meta["input"]
    lines = [
        f"# {name}",
        "",
        f"A [ferkit](https://pypi.org/project/ferkit/) facial emotion recognition model: `{meta['architecture']}` "
        f"({json.dumps(meta.get('kwargs', {}))}), {meta.get('parameters', 0):,} parameters.",
        "",
        f"- input: a gray face resized to {inp['face_size']}x{inp['face_size']}"
        + (f", centre {inp['size']}x{inp['size']} crop" if inp.get("crop") else "") + ", values in [0, 1]",
        f"- output: {len(meta['labels'])} emotions: {', '.join(meta['labels'])}",
    ]
    if meta.get("tta"):
        lines.append(f"- evaluation protocol: test-time augmentation `{meta['tta']}`")
    data = meta.get("dataset") or {}
    if data:
        lines.append(f"- trained on {data.get('train', '?'):,} faces of `{Path(str(data.get('location', '?'))).name}`"
                     f", selected on its `{data.get('val_split', '?')}` split ({data.get('val', '?'):,} faces)")
    metrics = {k: v for k, v in (meta.get("metrics") or {}).items() if isinstance(v, (int, float))}
    if metrics:
        lines += ["", "| metric (best epoch) | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.4g} |" for k, v in metrics.items()]
    lines += ["", "## Use", "", "```python", "import ferkit", "",
              'rec = ferkit.Recognizer.load(model="hf-hub:OWNER/NAME")  # or the path of this folder',
              'faces = rec.predict("photo.jpg")', "```", "", "```bash",
              "ferkit predict photo.jpg --model hf-hub:OWNER/NAME", "```"]
    if meta.get("config"):
        lines += ["", "## Recipe", "", "```yaml", yaml.safe_dump(meta["config"], sort_keys=False).rstrip(), "```"]
    return "\n".join(lines) + "\n"
