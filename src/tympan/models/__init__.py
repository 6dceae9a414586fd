"""Networks by name: ``create("cnn-s", n_classes)``, ``list_models("crnn-*")``.

Importing this package registers every family (one module per family).
"""

from tympan.models import cnn, crnn, efficientat_transfer  # noqa: F401  (register the families)
from tympan.models.registry import (
    ModelInfo,
    UnknownModelError,
    create,
    default_features,
    is_model,
    list_models,
    model_info,
    register_model,
)

__all__ = [
    "ModelInfo",
    "UnknownModelError",
    "create",
    "default_features",
    "is_model",
    "list_models",
    "model_info",
    "register_model",
]
