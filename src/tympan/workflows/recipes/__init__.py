"""Training recipes by name: ``finetune`` (Lightning network training) and ``frozen``
(pretrained embeddings + logistic head). Importing this package registers both."""

from tympan.workflows.recipes import frozen, network  # noqa: F401  (register the recipes)
from tympan.workflows.recipes.base import (
    COMMON_FIELDS,
    Fitted,
    Recipe,
    create_recipe,
    list_recipes,
    recipe_class,
    recipe_fields,
    register_recipe,
    resolve_mode,
    unused_fields,
)

__all__ = [
    "COMMON_FIELDS",
    "Fitted",
    "Recipe",
    "create_recipe",
    "list_recipes",
    "recipe_class",
    "recipe_fields",
    "register_recipe",
    "resolve_mode",
    "unused_fields",
]
