"""The model zoo: a registry of named builders (one file per family) and the freezing strategies.

``create_model(name, num_classes)`` builds any of them; every model takes gray faces ``(B, 1, S, S)`` in [0, 1]
(``S = model.input_size``), normalises them itself and returns logits; its ``head`` is the classifier.
"""

# Importing the family files registers their models.
from ferkit.models import backbones, cbam, seed_cnn, vgg, xception  # noqa: F401
from ferkit.models.cbam import attention_maps
from ferkit.models.freeze import param_groups, set_trainable, train_mode
from ferkit.models.registry import ModelSpec, count_parameters, create_model, get_spec, list_models, register_model

__all__ = [
    "ModelSpec",
    "attention_maps",
    "count_parameters",
    "create_model",
    "get_spec",
    "list_models",
    "param_groups",
    "register_model",
    "set_trainable",
    "train_mode",
]
