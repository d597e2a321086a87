"""Models in Hugging Face Hub layout: a folder, or a Hub repository, that holds ``model.safetensors`` (the weights,
with ferkit's description in the header) and ``README.md`` (the model card). Only safetensors files are read.

A local folder in that layout loads by its path; a Hub repository by ``hf-hub:owner/name`` (timm's spelling), through
``huggingface_hub`` and its local cache, so a repository fetched once loads offline (``HF_HUB_OFFLINE=1``).
``ferkit export --hub DIR`` writes such a folder (``ferkit.export.hub``).
"""

from __future__ import annotations

from pathlib import Path

from ferkit.errors import FerkitError

HUB_PREFIX = "hf-hub:"
HUB_WEIGHTS = "model.safetensors"
HUB_CARD = "README.md"


def is_hub_id(spec: str) -> bool:
    return str(spec).startswith(HUB_PREFIX)


def hub_weights(spec: str) -> Path:
    """The local path of ``model.safetensors`` of Hub repository ``hf-hub:owner/name[@revision]``, downloaded once
    into the Hugging Face cache."""
    repo, _, revision = str(spec)[len(HUB_PREFIX):].partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise FerkitError(f"{spec}: a Hub model is hf-hub:owner/name (optionally @revision)")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError:
        raise FerkitError("Hub models need huggingface_hub: pip install 'ferkit[hub]'") from None
    try:
        return Path(hf_hub_download(repo, HUB_WEIGHTS, revision=revision or None))
    except (OSError, ValueError, HfHubHTTPError) as e:  # not cached offline, no such repository or file, bad id
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FerkitError(f"{spec}: cannot get {HUB_WEIGHTS} from the Hugging Face Hub or its local cache "
                          f"({reason}); check the id and the connection, or give the path of a downloaded "
                          "folder") from None
